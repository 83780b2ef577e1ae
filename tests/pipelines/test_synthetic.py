"""The synthetic corpus: real decodable mp4 files, labels that match the pixels, determinism, presets, CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pytest

from pipelines.synthetic import (
    ANOMALY_KINDS,
    PRESETS,
    Preset,
    VideoSpec,
    annotate,
    get_preset,
    iter_frames,
    plan_video,
    synthesize,
)

REPO = Path(__file__).resolve().parents[2]
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _decode(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _test_specs(preset: str) -> list[tuple[str, int, VideoSpec]]:
    specs = [s for s in get_preset(preset).videos if s.split == "test"]
    return [(f"test_{i:03d}", i, s) for i, s in enumerate(specs)]


def test_tiny_videos_decode_to_requested_size_and_length(tiny_corpus: Path) -> None:
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    assert len(meta["videos"]) == 5
    for video in meta["videos"]:
        reader = decord.VideoReader(str(tiny_corpus / video["path"]))
        assert len(reader) == video["num_frames"] == 64
        assert reader[0].shape == (video["height"], video["width"], 3) == (64, 64, 3)
        assert reader.get_avg_fps() == pytest.approx(25.0)
    assert sorted(p.name for p in (tiny_corpus / "train").iterdir()) == ["train_000.mp4", "train_001.mp4"]
    assert len(list((tiny_corpus / "test").glob("*.mp4"))) == 3


def test_labels_have_one_entry_per_frame_and_match_the_boxes(tiny_corpus: Path) -> None:
    video_labels = json.loads((tiny_corpus / "video_labels.json").read_text())
    assert video_labels == {"train_000": 0, "train_001": 0, "test_000": 1, "test_001": 1, "test_002": 1}
    for mp4 in sorted((tiny_corpus / "test").glob("*.mp4")):
        labels = np.load(tiny_corpus / "labels" / f"{mp4.stem}.npy")
        doc = json.loads((tiny_corpus / "labels" / f"{mp4.stem}.boxes.json").read_text())
        assert labels.dtype == np.uint8 and labels.shape == (len(decord.VideoReader(str(mp4))),)
        assert (doc["width"], doc["height"], doc["num_frames"], doc["fps"]) == (64, 64, 64, 25.0)
        assert set(doc["frames"]) == {str(t) for t in np.flatnonzero(labels)}
        assert 0 < labels.sum() < labels.size, "test videos need normal stretches and anomalies"
        for entries in doc["frames"].values():
            for entry in entries:
                x1, y1, x2, y2 = entry["box"]
                assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
                assert entry["kind"] in ANOMALY_KINDS and isinstance(entry["track_id"], int)


def test_labels_match_the_pixels_of_the_anomalies(tiny_corpus: Path) -> None:
    # Render each test video with and without its anomalous figures (same noise stream): the anomaly must be
    # drawn inside its boxes on labelled frames, and only a faint sub-threshold fringe on unlabelled frames.
    for video_id, index, spec in _test_specs("tiny"):
        plan = plan_video(spec, video_id, index, seed=0)
        normal_only = dataclasses.replace(plan, agents=[a for a in plan.agents if not a.anomalous])
        full = np.stack(list(iter_frames(plan))).astype(np.float32) @ _LUMA
        clean = np.stack(list(iter_frames(normal_only))).astype(np.float32) @ _LUMA
        decoded = _decode(tiny_corpus / "test" / f"{video_id}.mp4").astype(np.float32) @ _LUMA
        assert np.abs(decoded - full).mean() < 4.0, "the mp4 must show the rendered frames"
        labels = np.load(tiny_corpus / "labels" / f"{video_id}.npy")
        boxes = json.loads((tiny_corpus / "labels" / f"{video_id}.boxes.json").read_text())["frames"]
        diff = np.abs(full - clean)
        for t in range(spec.num_frames):
            if labels[t]:
                inside = np.zeros(diff.shape[1:], bool)
                for entry in boxes[str(t)]:
                    x1, y1, x2, y2 = entry["box"]
                    inside[y1:y2, x1:x2] = True
                assert diff[t][inside].mean() > 10.0, (video_id, t)
            else:
                assert diff[t].mean() < 0.1 and diff[t].max() < 64.0, (video_id, t)


def test_same_seed_same_corpus_other_seed_differs(tiny_corpus: Path, tmp_path: Path) -> None:
    again = synthesize(tmp_path / "again", preset="tiny", seed=0)
    other = synthesize(tmp_path / "other", preset="tiny", seed=1)
    for name in ("test_000.npy", "test_001.boxes.json", "test_002.npy"):
        assert (tiny_corpus / "labels" / name).read_bytes() == (again.root / "labels" / name).read_bytes()
    for sub, vid in (("train", "train_001"), ("test", "test_000")):
        first = _decode(tiny_corpus / sub / f"{vid}.mp4")
        assert np.array_equal(first, _decode(again.root / sub / f"{vid}.mp4"))
        assert not np.array_equal(first, _decode(other.root / sub / f"{vid}.mp4"))


def test_every_anomaly_kind_appears_in_tiny_boxes(tiny_corpus: Path) -> None:
    kinds = set()
    for path in (tiny_corpus / "labels").glob("*.boxes.json"):
        frames = json.loads(path.read_text())["frames"]
        kinds |= {entry["kind"] for entries in frames.values() for entry in entries}
    assert kinds == set(ANOMALY_KINDS)


def test_demo_plan_has_every_kind_and_a_balanced_anomalous_fraction() -> None:
    # Labels come from the rasterised sprites alone, so the demo ground truth is checked without encoding.
    kinds, anomalous, frames = set(), 0, 0
    for video_id, index, spec in _test_specs("demo"):
        labels, boxes = annotate(plan_video(spec, video_id, index, seed=0))
        assert labels[:16].sum() == 0 and labels.sum() < labels.size, "each test video starts normal"
        assert set(boxes) == set(np.flatnonzero(labels).tolist())
        kinds |= {entry["kind"] for entries in boxes.values() for entry in entries}
        anomalous, frames = anomalous + int(labels.sum()), frames + labels.size
    assert kinds == set(ANOMALY_KINDS)
    assert 0.25 <= anomalous / frames <= 0.5


def test_train_videos_of_one_class_presets_are_normal() -> None:
    for name in ("tiny", "demo", "bench"):
        for spec in get_preset(name).videos:
            if spec.split == "train":
                assert spec.events == ()
    bench_sizes = {(s.height, s.width) for s in get_preset("bench").videos}
    assert {(480, 854), (1080, 1920)} <= bench_sizes


def test_weak_preset_layout_gives_train_videos_only_a_video_label(tmp_path: Path, monkeypatch) -> None:
    small = Preset(
        "small_weak",
        (
            VideoSpec("train", 32, 32, 24),
            VideoSpec("train", 32, 32, 24, ("cart",)),
            VideoSpec("test", 32, 32, 24),
            VideoSpec("test", 32, 32, 24, ("fast",)),
        ),
        weak=True,
    )
    monkeypatch.setitem(PRESETS, "small_weak", small)
    summary = synthesize(tmp_path / "weak", preset="small_weak", seed=0)
    assert json.loads((tmp_path / "weak" / "video_labels.json").read_text()) == {
        "train_000": 0,
        "train_001": 1,
        "test_000": 0,
        "test_001": 1,
    }
    assert sorted(p.name for p in (tmp_path / "weak" / "labels").glob("*.npy")) == ["test_000.npy", "test_001.npy"]
    assert np.load(tmp_path / "weak" / "labels" / "test_000.npy").sum() == 0
    assert [v.kinds for v in summary.videos] == [(), ("cart",), (), ("fast",)]
    assert get_preset("weak").weak and any(s.events for s in get_preset("weak").videos if s.split == "train")


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="known: tiny"):
        get_preset("huge")
    with pytest.raises(ValueError, match="even"):
        plan_video(VideoSpec("test", 63, 64, 10), "v", 0, seed=0)
    with pytest.raises(ValueError, match="split"):
        plan_video(VideoSpec("val", 64, 64, 10), "v", 0, seed=0)
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        plan_video(VideoSpec("test", 64, 64, 40, ("ghost",)), "v", 0, seed=0)
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize(tmp_path, preset="tiny")


def test_overwrite_replaces_only_the_corpus(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(PRESETS, "one", Preset("one", (VideoSpec("train", 32, 32, 8),)))
    (tmp_path / "keep.txt").write_text("user data")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "stale.mp4").write_bytes(b"old")
    synthesize(tmp_path, preset="one", overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "user data"
    assert not (tmp_path / "test" / "stale.mp4").exists()
    assert len(decord.VideoReader(str(tmp_path / "train" / "train_000.mp4"))) == 8


def test_cli_writes_a_corpus(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, str(REPO / "jobs" / "synthesize.py"), "--out", str(out), "--preset", "tiny", "--seed", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "2 train + 3 test videos" in result.stdout
    assert len(list((out / "labels").glob("*.npy"))) == 3
    # The error path runs in-process (same main(), no second interpreter start-up).
    spec = importlib.util.spec_from_file_location("job_synthesize", REPO / "jobs" / "synthesize.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--out", str(out), "--preset", "tiny"]) == 2
    assert "not empty" in capsys.readouterr().err
