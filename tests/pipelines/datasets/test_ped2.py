"""UCSD Ped2 adapter on a fake tree in the dataset's exact layout (real .tif frames, a MATLAB .m label file)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.datasets import DatasetLayoutError, get_dataset
from pipelines.datasets.ped2 import parse_gt_frames
from pipelines.decode import count_frames, probe

M_FILE = """TestVideoFile = {};
TestVideoFile{end+1}.gt_frame = [3:5];
TestVideoFile{end+1}.gt_frame = [1:2, 6];
"""


def make_ped2(root: Path, frames: int = 6) -> Path:
    base = root / "UCSDped2"
    for split, count in (("Train", 2), ("Test", 2)):
        for v in range(1, count + 1):
            folder = base / split / f"{split}{v:03d}"
            folder.mkdir(parents=True)
            for i in range(1, frames + 1):
                cv2.imwrite(str(folder / f"{i:03d}.tif"), np.full((24, 36), 10 * i, np.uint8))
    gt = base / "Test" / "Test001_gt"
    gt.mkdir()
    cv2.imwrite(str(gt / "001.bmp"), np.zeros((24, 36), np.uint8))
    (base / "Test" / "UCSDped2.m").write_text(M_FILE)
    return root


def test_parse_gt_frames_matlab_ranges() -> None:
    assert parse_gt_frames(M_FILE) == [((2, 4),), ((0, 1), (5, 5))]
    with pytest.raises(ValueError, match="bad frame range"):
        parse_gt_frames("TestVideoFile{end+1}.gt_frame = [0:4];")


def test_ped2_entries_and_labels(tmp_path: Path) -> None:
    root = make_ped2(tmp_path)
    for given in (root, root / "UCSDped2"):  # the parent or UCSDped2 itself
        entries = get_dataset("ped2").entries(str(given))
        assert [(e.video_id, e.split, e.video_label) for e in entries] == [
            ("Train001", "train", 0),
            ("Train002", "train", 0),
            ("Test001", "test", 1),
            ("Test002", "test", 1),
        ]
    test = {e.video_id: e for e in entries if e.split == "test"}
    assert test["Test001"].labels.materialize(6).tolist() == [0, 0, 1, 1, 1, 0]
    assert test["Test002"].labels.materialize(6).tolist() == [1, 1, 0, 0, 0, 1]
    # The frames are real grayscale tifs: they decode (replicated to RGB, 10 fps unknown -> nan).
    info = probe(test["Test001"].uri)
    assert (info.num_frames, info.height, info.width) == (6, 24, 36) and np.isnan(info.fps)
    assert count_frames(test["Test001"].uri) == 6


def test_ped2_missing_pieces(tmp_path: Path) -> None:
    root = make_ped2(tmp_path)
    (root / "UCSDped2" / "Test" / "UCSDped2.m").write_text(M_FILE.splitlines()[1])
    with pytest.raises(DatasetLayoutError, match="lists 1 test videos but Test/ holds 2"):
        get_dataset("ped2").entries(str(root), splits=("test",))
    (root / "UCSDped2" / "Test" / "UCSDped2.m").unlink()
    with pytest.raises(DatasetLayoutError, match="missing Test/UCSDped2.m(.|\n)*Train001/001.tif"):
        get_dataset("ped2").entries(str(root), splits=("test",))
    assert len(get_dataset("ped2").entries(str(root), splits=("train",))) == 2
