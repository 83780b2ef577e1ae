"""Generic batch scoring: store rows -> raw task scores (actor pool) -> per-video fusion -> score store.

Output layout under ``OUT``::

    scores/<dataset>/<video_id>.parquet   video_id, frame_idx, score, <raw task columns>  (one row per frame)
    regions/<dataset>/<video_id>.parquet  object-level methods (SSMTL): video_id, frame_idx, x1, y1, x2, y2,
                                          frame_height, frame_width, score per detected object (RBDC/TBDC)
    events.parquet / events.csv           anomalous intervals (pipelines/events.py); event_metrics.json with labels
    reference/scores/calibration/*.parquet  global calibration only: the checkpoint's held-out normal videos,
                                          fused like the run; the events' threshold comes from them
    summary.json                          method, checkpoint, config, calibration mode, counts, failures, events
    _SUCCESS                              written last

Each score file is written atomically, so a reader (or a killed run) never sees half a file, and carries the
checkpoint id in its Parquet metadata: ``only_new`` skips videos already scored by the same weights.

Example:
    >>> from pipelines.score import ScoreConfig, score
    >>> summary = score("outputs/train", "outputs/store", "outputs/scores", ScoreConfig())  # doctest: +SKIP
    >>> summary["videos_scored"]  # doctest: +SKIP
    6
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from pipelines import storage
from pipelines.checkpoint import LoadedCheckpoint, load_checkpoint
from pipelines.config import config_to_dict, method_config_with
from pipelines.evaluate import align_to_frames
from pipelines.runtime import require_gpus, reuse_freed_memory, reuse_freed_memory_remote_args
from pipelines.stores import read_manifest, read_quarantine, read_store, read_store_metadata, shuffle_partitions
from vad_models.base import Method

__all__ = ["ScoreConfig", "TaskScorer", "fuse_video", "score", "score_file_uri"]

CALIBRATION_MODES = ("per-video", "global")


@dataclass(frozen=True)
class ScoreConfig:
    """How a scoring run executes.

    Attributes:
        split: Store split to score (``None`` scores every split).
        only_new: Skip videos whose score file was written by the same checkpoint.
        use_gpu: One GPU per scoring actor.
        batch_size: Store rows (segments) per actor call.
        concurrency: Scoring actors.
        cpus_per_actor: CPUs each scoring actor reserves (decoding on CPU nodes; 1 is enough next to a GPU).
        calibration: ``"per-video"`` (the papers' protocol, for benchmarks) or ``"global"`` (statistics of
            held-out normal videos stored in the checkpoint, so a quiet video stays quiet).
        weights: Optional fusion weights overriding the method config (score-weight sweeps).
        fusion_config: Optional method-config fields overriding the checkpoint's for fusion only, e.g. LUSS-AE's
            ``error`` from a score sweep's ``best_weights.yaml``; the network's raw scores are unaffected.
        video_ids: Optional subset of videos to score.
    """

    split: str | None = "test"
    only_new: bool = False
    use_gpu: bool = False
    batch_size: int = 2
    concurrency: int = 1
    cpus_per_actor: float = 1.0
    calibration: str = "per-video"
    weights: Mapping[str, float] | None = None
    fusion_config: Mapping[str, Any] | None = None
    video_ids: tuple[str, ...] | None = None


@dataclass
class _VideoInfo:
    dataset: str
    num_frames: int
    fps: float


def score_file_uri(out: str, dataset: str, video_id: str) -> str:
    """Where the scores of one video go; ids cannot escape ``out`` (``../`` is rejected)."""
    return storage.safe_join(out, "scores", dataset, f"{video_id}.parquet")


def region_file_uri(out: str, dataset: str, video_id: str) -> str:
    """Where the scored regions of one video go (object-level methods only)."""
    return storage.safe_join(out, "regions", dataset, f"{video_id}.parquet")


def fusion_config(config: Any, overrides: Mapping[str, Any] | None) -> Any:
    """The method config used for fusion: the checkpoint's, with ``overrides`` applied and validated.

    Example:
        >>> from vad_models.luss_ae.config import LussAeConfig
        >>> fusion_config(LussAeConfig(), {"error": "mse"}).error
        'mse'
    """
    return method_config_with(type(config), config, overrides) if overrides else config


def _ordered_rows(rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One video's raw score rows by ``frame_idx`` (stable), without the per-row bookkeeping columns."""
    order = np.argsort(np.asarray(rows["frame_idx"]), kind="stable")
    return {k: np.asarray(v)[order] for k, v in rows.items() if k not in ("video_id", "scored_on")}


def _video_table(video_id: str, columns: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> pa.Table:
    """Columns of one video plus a ``video_id`` column, with ``meta`` as Parquet schema metadata."""
    count = len(next(iter(columns.values())))
    table = pa.table({"video_id": pa.array([video_id] * count, pa.string()), **columns})
    return table.replace_schema_metadata(dict(meta))


class TaskScorer:
    """Ray Data actor: holds the model once and turns store rows into raw per-window task scores.

    Required columns: the method's store columns (``video_id``, ``start_frame``, ``frames`` ... ).
    Added columns: ``video_id``, ``frame_idx`` and one float column per raw task score (the frames are dropped).
    """

    def __init__(self, checkpoint: str, use_gpu: bool) -> None:
        reuse_freed_memory()
        device = "cuda" if use_gpu else "cpu"
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("scoring actor was given a GPU slot but torch sees no CUDA device")
        loaded = load_checkpoint(checkpoint, device=device)
        self.method, self.cfg, self.model = loaded.method, loaded.config, loaded.model
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scores = self.method.task_scores(self.model, rows, self.cfg)
        scores["video_id"] = np.asarray([str(v) for v in scores["video_id"]], dtype=object)
        scores["frame_idx"] = np.asarray(scores["frame_idx"], dtype=np.int64)
        scores["scored_on"] = np.full(len(scores["frame_idx"]), self.node_id, dtype=object)
        return scores


def fuse_video(
    method: Method,
    cfg: Any,
    scores: Mapping[str, np.ndarray],
    num_frames: int,
    *,
    weights: Mapping[str, float] | None = None,
    calibration: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Fuse one video's raw window scores and expand them to one row per frame.

    Frames without a window of their own (the first frames of a video, before the first full window) take
    the nearest scored frame's value; several rows for one frame (one per object) keep their maximum in the raw
    columns.

    Returns:
        ``frame_idx`` (0..num_frames-1), ``score`` and every raw task column, each of length ``num_frames``.
    """
    ordered = _ordered_rows(scores)
    frame_idx, fused = method.fuse(ordered, cfg, weights=weights, calibration=calibration, num_frames=num_frames)
    out = {
        "frame_idx": np.arange(num_frames, dtype=np.int64),
        "score": align_to_frames(np.asarray(frame_idx), np.asarray(fused, dtype=np.float64), num_frames),
    }
    unique, inverse = np.unique(ordered["frame_idx"], return_inverse=True)
    for column in method.score_columns(cfg):
        if column not in ordered:
            continue
        per_frame = np.full(unique.shape, -np.inf)
        np.maximum.at(per_frame, inverse, np.asarray(ordered[column], dtype=np.float64))
        out[column] = align_to_frames(unique, per_frame, num_frames)
    return out


def _fuse_and_write(
    rows: dict[str, np.ndarray],
    checkpoint: str,
    out: str,
    videos: dict[str, tuple[str, int, float]],
    calibration_mode: str,
    weights: Mapping[str, float] | None,
    video_id: str | None = None,
    fusion: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Ray Data ``map_groups`` UDF: all window scores of one video -> one score file.

    Also called on the driver with no rows (``video_id`` given) for videos that produced no score rows at all,
    e.g. SSMTL footage without a detected object, whose fusion is defined (all frames score 0).
    """
    loaded = _cached_checkpoint(checkpoint)
    video_id = str(rows["video_id"][0]) if video_id is None else video_id
    dataset, num_frames, fps = videos[video_id]
    status, error, uri = "ok", "", ""
    try:
        calibration = loaded.calibration if calibration_mode == "global" else None
        cfg = fusion_config(loaded.config, fusion)
        ordered = _ordered_rows(rows)
        columns = fuse_video(loaded.method, cfg, ordered, num_frames, weights=weights, calibration=calibration)
        table = _video_table(video_id, columns, {
            "method": loaded.method.name,
            "checkpoint_id": loaded.checkpoint_id,
            "alignment": loaded.method.input_spec(loaded.config).alignment,
            "calibration": calibration_mode,
            "fps": str(fps),
            "weights": repr(dict(weights) if weights else None),
            "fusion_config": repr(dict(fusion) if fusion else None),
        })  # fmt: skip
        regions = loaded.method.regions(ordered, cfg, weights=weights, calibration=calibration)
        if regions is not None:  # before the score file: a video counts as scored once its score file exists
            meta = {"method": loaded.method.name, "checkpoint_id": loaded.checkpoint_id}
            storage.write_parquet_atomic(region_file_uri(out, dataset, video_id), _video_table(video_id, regions, meta))
        uri = score_file_uri(out, dataset, video_id)
        storage.write_parquet_atomic(uri, table)
        peak = float(np.max(columns["score"])) if num_frames else float("nan")
    except Exception as exc:  # one bad video must not stop the run; it is reported in summary.json
        status, error, peak = "failed", f"{type(exc).__name__}: {exc}", float("nan")
    return {
        "video_id": np.array([video_id], dtype=object),
        "dataset": np.array([dataset], dtype=object),
        "num_frames": np.array([num_frames], dtype=np.int64),
        "status": np.array([status], dtype=object),
        "error": np.array([storage.redact(error)], dtype=object),
        "uri": np.array([uri], dtype=object),
        "max_score": np.array([peak], dtype=np.float64),
        "nodes": np.array([",".join(sorted({str(n) for n in rows.get("scored_on", [])}))], dtype=object),
    }


_CHECKPOINTS: dict[str, Any] = {}


def _cached_checkpoint(uri: str) -> Any:
    if uri not in _CHECKPOINTS:
        _CHECKPOINTS[uri] = load_checkpoint(uri)
    return _CHECKPOINTS[uri]


def _already_scored(out: str, videos: dict[str, tuple[str, int, float]], checkpoint_id: str) -> set[str]:
    done = set()
    for video_id, (dataset, _, _) in videos.items():
        uri = score_file_uri(out, dataset, video_id)
        if not storage.exists(uri):
            continue
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as handle:
            meta = pq.read_schema(handle).metadata or {}
        if meta.get(b"checkpoint_id", b"").decode() == checkpoint_id:
            done.add(video_id)
    return done


@dataclass
class _Timer:
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def score(checkpoint: str, data: str, out: str, cfg: ScoreConfig | None = None) -> dict[str, Any]:
    """Score every video of a store with a trained checkpoint and write the score store.

    Args:
        checkpoint: A checkpoint directory or a training output directory (``best.json`` preferred).
        data: Store URI (the store kind the method reads).
        out: Output URI for ``scores/``, ``summary.json`` and ``_SUCCESS``.
        cfg: Execution settings.

    Returns:
        The run summary (also written to ``OUT/summary.json``).

    Raises:
        ValueError: for a bad calibration mode, a store the method cannot read, or a checkpoint without the
            calibration that ``calibration="global"`` needs.
    """
    cfg = cfg or ScoreConfig()
    timer = _Timer()
    if cfg.calibration not in CALIBRATION_MODES:
        raise ValueError(f"calibration must be one of {CALIBRATION_MODES}, got {cfg.calibration!r}")
    if cfg.use_gpu:
        require_gpus(cfg.concurrency, "score")
    loaded = load_checkpoint(checkpoint)
    checkpoint = loaded.uri
    if cfg.calibration == "global" and not loaded.calibration:
        raise ValueError(
            f"checkpoint {checkpoint} holds no calibration statistics (trained with val_fraction=0?); "
            "score with --calibration per-video or retrain with held-out normal videos"
        )
    meta = read_store_metadata(data)
    spec = loaded.method.input_spec(loaded.config)
    if meta.get("store") != spec.store:
        raise ValueError(f"{loaded.method.name} scores {spec.store!r} stores, but {data} is {meta.get('store')!r}")
    weights = dict(cfg.weights) if cfg.weights else None
    fusion = dict(cfg.fusion_config) if cfg.fusion_config else None
    fusion_config(loaded.config, fusion)  # a bad override fails here, not in every worker
    manifest = [
        r for r in read_manifest(data).to_pylist() if cfg.split is None or r["split"] == cfg.split
    ]
    if cfg.video_ids is not None:
        manifest = [r for r in manifest if r["video_id"] in set(cfg.video_ids)]
    videos = {r["video_id"]: (r["dataset"], int(r["num_frames"]), float(r.get("fps") or 0.0)) for r in manifest}
    skipped = _already_scored(out, videos, loaded.checkpoint_id) if cfg.only_new else set()
    todo = {k: v for k, v in videos.items() if k not in skipped}
    print(
        f"[score] {loaded.method.name} ({loaded.checkpoint_id}): {len(todo)} video(s) to score, "
        f"{len(skipped)} already scored, calibration={cfg.calibration}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    if todo:
        from pipelines.train import keep_videos

        rows = read_store(data, split=cfg.split).map_batches(
            keep_videos, fn_kwargs={"video_ids": frozenset(todo), "keep": True}, batch_format="numpy"
        )
        actor_args = dict(
            fn_constructor_kwargs={"checkpoint": checkpoint, "use_gpu": cfg.use_gpu},
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
            num_cpus=cfg.cpus_per_actor,
            num_gpus=1 if cfg.use_gpu else None,
            **reuse_freed_memory_remote_args(),  # the actor runs its UDF in a thread: reuse in every thread
        )
        if spec.group_by_video:  # e.g. MT-VAE's temporal host needs every snippet of a video at once
            raw = rows.groupby("video_id", num_partitions=shuffle_partitions(len(todo))).map_groups(
                TaskScorer, **actor_args
            )
        else:
            raw = rows.map_batches(TaskScorer, batch_size=cfg.batch_size, **actor_args)
        written = raw.groupby("video_id", num_partitions=shuffle_partitions(len(todo))).map_groups(
            _fuse_and_write,
            fn_kwargs={
                "checkpoint": checkpoint,
                "out": out,
                "videos": todo,
                "calibration_mode": cfg.calibration,
                "weights": weights,
                "fusion": fusion,
            },
            batch_format="numpy",
        )
        results = written.take_all()
    scored = sorted(str(r["video_id"]) for r in results if r["status"] == "ok")
    failed = [{"video_id": str(r["video_id"]), "error": str(r["error"])} for r in results if r["status"] != "ok"]
    missing = sorted(set(todo) - {str(r["video_id"]) for r in results})
    if missing:  # no score rows at all: write the method's fusion of nothing where it defines one
        columns = ["frame_idx", *loaded.method.score_columns(loaded.config)]
        empty = {c: np.zeros(0, dtype=np.int64 if c == "frame_idx" else np.float64) for c in columns}
        for video_id in missing:
            row = _fuse_and_write(empty, checkpoint, out, {video_id: todo[video_id]}, cfg.calibration,
                                  weights, video_id=video_id, fusion=fusion)
            if row["status"][0] == "ok":
                results.append({k: v[0] for k, v in row.items()})
        missing = sorted(set(todo) - {str(r["video_id"]) for r in results if r["status"] == "ok"})
    quarantine = read_quarantine(data).to_pylist()
    summary = {
        "method": loaded.method.name,
        "checkpoint": checkpoint,
        "checkpoint_id": loaded.checkpoint_id,
        "config": config_to_dict(loaded.config),
        "alignment": spec.alignment,
        "calibration": cfg.calibration,
        "weights": weights,
        "fusion_config": fusion,
        "data": data,
        "split": cfg.split,
        "videos_total": len(videos),
        "videos_scored": len(scored),
        "videos_skipped": len(skipped),
        "videos_failed": failed,
        "videos_without_windows": missing,
        "scoring_nodes": sorted({n for r in results for n in str(r["nodes"]).split(",") if n}),
        "quarantined_at_ingest": [{k: str(v) for k, v in q.items()} for q in quarantine],
        "duration_s": timer.elapsed(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    reference = None
    if cfg.calibration == "global":
        reference = write_reference_scores(loaded, out, weights, fusion)
        summary["reference_scores"] = reference
    summary["events"] = _write_events(out, data, default_fps=_median_fps(videos), reference=reference)
    storage.write_text_atomic(storage.join(out, "summary.json"), storage.redact(_dumps(summary)))
    storage.write_text_atomic(storage.join(out, "_SUCCESS"), "")
    print(
        f"[score] done in {summary['duration_s']:.1f}s: {len(scored)} scored, {len(skipped)} skipped, "
        f"{len(failed)} failed, {len(missing)} without a full window -> {out}",
        flush=True,
    )
    return summary


def _median_fps(videos: Mapping[str, tuple[str, int, float]]) -> float | None:
    rates = [fps for _, _, fps in videos.values() if fps and np.isfinite(fps) and fps > 0]
    return float(np.median(rates)) if rates else 25.0


#: Event budget of calibrated (global) runs on the held-out normal videos stored with the checkpoint.
NORMAL_ALARMS_PER_HOUR = 1.0


def scoring_event_config(default_fps: float | None = 25.0, reference: str | None = None) -> Any:
    """Event settings of scoring runs; events of at least 0.2 s either way.

    Per-video runs (``reference`` is ``None``): the run's own top 5% of frames. Per-video rescaling gives every
    video the same spread, so only a relative budget means anything there. Calibrated runs pass the reference
    score store of the checkpoint's held-out normal videos (:func:`write_reference_scores`): the threshold is the
    lowest one with at most :data:`NORMAL_ALARMS_PER_HOUR` event per hour on them, so footage like that normal
    video raises no event however long the run.

    Example:
        >>> scoring_event_config().quantile
        0.95
        >>> scoring_event_config(reference="outputs/scores/reference").alarms_per_hour
        1.0
    """
    from pipelines.events import EventConfig

    if reference is not None:
        return EventConfig(alarms_per_hour=NORMAL_ALARMS_PER_HOUR, reference_scores=reference, default_fps=default_fps)
    return EventConfig(default_fps=default_fps)  # the defaults: top 5% of the run's frames, >= 0.2 s


def write_reference_scores(
    loaded: LoadedCheckpoint,
    out: str,
    weights: Mapping[str, float] | None,
    fusion: Mapping[str, Any] | None = None,
) -> str | None:
    """Fuse the checkpoint's held-out normal videos like new footage into ``OUT/reference/scores/``.

    Same checkpoint, weights and calibration as the run, so their fused scores are exactly the score a normal
    video gets; events of calibrated runs take their threshold from them. ``None`` for a checkpoint without
    stored calibration scores (trained before they were kept).
    """
    table = loaded.calibration_scores
    if table is None or table.num_rows == 0:
        return None
    reference = storage.join(out, "reference")
    cfg = fusion_config(loaded.config, fusion)
    data = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    for video_id in np.unique(data["video_id"]):
        mask = data["video_id"] == video_id
        rows = {c: v[mask] for c, v in data.items() if c not in ("video_id", "fps")}
        num_frames = int(rows["frame_idx"].max()) + 1
        columns = fuse_video(loaded.method, cfg, rows, num_frames, weights=weights, calibration=loaded.calibration)
        meta = {"method": loaded.method.name, "checkpoint_id": loaded.checkpoint_id, "calibration": "global",
                "fps": str(float(data["fps"][mask][0])), "role": "held-out normal video of the calibration"}
        uri = score_file_uri(reference, "calibration", str(video_id))
        storage.write_parquet_atomic(uri, _video_table(str(video_id), columns, meta))
    return reference


def _write_events(
    out: str, data: str, default_fps: float | None, reference: str | None = None
) -> dict[str, Any]:
    """Events of the run (``OUT/events.parquet`` + CSV); a failure here never fails the scoring run."""
    from pipelines.events import write_events

    try:
        labels = data if storage.exists(storage.join(data, "labels.parquet")) else None
        table = write_events(out, out, scoring_event_config(default_fps, reference), labels_uri=labels)
        meta = table.schema.metadata or {}
        return {
            "count": table.num_rows,
            "uri": storage.join(out, "events.parquet"),
            "threshold": float(meta.get(b"threshold", b"nan")),
            "threshold_source": meta.get(b"threshold_source", b"").decode(),
        }
    except Exception as exc:
        message = storage.redact(f"{type(exc).__name__}: {exc}")
        print(f"[score] warning: events were not written: {message}", flush=True)
        return {"count": None, "error": message}


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True, default=str)
