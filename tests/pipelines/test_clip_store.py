"""Clip store end to end on real local Ray: coverage, exact pixels, windows, quarantine, S3 and the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import decord
import numpy as np
import pytest

from pipelines import storage
from pipelines.clip_store import build_clip_store, decode_segments, read_clip_store, segment_starts
from pipelines.datasets import DatasetAdapter, VideoEntry
from pipelines.decode import iter_frames, resize_frames
from pipelines.stores import (
    StoreError,
    StoreExistsError,
    read_labels,
    read_manifest,
    read_quarantine,
    read_store_metadata,
)
from pipelines.windows import segment_windows
from vad_models.base import FrameSpec, register_frame_spec

SPEC = register_frame_spec("test_gray", FrameSpec(32, 32, 1, window=5, segment_frames=16))  # overlap 4
REPO = Path(__file__).resolve().parents[2]

# input name -> expected quarantine stage(s) (None: must be stored intact)
EXPECTED = {
    "train_000": None,
    "train_001": None,
    "frames_ok": None,
    "zero": "probe",
    "not a video": "probe",
    "unreadable_frames": "probe",
    "test_000": None,
    "test_001": None,
    "test_002": None,
    "café 2 ü": None,
    "truncated": "probe",
    "corrupt": ("probe", "decode"),  # depends on whether frame 0 (read by the probe) is damaged
    "broken_frames": "decode",
    "short": "length",
    "labels_wrong": "labels",
}


def _write_frames(folder: Path, count: int, ext: str = ".png") -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        img = np.full((40, 48, 3), (i * 11) % 256, np.uint8)
        img[5:15, i % 30 : i % 30 + 10] = 255
        assert cv2.imwrite(str(folder / f"{i}{ext}"), img)
    return folder


@pytest.fixture(scope="module")
def corpus(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic corpus (folder format) plus one input of every bad kind and two extra good ones."""
    root = tmp_path_factory.mktemp("ingest") / "corpus"
    shutil.copytree(tiny_corpus, root)
    train, test, labels = root / "train", root / "test", root / "labels"
    (train / "zero.mp4").write_bytes(b"")
    (train / "not a video.mp4").write_text("this is not a video\n" * 20)
    unreadable = train / "unreadable_frames"
    unreadable.mkdir()
    for i in range(3):
        (unreadable / f"{i}.jpg").write_bytes(b"")
    _write_frames(train / "frames_ok", 21, ".jpg")
    data = (test / "test_000.mp4").read_bytes()
    (test / "truncated.mp4").write_bytes(data[: len(data) // 2])
    scrambled = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 2000):  # damaged compressed frames in an intact container
        scrambled[i] = (scrambled[i] * 7 + 13) % 256
    (test / "corrupt.mp4").write_bytes(bytes(scrambled))
    broken = _write_frames(test / "broken_frames", 70)  # fails at frame 60, after two full segments decoded
    (broken / "60.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _write_frames(test / "short", 3)  # fewer frames than one window (5)
    shutil.copy(test / "test_001.mp4", test / "labels_wrong.mp4")
    np.save(labels / "labels_wrong.npy", np.zeros(50, np.uint8))  # the video decodes to 64 frames
    shutil.copy(test / "test_002.mp4", test / "café 2 ü.mp4")
    shutil.copy(labels / "test_002.npy", labels / "café 2 ü.npy")
    return root


@pytest.fixture(scope="module")
def store(ray_local: None, corpus: Path) -> tuple[str, object]:
    out = str(corpus.parent / "store")
    summary = build_clip_store("folder", str(corpus), out, "test_gray")
    return out, summary


@pytest.fixture(scope="module")
def videos(store: tuple[str, object]) -> dict[str, list[tuple[int, np.ndarray]]]:
    """video_id -> [(start_frame, frames)] sorted, read back through the public reader."""
    out, _ = store
    grouped: dict[str, list[tuple[int, np.ndarray]]] = {}
    for row in read_clip_store(out).take_all():
        grouped.setdefault(row["video_id"], []).append((int(row["start_frame"]), row["frames"]))
        assert row["num_frames"] == len(row["frames"])
    return {k: sorted(v, key=lambda s: s[0]) for k, v in grouped.items()}


def _assemble(segments: list[tuple[int, np.ndarray]], overlap: int) -> np.ndarray:
    """The whole video from its segments, checking starts and that shared frames are equal."""
    assert segments[0][0] == 0
    full = segments[0][1]
    for start, frames in segments[1:]:
        assert start == len(full) - overlap
        np.testing.assert_array_equal(frames[:overlap], full[len(full) - overlap :])
        full = np.concatenate([full, frames[overlap:]])
    return full


def _reference(uri: str, spec: FrameSpec) -> np.ndarray:
    """A direct decode of the whole input: decord for video files, OpenCV for frame folders; same resize."""
    if uri.endswith(".mp4"):
        reader = decord.VideoReader(uri, num_threads=1)
        frames = reader.get_batch(list(range(len(reader)))).asnumpy()
        return resize_frames(frames, spec.height, spec.width, spec.channels)
    return np.concatenate(list(iter_frames(uri, spec.height, spec.width, spec.channels)))


def test_summary_and_quarantine(store: tuple[str, object]) -> None:
    out, summary = store
    good = sorted(k for k, v in EXPECTED.items() if v is None)
    bad = {k: v for k, v in EXPECTED.items() if v is not None}
    assert (summary.videos_ok, summary.videos_quarantined) == (len(good), len(bad))
    assert summary.frames == 6 * 64 + 21 and not summary.all_failed
    quarantine = {r["video_id"]: r for r in read_quarantine(out).to_pylist()}
    assert sorted(quarantine) == sorted(bad)
    for video_id, stage in bad.items():
        assert quarantine[video_id]["stage"] in (stage if isinstance(stage, tuple) else (stage,)), video_id
    assert "shorter than one window of 5 frames" in quarantine["short"]["error"]
    assert "50 frame labels" in quarantine["labels_wrong"]["error"]
    assert "decodes to 64 frames" in quarantine["labels_wrong"]["error"]
    assert "60.png" in quarantine["broken_frames"]["error"]
    assert quarantine["truncated"]["uri"].endswith("test/truncated.mp4")
    assert sorted(read_manifest(out).column("video_id").to_pylist()) == good


def test_every_frame_stored_once_and_equal_to_a_direct_decode(store, videos, corpus: Path) -> None:
    out, summary = store
    manifest = {r["video_id"]: r for r in read_manifest(out).to_pylist()}
    assert sorted(videos) == sorted(manifest)  # quarantined videos left no segment behind
    for video_id, segments in videos.items():
        row = manifest[video_id]
        assert [s for s, _ in segments] == segment_starts(row["num_frames"], SPEC)
        full = _assemble(segments, SPEC.effective_overlap)
        assert full.shape == (row["num_frames"], 32, 32, 1) and full.dtype == np.uint8
        np.testing.assert_array_equal(full, _reference(row["uri"], SPEC), err_msg=video_id)
    assert sum(len(s) for s in videos.values()) == summary.segments


def test_windows_cover_every_valid_start_exactly_once(videos) -> None:
    for video_id, segments in videos.items():
        full = _assemble(segments, SPEC.effective_overlap)
        starts = []
        for start, frames in segments:
            windows, window_starts = segment_windows(frames, start, SPEC.window)
            np.testing.assert_array_equal(windows[-1], full[window_starts[-1] : window_starts[-1] + SPEC.window])
            starts += window_starts.tolist()
        assert starts == list(range(len(full) - SPEC.window + 1)), video_id


def test_manifest_labels_and_metadata(store, corpus: Path) -> None:
    out, summary = store
    manifest = {r["video_id"]: r for r in read_manifest(out).to_pylist()}
    assert manifest["test_000"]["fps"] == 25.0 and np.isnan(manifest["frames_ok"]["fps"])
    assert (manifest["frames_ok"]["height"], manifest["frames_ok"]["width"]) == (40, 48)
    assert manifest["train_000"]["video_label"] == 0 and manifest["test_001"]["video_label"] == 1
    assert manifest["café 2 ü"]["split"] == "test" and manifest["café 2 ü"]["video_label"] == 1
    labels = read_labels(out)
    assert sorted(labels) == ["café 2 ü", "test_000", "test_001", "test_002"]
    for video_id, values in labels.items():
        np.testing.assert_array_equal(values, np.load(corpus / "labels" / f"{video_id}.npy"))
    meta = read_store_metadata(out)
    assert meta["store"] == "clips" and meta["spec_name"] == "test_gray"
    assert meta["frame_spec"] == {
        "height": 32,
        "width": 32,
        "channels": 1,
        "window": 5,
        "segment_frames": 16,
        "overlap": None,
        "effective_overlap": 4,
    }
    assert (meta["segment_frames"], meta["overlap"], meta["splits"]) == (16, 4, ["train", "test"])
    assert "decord" in meta["decoder"]["video"] and meta["package_version"]
    assert len(meta["source"]["manifest_sha256"]) == 64 and meta["source"]["num_videos"] == len(EXPECTED)
    assert meta["counts"]["segments"] == summary.segments and meta["created"]


def test_split_reader_and_refusals(store, corpus: Path) -> None:
    out, _ = store
    rows = read_clip_store(out, split="train").select_columns(["video_id", "split"]).take_all()
    assert {r["video_id"] for r in rows} == {"train_000", "train_001", "frames_ok"}
    assert {r["split"] for r in rows} == {"train"}
    with pytest.raises(StoreExistsError, match="--overwrite"):
        build_clip_store("folder", str(corpus), out, "test_gray")
    assert read_store_metadata(out)["spec_name"] == "test_gray"  # the refusal left the store alone
    storage.write_json_atomic(str(corpus.parent / "tubes" / "_store.json"), {"store": "tubes"})
    with pytest.raises(StoreError, match="not a clip store"):
        read_clip_store(str(corpus.parent / "tubes"))


def test_write_pass_fails_loudly_when_a_video_changed(corpus: Path) -> None:
    """The write pass re-checks the validated frame count: no store is committed with a partial video."""
    row = {"video_id": "v", "dataset": "folder", "split": "train", "fps": 25.0, "num_frames": 60}
    row["uri"] = str(corpus / "train" / "train_000.mp4")
    with pytest.raises(RuntimeError, match="decoded to 64 frames in the write pass but 60 when validated"):
        list(decode_segments(row, SPEC))
    row["uri"] = str(corpus / "test" / "broken_frames")
    with pytest.raises(RuntimeError, match="failed in the write pass after validating: DecodeError"):
        list(decode_segments(row, SPEC))


def _load_job():
    spec = importlib.util.spec_from_file_location("ingest_job", REPO / "jobs" / "ingest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_failed_exits_2_then_overwrite_replaces(ray_local: None, corpus: Path, tmp_path: Path, capsys) -> None:
    job = _load_job()
    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    shutil.copy(corpus / "train" / "zero.mp4", bad / "train" / "a.mp4")
    shutil.copy(corpus / "train" / "not a video.mp4", bad / "train" / "b.mp4")
    out = str(tmp_path / "store")
    args = ["--dataset", "folder", "--root", str(bad), "--out", out, "--spec", "test_gray", "--splits", "train"]
    assert job.main(args) == 2
    printed = capsys.readouterr().out
    assert "0 videos ok, 2 quarantined" in printed and "quarantined a (probe)" in printed
    assert read_quarantine(out).num_rows == 2
    with pytest.raises(StoreError, match="holds no rows"):
        read_clip_store(out)

    good = ["--root", str(corpus), "--splits", "train", "--limit", "1"]
    with pytest.raises(SystemExit) as refused:
        job.main([*args, *good])
    assert refused.value.code == 1 and "--overwrite" in capsys.readouterr().err

    # Overwrite with another spec geometry, through an adapter instance (as archive scoring does).
    listing = _Listing([VideoEntry("cam 1", str(corpus / "train" / "train_000.mp4"), "test", -1)])
    summary = build_clip_store(
        listing, str(corpus), out, "test_gray", size=(16, 24), segment_frames=8, splits=("test",), overwrite=True
    )
    assert (summary.videos_ok, summary.videos_quarantined, summary.frames) == (1, 0, 64)
    meta = read_store_metadata(out)
    assert (meta["frame_spec"]["height"], meta["frame_spec"]["width"], meta["segment_frames"]) == (16, 24, 8)
    assert meta["datasets"] == ["listing"] and meta["splits"] == ["test"]
    assert read_quarantine(out).num_rows == 0  # the old store was deleted, not mixed with the new one
    rows = read_clip_store(out).take_all()
    assert {(r["video_id"], r["dataset"], r["frames"].shape[1:]) for r in rows} == {("cam 1", "listing", (16, 24, 1))}


class _Listing(DatasetAdapter):
    name = "listing"
    expected_tree = "(explicit list)"

    def __init__(self, entries: list[VideoEntry]) -> None:
        self._entries = entries

    def entries(self, root: str, splits=("test",)) -> list[VideoEntry]:
        return [e for e in self._entries if e.split in splits]


def test_cli_s3_round_trip(ray_local: None, s3_bucket: str, tiny_corpus: Path) -> None:
    """Subprocess CLI (embedded Ray, --num-cpus 2) from an s3:// corpus to an s3:// store, read back here."""
    files = ["train/train_000.mp4", "test/test_000.mp4", "labels/test_000.npy", "video_labels.json"]
    for rel in files:
        storage.write_bytes_atomic(f"{s3_bucket}/corpus/{rel}", (tiny_corpus / rel).read_bytes())
    out = f"{s3_bucket}/stores/luss"
    cmd = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--dataset", "folder", "--root", f"{s3_bucket}/corpus"]
    cmd += ["--out", out, "--spec", "luss_ae", "--size", "32x32", "--segment-frames", "24", "--num-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"[ingest] {out}: 2 videos ok, 0 quarantined, 128 frames in 12 segments" in done.stdout

    spec = FrameSpec(32, 32, 1, window=17, segment_frames=24)
    grouped: dict[str, list] = {}
    for row in read_clip_store(out).take_all():
        grouped.setdefault(row["video_id"], []).append((int(row["start_frame"]), row["frames"]))
    for video_id, rel in (("train_000", "train/train_000.mp4"), ("test_000", "test/test_000.mp4")):
        full = _assemble(sorted(grouped[video_id], key=lambda s: s[0]), spec.effective_overlap)
        np.testing.assert_array_equal(full, _reference(str(tiny_corpus / rel), spec))
    np.testing.assert_array_equal(read_labels(out)["test_000"], np.load(tiny_corpus / "labels" / "test_000.npy"))
    assert read_manifest(out).column("uri").to_pylist() == [f"{s3_bucket}/corpus/{r}" for r in files[:2]]
    assert json.loads(storage.read_text(f"{out}/_store.json"))["spec_name"] == "luss_ae"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 1 and "pass --overwrite" in again.stderr
