"""Clip store end to end on real local Ray: coverage, exact pixels, windows, quarantine, S3 and the CLI."""

from __future__ import annotations

import dataclasses
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
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import clip_store, storage
from pipelines.clip_store import build_clip_store, read_clip_store, segment_starts, stage_video
from pipelines.datasets import DatasetAdapter, VideoEntry, get_dataset
from pipelines.decode import iter_frames, iter_segments, resize_frames
from pipelines.stores import (
    StoreError,
    StoreExistsError,
    decode_frames,
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
    assert meta["frames_encoding"] == "raw_uint8" and meta["parquet"]["compression"] == "zstd level 1"
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


def _store_files(out: str) -> list[str]:
    """Every file under a store (hidden temporaries included), relative to it."""
    return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*") if p.is_file())


def _video_ids(uri: str) -> set[str]:
    with storage.local_copy(uri) as path:
        return set(pq.read_table(path, columns=["video_id"]).column("video_id").to_pylist())


def test_rejected_inputs_leave_no_file_and_nothing_is_left_staged(store) -> None:
    """Bad inputs of every stage (probe, decode part-way, length, labels) leave nothing in data/ or elsewhere."""
    out, _ = store
    files = _store_files(out)
    meta = {"_store.json", "manifest.parquet", "labels.parquet", "quarantine.parquet"}
    assert meta <= set(files)
    data = [f for f in files if f not in meta]
    assert data and all(f.startswith("data/dataset=folder/split=") and f.endswith(".parquet") for f in data), files
    stored = set().union(*(_video_ids(str(Path(out) / f)) for f in data))
    assert stored == {k for k, v in EXPECTED.items() if v is None}
    assert all(len(_video_ids(str(Path(out) / f))) == 1 for f in data)  # one video per part file
    assert not Path(out, "_staging").exists()


def test_stage_video_streams_parts_and_discards_a_failed_video(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    """One decode: the staged parts hold exactly iter_segments' rows; a part-way failure deletes what it wrote."""
    monkeypatch.setattr(clip_store, "_PART_BYTES", 2 * 16 * 32 * 32)  # a new part every 2 segments
    uri = str(corpus / "train" / "train_000.mp4")
    prefix = str(tmp_path / "staging" / "000007")
    row = stage_video({"video_id": "v", "uri": uri, "staging": prefix}, SPEC)
    assert (row["ok"], row["stage"], row["num_frames"], row["fps"]) == (True, "", 64, 25.0)
    assert row["parts"] == 3 and (row["height"], row["width"]) == (64, 64)
    names = sorted(p.name for p in (tmp_path / "staging").iterdir())
    assert names == ["000007_000.parquet", "000007_001.parquet", "000007_002.parquet"]
    table = pa.concat_tables(pq.read_table(tmp_path / "staging" / n) for n in names)
    assert table.column_names == ["video_id", "start_frame", "num_frames", "fps", "frames"]
    assert pq.ParquetFile(tmp_path / "staging" / names[0]).metadata.num_row_groups == 2  # one segment each
    expected = list(iter_segments(uri, SPEC))
    assert table.column("start_frame").to_pylist() == [s for s, _ in expected]
    assert table.schema.field("frames").type == pa.large_binary()  # raw uint8 bytes, one value per segment
    assert table.column("num_frames").to_pylist() == [len(f) for _, f in expected]
    for value, (_, want) in zip(table.column("frames").to_pylist(), expected, strict=True):
        assert value == want.tobytes()
    frames = decode_frames(table.column("frames"), (32, 32, 1)).combine_chunks().to_numpy()
    for got, (_, want) in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got, want)

    prefix = str(tmp_path / "failed" / "000001")
    broken = {"video_id": "b", "uri": str(corpus / "test" / "broken_frames"), "staging": prefix}
    row = stage_video(broken, SPEC)
    assert (row["ok"], row["stage"], row["parts"]) == (False, "decode", 0) and "60.png" in row["error"]
    assert list((tmp_path / "failed").iterdir()) == []  # two parts were written before frame 60 failed
    missing = {"video_id": "m", "uri": str(corpus / "train" / "zero.mp4"), "staging": prefix}
    assert stage_video(missing, SPEC)["stage"] == "probe"


@pytest.mark.parametrize(("compression", "codec"), [("none", "UNCOMPRESSED"), ("zstd:-3", "ZSTD"), ("lz4", "LZ4")])
def test_a_faster_codec_stores_the_same_frames(compression: str, codec: str, corpus: Path, tmp_path: Path) -> None:
    """--compression trades store size for write speed; the frames read back are the default store's, bit for bit."""
    uri = str(corpus / "train" / "train_000.mp4")
    rows = {}
    for name in ("zstd:1", compression):
        prefix = str(tmp_path / name.replace(":", "_") / "000000")
        assert stage_video({"video_id": "v", "uri": uri, "staging": prefix}, SPEC, compression=name)["ok"]
        rows[name] = pq.read_table(f"{prefix}_000.parquet")
    assert rows[compression].equals(rows["zstd:1"])
    written = pq.ParquetFile(tmp_path / compression.replace(":", "_") / "000000_000.parquet")
    assert written.metadata.row_group(0).column(4).compression == codec  # the frames column


def test_bad_compressions_are_refused_with_the_choices() -> None:
    assert clip_store.parquet_compression("zstd") == {"compression": "zstd", "compression_level": 1}
    for text, message in [
        ("brotli", "use zstd"),
        ("zstd:23", "-7..22"),
        ("zstd:fast", "integer"),
        ("none:3", "takes no level"),
    ]:
        with pytest.raises(ValueError, match=message):
            clip_store.parquet_compression(text)
    with pytest.raises(ValueError, match="use zstd"):  # before anything is listed, decoded or written
        build_clip_store("folder", "unused", "unused", SPEC, compression="gzip")


_MEASURE = """
import json, sys, tracemalloc
import pyarrow as pa
from types import SimpleNamespace
from pipelines.clip_store import stage_video

spec = SimpleNamespace(height=128, width=128, channels=1, segment_frames=128, effective_overlap=16, window=17)
tracemalloc.start()
row = stage_video({"video_id": "v", "uri": sys.argv[1], "staging": sys.argv[2]}, spec)
peaks = {"numpy": tracemalloc.get_traced_memory()[1], "arrow": pa.default_memory_pool().max_memory()}
print(json.dumps(dict(peaks, frames=row["num_frames"])))
"""


def test_staging_memory_does_not_grow_with_video_length(tmp_path: Path) -> None:
    """3,000 frames vs 300: the peaks of numpy (tracemalloc) and Arrow (its pool) allocations stay the same.

    Holding the whole video would add 49 MB of 128x128 output frames to peaks of a few segments (2 MB each).
    """
    from tests.reliability.media import write_video

    results = {}
    for n in (300, 3000):
        video = write_video(tmp_path / f"v{n}.mp4", n, 64, 64)
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(video), str(tmp_path / f"staging{n}" / "000000")],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
            cwd=REPO,
        )
        results[n] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results[300]["frames"] == 300 and results[3000]["frames"] == 3000
    for kind in ("numpy", "arrow"):
        assert results[3000][kind] / results[300][kind] < 1.5, results


_DECODE_TASK = """
import pickle, sys
from pipelines.clip_store import stage_video

spec = pickle.loads(bytes.fromhex(sys.argv[3]))  # as a Ray decode task receives it
row = stage_video({"video_id": "v", "uri": sys.argv[1], "staging": sys.argv[2]}, spec)
print(row["ok"], row["num_frames"], "torch" in sys.modules)
"""


def test_a_decode_task_does_not_import_torch(tmp_path: Path) -> None:
    """Ingest workers decode and write Parquet only: torch would cost each one about 1.3 s and 180 MB of RSS."""
    import pickle

    from tests.reliability.media import write_video

    video = write_video(tmp_path / "v.mp4", 40, 32, 32)
    staging = str(tmp_path / "staging" / "000000")
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_TASK, str(video), staging, pickle.dumps(SPEC).hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.stdout.split() == ["True", "40", "False"], done.stdout + done.stderr


def _waiting_stage(row: dict, spec: object, compression: str) -> dict:
    """A decode task that only waits: when it runs depends on Ray Data's scheduling, not on the machine's load."""
    import time

    started = time.time()
    time.sleep(0.4)
    return dict(row, started=started, ended=time.time())


def test_decode_tasks_run_on_every_cpu_at_once(ray_local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Data's per-operator reservation kept one of the session's 2 CPUs idle for most of a build (measured:
    two tasks overlapped for a quarter of it); the staging dataset switches it off."""
    monkeypatch.setattr(clip_store, "stage_video", _waiting_stage)
    rows = [{"video_id": f"v{i}", "uri": "unused", "staging": "unused"} for i in range(8)]
    done = clip_store._run_staging(rows, SPEC)
    events = sorted([(r["started"], 1) for r in done] + [(r["ended"], -1) for r in done])
    running, last, both = 0, events[0][0], 0.0
    for when, change in events:
        both += when - last if running >= 2 else 0.0
        running, last = running + change, when
    span = events[-1][0] - events[0][0]
    assert both >= 0.5 * span, f"two tasks ran together for {both:.2f} s of {span:.2f} s"


def test_s3_store_commits_good_videos_only(ray_local: None, s3_bucket: str, corpus: Path) -> None:
    """On S3 (no rename): staged parts are copied into data/, rejected ones deleted, nothing left in _staging."""
    bad = {"broken_frames": "decode", "short": "length", "labels_wrong": "labels", "truncated": "probe"}
    entries = {e.video_id: e for e in get_dataset("folder").entries(str(corpus), ("train", "test"))}
    listing = _Listing([dataclasses.replace(entries[v], split="test") for v in ["test_000", "train_001", *bad]])
    out = f"{s3_bucket}/stores/clips"
    summary = build_clip_store(listing, str(corpus), out, "test_gray", segment_frames=24)
    assert (summary.videos_ok, summary.videos_quarantined) == (2, len(bad))
    assert {r["video_id"]: r["stage"] for r in summary.quarantine} == bad
    files = [f[len(out) + 1 :] for f in storage.list_files(out)]
    data = [f for f in files if f.startswith("data/")]
    assert sorted(set(files) - set(data)) == ["_store.json", "labels.parquet", "manifest.parquet", "quarantine.parquet"]
    assert all(f.startswith("data/dataset=listing/split=test/") for f in data) and len(data) == 2
    spec = FrameSpec(32, 32, 1, window=5, segment_frames=24)
    grouped: dict[str, list] = {}
    for row in read_clip_store(out).take_all():
        grouped.setdefault(row["video_id"], []).append((int(row["start_frame"]), row["frames"]))
    assert sorted(grouped) == ["test_000", "train_001"]
    for video_id, rel in (("test_000", "test/test_000.mp4"), ("train_001", "train/train_001.mp4")):
        segments = sorted(grouped[video_id], key=lambda s: s[0])
        assert [s for s, _ in segments] == [s for s, _ in iter_segments(str(corpus / rel), spec)]
        np.testing.assert_array_equal(_assemble(segments, 4), _reference(str(corpus / rel), spec))


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
    """Subprocess CLI (embedded Ray, --num-cpus 2, --compression) from an s3:// corpus to an s3:// store, read back."""
    files = ["train/train_000.mp4", "test/test_000.mp4", "labels/test_000.npy", "video_labels.json"]
    for rel in files:
        storage.write_bytes_atomic(f"{s3_bucket}/corpus/{rel}", (tiny_corpus / rel).read_bytes())
    out = f"{s3_bucket}/stores/luss"
    cmd = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--dataset", "folder", "--root", f"{s3_bucket}/corpus"]
    cmd += ["--out", out, "--spec", "luss_ae", "--size", "32x32", "--segment-frames", "24", "--num-cpus", "2"]
    cmd += ["--compression", "zstd:-3"]  # a faster codec than the default: same frames, recorded in _store.json
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
    meta = json.loads(storage.read_text(f"{out}/_store.json"))
    assert meta["spec_name"] == "luss_ae" and meta["parquet"]["compression"] == "zstd level -3"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 1 and "pass --overwrite" in again.stderr
