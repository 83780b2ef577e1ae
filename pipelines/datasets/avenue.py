"""CUHK Avenue: ``.avi`` videos; test labels as per-frame pixel masks in MATLAB ``.mat`` files.

``ground_truth_demo/testing_label_mask/<N>_label.mat`` holds ``volLabel``, a cell array with one mask per frame
of test video ``<N>`` (``N`` without zero padding, videos are ``01.avi`` ...). A frame is anomalous iff its mask
has any pixel set. Train and test videos share names, so video ids are ``train_01`` / ``test_01``.

Example:
    >>> entries = AvenueDataset().entries("data/avenue", splits=("test",))  # doctest: +SKIP
    >>> entries[0].video_id, entries[0].labels.values.shape  # doctest: +SKIP
    ('test_01', (1439,))
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import scipy.io

from pipelines import storage
from pipelines.datasets.base import SPLITS, DatasetAdapter, FrameLabels, VideoEntry, check_splits
from pipelines.sources import list_videos

__all__ = ["AvenueDataset", "load_vol_label"]

_MASK_DIR = ("ground_truth_demo", "testing_label_mask")


def load_vol_label(uri: str) -> np.ndarray:
    """Per-frame 0/1 labels from an Avenue ``<N>_label.mat`` (``volLabel``: one mask per frame).

    Example:
        >>> load_vol_label("data/avenue/ground_truth_demo/testing_label_mask/1_label.mat")[:3]  # doctest: +SKIP
        array([0, 0, 0], dtype=uint8)
    """
    try:
        mat = scipy.io.loadmat(io.BytesIO(storage.read_bytes(uri)))
    except (ValueError, NotImplementedError, TypeError) as exc:  # NotImplementedError: MATLAB v7.3 (HDF5) files
        raise ValueError(f"cannot read Avenue label file {uri}: {exc}") from None
    if "volLabel" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{uri} has no 'volLabel' variable (found {keys})")
    masks = np.asarray(mat["volLabel"], dtype=object).ravel()
    return np.array([np.asarray(m).any() for m in masks], dtype=np.uint8)


class AvenueDataset(DatasetAdapter):
    """CUHK Avenue (``training_videos``, ``testing_videos``, ``ground_truth_demo``)."""

    name = "avenue"
    expected_tree = """\
    avenue/
      training_videos/01.avi ... 16.avi
      testing_videos/01.avi ... 21.avi
      ground_truth_demo/testing_label_mask/1_label.mat ... 21_label.mat    volLabel: one mask per frame
"""

    def entries(self, root: str, splits: Sequence[str] = SPLITS) -> list[VideoEntry]:
        splits = check_splits(splits)
        out: list[VideoEntry] = []
        for split in splits:
            folder = "training_videos" if split == "train" else "testing_videos"
            videos = [(v, u) for v, u in list_videos(self.require(root, folder)) if u.lower().endswith(".avi")]
            if not videos:
                raise self.layout_error(root, f"no .avi videos in {folder}/")
            for name, uri in videos:
                video_id = f"{split}_{name}"
                if split == "train":
                    out.append(VideoEntry(video_id, uri, "train", 0))
                    continue
                if not name.isdigit():
                    raise self.layout_error(root, f"test video {name!r} is not numbered like 01.avi")
                label_uri = self.require(root, *_MASK_DIR, f"{int(name)}_label.mat")
                labels = FrameLabels(values=load_vol_label(label_uri), source=label_uri)
                out.append(VideoEntry(video_id, uri, "test", int(labels.any_anomalous), labels))
        return out
