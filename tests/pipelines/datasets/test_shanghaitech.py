"""ShanghaiTech adapters (one-class and the weakly supervised split from list files) on a fake tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.datasets import DatasetLayoutError, get_dataset

TRAIN_IDS = ["01_001", "01_002", "02_001"]
TEST_MASKS = {"01_0014": [0, 1, 1, 0], "01_0015": [0, 0, 0, 0], "02_0161": [1, 1, 0, 0]}


def make_shanghaitech(root: Path) -> Path:
    videos = root / "training" / "videos"
    videos.mkdir(parents=True)
    for vid in TRAIN_IDS:
        (videos / f"{vid}.avi").write_bytes(b"\x00")
    masks = root / "testing" / "test_frame_mask"
    masks.mkdir(parents=True)
    for vid, mask in TEST_MASKS.items():
        frames = root / "testing" / "frames" / vid
        frames.mkdir(parents=True)
        for i in range(len(mask)):
            (frames / f"{i:03d}.jpg").write_bytes(b"\x00")
        np.save(masks / f"{vid}.npy", np.array(mask, np.uint8))
    return root


def test_one_class_split(tmp_path: Path) -> None:
    root = make_shanghaitech(tmp_path / "sh")
    entries = get_dataset("shanghaitech").entries(str(root))
    assert [(e.video_id, e.split, e.video_label) for e in entries] == [
        ("01_001", "train", 0),
        ("01_002", "train", 0),
        ("02_001", "train", 0),
        ("01_0014", "test", 1),
        ("01_0015", "test", 0),
        ("02_0161", "test", 1),
    ]
    test = {e.video_id: e for e in entries if e.split == "test"}
    assert test["01_0014"].uri.endswith("testing/frames/01_0014")
    assert test["02_0161"].labels.values.tolist() == [1, 1, 0, 0]
    (root / "testing" / "test_frame_mask" / "01_0015.npy").unlink()
    with pytest.raises(DatasetLayoutError, match="missing testing/test_frame_mask/01_0015.npy"):
        get_dataset("shanghaitech").entries(str(root), splits=("test",))


def test_weak_split_from_list_files(tmp_path: Path) -> None:
    root = make_shanghaitech(tmp_path / "sh")
    # RTFM-style feature paths, abnormal first; a bare id works too.
    (root / "SH_Train.txt").write_text("/feats/01_0014_i3d.npy\n/feats/01_001_i3d.npy\n02_001\n")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "test.txt").write_text("02_0161\n01_0015\n01_002\n")
    adapter = get_dataset("shanghaitech_weak", test_list=str(lists / "test.txt"))
    entries = adapter.entries(str(root))
    assert [(e.video_id, e.split, e.video_label) for e in entries] == [
        ("01_0014", "train", 1),
        ("01_001", "train", 0),
        ("02_001", "train", 0),
        ("02_0161", "test", 1),
        ("01_0015", "test", 0),
        ("01_002", "test", 0),
    ]
    by_id = {e.video_id: e for e in entries}
    assert by_id["01_0014"].labels is None  # weak train: video-level labels only
    assert by_id["02_0161"].labels.values.tolist() == [1, 1, 0, 0]
    assert by_id["01_002"].labels.materialize(5).tolist() == [0] * 5  # a normal training video moved to test
    assert by_id["01_002"].uri.endswith("training/videos/01_002.avi")


def test_weak_split_needs_lists_and_known_ids(tmp_path: Path) -> None:
    root = make_shanghaitech(tmp_path / "sh")
    with pytest.raises(DatasetLayoutError, match="defined by list files(.|\n)*SH_Train.txt"):
        get_dataset("shanghaitech_weak").entries(str(root))
    (root / "SH_Train.txt").write_text("01_001\n07_0099\n")
    (root / "SH_Test.txt").write_text("01_0014\n")
    with pytest.raises(DatasetLayoutError, match="neither in training/videos nor in testing/frames: \\['07_0099'\\]"):
        get_dataset("shanghaitech_weak").entries(str(root))
    (root / "SH_Train.txt").write_text("01_001\n01_0014\n")
    with pytest.raises(DatasetLayoutError, match="in both the train and the test list"):
        get_dataset("shanghaitech_weak").entries(str(root))
