"""Clip-store ingest throughput: ``build_clip_store`` on local Ray (1 and 2 CPUs) vs two baselines.

What is compared, on the same videos and the same pinned cores (see ``bench/common.py``):

* **ours**: :func:`pipelines.clip_store.build_clip_store` (one decode pass per video into staged Parquet parts,
  committed to the hive partitions once the video decoded and passed the checks; one Ray task per video), spec
  ``luss_ae`` (gray, 256x256 by default, 128-frame segments overlapping by 16).
* **(a) plain decord**: one process, one core, ``VideoReader(num_threads=1)``, the same full-resolution decode +
  ``RGB2GRAY`` + ``INTER_AREA`` resize, 32-frame ``get_batch`` chunks. Ours on N cores is compared with N x (a).
  Variants of (a) measure what decord's decode-time resize, 256-frame chunks and the Parquet write cost or save.
* **(b) Ray Data read_videos**: ``ray.data.read_videos(paths, resize=(H, W))`` (one row per frame, decord with
  its default threads) + gray + the same overlapping segments per video (``groupby(path).map_groups``) + Parquet.

Inputs: the ``bench`` synthetic preset, split into a "<=480p" view (the 128x128 videos and the 854x480 one) and
an "HD" view (the 1920x1080 video), so the per-core target at <=480p is measured on its own.

Run: ``.venv/bin/python bench/ingest.py [--quick | --smoke] [--size 256x256]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench import common

NAME = "ingest"
SPEC = "luss_ae"
VIEWS = ("le480", "hd")
VIEW_TITLES = {"le480": "<=480p", "hd": "1080p"}
BASELINE = "decode32"  # the (a) variant the ratios use: the pipeline's own decode path, plain


@dataclass(frozen=True)
class Plan:
    """Inputs and repetitions of one mode."""

    preset: str
    size: tuple[int, int]
    cpus: tuple[int, ...]
    small_videos: int | None  # how many sub-480p videos the <=480p view keeps (None: all)
    variants: tuple[str, ...]
    read_videos: bool = True
    repeat: int = 4  # steady state: the <=480p view with each video linked this many times (0: skip)


PLANS = {
    "smoke": Plan("tiny", (32, 32), (1,), 2, ("decode32", "decode256", "resize_at_decode", "decode32_write"), repeat=0),
    "quick": Plan("bench", (256, 256), (1, 2), 2, ("decode32", "decode256", "resize_at_decode", "decode32_write")),
    "full": Plan(
        "bench",
        (256, 256),
        (1, 2),
        None,
        ("decode32", "decode256", "resize_at_decode", "resize_at_decode256", "decode32_write"),
    ),
}

VARIANT_NOTES = {
    "decode32": "full-resolution decode, 32-frame get_batch, RGB2GRAY + INTER_AREA (the pipeline's decode path)",
    "decode256": "as decode32 with 256-frame get_batch chunks",
    "resize_at_decode": "decord VideoReader(width=, height=) resize during decode, 32-frame chunks, then RGB2GRAY",
    "resize_at_decode256": "decode-time resize with 256-frame chunks",
    "decode32_write": "decode32 + overlapping segments + one Parquet file per video (pyarrow, the store's codec)",
}


# ------------------------------------------------------------------------------------------------ inputs


def _probe_height(path: Path) -> int:
    from pipelines.decode import probe

    return probe(str(path)).height


def build_views(corpus: Path, cache: Path, plan: Plan, mode: str) -> dict[str, Path]:
    """Folder-format corpora (``VIEW/test/*.mp4``, hard links) holding the videos of each view.

    Every video goes to ``test/`` without labels: ingest speed does not depend on them, and one split keeps the
    adapter's label checks out of the measurement.
    """
    videos = sorted([*corpus.glob("train/*.mp4"), *corpus.glob("test/*.mp4")])
    if not videos:
        raise FileNotFoundError(f"no .mp4 videos under {corpus}/train or {corpus}/test")
    heights = {v: _probe_height(v) for v in videos}
    small = [v for v in videos if heights[v] < 480]
    groups = {
        "le480": small[: plan.small_videos] + [v for v in videos if heights[v] == 480],
        "hd": [v for v in videos if heights[v] > 480],
    }
    views = {}
    for name, members in groups.items():
        if not members:
            continue
        root = cache / "views" / f"ingest-{mode}-{name}"
        if root.exists():
            shutil.rmtree(root)
        (root / "test").mkdir(parents=True)
        for video in members:
            target = root / "test" / f"{video.parent.name}_{video.name}"
            try:
                os.link(video, target)
            except OSError:  # another filesystem: copy once
                shutil.copy2(video, target)
        views[name] = root
    return views


def _view_videos(view: Path) -> list[Path]:
    return sorted((view / "test").glob("*.mp4"))


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.parquet"))


# ------------------------------------------------------------------------------------------------ baseline (a)


def decode_resize(path: str, height: int, width: int, chunk: int, resize_at_decode: bool) -> Iterator[np.ndarray]:
    """Plain decord loop: ``[k, height, width]`` gray uint8 chunks of one video, decoder pinned to one thread."""
    import cv2
    import decord

    extra = {"width": width, "height": height} if resize_at_decode else {}
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, **extra)
    total = len(reader)
    try:
        for first in range(0, total, chunk):
            batch = reader.get_batch(list(range(first, min(total, first + chunk)))).asnumpy()
            out = np.empty((len(batch), height, width), np.uint8)
            for i, frame in enumerate(batch):
                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
                if gray.shape != (height, width):
                    gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)
                out[i] = gray
            yield out
    finally:
        del reader


def _segments(chunks: Iterator[np.ndarray], seg_len: int, overlap: int) -> Iterator[tuple[int, np.ndarray]]:
    """Overlapping segments from a stream of chunks (same boundaries as the clip store)."""
    frames = np.concatenate(list(chunks))
    start = 0
    while True:
        yield start, frames[start : start + seg_len]
        if start + seg_len >= len(frames):
            return
        start += seg_len - overlap


def _write_parquet(path: Path, video_id: str, segments: Iterator[tuple[int, np.ndarray]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.clip_store import DEFAULT_COMPRESSION, parquet_compression  # imported by the untimed warm-up

    rows = list(segments)
    table = pa.table(
        {
            "video_id": [video_id] * len(rows),
            "start_frame": pa.array([s for s, _ in rows], pa.int64()),
            "num_frames": pa.array([len(f) for _, f in rows], pa.int64()),
            "shape": [list(f.shape) for _, f in rows],
            "frames": pa.array([f.tobytes() for _, f in rows], pa.binary()),
        }
    )
    pq.write_table(table, path, **parquet_compression(DEFAULT_COMPRESSION))  # the clip store's codec: same work


def job_plain(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker job: every (a) variant over every video, one core, no Ray."""
    height, width = payload["size"]
    seg_len, overlap = payload["segment_frames"], payload["overlap"]
    out_dir = Path(payload["scratch"])
    out_dir.mkdir(parents=True, exist_ok=True)
    # Warm-up, untimed: library initialisation and the first file open must not count against the first variant.
    first = payload["videos"][0]["path"]
    _write_parquet(
        out_dir / "warmup.parquet",
        "warmup",
        _segments(decode_resize(first, height, width, 32, False), seg_len, overlap),
    )
    runs = []
    # Variants interleaved per video, so a change of machine load mid-run does not favour one variant.
    for video in payload["videos"]:
        for variant in payload["variants"]:
            chunk = 256 if variant.endswith("256") else 32
            resize_at_decode = variant.startswith("resize_at_decode")
            record = {"variant": variant, "view": video["view"], "video": Path(video["path"]).name}
            wall0, cpu0 = time.perf_counter(), time.process_time()
            try:
                chunks = decode_resize(video["path"], height, width, chunk, resize_at_decode)
                if variant.endswith("_write"):
                    _write_parquet(
                        out_dir / f"{record['video']}.parquet", record["video"], _segments(chunks, seg_len, overlap)
                    )
                    frames = video["frames"]
                else:
                    frames = sum(len(c) for c in chunks)
            except Exception as exc:  # e.g. decord's decode-time resize rejects some sizes: a finding, not a crash
                runs.append(dict(record, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
                continue
            runs.append(
                dict(record, frames=frames, wall_s=time.perf_counter() - wall0, cpu_s=time.process_time() - cpu0)
            )
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"runs": runs}


# ------------------------------------------------------------------------------------------------ ours and (b)


def _to_gray(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data UDF: RGB frames (already resized by FFmpeg) -> ``[n, H, W, 1]`` gray."""
    import cv2

    frames = batch["frame"]
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])[..., None]
    return {"path": batch["path"], "frame_index": batch["frame_index"], "frame": gray}


def _video_segments(group: dict[str, np.ndarray], seg_len: int, overlap: int) -> dict[str, np.ndarray]:
    """Ray Data ``map_groups`` UDF: every frame row of one video -> its overlapping segment rows."""
    order = np.argsort(group["frame_index"], kind="stable")
    frames = np.stack(group["frame"])[order]
    video_id = Path(str(group["path"][0])).stem
    starts, segs = [], []
    for start, seg in _segments(iter([frames]), seg_len, overlap):
        starts.append(start)
        segs.append(seg)
    column = np.empty(len(segs), dtype=object)
    column[:] = segs
    n = len(segs)
    return {
        "video_id": np.full(n, video_id, dtype=object),
        "dataset": np.full(n, "folder", dtype=object),
        "split": np.full(n, "test", dtype=object),
        "start_frame": np.asarray(starts, np.int64),
        "num_frames": np.asarray([len(s) for s in segs], np.int64),
        "frames": column,
    }


def read_videos_ingest(paths: list[str], out: Path, size: tuple[int, int], seg_len: int, overlap: int) -> None:
    """Baseline (b): Ray Data's video reader with decode-time resize, then the clip store's windowing."""
    import ray

    ds = ray.data.read_videos(paths, resize=(int(size[0]), int(size[1])), include_paths=True)
    ds = ds.map_batches(_to_gray, batch_size=256, batch_format="numpy")
    ds = ds.groupby("path", num_partitions=len(paths)).map_groups(
        _video_segments, fn_kwargs={"seg_len": seg_len, "overlap": overlap}, batch_format="numpy"
    )
    ds.write_parquet(str(out), partition_cols=["dataset", "split"])


def job_ray(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker job: ours (and (b)) on each view with the local Ray this process started."""
    from pipelines.clip_store import build_clip_store

    size = tuple(payload["size"])
    scratch = Path(payload["scratch"])
    build = dict(size=size, splits=("test",), overwrite=True)
    # Warm-up, one small video per CPU: Ray starts its worker processes and imports decord/cv2 in each once.
    build_clip_store("folder", payload["warmup_view"], str(scratch / "warmup"), SPEC, **build)
    runs = []
    # Ours on every view first, then (b): (b) leaves worker processes to reap and a large object store behind,
    # which on the pinned cores slowed the run after it (the 1080p view measured 2 s alone and 7 s after (b)).
    for view, root in payload["views"].items():
        _settle()
        out = scratch / f"ours-{view}"
        with common.CpuClock() as clock:
            summary = build_clip_store("folder", root, str(out), SPEC, **build)
        runs.append(
            {
                "system": "ours",
                "view": view,
                "frames": summary.frames,
                "segments": summary.segments,
                "wall_s": clock.wall_s,
                "cpu_s": clock.cpu_s,
                "store_bytes": _dir_bytes(out / "data"),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
        if view == "le480" and payload.get("repeat", 0) > 1:
            _settle()
            runs.append(_repeated_run(view, Path(root), scratch, int(payload["repeat"]), build))
    for view, root in payload["views"].items() if payload["read_videos"] else ():
        _settle()
        out = scratch / f"read_videos-{view}"
        shutil.rmtree(out, ignore_errors=True)
        paths = [str(p) for p in _view_videos(Path(root))]
        with common.CpuClock() as clock:
            read_videos_ingest(paths, out, size, payload["segment_frames"], payload["overlap"])
        frames = next(r["frames"] for r in runs if r["system"] == "ours" and r["view"] == view)
        runs.append(
            {
                "system": "read_videos",
                "view": view,
                "frames": frames,
                "wall_s": clock.wall_s,
                "cpu_s": clock.cpu_s,
                "store_bytes": _dir_bytes(out),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"runs": runs}


def _settle(timeout_s: float = 30.0) -> None:
    """Wait until Ray holds no CPU for earlier work, then a second more for exiting workers to go."""
    import ray

    deadline = time.monotonic() + timeout_s
    total = ray.cluster_resources().get("CPU", 0.0)
    while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)


def _repeated_run(view: str, root: Path, scratch: Path, repeat: int, build: dict[str, Any]) -> dict[str, Any]:
    """Ours on the view at ``root`` with every video linked ``repeat`` times: ``repeat`` x the frames, same work each.

    Against the run of the view itself this gives the marginal (steady-state) rate, without the fixed cost of a
    build (pipeline start, commit, metadata), which a few seconds of video cannot amortise.
    """
    from pipelines.clip_store import build_clip_store

    repeated = scratch / "repeat-view"
    shutil.rmtree(repeated, ignore_errors=True)
    (repeated / "test").mkdir(parents=True)
    for video in _view_videos(root):
        for k in range(repeat):
            os.link(video, repeated / "test" / f"{video.stem}_r{k}{video.suffix}")
    out = scratch / "ours-repeat"
    with common.CpuClock() as clock:
        summary = build_clip_store("folder", str(repeated), str(out), SPEC, **build)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(repeated, ignore_errors=True)
    return {
        "system": "ours_repeat",
        "view": view,
        "repeat": repeat,
        "frames": summary.frames,
        "wall_s": clock.wall_s,
        "cpu_s": clock.cpu_s,
    }


JOBS = {"plain": job_plain, "ray": job_ray}


# ------------------------------------------------------------------------------------------------ driver


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be HxW (e.g. 256x256), got {text!r}") from None
    return h, w


def _video_table(views: dict[str, Path]) -> list[dict[str, Any]]:
    from pipelines.decode import probe

    rows = []
    for view, root in views.items():
        for path in _view_videos(root):
            info = probe(str(path))
            rows.append(
                {
                    "view": view,
                    "path": str(path),
                    "frames": info.num_frames,
                    "height": info.height,
                    "width": info.width,
                    "bytes": path.stat().st_size,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the ingest benchmark and write ``<results-dir>/ingest.json``; returns the result record."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--size", default=None, help="output frame size HxW (default: 256x256; smoke 32x32)")
    args, mode = common.parse_benchmark_args(parser, argv, JOBS)
    plan = PLANS[mode]
    size = _parse_size(args.size) if args.size else plan.size
    cache = Path(args.cache_dir)
    corpus = Path(args.corpus) if args.corpus else common.ensure_corpus(plan.preset, cache)
    views = build_views(corpus, cache, plan, mode)
    from vad_models.base import get_frame_spec

    spec = get_frame_spec(SPEC)
    videos = _video_table(views)
    smallest = min(views, key=lambda v: sum(r["bytes"] for r in videos if r["view"] == v))
    warmup = cache / "views" / f"ingest-{mode}-warmup"
    shutil.rmtree(warmup, ignore_errors=True)
    (warmup / "test").mkdir(parents=True)
    first = _view_videos(views[smallest])[0]
    for k in range(max(plan.cpus)):  # one video per CPU: every worker process of the timed runs is warm
        os.link(first, warmup / "test" / f"{first.stem}_w{k}{first.suffix}")

    config = {
        "plan": asdict(plan),
        "size": list(size),
        "spec": SPEC,
        "segment_frames": spec.segment_frames,
        "overlap": spec.effective_overlap,
        "corpus": str(corpus),
        "videos": videos,
        "variants": VARIANT_NOTES,
    }
    result = common.new_result(NAME, mode, config)
    print(
        f"[bench:ingest] {mode}: {len(videos)} videos, {sum(v['frames'] for v in videos)} frames -> {size}", flush=True
    )
    common_payload = {"size": size, "segment_frames": spec.segment_frames, "overlap": spec.effective_overlap}
    log_dir = cache / "logs"
    plain = common.run_worker(
        __file__,
        "plain",
        dict(common_payload, videos=videos, variants=plan.variants, scratch=str(cache / "scratch" / "ingest-plain")),
        cpus=1,
        log_dir=log_dir,
    )
    ray_runs: dict[int, list[dict[str, Any]]] = {}
    for cpus in plan.cpus:
        payload = dict(
            common_payload,
            views={k: str(v) for k, v in views.items()},
            warmup_view=str(warmup),
            read_videos=plan.read_videos,
            repeat=plan.repeat,
            scratch=str(cache / "scratch" / f"ingest-ray{cpus}"),
        )
        ray_runs[cpus] = common.run_job(
            __file__,
            "ray",
            job_ray,
            payload,
            in_process=common.ray_ready_in_process(mode),
            cpus=cpus,
            with_ray=True,
            log_dir=log_dir,
        )["runs"]
    summarize(result, videos, plain["runs"], ray_runs, size)
    path = common.finish_result(result, args.results_dir)
    print(common.format_table(common.table_rows(result)))
    print(f"[bench:ingest] wrote {path}", flush=True)
    return result


def summarize(
    result: dict[str, Any],
    videos: list[dict[str, Any]],
    plain: list[dict[str, Any]],
    ray_runs: dict[int, list[dict[str, Any]]],
    size: tuple[int, int],
) -> None:
    """Turn raw runs into measurements, ratios, targets and findings (in place)."""
    meas, comps, targets, findings = (result[k] for k in ("measurements", "comparisons", "targets", "findings"))
    views = [v for v in VIEWS if any(r["view"] == v for r in videos)]
    frames_of = {v: sum(r["frames"] for r in videos if r["view"] == v) for v in views}

    # (a) and its variants, per view.
    plain_fps: dict[tuple[str, str], float] = {}
    plain_cpu: dict[tuple[str, str], float] = {}  # frames per CPU-second
    for variant in dict.fromkeys(r["variant"] for r in plain):
        for view in views:
            runs = [r for r in plain if r["variant"] == variant and r["view"] == view]
            errors = [r["error"] for r in runs if "error" in r]
            if errors:
                meas.append(common.measurement(f"plain {variant}", "error", None, "", view=view, error=errors[0]))
                continue
            wall, cpu = sum(r["wall_s"] for r in runs), sum(r["cpu_s"] for r in runs)
            fps = common.rate(frames_of[view], wall)
            plain_fps[(variant, view)] = fps
            plain_cpu[(variant, view)] = common.rate(frames_of[view], cpu)
            meas.append(
                common.measurement(
                    f"plain {variant} 1 core",
                    "frames/s",
                    fps,
                    "frames/s",
                    view=view,
                    frames_per_cpu_s=common.rate(frames_of[view], cpu),
                )
            )
    # Per-video detail of the baseline path: decode cost grows with the source resolution.
    for r in plain:
        if r["variant"] == BASELINE and "error" not in r:
            meas.append(
                common.measurement(
                    f"plain {BASELINE} 1 core",
                    "frames/s per video",
                    common.rate(r["frames"], r["wall_s"]),
                    "frames/s",
                    video=r["video"],
                )
            )
    for view in views:
        base = plain_fps.get((BASELINE, view))
        for variant in ("decode256", "resize_at_decode", "resize_at_decode256", "decode32_write"):
            other = plain_fps.get((variant, view))
            if base and other:
                findings.append(
                    f"{VIEW_TITLES[view]}: plain {variant} runs at {other / base:.2f}x the speed of "
                    f"{BASELINE} ({VARIANT_NOTES[variant]})"
                )

    # Source and store bytes per frame.
    raw = size[0] * size[1]
    for view in views:
        source = sum(r["bytes"] for r in videos if r["view"] == view) / frames_of[view]
        meas.append(common.measurement("source file", "bytes/frame", source, "B/frame", view=view))
        meas.append(common.measurement("raw uint8 frame", "bytes/frame", float(raw), "B/frame", view=view))

    # Ours and (b), per core count and view.
    for cpus, runs in sorted(ray_runs.items()):
        all_frames, all_wall = 0, 0.0
        for view in views:
            ours = next((r for r in runs if r["system"] == "ours" and r["view"] == view), None)
            rv = next((r for r in runs if r["system"] == "read_videos" and r["view"] == view), None)
            if ours is None:
                continue
            title = f"{VIEW_TITLES[view]}, {cpus} CPU"
            fps = common.rate(ours["frames"], ours["wall_s"])
            all_frames, all_wall = all_frames + ours["frames"], all_wall + ours["wall_s"]
            meas.append(
                common.measurement(
                    f"ours {title}",
                    "frames/s",
                    fps,
                    "frames/s",
                    view=view,
                    cpus=cpus,
                    frames_per_cpu_s=common.rate(ours["frames"], ours["cpu_s"]),
                    wall_s=ours["wall_s"],
                    cpu_s=ours["cpu_s"],
                )
            )
            meas.append(
                common.measurement(
                    f"ours {title}",
                    "store bytes/frame",
                    ours["store_bytes"] / ours["frames"],
                    "B/frame",
                    view=view,
                    segments=ours["segments"],
                )
            )
            if cpus == min(ray_runs):  # the store's size does not depend on the cores
                source = sum(r["bytes"] for r in videos if r["view"] == view) / frames_of[view]
                meas.append(
                    common.measurement(
                        f"store {VIEW_TITLES[view]}",
                        "bytes/frame",
                        ours["store_bytes"] / ours["frames"],
                        "B/frame",
                        headline=True,
                        reference=f"source {source:,.0f} B/frame, raw {raw:,} B/frame",
                    )
                )
            efficiency = [f"(a) {plain_cpu[(BASELINE, view)]:,.0f}"] if (BASELINE, view) in plain_cpu else []
            if rv is not None:
                efficiency.append(f"(b) {common.rate(rv['frames'], rv['cpu_s']):,.0f}")
            meas.append(
                common.measurement(
                    f"ours {title}",
                    "frames per CPU-second",
                    common.rate(ours["frames"], ours["cpu_s"]),
                    "frames/CPU-s",
                    headline=True,
                    reference=", ".join(efficiency),
                )
            )
            base = plain_fps.get((BASELINE, view))
            comps.append(
                common.comparison(
                    f"ingest {title} vs {cpus}x plain decord",
                    fps,
                    cpus * base if base else None,
                    "frames/s",
                    0.85,
                    note="ours decodes each video once and also writes it to Parquet; (a) only decodes",
                )
            )
            written = plain_fps.get(("decode32_write", view))
            if written:
                comps.append(
                    common.comparison(
                        f"ingest {title} vs {cpus}x plain decord + Parquet write",
                        fps,
                        cpus * written,
                        "frames/s",
                        note="like for like: (a) that also cuts the segments and writes them (decode32_write)",
                    )
                )
            if rv is not None:
                rv_fps = common.rate(rv["frames"], rv["wall_s"])
                meas.append(
                    common.measurement(
                        f"read_videos {title}",
                        "frames/s",
                        rv_fps,
                        "frames/s",
                        view=view,
                        cpus=cpus,
                        frames_per_cpu_s=common.rate(rv["frames"], rv["cpu_s"]),
                        store_bytes_per_frame=rv["store_bytes"] / rv["frames"],
                    )
                )
                comps.append(common.comparison(f"ingest {title} vs read_videos", fps, rv_fps, "frames/s", 2.0))
            repeated = next((r for r in runs if r["system"] == "ours_repeat" and r["view"] == view), None)
            if repeated is not None and repeated["wall_s"] > ours["wall_s"] and base:
                marginal = common.rate(repeated["frames"] - ours["frames"], repeated["wall_s"] - ours["wall_s"])
                fixed = ours["wall_s"] - ours["frames"] / marginal
                comps.append(
                    common.comparison(
                        f"ingest {title}, steady state ({repeated['repeat']}x the videos) vs {cpus}x plain decord",
                        marginal,
                        cpus * base,
                        "frames/s",
                        0.85,
                        note="marginal rate: extra frames / extra seconds; (a) has no fixed cost per run",
                    )
                )
                if fixed > 0:
                    meas.append(
                        common.measurement(
                            f"ours {title}",
                            "fixed cost per build",
                            fixed,
                            "s",
                            headline=True,
                            reference=f"{ours['wall_s']:.2f} s for {ours['frames']:,} frames",
                        )
                    )
                else:  # the 1x run went faster than the 4x run's marginal rate predicts: noise, not a saving
                    findings.append(
                        f"ours {title}: fixed cost per build not measurable in this run (the {ours['frames']:,}-frame "
                        f"build took {ours['wall_s']:.2f} s, less than its frames at the marginal rate); rerun on an "
                        "idle machine or in full mode"
                    )
            if view == "le480":
                targets.append(
                    common.target(
                        f"ingest {title}: frames/s per core",
                        fps / cpus,
                        "frames/s/core",
                        200.0,
                        note="including resize and the Parquet write",
                    )
                )
        if len(views) > 1 and all_wall > 0:
            base_wall = sum(frames_of[v] / plain_fps[(BASELINE, v)] for v in views if (BASELINE, v) in plain_fps)
            base_fps = common.rate(sum(frames_of.values()), base_wall)
            comps.append(
                common.comparison(
                    f"ingest all videos, {cpus} CPU vs {cpus}x plain decord",
                    all_frames / all_wall,
                    cpus * base_fps if base_fps else None,
                    "frames/s",
                    0.85,
                )
            )
    findings.append(
        "build_clip_store decodes each video once and streams its segments into Parquet; (a) writes nothing. The "
        "store's frames column is one large_binary value of raw uint8 per segment (zstd 1; frames_encoding "
        "raw_uint8), about 2.9-4.5x cheaper to encode than Ray's tensor column (uint8 values in a Parquet list, "
        "stored as 32-bit integers) that stores used before; what remains of the write is mostly zstd"
    )
    findings.append(
        "one Ray task per video: a corpus with fewer videos than cores (the HD view holds one) cannot "
        "use the extra cores; splitting long videos into frame ranges would"
    )


if __name__ == "__main__":
    main()
