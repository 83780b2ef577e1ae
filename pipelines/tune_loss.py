"""Loss-weight (λ) sweeps with Ray Tune: every grid point trains a model, scores the selection videos, reports AUROC.

The pattern is Ray's current one for tuning Ray Train runs (REFERENCE.md §3; ``Tuner(trainer)`` is deprecated):
each Tune trial runs :func:`loss_trial`, a *driver* function that calls :func:`pipelines.train.train` (which builds
a ``TorchTrainer``) with a ``TuneReportCallback`` and the run name ``train-trial_id=<trial id>``, then scores the
selection videos with :func:`pipelines.score.score` and reports their AUROC with ``ray.tune.report``.

Resources. Ray Train's local mode (``num_workers=0``) refuses to run inside a Tune trial in Ray 2.60 (its
``ray.train`` calls raise there), so trials train with at least one Ray Train worker. The trial function itself
only waits on Ray Train and Ray Data, so by default it reserves memory, not CPU: the CPUs stay free for the
training worker, the scoring actor and the Ray Data tasks both launch (a trial that held a CPU would starve them
on a 2-CPU machine and deadlock). :func:`plan_concurrency` caps concurrent trials so one CPU is always left for
Ray Data.

Resuming. The experiment lives at ``OUT/tune/<name>`` under a stable name and every trial writes its training run
under ``OUT/trials/<point>/``; rerunning the same command restores the experiment
(``Tuner.restore(..., resume_unfinished=True)``), finished trials are not run again, and an interrupted trial's
training continues from its last epoch checkpoint.

Example:
    >>> from pipelines.tune import load_sweep_spec
    >>> grid = load_sweep_spec("configs/luss_ae/sweep.yaml").loss  # doctest: +SKIP
    >>> result = loss_sweep("luss_ae", cfg, "outputs/store", "outputs/lambda", grid)  # doctest: +SKIP
    >>> result.best["lambda_ffp"], result.best["micro_auroc"]  # doctest: +SKIP
    (0.4, 0.91)
"""

from __future__ import annotations

import json
import math
import posixpath
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import ray
from ray import tune
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from pipelines import storage
from pipelines.config import config_from_dict, config_to_dict
from pipelines.evaluate import frame_metrics, load_labels, load_scores
from pipelines.score import CALIBRATION_MODES, ScoreConfig, score
from pipelines.train import TrainRunConfig, train
from pipelines.tune import (
    SELECTION_NOTES,
    LossGrid,
    SweepResult,
    grid_points,
    method_config_with,
    point_key,
    sort_by_objective,
    split_selection,
    value_label,
    write_heatmaps,
    write_results,
    write_yaml,
)
from vad_models.registry import get_method

__all__ = ["LossSweepConfig", "loss_sweep", "loss_trial", "plan_concurrency", "score_videos"]

# Ray Data needs this many CPUs free besides the trials (its read/map tasks), or scoring and ingest stall.
DATA_CPUS = 1.0


@dataclass(frozen=True)
class LossSweepConfig:
    """How a loss sweep executes (the grid itself comes from the sweep file).

    Attributes:
        name: Stable experiment name: ``OUT/tune/<name>``; rerunning with the same name resumes.
        trials_concurrency: Trials run at once (capped by :func:`plan_concurrency`).
        train: Execution settings of every trial's training run (``name`` is set per trial). ``num_workers``
            must be >= 1 (see the module docstring).
        cpus_per_trial: CPUs reserved by each trial's driver function (0: it only waits).
        memory_per_trial_mb: Memory reserved by each trial's driver function.
        max_failures: Times Tune retries a failed trial (training resumes from its last checkpoint).
        selection: ``validation`` or ``test`` (see :func:`pipelines.tune.split_selection`).
        val_fraction: Fraction of the labelled videos that choose the point (``selection="validation"``).
        seed: Seed of the selection split.
        calibration: Scoring calibration mode of every trial (``per-video`` or ``global``).
        resume: Restore ``OUT/tune/<name>`` when it exists instead of refusing to overwrite it.
    """

    name: str = "loss-sweep"
    trials_concurrency: int = 1
    train: TrainRunConfig = field(default_factory=lambda: TrainRunConfig(num_workers=1, log_every=0))
    cpus_per_trial: float = 0.0
    memory_per_trial_mb: int = 512
    max_failures: int = 0
    selection: str = "validation"
    val_fraction: float = 0.5
    seed: int = 0
    calibration: str = "per-video"
    resume: bool = True

    def __post_init__(self) -> None:
        if self.train.num_workers < 1:
            raise ValueError(
                "loss sweeps train with num_workers >= 1: Ray Train's local mode (num_workers=0) cannot run inside "
                "a Ray Tune trial (Ray 2.60 rejects ray.train calls there)"
            )
        if self.trials_concurrency < 1 or self.cpus_per_trial < 0 or self.memory_per_trial_mb < 1:
            raise ValueError("trials_concurrency and memory_per_trial_mb must be >= 1 and cpus_per_trial >= 0")
        if self.calibration not in CALIBRATION_MODES:
            raise ValueError(f"calibration must be one of {CALIBRATION_MODES}, got {self.calibration!r}")


def plan_concurrency(requested: int, cfg: LossSweepConfig, cluster: Mapping[str, float]) -> int:
    """Trials that can run at once on ``cluster`` while one CPU stays free for Ray Data.

    A trial needs its driver's CPUs plus the larger of its training workers' CPUs and one scoring actor.

    Raises:
        ValueError: when not even one trial fits (the message says what to lower).

    Example:
        >>> plan_concurrency(2, LossSweepConfig(), {"CPU": 2.0})
        [tune] running 1 trial(s) at once instead of 2: the cluster fits no more
        1
    """
    run = cfg.train
    per_trial = cfg.cpus_per_trial + max(run.num_workers * run.cpus_per_worker, 1.0)
    fits = math.floor((cluster.get("CPU", 0.0) - DATA_CPUS) / per_trial + 1e-9)
    if run.use_gpu:
        fits = min(fits, math.floor(cluster.get("GPU", 0.0) / run.num_workers))
    if fits < 1:
        raise ValueError(
            f"one trial needs {per_trial:g} CPU(s) ({run.num_workers} worker(s) x {run.cpus_per_worker:g} CPU + "
            f"{cfg.cpus_per_trial:g} for the trial) plus {DATA_CPUS:g} free for Ray Data, but the cluster has "
            f"{cluster.get('CPU', 0):g} CPU(s)" + (f" and {cluster.get('GPU', 0):g} GPU(s)" if run.use_gpu else "")
            + ": lower --cpus-per-worker / --num-workers or use a bigger cluster"
        )
    if requested > fits:
        print(f"[tune] running {fits} trial(s) at once instead of {requested}: the cluster fits no more", flush=True)
    return min(requested, fits)


# -------------------------------------------------------------------------------------------------- one trial


def score_videos(
    checkpoint: str,
    data: str,
    out: str,
    video_ids: Sequence[str],
    labels: Mapping[str, Any],
    *,
    calibration: str = "per-video",
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Score ``video_ids`` of ``data`` with ``checkpoint`` into ``out`` and return their frame metrics.

    Videos already scored there by the same checkpoint are skipped, so a restarted trial does not redo them.
    Inside a Tune trial the scoring driver runs as a zero-CPU Ray task outside the trial's placement group:
    Tune captures a trial's child tasks into its placement group, which reserves no CPU for Ray Data's tasks.
    """
    options = ScoreConfig(
        split=None, video_ids=tuple(video_ids), only_new=True, calibration=calibration, use_gpu=use_gpu
    )
    if ray.util.get_current_placement_group() is None:
        summary = score(checkpoint, data, out, options)
    else:
        outside = PlacementGroupSchedulingStrategy(placement_group=None)
        task = ray.remote(num_cpus=0)(_quiet_score).options(scheduling_strategy=outside)
        summary = ray.get(task.remote(checkpoint, data, out, options))
    if summary["videos_failed"]:
        raise RuntimeError(f"scoring failed for {summary['videos_failed']}")
    scores = load_scores(out)
    return frame_metrics({v: scores[v] for v in video_ids if v in scores}, {v: labels[v] for v in video_ids})


def _quiet_score(checkpoint: str, data: str, out: str, options: ScoreConfig) -> dict[str, Any]:
    """``score`` without Ray Data progress bars (concurrent trials' bars would interleave in the sweep's log)."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    return score(checkpoint, data, out, options)


def loss_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """The Tune function of one grid point: train, score the selection videos, ``tune.report`` their AUROC.

    Args:
        config: ``{"point": {config field: value}}`` from the Tune grid.
        setup: What every trial shares (method, base config, store, output, run settings, selection videos).
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    ray.data.DataContext.get_current().enable_progress_bars = False  # this process is the trial's own
    method = get_method(setup["method"])
    point = dict(config["point"])
    cfg = method_config_with(method.config_class, config_from_dict(method.config_class, setup["base"]), point)
    trial_id = tune.get_context().get_trial_id()
    trial_out = storage.safe_join(setup["out"], "trials", point_key(point))
    run = TrainRunConfig(**{**setup["train"], "name": f"train-trial_id={trial_id}"})
    result = train(method.name, cfg, setup["data"], storage.join(trial_out, "train"), run,
                   callbacks=[TuneReportCallback()])  # fmt: skip
    labels = load_labels(setup["data"])
    metrics = score_videos(
        result.checkpoint, setup["data"], storage.join(trial_out, "scores"), setup["selection_videos"], labels,
        calibration=setup["calibration"], use_gpu=run.use_gpu,
    )  # fmt: skip
    tune.report(
        {
            "micro_auroc": metrics["micro_auroc"],
            "macro_auroc": metrics["macro_auroc"],
            "val_loss": result.metrics.get("val_loss"),
            "checkpoint": result.checkpoint,
            "trial_dir": trial_out,
            "sweep_done": True,
        }
    )


# ---------------------------------------------------------------------------------------------------- driver


def loss_sweep(
    method_name: str,
    base_config: Any,
    data: str,
    out: str,
    grid: LossGrid,
    cfg: LossSweepConfig | None = None,
    *,
    objective: str | None = None,
    tune_callbacks: Sequence[Any] | None = None,
) -> SweepResult:
    """Run (or resume) a Tune grid over loss weights and write the results.

    Args:
        method_name: A registered method.
        base_config: The method config every trial starts from (grid points override fields of it).
        data: Store URI (train split for training, labelled videos for selection).
        out: Output URI: ``tune/`` (Tune's experiment), ``trials/<point>/`` (training runs and scores), results.
        grid: The ``loss:`` section of the sweep file.
        cfg: Execution settings.
        objective: Overrides ``grid.objective``.
        tune_callbacks: Extra ``ray.tune.Callback`` objects (logging, notifications).

    Returns:
        The results; ``complete`` is False when trials are unfinished (rerun the same call to resume them).

    Raises:
        ValueError: for an invalid grid point, too small a cluster, or an ``OUT`` that holds a different sweep.
    """
    started = time.perf_counter()
    cfg = cfg or LossSweepConfig()
    objective = objective or grid.objective
    method = get_method(method_name)
    for point in grid_points(grid.grid):  # fail before any trial starts
        method_config_with(method.config_class, base_config, point)
    labels = load_labels(data)
    chosen, held_out = split_selection(labels, cfg.selection, cfg.val_fraction, cfg.seed)
    setup = {
        "method": method_name,
        "base": config_to_dict(base_config),
        "data": data,
        "out": out,
        "train": config_to_dict(cfg.train),
        "selection_videos": chosen,
        "calibration": cfg.calibration,
    }
    _claim_output(out, {**setup, "grid": {k: list(v) for k, v in grid.grid.items()}, "name": cfg.name})
    grid_result = _run_tuner(setup, grid, cfg, tune_callbacks)
    table, complete = _results_table(grid_result, grid.grid, objective)
    dims = [k for k, values in grid.grid.items() if len(values) > 1]
    notes = [
        f"store: `{data}`; {table.num_rows} grid point(s), {cfg.train.num_workers} worker(s) per trial",
        f"selection: **{cfg.selection}** — {SELECTION_NOTES[cfg.selection]}",
        f"objective: {objective} on {len(chosen)} selection video(s)",
    ]
    best: dict[str, Any] = {}
    heldout = None
    files: dict[str, Any] = {}
    if complete:
        best = table.slice(0, 1).to_pylist()[0]
        if held_out:
            heldout = score_videos(
                best["checkpoint"], data, storage.join(out, "heldout_scores"), held_out, labels,
                calibration=cfg.calibration, use_gpu=cfg.train.use_gpu,
            )  # fmt: skip
            heldout = {k: heldout[k] for k in ("micro_auroc", "macro_auroc", "pr_auc", "num_videos", "num_frames")}
            notes.append(
                f"best point on the {len(held_out)} held-out video(s): micro AUROC {_fmt(heldout['micro_auroc'])}, "
                f"macro AUROC {_fmt(heldout['macro_auroc'])}"
            )
    else:
        notes.append("**incomplete**: some trials did not finish; rerun the same command to resume them")
    files.update(
        write_results(out, table, objective, title=f"Loss-weight sweep: {method_name}", notes=notes,
                      parquet_only=("checkpoint", "point"))  # fmt: skip
    )
    if complete:
        best_cfg = method_config_with(method.config_class, base_config, json.loads(best["point"]))
        held = "" if heldout is None else f"; held-out micro AUROC {_fmt(heldout['micro_auroc'])}"
        files["best_config"] = write_yaml(
            storage.join(out, "best_config.yaml"),
            {"method": method_name, **config_to_dict(best_cfg)},
            f"Best point of a {method_name} loss-weight sweep ({cfg.name})\n"
            f"{objective} {_fmt(best[objective])} on the selection videos (selection: {cfg.selection}){held}\n"
            f"Trained checkpoint: {best['checkpoint']}\n"
            f"Use: python jobs/train_<method>.py --data STORE --out OUT --config best_config.yaml",
        )
        files["heatmaps"] = write_heatmaps(out, table, dims, objective, best)
    summary = {
        "kind": "loss",
        "method": method_name,
        "name": cfg.name,
        "data": data,
        "objective": objective,
        "selection": cfg.selection,
        "selection_note": SELECTION_NOTES[cfg.selection],
        "val_fraction": cfg.val_fraction if cfg.selection == "validation" else None,
        "seed": cfg.seed,
        "selection_videos": chosen,
        "heldout_videos": held_out,
        "grid": {k: list(v) for k, v in grid.grid.items()},
        "points": table.num_rows,
        "complete": complete,
        "best": best,
        "heldout": heldout,
        "experiment": storage.join(out, "tune", cfg.name),
        "files": files,
        "duration_s": round(time.perf_counter() - started, 3),
    }
    storage.write_json_atomic(storage.join(out, "summary.json"), summary)
    return SweepResult(out, table, best, heldout, files, summary, complete)


def _claim_output(out: str, identity: dict[str, Any]) -> None:
    """Record what sweep ``out`` holds; refuse to mix a different sweep into it."""
    uri = storage.join(out, "sweep.json")
    if storage.exists(uri):
        previous = storage.read_json(uri)
        if previous != identity:
            changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            raise ValueError(
                f"{out} already holds a different sweep (changed: {', '.join(changed)}); use a new --out, "
                "or the original settings to resume it"
            )
        return
    storage.write_json_atomic(uri, identity)


def _run_tuner(
    setup: dict[str, Any], grid: LossGrid, cfg: LossSweepConfig, callbacks: Sequence[Any] | None
) -> tune.ResultGrid:
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised: call pipelines.runtime.init_ray() first")
    concurrency = plan_concurrency(cfg.trials_concurrency, cfg, ray.cluster_resources())
    resources = {"cpu": cfg.cpus_per_trial, "memory": cfg.memory_per_trial_mb * 1024**2}
    trainable = tune.with_resources(tune.with_parameters(loss_trial, setup=setup), resources)
    fs, root = storage.resolve(storage.join(setup["out"], "tune"))
    path = posixpath.join(root, cfg.name)
    if cfg.resume and tune.Tuner.can_restore(path, storage_filesystem=fs):
        print(f"[tune] resuming the sweep at {path}: finished trials are kept", flush=True)
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, restart_errored=True, storage_filesystem=fs
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"point": {k: tune.grid_search(list(v)) for k, v in grid.grid.items()}},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(
                name=cfg.name,
                storage_path=root,
                storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                callbacks=list(callbacks or []),
                verbose=1,
            ),
        )
    return tuner.fit()


def _results_table(
    grid_result: tune.ResultGrid, grid: Mapping[str, Sequence[Any]], objective: str
) -> tuple[pa.Table, bool]:
    """One row per grid point; points Tune has not created yet (an interrupted sweep) are ``not started``."""
    rows: dict[str, dict[str, Any]] = {}
    for result in grid_result:
        metrics = result.metrics or {}
        point = dict((result.config or {}).get("point", {}))
        if metrics.get("sweep_done"):
            status = "ok"
        elif result.error is not None:
            status = f"error: {type(result.error).__name__}"
        else:
            status = "unfinished"
        done = status == "ok"
        rows[_point_id(point)] = _row(
            point, grid, status,
            micro_auroc=metrics.get("micro_auroc") if done else None,
            macro_auroc=metrics.get("macro_auroc") if done else None,
            val_loss=metrics.get("val_loss") if done else None,
            checkpoint=metrics.get("checkpoint") if done else None,
            trial_id=metrics.get("trial_id") or _trial_id(result),
        )  # fmt: skip
    for point in grid_points(grid):
        rows.setdefault(_point_id(point), _row(point, grid, "not started"))
    complete = all(row["status"] == "ok" for row in rows.values())
    return sort_by_objective(pa.Table.from_pylist(list(rows.values())), objective), complete


def _point_id(point: Mapping[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)


def _row(point: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], status: str, **values: Any) -> dict[str, Any]:
    columns = ("micro_auroc", "macro_auroc", "val_loss", "checkpoint", "trial_id")
    return {
        **{k: value_label(point.get(k)) for k in grid},
        **{c: values.get(c) for c in columns},
        "status": status,
        "point": _point_id(point),
    }


def _trial_id(result: Any) -> str | None:
    path = getattr(result, "path", None)
    return posixpath.basename(path) if path else None


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"

