"""Generic Ray Train driver: any registered method, one laptop to many GPU nodes, resumable.

The worker loop (:func:`train_fn_per_worker`) knows nothing about a particular method: it builds the model,
streams examples from its dataset shard, calls ``method.training_loss`` and reports metrics and a checkpoint
at the end of every epoch. Phases (STD's pre-train → joint, MT-VAE's baseline → VAE → host) run in order and
the checkpoint records where training stands, so a restarted worker or a rerun of the job continues from the
last finished epoch.

Distributed training: gradients are averaged across workers with one coalesced all-reduce per step instead of
wrapping the model in ``DistributedDataParallel``. DDP requires every forward to go through the wrapper and a
fixed set of used parameters, while methods here call sub-networks directly and use different parameters per
phase (and per step, for STD's alternation); explicit averaging is correct for all of them.

Example:
    >>> from pipelines.train import TrainRunConfig, train
    >>> result = train("luss_ae", cfg, data="outputs/store", out="outputs/train",
    ...                run=TrainRunConfig(num_workers=0))  # doctest: +SKIP
    >>> result.checkpoint  # doctest: +SKIP
    'outputs/train/checkpoints/00-train-epoch0004'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipelines import storage
from pipelines.checkpoint import (
    checkpoint_rel_name,
    load_tensor_file,
    point_to,
    read_pointer,
    write_checkpoint,
)
from pipelines.config import config_from_dict, config_to_dict
from pipelines.faults import maybe_crash
from pipelines.runtime import ray_train_settings, require_gpus, reuse_freed_memory, reuse_freed_memory_env
from pipelines.stores import read_manifest, read_store, read_store_metadata, shuffle_partitions
from vad_models.base import Method, TrainContext
from vad_models.registry import get_method

__all__ = ["NonFiniteLossError", "TrainResult", "TrainRunConfig", "train", "train_fn_per_worker"]

log = logging.getLogger(__name__)


TRAIN_PRECISIONS = ("fp32", "bf16")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; training stops before a garbage checkpoint is written."""


@dataclass(frozen=True)
class TrainRunConfig:
    """How a training run executes (method hyperparameters live in the method's own config).

    Attributes:
        num_workers: Ray Train workers; 0 runs the loop in the driver process (local mode).
        use_gpu: One GPU per worker.
        max_failures: Worker-group restarts Ray Train may do (resuming from the last checkpoint).
        name: Stable run name (no timestamps) so reruns and Tune restores find their state.
        seed: Seed for model initialisation (same on every worker) and sampling (offset by rank).
        val_fraction: Fraction of training videos held out for validation loss and score calibration.
        keep_checkpoints: Epoch checkpoints kept under ``OUT/checkpoints`` (plus the best one).
        resume: Continue from ``OUT/latest.json`` when it exists.
        calibration_videos: At most this many held-out normal videos are scored to fit calibration.
        placement_strategy: Ray placement of workers (``PACK``, ``SPREAD``).
        cpus_per_worker: CPUs reserved per worker (leave some for Ray Data's decode tasks on small machines).
        log_every: Print a progress line every this many steps (rank 0).
        examples_batch_segments: Store rows per ``make_examples`` call.
        shuffle_buffer: Local shuffle buffer in examples (0 disables).
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the forward pass and loss; weights, optimizer state and
            gradients stay fp32). bf16 needs no loss scaling, which keeps gradient averaging across workers exact;
            fp16 training would need a loss scaler whose skipped steps agree on every worker, so it is not
            offered (scoring offers fp16 and bf16).
        deterministic: Reproducible runs: the random parts of ``make_examples`` (e.g. LUSS-AE's accelerated
            clips) are seeded from ``seed`` and the rows they come from, so each segment gets the same draws
            every epoch, Ray Data keeps block order, and group-by methods group with a sort on ``video_id``
            (a fixed video order) instead of a hash shuffle. ``False`` draws fresh samples every epoch (more
            augmentation on long runs) at the price of run-to-run variation.
        cache_examples: Build the training and validation examples once, in Ray's object store, and read them
            every epoch instead of regenerating them from the store (needs ``deterministic``: its examples are
            the same every epoch anyway). Saves the per-epoch ``make_examples`` work that otherwise shares the
            cores with training; costs the examples' size in object-store memory (Ray spills the excess to
            local disk), so it suits corpora whose examples fit in memory, like the demo's.
    """

    num_workers: int = 0
    use_gpu: bool = False
    max_failures: int = 0
    name: str = "train"
    seed: int = 0
    val_fraction: float = 0.1
    keep_checkpoints: int = 2
    resume: bool = True
    calibration_videos: int = 8
    placement_strategy: str = "PACK"
    cpus_per_worker: float = 1.0
    log_every: int = 20
    examples_batch_segments: int = 4
    shuffle_buffer: int = 256
    precision: str = "fp32"
    deterministic: bool = True
    cache_examples: bool = False

    def __post_init__(self) -> None:
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"precision must be one of {TRAIN_PRECISIONS}, got {self.precision!r}")
        if self.cache_examples and not self.deterministic:
            raise ValueError("cache_examples keeps one draw of the examples for every epoch: drop fresh samples")


@dataclass
class TrainResult:
    """What a finished run produced."""

    out: str
    checkpoint: str
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- data stages


@lru_cache(maxsize=8)
def _method_and_config(method_name: str, config_items: tuple[tuple[str, Any], ...]) -> tuple[Method, Any]:
    method = get_method(method_name)
    return method, config_from_dict(method.config_class, _thaw(config_items))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("__list__", tuple(_freeze(v) for v in value))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple) and value and value[0] == "__list__":
        return [_thaw(v) for v in value[1]]
    if isinstance(value, tuple):
        return {k: _thaw(v) for k, v in value}
    return value


def make_examples_batch(
    rows: dict[str, np.ndarray],
    method_name: str,
    config_key: tuple,
    seed: int | None = None,
    per_row: bool = False,
) -> dict[str, np.ndarray]:
    """Ray Data UDF: store rows -> training examples through ``method.make_examples``.

    Required columns: those of the method's store. Added columns: the method's example columns.
    With ``seed`` the generator is seeded from it and the rows' identity (:func:`rows_seed`): the same rows get
    the same draws whichever task processes them. With ``per_row`` too, every row is drawn from its own generator,
    so the examples do not depend on how Ray Data happens to batch the rows (block boundaries follow the store's
    file layout). Without ``seed``, each call draws fresh randomness.
    """
    method, cfg = _method_and_config(method_name, config_key)
    if seed is None:
        return method.make_examples(rows, cfg, np.random.default_rng())
    count = len(next(iter(rows.values()))) if rows else 0
    if not per_row or count <= 1:
        return method.make_examples(rows, cfg, np.random.default_rng(rows_seed(rows, seed)))
    parts = []
    for i in range(count):
        row = {k: v[i : i + 1] for k, v in rows.items()}
        parts.append(method.make_examples(row, cfg, np.random.default_rng(rows_seed(row, seed))))
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


#: Columns that, with ``video_id``, identify a store row (clip segments, feature snippets, object tubes).
_ROW_KEYS = ("start_frame", "snippet_idx", "frame_idx", "object_idx")


def rows_seed(rows: dict[str, np.ndarray], seed: int) -> list[int]:
    """Seed material for a batch of store rows: ``seed`` plus a digest of the rows' video ids and positions.

    The rows are digested in sorted order, so the seed names the set of rows, not the order a shuffle or a
    group-by delivered them in.

    Example:
        >>> rows = {"video_id": np.array(["a", "a"]), "start_frame": np.array([0, 48])}
        >>> swapped = {"video_id": np.array(["a", "a"]), "start_frame": np.array([48, 0])}
        >>> rows_seed(rows, 0) == rows_seed(swapped, 0) != rows_seed(rows, 1)
        True
    """
    names = [key for key in _ROW_KEYS if key in rows]
    columns = [np.asarray(rows[key], dtype=np.int64) for key in names]
    video_ids = np.asarray(rows.get("video_id", np.array([]))).astype(str)
    sort_keys = [*reversed(columns), *([video_ids] if "video_id" in rows else [])]  # lexsort: last key is primary
    order = np.lexsort(sort_keys) if sort_keys else slice(None)
    digest = hashlib.sha256()
    digest.update(str(seed).encode())
    for value in video_ids[order].tolist():
        digest.update(str(value).encode() + b"\0")
    for key, values in zip(names, columns):
        digest.update(key.encode() + np.ascontiguousarray(values[order]).tobytes())
    return [int(seed), int.from_bytes(digest.digest()[:8], "little")]


def keep_videos(rows: dict[str, np.ndarray], video_ids: frozenset[str], keep: bool) -> dict[str, np.ndarray]:
    """Ray Data UDF: keep (or drop) the rows of the given videos."""
    mask = np.array([(str(v) in video_ids) == keep for v in rows["video_id"]], dtype=bool)
    return {k: v[mask] for k, v in rows.items()}


def split_videos(video_ids: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split of videos (by a hash of the id, not by order).

    Example:
        >>> train_ids, val_ids = split_videos([f"v{i}" for i in range(10)], 0.2)
        >>> len(val_ids)
        2
    """
    if val_fraction <= 0 or len(video_ids) < 2:
        return sorted(video_ids), []
    n_val = min(len(video_ids) - 1, max(1, round(len(video_ids) * val_fraction)))
    ranked = sorted(video_ids, key=lambda v: hashlib.sha256(v.encode()).hexdigest())
    val = sorted(ranked[:n_val])
    return sorted(set(video_ids) - set(val)), val


@contextlib.contextmanager
def _sort_based_shuffle() -> Iterator[None]:
    """Datasets created inside the block plan their group-bys with Ray Data's sort-based shuffle.

    A dataset copies the current context when it is created and ``map_groups`` reads the strategy when called.
    """
    context = ray.data.DataContext.get_current()
    saved = context.shuffle_strategy
    context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        context.shuffle_strategy = saved


def build_example_dataset(
    method: Method, cfg: Any, data: str, video_ids: list[str], run: TrainRunConfig
) -> ray.data.Dataset:
    """Lazy Ray Dataset of training examples for ``video_ids`` of the store's train split."""
    key = _freeze(config_to_dict(cfg))
    kwargs = {"method_name": method.name, "config_key": key, "seed": run.seed if run.deterministic else None}
    grouped = method.input_spec(cfg).group_by_video
    # The hash shuffle behind a group-by emits its partitions in the order they finish; a seeded run groups by a
    # sort on video_id instead (also one shuffle), which delivers the videos in a fixed order.
    with _sort_based_shuffle() if grouped and run.deterministic else contextlib.nullcontext():
        ds = read_store(data, split="train").map_batches(
            keep_videos, fn_kwargs={"video_ids": frozenset(video_ids), "keep": True}, batch_format="numpy"
        )
        if grouped:
            partitions = None if run.deterministic else shuffle_partitions(len(video_ids))
            by_video = ds.groupby("video_id", num_partitions=partitions)
            return by_video.map_groups(make_examples_batch, fn_kwargs=kwargs, batch_format="numpy")
    return ds.map_batches(
        make_examples_batch,
        fn_kwargs={**kwargs, "per_row": True},
        batch_size=run.examples_batch_segments,
        batch_format="numpy",
    )


# --------------------------------------------------------------------------------------------- worker loop


def _average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """All-reduce (mean) the gradients of every parameter that has one, in one flat buffer."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def _worker_nodes(world: int) -> list[str]:
    """Ray node id of every worker, by rank (reported so operators can see where training ran)."""
    node = ray.get_runtime_context().get_node_id()
    if world == 1:
        return [node]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, node)
    return [str(n) for n in gathered]


def _check_finite(parts: dict[str, torch.Tensor], ctx: TrainContext) -> None:
    loss = parts["loss"]
    if not torch.isfinite(loss).all():
        detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.items())
        raise NonFiniteLossError(
            f"non-finite loss at phase {ctx.phase!r} epoch {ctx.epoch} step {ctx.step} ({detail}); "
            "no checkpoint was written for this epoch — lower the learning rate or check the input data"
        )


def _batches(
    shard: Any, batch_size: int, shuffle: int, seed: int, pin_memory: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    # Pinned host buffers let the copy to the GPU run asynchronously (device="auto" moves the batch).
    return shard.iter_torch_batches(
        batch_size=batch_size,
        local_shuffle_buffer_size=shuffle or None,
        local_shuffle_seed=seed,
        device="auto",
        pin_memory=pin_memory,
    )


def _restore(
    model: torch.nn.Module, resume_from: str | None, out: str, run_id: str | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load the latest state of this run, else ``resume_from`` (a rerun), else start fresh.

    After a worker restart, Ray hands back the last checkpoint its controller registered. A report reaches the
    controller only at its next poll, so a worker that dies soon after reporting loses that report, and Ray's
    checkpoint is one epoch older than the one rank 0 already wrote under ``out`` (``latest.json``). Both are
    candidates; ``latest.json`` counts only when its ``train_state.json`` carries this run's ``run_id`` (an older
    run's pointer must not be resumed by a run started with ``resume=False``). The furthest one wins.
    """
    candidates: list[dict[str, bytes | None]] = []
    own = read_pointer(out, "latest.json") if run_id else None
    if own is not None:
        own_files = _checkpoint_files(own, ("train_state.json",))  # the weights only when the run is this one
        state_json = own_files["train_state.json"]
        if state_json is not None and json.loads(state_json).get("run_id") == run_id:
            candidates.append({**own_files, **_checkpoint_files(own, ("model.pt", "optimizer.pt"))})
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            candidates.append(_checkpoint_files(directory))
    if not candidates and resume_from is not None:
        candidates.append(_checkpoint_files(resume_from))
    if not candidates:
        return {"phase_index": 0, "epoch": 0, "step": 0}, None
    files = max(candidates, key=lambda f: int(json.loads(f["train_state.json"])["step"]))  # first of equals
    model.load_state_dict(load_tensor_file(files["model.pt"], what="model.pt"))
    optimizer_state = load_tensor_file(files["optimizer.pt"], what="optimizer.pt") if files["optimizer.pt"] else None
    state = json.loads(files["train_state.json"])
    print(
        f"[train] resuming from checkpoint: phase {state.get('phase')} epoch {state['epoch']} step {state['step']}",
        flush=True,
    )
    return state, optimizer_state


_STATE_FILES = ("model.pt", "optimizer.pt", "train_state.json")


def _checkpoint_files(uri: str, names: tuple[str, ...] = _STATE_FILES) -> dict[str, bytes | None]:
    """The bytes of ``names`` in the checkpoint directory ``uri`` (local or remote); ``None`` for a missing file."""
    return {
        name: storage.read_bytes(storage.join(uri, name)) if storage.exists(storage.join(uri, name)) else None
        for name in names
    }


def _validation_loss(
    method: Method, model: torch.nn.Module, cfg: Any, ctx: TrainContext, datasets: list[str]
) -> float | None:
    if "val" not in datasets:
        return None
    shard = ray.train.get_dataset_shard("val")
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=int(cfg.batch_size), device="auto"):
            n = len(next(iter(batch.values())))
            total += float(method.training_loss(model, batch, cfg, ctx)["loss"]) * n
            count += n
    model.train()
    return total / count if count else None


def _fit_calibration(
    method: Method, model: torch.nn.Module, cfg: Any, datasets: list[str]
) -> tuple[dict[str, tuple[float, float]] | None, pa.Table | None]:
    """Calibration statistics and the raw task scores of the held-out normal videos they were fitted on.

    The raw scores travel with the checkpoint so that a scoring run can fuse them exactly as it fuses new
    footage (same weights, same statistics) and set its event threshold on known-normal video.
    """
    if "calibration" not in datasets:
        return None, None
    shard = ray.train.get_dataset_shard("calibration")
    model.eval()
    per_video: dict[str, dict[str, list[np.ndarray]]] = {}
    fps: dict[str, float] = {}
    columns = ["frame_idx", *method.score_columns(cfg)]
    for rows in _calibration_batches(shard, method.input_spec(cfg).group_by_video):
        if "fps" in rows:
            fps.update({str(v): float(f) for v, f in zip(rows["video_id"], rows["fps"])})
        scores = method.task_scores(model, rows, cfg)
        for vid in np.unique(scores["video_id"]):
            mask = scores["video_id"] == vid
            bucket = per_video.setdefault(str(vid), {})
            for col in columns:
                bucket.setdefault(col, []).append(np.asarray(scores[col])[mask])
    model.train()
    if not per_video:
        return None, None
    videos = {vid: {c: np.concatenate(v) for c, v in cols.items()} for vid, cols in per_video.items()}
    calibration = method.fit_calibration([{c: v[c] for c in columns[1:]} for v in videos.values()])
    counts = [len(v["frame_idx"]) for v in videos.values()]
    table = pa.table(
        {
            "video_id": pa.array(np.repeat(list(videos), counts), pa.string()),
            "fps": pa.array(np.repeat([fps.get(vid, 0.0) for vid in videos], counts), pa.float64()),
            **{c: np.concatenate([v[c] for v in videos.values()]) for c in columns},
        }
    )
    return calibration, table


def _calibration_batches(shard: Any, whole_videos: bool) -> Iterator[dict[str, np.ndarray]]:
    """Store rows of the calibration videos, in small batches or one whole video per batch.

    Whole videos are for methods that score a video at once (``group_by_video``); there are only a handful.
    """
    if not whole_videos:
        yield from shard.iter_batches(batch_size=2, batch_format="numpy")
        return
    videos: dict[str, list[dict[str, np.ndarray]]] = {}
    for rows in shard.iter_batches(batch_size=64, batch_format="numpy"):
        for vid in np.unique(rows["video_id"]):
            mask = rows["video_id"] == vid
            videos.setdefault(str(vid), []).append({k: v[mask] for k, v in rows.items()})
    for parts in videos.values():
        yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _execution_options(deterministic: bool) -> Any:
    """``DataConfig.default_ingest_options()`` with ``preserve_order=deterministic``.

    Built here because Ray 2.60's copies the deprecated ``exclude_resources`` and warns about it on every run.
    """
    current = ray.data.DataContext.get_current().execution_options
    return ray.data.ExecutionOptions(
        resource_limits=current.resource_limits,
        preserve_order=deterministic,
        verbose_progress=current.verbose_progress,
    )


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker loop, the same for every method (see the module docstring)."""
    reuse_freed_memory()
    method = get_method(config["method"])
    cfg = config_from_dict(method.config_class, config["method_config"])
    run = TrainRunConfig(**config["run"])
    out: str = config["out"]
    datasets: list[str] = list(config["datasets"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(run.seed)  # identical initial weights on every worker
    device = ray.train.torch.get_device() if run.use_gpu else torch.device("cpu")
    model = method.build_model(cfg)
    state, optimizer_state = _restore(model, config.get("resume_from"), out, config.get("run_id"))
    model.to(device)
    if world > 1:  # belt and braces: start every worker from rank 0's weights
        for tensor in list(model.state_dict().values()):
            dist.broadcast(tensor.data if hasattr(tensor, "data") else tensor, src=0)
    if state.get("finished"):
        ray.train.report({"finished": True, "epoch": state["epoch"], "step": state["step"]})
        return
    nodes = _worker_nodes(world)
    phases = method.phases(cfg)
    shard = ray.train.get_dataset_shard("train")
    ctx = TrainContext(phase=phases[0].name, epoch=0, step=int(state["step"]), world_rank=rank, world_size=world)
    metrics: dict[str, Any] = {}
    for phase_index in range(int(state["phase_index"]), len(phases)):
        phase = phases[phase_index]
        ctx.phase = phase.name
        optimizer = method.configure_optimizer(model, cfg, phase.name)
        scheduler = method.configure_scheduler(optimizer, cfg, phase.name)
        start_epoch = int(state["epoch"]) if phase_index == int(state["phase_index"]) else 0
        # At a phase boundary the new phase's optimizer starts fresh (its parameter groups differ).
        if optimizer_state is not None and phase_index == int(state["phase_index"]) and start_epoch > 0:
            optimizer.load_state_dict(optimizer_state)
            for _ in range(start_epoch):
                if scheduler is not None:
                    scheduler.step()
        if start_epoch == 0:
            if rank == 0:
                print(f"[train] {method.name}: phase {phase.name!r} set-up (on_phase_start)", flush=True)
            seed = run.seed + 7919 * rank
            method.on_phase_start(
                model, phase.name, _batches(shard, int(cfg.batch_size), 0, seed), cfg, ctx
            )
        for epoch in range(start_epoch, phase.epochs):
            ctx.epoch = epoch
            model.train()
            sums: dict[str, float] = {}
            examples, started = 0, time.perf_counter()
            seed = run.seed + 7919 * rank + 104729 * (epoch + 1000 * phase_index)
            for batch in _batches(shard, int(cfg.batch_size), run.shuffle_buffer, seed, pin_memory=run.use_gpu):
                maybe_crash(ctx.step)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16"):
                    parts = method.training_loss(model, batch, cfg, ctx)
                _check_finite(parts, ctx)
                optimizer.zero_grad(set_to_none=True)
                parts["loss"].backward()
                if world > 1:
                    _average_gradients(model, world)
                optimizer.step()
                n = len(next(iter(batch.values())))
                examples += n
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach()) * n
                ctx.step += 1
                if rank == 0 and run.log_every and ctx.step % run.log_every == 0:
                    rate = examples / max(time.perf_counter() - started, 1e-9)
                    print(
                        f"[train] {method.name} {phase.name} epoch {epoch + 1}/{phase.epochs} step {ctx.step} "
                        f"loss {float(parts['loss'].detach()):.5f} ({rate:.1f} examples/s)",
                        flush=True,
                    )
            if scheduler is not None:
                scheduler.step()
            if examples == 0:
                raise RuntimeError(
                    f"worker {rank} got no training examples in phase {phase.name!r}: the store's train split is "
                    "empty or every segment is shorter than one training window"
                )
            elapsed = time.perf_counter() - started
            metrics = {f"train_{k}": v / examples for k, v in sums.items()}
            metrics.update(
                phase=phase.name, phase_index=phase_index, epoch=epoch + 1, step=ctx.step,
                examples=examples, examples_per_s=examples / max(elapsed, 1e-9), worker_nodes=nodes,
            )
            val = _validation_loss(method, model, cfg, ctx, datasets) if rank == 0 else None
            if val is not None:
                metrics["val_loss"] = val
            last_epoch = epoch + 1 == phase.epochs
            next_state = (
                {"phase_index": phase_index + 1, "phase": phase.name, "epoch": 0, "step": ctx.step}
                if last_epoch
                else {"phase_index": phase_index, "phase": phase.name, "epoch": epoch + 1, "step": ctx.step}
            )
            next_state["run_id"] = config.get("run_id")  # lets a restarted worker trust latest.json (_restore)
            final = last_epoch and phase_index + 1 == len(phases)
            calibration, normal_scores = (
                _fit_calibration(method, model, cfg, datasets) if (final and rank == 0) else (None, None)
            )
            if final:
                next_state["finished"] = True
            _report(method, cfg, model, optimizer, next_state, metrics, out, run, rank,
                    calibration=calibration, calibration_scores=normal_scores)
            if rank == 0:
                summary = ", ".join(f"{k} {v:.5f}" for k, v in metrics.items() if k.startswith(("train_", "val_")))
                print(
                    f"[train] {method.name} {phase.name} epoch {epoch + 1}/{phase.epochs} done: {summary} "
                    f"({metrics['examples_per_s']:.1f} examples/s)",
                    flush=True,
                )


def _report(
    method: Method,
    cfg: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: dict[str, Any],
    metrics: dict[str, Any],
    out: str,
    run: TrainRunConfig,
    rank: int,
    *,
    calibration: dict[str, tuple[float, float]] | None,
    calibration_scores: pa.Table | None,
) -> None:
    """Rank 0 writes the checkpoint (Ray's copy and the stable one under ``OUT``); everyone reports.

    ``calibration`` and ``calibration_scores`` (see :func:`_fit_calibration`) are ``None`` before the last epoch.
    """
    if rank != 0:
        ray.train.report(metrics)
        return
    model_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    common = dict(
        method_name=method.name, config=cfg, model_state=model_state, optimizer_state=optimizer.state_dict(),
        train_state=train_state, metrics=metrics, calibration=calibration, calibration_scores=calibration_scores,
    )
    rel = checkpoint_rel_name(int(metrics["phase_index"]), str(metrics["phase"]), int(metrics["epoch"]))
    write_checkpoint(storage.join(out, rel), **common)
    point_to(out, "latest.json", rel, {"metrics": _jsonable(metrics)})
    _update_best(out, rel, metrics, train_state)
    _prune_checkpoints(out, run.keep_checkpoints)
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(tmp, **common)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}


def _update_best(out: str, rel: str, metrics: dict[str, Any], train_state: dict[str, Any]) -> None:
    """``best.json``: lowest validation loss in the last phase; the final checkpoint when there is no validation."""
    val = metrics.get("val_loss")
    best_uri = storage.join(out, "best.json")
    if val is None:
        if train_state.get("finished"):
            point_to(out, "best.json", rel, {"val_loss": None})
        return
    if storage.exists(best_uri):
        current = storage.read_json(best_uri)
        same_phase = current.get("phase") == metrics["phase"]
        if same_phase and current.get("val_loss") is not None and current["val_loss"] <= val:
            if train_state.get("finished"):  # carry the calibration into the best checkpoint's pointer target
                _copy_calibration(out, rel, current["checkpoint"])
            return
    point_to(out, "best.json", rel, {"val_loss": float(val), "phase": metrics["phase"]})


def _copy_calibration(out: str, source_rel: str, target_rel: str) -> None:
    source = storage.join(out, source_rel, "calibration.json")
    if storage.exists(source):
        storage.write_bytes_atomic(storage.join(out, target_rel, "calibration.json"), storage.read_bytes(source))


def _prune_checkpoints(out: str, keep: int) -> None:
    """Delete old epoch checkpoints beyond ``keep``, never the ones ``latest``/``best`` point at."""
    root = storage.join(out, "checkpoints")
    if keep <= 0 or not storage.exists(root):
        return
    names = sorted({f.split("/checkpoints/", 1)[1].split("/", 1)[0] for f in storage.list_files(root)})
    protected = set()
    for pointer in ("latest.json", "best.json"):
        target = read_pointer(out, pointer)
        if target:
            protected.add(target.rstrip("/").rsplit("/", 1)[-1])
    for name in names[:-keep]:
        if name not in protected:
            storage.delete(storage.join(root, name), recursive=True)


# --------------------------------------------------------------------------------------------- driver


def train(
    method_name: str,
    method_config: Any,
    data: str,
    out: str,
    run: TrainRunConfig | None = None,
    *,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train ``method_name`` on the store at ``data``; checkpoints go under ``out``.

    Args:
        method_name: A registered method (``luss_ae``, ``std``, ``ssmtl``, ``mtvae``).
        method_config: The method's config dataclass instance.
        data: Store URI whose ``train`` split is used.
        out: Output URI (local path or ``s3://``) for checkpoints, ``latest.json`` and ``best.json``.
        run: Execution settings (workers, GPUs, failures, resume).
        callbacks: Ray Train callbacks (e.g. ``TuneReportCallback`` when a Tune trial runs this).

    Returns:
        The checkpoint to score with and the last reported metrics.

    Raises:
        ValueError: when the store was built for another frame spec than the method needs.
        RuntimeError: when training fails; the message says what happened and which checkpoint is intact.
    """
    run = run or TrainRunConfig()
    method = get_method(method_name)
    _check_store_matches(method, method_config, data)
    if run.use_gpu:
        require_gpus(run.num_workers or 1, "train")
    manifest = read_manifest(data).to_pylist()
    train_ids = sorted({r["video_id"] for r in manifest if r["split"] == "train"})
    if not train_ids:
        raise ValueError(f"store {data} has no videos in its train split")
    fit_ids, val_ids = split_videos(train_ids, run.val_fraction)
    datasets = {"train": build_example_dataset(method, method_config, data, fit_ids, run)}
    if val_ids:
        datasets["val"] = build_example_dataset(method, method_config, data, val_ids, run)
        normal = [r["video_id"] for r in manifest if r["video_id"] in set(val_ids) and r.get("video_label", 0) == 0]
        normal = normal[: run.calibration_videos]
        if normal:
            datasets["calibration"] = read_store(data, split="train").map_batches(
                keep_videos, fn_kwargs={"video_ids": frozenset(normal), "keep": True}, batch_format="numpy"
            )
    if run.num_workers == 0 or run.cache_examples:
        # Local mode hands the loop these datasets as they are, without DataConfig's execution options: without
        # preserve_order their blocks arrive as they finish and a seeded run trained differently every time.
        # A cached dataset is executed here, so it needs them too.
        for ds in datasets.values():
            ds.context.execution_options = _execution_options(run.deterministic)
    if run.cache_examples:
        started = time.perf_counter()
        for name in ("train", "val"):
            if name in datasets:
                datasets[name] = datasets[name].materialize()
        print(
            f"[train] cached {datasets['train'].count()} training examples in the object store "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    # Ray Train V2 deprecates resume_from_checkpoint: the worker loads this checkpoint itself when Ray has none.
    resume_from = read_pointer(out, "latest.json") if run.resume else None
    if resume_from is not None:
        print(f"[train] found {resume_from}; resuming (--no-resume starts over)", flush=True)
    fs, root = storage.resolve(storage.join(out, "ray_train"))
    # Ray Train passes only its own variables to workers; forward the storage retry budget and fault hooks.
    forwarded = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
    # The loop runs in a thread of the worker: reuse freed memory in every thread (see reuse_freed_memory_env).
    forwarded.update(reuse_freed_memory_env())
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "method": method_name,
            "method_config": config_to_dict(method_config),
            "run": config_to_dict(run),
            "out": out,
            "datasets": sorted(datasets),
            "resume_from": resume_from,
            "run_id": uuid.uuid4().hex,  # marks this call's checkpoints for a restarted worker (_restore)
        },
        scaling_config=ScalingConfig(
            num_workers=run.num_workers,
            use_gpu=run.use_gpu,
            placement_strategy=run.placement_strategy,
            resources_per_worker={"CPU": run.cpus_per_worker, **({"GPU": 1} if run.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=run.name,
            storage_path=root,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=max(run.keep_checkpoints, 1)),
            callbacks=callbacks,
            worker_runtime_env={"env_vars": forwarded} if forwarded else None,
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(
            # One worker reads the whole train set: Ray then executes it in the worker, without a SplitCoordinator
            # actor between the two (one process less to start, no per-block round trip through it).
            datasets_to_split=["train"] if run.num_workers > 1 else [],
            # Block order is part of a reproducible run (the local shuffle is seeded, its input must be too).
            execution_options=_execution_options(run.deterministic),
        ),
    )
    print(
        f"[train] {method_name}: {len(fit_ids)} training videos, {len(val_ids)} validation videos, "
        f"{run.num_workers or 'local'} worker(s), gpu={run.use_gpu}",
        flush=True,
    )
    try:
        with ray_train_settings(trainer):
            result = trainer.fit()
    except Exception as exc:
        intact = read_pointer(out, "latest.json")
        raise RuntimeError(
            f"training failed: {exc}. Last good checkpoint: {intact or 'none'}"
            + ("" if run.max_failures else " (set max_failures>=1 to restart failed workers automatically)")
        ) from exc
    final = read_pointer(out, "best.json") or read_pointer(out, "latest.json")
    if final is None:
        raise RuntimeError(f"training finished without writing a checkpoint under {out}")
    metrics = dict(result.metrics or {})
    return TrainResult(out=out, checkpoint=final, metrics=metrics)


_FORWARDED_ENV = ("VAD_FAULT_CRASH_AT_STEP", "VAD_FAULT_MARKER", "VAD_STORAGE_RETRIES", "VAD_REUSE_FREED_MEMORY")


def _check_store_matches(method: Method, cfg: Any, data: str) -> None:
    meta = read_store_metadata(data)
    spec = method.input_spec(cfg)
    if meta.get("store") != spec.store:
        raise ValueError(f"{method.name} reads a {spec.store!r} store, but {data} is a {meta.get('store')!r} store")
    if meta.get("spec_name") not in (None, spec.frame_spec):
        raise ValueError(
            f"{method.name} needs a store ingested with --spec {spec.frame_spec}, but {data} was built with "
            f"--spec {meta.get('spec_name')}"
        )
    frame = meta.get("frame_spec", {})
    height, width = getattr(cfg, "height", None), getattr(cfg, "width", None)
    if height is not None and frame.get("height") not in (None, height):
        raise ValueError(
            f"store {data} holds {frame.get('height')}x{frame.get('width')} frames but the {method.name} config says "
            f"{height}x{width}: set height={frame.get('height')} width={frame.get('width')} or re-ingest with --size"
        )
    if width is not None and frame.get("width") not in (None, width):
        raise ValueError(f"store {data} holds frames {frame.get('width')} wide but the config says width={width}")
