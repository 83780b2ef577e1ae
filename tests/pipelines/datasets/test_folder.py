"""The folder format adapter on fake trees (the adapter lists and labels; it does not decode)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.datasets import DatasetLayoutError, get_dataset


def make_tree(root: Path) -> Path:
    for split, names in {"train": ["n1.mp4", "n2.avi"], "test": ["t1.mkv", "t 2 é.mov"]}.items():
        (root / split).mkdir(parents=True)
        for name in names:
            (root / split / name).write_bytes(b"\x00")
    frames = root / "test" / "t3"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i}.jpg").write_bytes(b"\x00")
    (root / "labels").mkdir()
    np.save(root / "labels" / "t1.npy", np.array([0, 1, 1], np.uint8))
    np.save(root / "labels" / "t3.npy", np.zeros(3, np.uint8))
    np.save(root / "labels" / "n1.npy", np.ones(3, np.uint8))  # train labels are ignored
    return root


def test_folder_entries_and_labels(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "corpus")
    entries = {e.video_id: e for e in get_dataset("folder").entries(str(root))}
    assert list(entries) == ["n1", "n2", "t1", "t3", "t 2 é"]  # natural order per split
    assert entries["n1"].split == "train" and entries["n1"].labels is None and entries["n1"].video_label == 0
    assert entries["t1"].video_label == 1 and entries["t1"].labels.values.tolist() == [0, 1, 1]
    assert entries["t3"].video_label == 0 and entries["t3"].uri == str(root / "test" / "t3")
    assert entries["t 2 é"].video_label == -1 and entries["t 2 é"].labels is None


def test_video_labels_json_wins(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "corpus")
    (root / "video_labels.json").write_text(json.dumps({"n2": 1, "t 2 é": 0}))
    entries = {e.video_id: e for e in get_dataset("folder").entries(str(root), splits=("train", "test"))}
    assert entries["n2"].video_label == 1 and entries["n2"].labels is None  # weak train: video label only
    assert entries["t 2 é"].video_label == 0


def test_folder_layout_errors(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "corpus")
    with pytest.raises(DatasetLayoutError, match="missing test(.|\n)*Expected layout(.|\n)*labels/<video_id>.npy"):
        get_dataset("folder").entries(str(tmp_path / "nothing"), splits=("test",))
    (root / "train" / "n1.avi").write_bytes(b"")
    with pytest.raises(ValueError, match="share the video id 'n1'"):
        get_dataset("folder").entries(str(root))
    (root / "train" / "n1.avi").unlink()
    (root / "train" / "t1.mp4").write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match="'t1' is in both train/ and test/"):
        get_dataset("folder").entries(str(root))
    for f in (root / "train").iterdir():
        f.unlink()
    with pytest.raises(DatasetLayoutError, match="no videos"):
        get_dataset("folder").entries(str(root), splits=("train",))
