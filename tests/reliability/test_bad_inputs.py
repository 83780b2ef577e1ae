"""One corpus with every kind of bad input, through ingest (CLI), I3D extraction and scoring.

Each bad input must end in quarantine with a reason that names the problem; every usable video must come out
complete at each stage; the ingest CLI exits 0 because some inputs were usable (2 only when all failed:
tests/pipelines/test_clip_store.py::test_all_failed_exits_2_then_overwrite_replaces).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.clip_store import build_clip_store, effective_spec, read_clip_store, segment_starts
from pipelines.decode import iter_frames
from pipelines.feature_store import ExtractOptions, extract_features
from pipelines.score import ScoreConfig, score, score_file_uri
from pipelines.stores import read_labels, read_manifest, read_quarantine, read_store, read_store_metadata
from tests.reliability.media import write_frames, write_resolution_change, write_video
from vad_models.base import get_frame_spec
from vad_models.i3d.config import I3DConfig

REPO = Path(__file__).resolve().parents[2]
SIZE = (32, 32)  # the size the session LUSS-AE checkpoint was trained at
SEGMENT_FRAMES = 48
LUSS_SPEC = effective_spec(get_frame_spec("luss_ae"), SIZE, SEGMENT_FRAMES)  # window 17, overlap 16
I3D_CFG = I3DConfig(height=40, width=56, crop_size=32, base_channels=4)

# video id -> (quarantine stage, pattern the reason must match); None: a usable video, stored and scored in full.
EXPECTED: dict[str, tuple[str, str] | None] = {
    "good train 01": None,  # spaces in the name
    "tëst vidéo ü": None,  # non-ASCII and spaces, with frame labels
    "size_change": None,  # 30 frames at 64x48 then 30 at 80x64: every frame is decoded and resized
    "truncated_stream": None,  # an MKV cut mid-stream decodes to the frames that are there
    "zero": ("probe", "cannot open video .*zero.mp4"),
    "random": ("probe", "cannot open video .*random.avi"),
    "notes": ("probe", "cannot open video .*notes.mp4"),
    "truncated": ("probe", "cannot open video .*truncated.mp4"),  # the MP4 index (moov atom) was cut off
    "one_frame": ("length", "1 frames, shorter than one window of 17 frames"),
    "short": ("length", "10 frames, shorter than one window of 17 frames"),
    "bad_first": ("probe", r"cannot decode frame .*bad_first/0\.png .*not a readable image"),
    "bad_image": ("decode", r"cannot decode frame .*bad_image/7\.png .*not a readable image"),
    "size_change_frames": ("decode", r"frame .*18\.png is 20x20 but the first frame .* is 48x40"),
    "labels_wrong": ("labels", "50 frame labels .* for a video that decodes to 64 frames"),
}
GOOD = sorted(k for k, v in EXPECTED.items() if v is None)
BAD = {k: v for k, v in EXPECTED.items() if v is not None}


@pytest.fixture(scope="module")
def corpus(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder format: 4 usable videos (2 plain good ones) and one input of each bad kind."""
    root = tmp_path_factory.mktemp("bad_inputs") / "corpus"
    train, test, labels = root / "train", root / "test", root / "labels"
    for folder in (train, test, labels):
        folder.mkdir(parents=True)
    shutil.copy(tiny_corpus / "train" / "train_000.mp4", train / "good train 01.mp4")
    shutil.copy(tiny_corpus / "test" / "test_000.mp4", test / "tëst vidéo ü.mp4")
    shutil.copy(tiny_corpus / "labels" / "test_000.npy", labels / "tëst vidéo ü.npy")
    write_resolution_change(train / "size_change.mkv", [(30, 48, 64), (30, 64, 80)])
    stream = write_video(train / ".full.mkv", 64).read_bytes()
    (train / "truncated_stream.mkv").write_bytes(stream[: int(len(stream) * 0.6)])
    (train / ".full.mkv").unlink()
    (train / "zero.mp4").write_bytes(b"")
    (train / "random.avi").write_bytes(np.random.default_rng(0).bytes(8192))
    (train / "notes.mp4").write_text("meeting notes, not a video\n" * 40)
    (train / "README.txt").write_text("not an input: the folder format only reads video files and frame folders\n")
    write_video(train / "one_frame.mp4", 1)
    mp4 = (tiny_corpus / "test" / "test_001.mp4").read_bytes()
    (test / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])
    write_video(test / "short.mp4", 10)
    write_frames(test / "bad_first", [(40, 48)] * 20)
    (test / "bad_first" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_frames(test / "bad_image", [(40, 48)] * 20)
    (test / "bad_image" / "7.png").write_bytes(b"")
    write_frames(test / "size_change_frames", [(40, 48)] * 18 + [(20, 20)] * 2)
    shutil.copy(tiny_corpus / "test" / "test_001.mp4", test / "labels_wrong.mp4")
    np.save(labels / "labels_wrong.npy", np.zeros(50, np.uint8))  # the video decodes to 64 frames
    return root


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def ingested(ray_local: None, corpus: Path) -> dict[str, Any]:
    """The ingest CLI (in this process, on the session Ray), run once; its exit code and printed output."""
    spec = importlib.util.spec_from_file_location("ingest_job", REPO / "jobs" / "ingest.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = corpus.parent / "store"
    before = _tree(corpus)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = job.main(
            ["--dataset", "folder", "--root", str(corpus), "--out", str(out), "--spec", "luss_ae"]
            + ["--size", "x".join(map(str, SIZE)), "--segment-frames", str(SEGMENT_FRAMES)]
        )
    return {"out": str(out), "code": code, "stdout": printed.getvalue(), "input_unchanged": _tree(corpus) == before}


def test_ingest_exit_code_and_printed_summary(ingested: dict[str, Any]) -> None:
    assert ingested["code"] == 0
    lines = ingested["stdout"].splitlines()
    frames = [r["num_frames"] for r in read_manifest(ingested["out"]).to_pylist()]
    segments = sum(len(segment_starts(n, LUSS_SPEC)) for n in frames)
    expected = f"{len(GOOD)} videos ok, {len(BAD)} quarantined, {sum(frames)} frames in {segments} segments"
    assert lines[-1] == f"[ingest] {ingested['out']}: {expected}", lines
    for video_id, (stage, _) in BAD.items():
        assert any(line.startswith(f"[ingest] quarantined {video_id} ({stage}): ") for line in lines), video_id
    assert ingested["input_unchanged"]  # ingest only reads the corpus


def test_each_bad_kind_is_quarantined_with_its_reason(ingested: dict[str, Any], corpus: Path) -> None:
    rows = {r["video_id"]: r for r in read_quarantine(ingested["out"]).to_pylist()}
    assert sorted(rows) == sorted(BAD), "README.txt is not an input; everything else bad is quarantined"
    for video_id, (stage, reason) in BAD.items():
        row = rows[video_id]
        assert row["stage"] == stage, (video_id, row)
        assert re.search(reason, row["error"]), (video_id, row["error"])
        assert Path(row["uri"]).parent.parent == corpus
    meta = read_store_metadata(ingested["out"])
    assert meta["counts"]["videos"] == len(GOOD) and meta["counts"]["quarantined"] == len(BAD)


def test_usable_videos_are_stored_completely(ingested: dict[str, Any], corpus: Path) -> None:
    out = ingested["out"]
    manifest = {r["video_id"]: r for r in read_manifest(out).to_pylist()}
    assert sorted(manifest) == GOOD
    assert manifest["size_change"]["num_frames"] == 60
    assert (manifest["size_change"]["height"], manifest["size_change"]["width"]) == (48, 64)  # the first frame's
    assert 0 < manifest["truncated_stream"]["num_frames"] < 64
    assert manifest["good train 01"]["num_frames"] == manifest["tëst vidéo ü"]["num_frames"] == 64
    stored: dict[str, dict[int, np.ndarray]] = {}
    for row in read_clip_store(out).take_all():
        stored.setdefault(row["video_id"], {})[int(row["start_frame"])] = row["frames"]
    for video_id, video in manifest.items():
        overlap = LUSS_SPEC.effective_overlap
        starts = sorted(stored[video_id])
        assert starts == segment_starts(video["num_frames"], LUSS_SPEC), video_id
        frames = np.concatenate([stored[video_id][starts[0]]] + [stored[video_id][s][overlap:] for s in starts[1:]])
        expected = np.concatenate(list(iter_frames(video["uri"], *SIZE, 1)))
        np.testing.assert_array_equal(frames, expected, err_msg=video_id)
    np.testing.assert_array_equal(read_labels(out)["tëst vidéo ü"], np.load(corpus / "labels" / "tëst vidéo ü.npy"))


@pytest.fixture(scope="module")
def scored(ingested: dict[str, Any], luss_checkpoint: str) -> tuple[str, dict[str, Any]]:
    out = str(Path(ingested["out"]).parent / "scores")
    return out, score(luss_checkpoint, ingested["out"], out, ScoreConfig(split=None))


def test_every_usable_video_is_scored_and_quarantine_reported(
    scored: tuple[str, dict[str, Any]], ingested: dict[str, Any]
) -> None:
    out, summary = scored
    assert summary["videos_scored"] == len(GOOD) and not summary["videos_failed"]
    assert not summary["videos_without_windows"]
    for video in read_manifest(ingested["out"]).to_pylist():
        table = pq.read_table(score_file_uri(out, video["dataset"], video["video_id"]))
        assert table.column("frame_idx").to_pylist() == list(range(video["num_frames"])), video["video_id"]
        assert np.isfinite(table.column("score").to_numpy()).all()
    assert len(list(Path(out, "scores").rglob("*.parquet"))) == len(GOOD)
    written = json.loads(Path(out, "summary.json").read_text())
    assert {q["video_id"]: q["stage"] for q in written["quarantined_at_ingest"]} == {k: v[0] for k, v in BAD.items()}


@pytest.fixture(scope="module")
def extracted(ray_local: None, corpus: Path) -> tuple[str, str]:
    """The same corpus ingested with the i3d spec (RGB, no overlap) and extracted with a tiny random backbone."""
    clips, features = str(corpus.parent / "i3d_clips"), str(corpus.parent / "i3d_features")
    build_clip_store("folder", str(corpus), clips, "i3d", size=(I3D_CFG.height, I3D_CFG.width), segment_frames=32)
    extract_features(clips, features, cfg=I3D_CFG, opts=ExtractOptions(random_init=True, batch_size=4))
    return clips, features


def test_extraction_covers_every_usable_video_and_carries_the_quarantine(extracted: tuple[str, str]) -> None:
    clips, features = extracted
    stages = {r["video_id"]: r["stage"] for r in read_quarantine(clips).to_pylist()}
    assert stages == {k: v[0] for k, v in BAD.items()}  # the same inputs fail, whatever the frame spec
    assert {r["video_id"]: r["stage"] for r in read_quarantine(features).to_pylist()} == stages
    snippets: dict[str, list[int]] = {}
    for row in read_store(features, columns=["video_id", "snippet_idx", "features"]).take_all():
        snippets.setdefault(row["video_id"], []).append(int(row["snippet_idx"]))
        assert np.isfinite(row["features"]).all()
    for video in read_manifest(clips).to_pylist():
        count = video["num_frames"] // I3D_CFG.snippet_frames
        assert sorted(snippets[video["video_id"]]) == list(range(count)), video["video_id"]
    assert sorted(snippets) == GOOD
