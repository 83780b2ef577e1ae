"""ShanghaiTech Campus: the one-class split and the weakly supervised 238/199 split (seed 004, Table 1).

One-class (``shanghaitech``): the 330 ``training/videos/SS_VVV.avi`` are normal; the 107 test videos are frame
folders ``testing/frames/SS_VVVV/`` with labels ``testing/test_frame_mask/SS_VVVV.npy`` (0/1 per frame).

Weakly supervised (``shanghaitech_weak``): seed 004 §3 follows Zhong et al. and moves part of the abnormal test
videos into training, giving 238 train videos (63 abnormal + 175 normal) and 199 test videos (44 abnormal + 155
normal). Which videos go where is not derivable from the dataset itself, so the split comes from two list files
the user provides (one id or path per line, e.g. RTFM's ``shanghai-i3d-{train,test}-10crop.list``; ids are
base names without ``_i3d``/extension), looked up among ``training/videos`` (``01_001``) and ``testing/frames``
(``01_0014``); no id is ever made up. Video labels follow the
data: ``training/videos`` are normal, a ``testing`` video is abnormal iff its frame mask has an anomalous
frame. Train videos keep video-level labels only (the weak protocol); test videos get their frame mask, or all
zeros when they come from ``training/videos``.

Example:
    >>> weak = ShanghaiTechWeakDataset(train_list="lists/sh_train.txt", test_list="lists/sh_test.txt")
    >>> entries = weak.entries("data/shanghaitech")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipelines import storage
from pipelines.datasets.base import SPLITS, DatasetAdapter, FrameLabels, VideoEntry, check_splits, load_npy
from pipelines.sources import list_videos, read_id_list, video_stem

__all__ = ["PAPER_SPLIT_SIZES", "ShanghaiTechDataset", "ShanghaiTechWeakDataset"]

logger = logging.getLogger(__name__)

PAPER_SPLIT_SIZES = {"train": 238, "test": 199}  # seed 004, Table 1

_TREE = """\
    shanghaitech/
      training/videos/01_001.avi ... 13_007.avi           330 normal training videos
      testing/frames/01_0014/000.jpg ... 12_0175/          107 test videos as frame folders
      testing/test_frame_mask/01_0014.npy ...              0/1 per frame of each test video
"""


class _ShanghaiTechTree:
    """Index of the files of one ShanghaiTech tree (one listing per directory)."""

    def __init__(self, adapter: DatasetAdapter, root: str, need_test: bool, need_train: bool) -> None:
        self.train = dict(list_videos(adapter.require(root, "training", "videos"))) if need_train else {}
        self.test: dict[str, str] = {}
        self.masks: dict[str, str] = {}
        if need_test:
            self.test = dict(list_videos(adapter.require(root, "testing", "frames")))
            mask_dir = adapter.require(root, "testing", "test_frame_mask")
            self.masks = {video_stem(u): u for u in storage.list_files(mask_dir, suffixes=(".npy",), recursive=False)}

    def test_labels(self, adapter: DatasetAdapter, root: str, video_id: str) -> FrameLabels:
        uri = self.masks.get(video_id)
        if uri is None:
            raise adapter.layout_error(root, f"missing testing/test_frame_mask/{video_id}.npy")
        return FrameLabels(values=load_npy(uri), source=uri)


class ShanghaiTechDataset(DatasetAdapter):
    """ShanghaiTech Campus, one-class split (train = normal videos, test = labelled frame folders)."""

    name = "shanghaitech"
    expected_tree = _TREE

    def entries(self, root: str, splits: Sequence[str] = SPLITS) -> list[VideoEntry]:
        splits = check_splits(splits)
        tree = _ShanghaiTechTree(self, root, need_test="test" in splits, need_train="train" in splits)
        out: list[VideoEntry] = []
        if "train" in splits:
            if not tree.train:
                raise self.layout_error(root, "no videos in training/videos/")
            out += [VideoEntry(v, u, "train", 0) for v, u in tree.train.items()]
        if "test" in splits:
            if not tree.test:
                raise self.layout_error(root, "no frame folders in testing/frames/")
            for video_id, uri in tree.test.items():
                labels = tree.test_labels(self, root, video_id)
                out.append(VideoEntry(video_id, uri, "test", int(labels.any_anomalous), labels))
        return out


class ShanghaiTechWeakDataset(DatasetAdapter):
    """ShanghaiTech, weakly supervised split from user list files (seed 004 §3, 238 train / 199 test).

    Args:
        train_list: List file of the train split (default ``ROOT/SH_Train.txt``).
        test_list: List file of the test split (default ``ROOT/SH_Test.txt``).
    """

    name = "shanghaitech_weak"
    expected_tree = (
        _TREE
        + """\
      SH_Train.txt    238 ids or paths, one per line (or pass train_list=URI)
      SH_Test.txt     199 ids or paths, one per line (or pass test_list=URI)
"""
    )

    def __init__(self, train_list: str | None = None, test_list: str | None = None) -> None:
        self.lists = {"train": train_list, "test": test_list}

    def entries(self, root: str, splits: Sequence[str] = SPLITS) -> list[VideoEntry]:
        splits = check_splits(splits)
        ids = {split: self._ids(root, split) for split in splits}
        if len(splits) == 2 and set(ids["train"]) & set(ids["test"]):
            both = sorted(set(ids["train"]) & set(ids["test"]))
            raise self.layout_error(root, f"{len(both)} ids are in both the train and the test list: {both[:5]}")
        tree = _ShanghaiTechTree(self, root, need_test=True, need_train=True)
        out: list[VideoEntry] = []
        for split in splits:
            if len(ids[split]) != PAPER_SPLIT_SIZES[split]:
                logger.warning(
                    "shanghaitech_weak %s list has %d videos; seed 004 uses %d",
                    split,
                    len(ids[split]),
                    PAPER_SPLIT_SIZES[split],
                )
            unknown = [v for v in ids[split] if v not in tree.train and v not in tree.test]
            if unknown:
                raise self.layout_error(
                    root,
                    f"{len(unknown)} {split} list ids are neither in training/videos nor in testing/frames: "
                    f"{unknown[:5]}",
                )
            for video_id in ids[split]:
                if video_id in tree.train:
                    labels = FrameLabels.from_intervals((), source=f"{video_id} (normal training video)")
                    uri = tree.train[video_id]
                else:
                    labels = tree.test_labels(self, root, video_id)
                    uri = tree.test[video_id]
                label = int(labels.any_anomalous)
                out.append(VideoEntry(video_id, uri, split, label, labels if split == "test" else None))
        return out

    def _ids(self, root: str, split: str) -> list[str]:
        uri = self.lists[split] or storage.join(root, "SH_Train.txt" if split == "train" else "SH_Test.txt")
        if not storage.exists(uri):
            raise self.layout_error(
                root,
                f"no {split} list at {uri}; the weakly supervised split is defined by list files "
                f"(pass {split}_list=URI)",
            )
        ids = read_id_list(uri)
        if not ids:
            raise self.layout_error(root, f"the {split} list {uri} is empty")
        return ids
