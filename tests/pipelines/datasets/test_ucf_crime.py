"""UCF-Crime adapter on a fake tree: official train list, temporal annotations, videos in part folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.datasets import DatasetLayoutError, get_dataset
from pipelines.datasets.ucf_crime import parse_temporal_annotations

ANNOTATIONS = """Abuse028_x264.mp4  Abuse  165  240  -1  -1
Arson011_x264.mp4  Arson  150  420  680  1267
Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1
"""


def make_ucf(root: Path) -> Path:
    files = [
        "Anomaly-Videos-Part-1/Abuse/Abuse001_x264.mp4",
        "Anomaly-Videos-Part-1/Abuse/Abuse028_x264.mp4",
        "Anomaly-Videos-Part-1/Arson/Arson011_x264.mp4",
        "Training-Normal-Videos-Part-1/Normal_Videos001_x264.mp4",
        "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4",
    ]
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\x00")
    splits = root / "Anomaly_Detection_splits"
    splits.mkdir()
    (splits / "Anomaly_Train.txt").write_text(
        "Abuse/Abuse001_x264.mp4\nTraining_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4\n"
    )
    (root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text(ANNOTATIONS)
    return root


def test_parse_temporal_annotations() -> None:
    parsed = parse_temporal_annotations(ANNOTATIONS)
    assert parsed == {
        "Abuse028_x264": ((165, 239),),
        "Arson011_x264": ((150, 419), (680, 1266)),
        "Normal_Videos_003_x264": (),
    }
    with pytest.raises(ValueError, match=":1: bad interval"):
        parse_temporal_annotations("A.mp4  Abuse  50  10  -1  -1")


def test_ucf_entries(tmp_path: Path) -> None:
    root = make_ucf(tmp_path / "ucf")
    entries = get_dataset("ucf_crime").entries(str(root))
    assert [(e.video_id, e.split, e.video_label) for e in entries] == [
        ("Abuse001_x264", "train", 1),
        ("Normal_Videos001_x264", "train", 0),
        ("Abuse028_x264", "test", 1),
        ("Arson011_x264", "test", 1),
        ("Normal_Videos_003_x264", "test", 0),
    ]
    by_id = {e.video_id: e for e in entries}
    assert by_id["Abuse001_x264"].labels is None
    assert by_id["Arson011_x264"].labels.intervals == ((150, 419), (680, 1266))
    assert by_id["Normal_Videos_003_x264"].labels.materialize(4).tolist() == [0, 0, 0, 0]
    assert by_id["Abuse028_x264"].uri.endswith("Anomaly-Videos-Part-1/Abuse/Abuse028_x264.mp4")


def test_ucf_options_and_missing_pieces(tmp_path: Path) -> None:
    root = make_ucf(tmp_path / "ucf")
    (tmp_path / "test.txt").write_text("Arson/Arson011_x264.mp4\n")
    entries = get_dataset("ucf_crime", test_list=str(tmp_path / "test.txt")).entries(str(root), splits=("test",))
    assert [e.video_id for e in entries] == ["Arson011_x264"]
    (root / "Anomaly-Videos-Part-1" / "Abuse" / "Abuse001_x264.mp4").unlink()
    with pytest.raises(DatasetLayoutError, match="'Abuse/Abuse001_x264.mp4' not found"):
        get_dataset("ucf_crime").entries(str(root), splits=("train",))
    (root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="missing Temporal_Anomaly_Annotation(.|\n)*Expected layout"):
        get_dataset("ucf_crime").entries(str(root), splits=("test",))
