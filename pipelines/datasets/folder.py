"""The folder format: the simplest layout, written by :mod:`pipelines.synthetic` and easy to produce by hand.

Video labels: ``video_labels.json`` when it names the video; otherwise a test video with a label array is
abnormal iff some frame is, a train video is normal (the one-class convention), anything else is unknown (-1).
Frame labels are attached to test videos only: in the weakly supervised protocol train videos carry
video-level labels alone, so a ``labels/<id>.npy`` of a train video is ignored.

Example:
    >>> entries = FolderDataset().entries("data/corpus")  # doctest: +SKIP
    >>> entries[0]  # doctest: +SKIP
    VideoEntry(video_id='train_000', uri='data/corpus/train/train_000.mp4', split='train', video_label=0, labels=None)
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines import storage
from pipelines.datasets.base import SPLITS, DatasetAdapter, FrameLabels, VideoEntry, check_splits, load_npy
from pipelines.sources import list_videos, video_stem

__all__ = ["FolderDataset"]


class FolderDataset(DatasetAdapter):
    """``DIR/{train,test}/<id>.<ext>`` or ``<id>/`` frame folders, ``DIR/labels/<id>.npy``, ``video_labels.json``."""

    name = "folder"
    expected_tree = """\
    DIR/
      train/<video_id>.mp4 | .avi | .mkv | .mov     a video file, or
      train/<video_id>/000001.jpg ...                 a folder of frames (.jpg .png .tif .bmp)
      test/<video_id>.mp4  (or a frame folder)
      labels/<video_id>.npy                           optional: uint8 0/1 per frame (test videos)
      video_labels.json                               optional: {"<video_id>": 0 | 1}
"""

    def entries(self, root: str, splits: Sequence[str] = SPLITS) -> list[VideoEntry]:
        splits = check_splits(splits)
        video_labels = self._video_labels(root)
        label_files = self._label_files(root) if "test" in splits else {}
        out: list[VideoEntry] = []
        seen: dict[str, str] = {}
        for split in splits:
            split_dir = self.require(root, split)
            videos = list_videos(split_dir)
            if not videos:
                raise self.layout_error(root, f"no videos (files or frame folders) in {split}/")
            for video_id, uri in videos:
                if video_id in seen:
                    raise self.layout_error(root, f"video id {video_id!r} is in both {seen[video_id]}/ and {split}/")
                seen[video_id] = split
                label_uri = label_files.get(video_id) if split == "test" else None
                labels = FrameLabels(values=load_npy(label_uri), source=label_uri) if label_uri else None
                label = self._video_label(video_id, split, labels, video_labels)
                out.append(VideoEntry(video_id, uri, split, label, labels))
        return out

    def _video_labels(self, root: str) -> dict[str, int]:
        uri = storage.join(root, "video_labels.json")
        if not storage.exists(uri):
            return {}
        data = storage.read_json(uri)
        if not isinstance(data, dict) or any(v not in (0, 1) for v in data.values()):
            raise ValueError(f"{uri} must map video ids to 0 or 1")
        return {str(k): int(v) for k, v in data.items()}

    @staticmethod
    def _label_files(root: str) -> dict[str, str]:
        """``video_id -> labels/<video_id>.npy`` (one listing instead of one lookup per video)."""
        labels_dir = storage.join(root, "labels")
        if not storage.exists(labels_dir):
            return {}
        return {video_stem(uri): uri for uri in storage.list_files(labels_dir, suffixes=(".npy",), recursive=False)}

    @staticmethod
    def _video_label(video_id: str, split: str, labels: FrameLabels | None, video_labels: dict[str, int]) -> int:
        if video_id in video_labels:
            return video_labels[video_id]
        if labels is not None:
            return int(labels.any_anomalous)
        return 0 if split == "train" else -1
