"""CUHK Avenue adapter on a fake tree with real .mat label files (written with scipy.io.savemat)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pipelines.datasets import DatasetLayoutError, get_dataset
from pipelines.datasets.avenue import load_vol_label


def save_vol_label(path: Path, anomalous: list[int]) -> None:
    """``volLabel`` as MATLAB stores it: a 1xN cell array of HxW masks."""
    cells = np.empty((1, len(anomalous)), dtype=object)
    for i, flag in enumerate(anomalous):
        mask = np.zeros((9, 16), np.uint8)
        mask[2:4, 3:5] = flag
        cells[0, i] = mask
    scipy.io.savemat(str(path), {"volLabel": cells})


def make_avenue(root: Path) -> Path:
    for folder, count in (("training_videos", 2), ("testing_videos", 2)):
        (root / folder).mkdir(parents=True)
        for v in range(1, count + 1):
            (root / folder / f"{v:02d}.avi").write_bytes(b"\x00")
    masks = root / "ground_truth_demo" / "testing_label_mask"
    masks.mkdir(parents=True)
    save_vol_label(masks / "1_label.mat", [0, 0, 1, 1, 0])
    save_vol_label(masks / "2_label.mat", [1, 1, 1])
    return root


def test_avenue_entries_and_mat_labels(tmp_path: Path) -> None:
    root = make_avenue(tmp_path / "avenue")
    entries = get_dataset("avenue").entries(str(root))
    assert [(e.video_id, e.split, e.video_label) for e in entries] == [
        ("train_01", "train", 0),
        ("train_02", "train", 0),
        ("test_01", "test", 1),
        ("test_02", "test", 1),
    ]
    test = {e.video_id: e for e in entries if e.split == "test"}
    assert test["test_01"].labels.values.tolist() == [0, 0, 1, 1, 0]
    assert test["test_01"].uri.endswith("testing_videos/01.avi")
    assert test["test_02"].labels.materialize(3).tolist() == [1, 1, 1]


def test_avenue_bad_or_missing_labels(tmp_path: Path) -> None:
    root = make_avenue(tmp_path / "avenue")
    bad = root / "ground_truth_demo" / "testing_label_mask" / "2_label.mat"
    scipy.io.savemat(str(bad), {"gt": np.zeros(3)})
    with pytest.raises(ValueError, match="no 'volLabel' variable"):
        load_vol_label(str(bad))
    bad.unlink()
    with pytest.raises(DatasetLayoutError, match="2_label.mat(.|\n)*Expected layout"):
        get_dataset("avenue").entries(str(root), splits=("test",))
    with pytest.raises(DatasetLayoutError, match="missing training_videos"):
        get_dataset("avenue").entries(str(tmp_path / "empty"), splits=("train",))
