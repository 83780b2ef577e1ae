"""Score-weight (α) sweeps on the raw task scores a scoring run stored: no network runs again.

For LUSS-AE the fused score is eq. 15 of seed 000, ``A = α1·A_VCR + α2·A_FFP + α3·A_PRP`` on per-video rescaled
(eq. 16) or calibrated task scores, so every grid point is a linear combination of the same normalised columns.
The sweep therefore asks ``method.fuse`` once per task with one-hot weights (so the normalisation is exactly the
method's own, per video or calibrated, without re-implementing it), stacks the columns into ``A [frames × tasks]``
and gets the fused scores of every grid point as one product ``A @ W.T`` (``W [points × tasks]``). Micro AUROC
for all points is the Mann–Whitney statistic of each column's ranks; macro AUROC is the same per video with the
pad of :func:`pipelines.evaluate.padded_video_auroc`.

Linearity is an assumption about ``fuse``, so it is checked on every video (a random weight vector must give
``A @ w``); methods whose fusion is not linear in the weights (SSMTL's pixel maps, STD's exponents) fall back to
calling ``fuse`` once per point, which is slower but exact.

Stored rows: score files hold one row per frame with nearest-filled raw columns. Re-fusing must see the rows
``fuse`` saw when the run was scored, so for each video the first of these candidates that reproduces the
run's stored ``score`` column is used: frames flagged by a ``scored`` column (if the writer provides it), the
frames left after removing the nearest-filled copies at the video's edges, all frames. When none reproduces
it, the sweep still runs on all frames and says so in ``summary.json`` (``exact: false``).

Example:
    >>> from pipelines.tune import load_sweep_spec
    >>> grid = load_sweep_spec("configs/luss_ae/sweep.yaml").score  # doctest: +SKIP
    >>> result = score_sweep("outputs/scores", "outputs/store", "outputs/alpha", grid)  # doctest: +SKIP
    >>> result.best["alpha_vcr"], result.best["micro_auroc"]  # doctest: +SKIP
    (0.1, 0.93)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import rankdata

from pipelines import storage
from pipelines.checkpoint import resolve_checkpoint_dir
from pipelines.config import config_from_dict, config_to_dict
from pipelines.evaluate import frame_metrics, load_labels
from pipelines.score import fuse_video
from pipelines.tune import (
    SELECTION_NOTES,
    ScoreGrid,
    SweepResult,
    grid_points,
    method_config_with,
    sort_by_objective,
    split_selection,
    write_heatmaps,
    write_results,
    write_yaml,
)
from vad_models.base import Method
from vad_models.registry import get_method

__all__ = [
    "SCORED_COLUMN",
    "StoredRun",
    "auroc_columns",
    "fused_scores",
    "is_linear",
    "load_scoring_run",
    "padded_auroc_columns",
    "score_sweep",
    "task_matrix",
]

SCORED_COLUMN = "scored"  # optional bool column of a score file: the frame has a raw score row of its own
_RTOL, _ATOL = 1e-9, 1e-12
_CHUNK_ELEMENTS = 1 << 22  # frames × points per block (32 MiB of float64)


# ------------------------------------------------------------------------------------------------ stored runs


@dataclass
class StoredRun:
    """The raw task scores of one scoring run, ready to re-fuse.

    Attributes:
        uri: The scoring run (``OUT`` of ``pipelines.score.score``).
        method: The method that scored it.
        config: Its method config (from ``summary.json``).
        calibration_mode: ``per-video`` or ``global``.
        calibration: The checkpoint's calibration for ``global`` runs, else ``None``.
        weights: The fusion weights the run used (``None`` = the config's).
        rows: video id -> the rows ``fuse`` gets (``frame_idx`` and raw task columns).
        num_frames: video id -> frames.
        stored: video id -> the stored fused ``score`` (one per frame).
        exact: video id -> whether re-fusing ``rows`` with the run's weights reproduces ``stored``.
    """

    uri: str
    method: Method
    config: Any
    calibration_mode: str
    calibration: dict[str, tuple[float, float]] | None
    weights: dict[str, float] | None
    rows: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    num_frames: dict[str, int] = field(default_factory=dict)
    stored: dict[str, np.ndarray] = field(default_factory=dict)
    exact: dict[str, bool] = field(default_factory=dict)


def load_scoring_run(scores_uri: str, video_ids: Sequence[str] | None = None) -> StoredRun:
    """Read a finished scoring run (``summary.json``, ``scores/**.parquet``) for re-fusion.

    Args:
        scores_uri: ``OUT`` of a scoring run.
        video_ids: Videos to load (default: every scored video).

    Raises:
        ValueError: when the run is unfinished, mixes checkpoints or lacks a requested video.
    """
    summary_uri = storage.join(scores_uri, "summary.json")
    if not storage.exists(summary_uri) or not storage.exists(storage.join(scores_uri, "_SUCCESS")):
        raise ValueError(f"{scores_uri} is not a finished scoring run (no summary.json/_SUCCESS from jobs/score.py)")
    summary = storage.read_json(summary_uri)
    method = get_method(summary["method"])
    cfg = config_from_dict(method.config_class, summary["config"])
    mode = summary.get("calibration", "per-video")
    calibration = _checkpoint_calibration(summary["checkpoint"]) if mode == "global" else None
    run = StoredRun(scores_uri, method, cfg, mode, calibration, summary.get("weights"))
    wanted = set(video_ids) if video_ids is not None else None
    columns = method.score_columns(cfg)
    for uri in storage.list_files(storage.join(scores_uri, "scores"), suffixes=(".parquet",)):
        video_id = uri.rsplit("/", 1)[-1][: -len(".parquet")]  # score files are named <video_id>.parquet
        if wanted is not None and video_id not in wanted:
            continue
        if video_id in run.rows:
            raise ValueError(f"video {video_id!r} has score files in two datasets of {scores_uri}")
        table = storage.read_parquet(uri)
        meta = table.schema.metadata or {}
        if meta.get(b"checkpoint_id", b"").decode() != summary["checkpoint_id"]:
            raise ValueError(
                f"{uri} was scored by checkpoint {meta.get(b'checkpoint_id', b'?').decode()}, not the run's "
                f"{summary['checkpoint_id']}: re-score the run before sweeping"
            )
        frame_idx = table.column("frame_idx").to_numpy().astype(np.int64)
        if not np.array_equal(frame_idx, np.arange(len(frame_idx))):
            raise ValueError(f"{uri}: frame_idx must be 0..n-1 (one row per frame)")
        raw = {c: table.column(c).to_numpy().astype(np.float64) for c in columns if c in table.column_names}
        flags = table.column(SCORED_COLUMN).to_numpy() if SCORED_COLUMN in table.column_names else None
        run.num_frames[video_id] = len(frame_idx)
        run.stored[video_id] = table.column("score").to_numpy().astype(np.float64)
        run.rows[video_id], run.exact[video_id] = _matching_rows(run, video_id, raw, flags)
    missing = sorted(wanted - set(run.rows)) if wanted is not None else []
    if missing:
        raise ValueError(f"scoring run {scores_uri} has no scores for {len(missing)} video(s): {missing[:5]}")
    return run


def _checkpoint_calibration(checkpoint: str) -> dict[str, tuple[float, float]]:
    uri = storage.join(resolve_checkpoint_dir(checkpoint), "calibration.json")
    if not storage.exists(uri):
        raise ValueError(f"the run used global calibration but {uri} is missing")
    return {k: (float(v[0]), float(v[1])) for k, v in storage.read_json(uri).items()}


def _matching_rows(
    run: StoredRun, video_id: str, raw: dict[str, np.ndarray], flags: np.ndarray | None
) -> tuple[dict[str, np.ndarray], bool]:
    """The first candidate set of rows whose re-fusion with the run's weights reproduces the stored scores."""
    frames = run.num_frames[video_id]
    candidates = []
    if flags is not None:
        candidates.append(np.asarray(flags, dtype=bool))
    candidates += [_trim_edge_fill(raw, frames), np.ones(frames, dtype=bool)]
    for mask in candidates:
        rows = {"frame_idx": np.flatnonzero(mask).astype(np.int64), **{k: v[mask] for k, v in raw.items()}}
        fused = _fuse(run, run.config, rows, frames, run.weights)
        if np.allclose(fused, run.stored[video_id], rtol=1e-7, atol=1e-9):
            return rows, True
    mask = candidates[0] if flags is not None else candidates[-1]
    return {"frame_idx": np.flatnonzero(mask).astype(np.int64), **{k: v[mask] for k, v in raw.items()}}, False


def _trim_edge_fill(raw: Mapping[str, np.ndarray], frames: int) -> np.ndarray:
    """Undo nearest filling at the edges: of a leading (trailing) run of identical rows keep the last (first)."""
    mask = np.ones(frames, dtype=bool)
    if frames < 2 or not raw:
        return mask
    matrix = np.column_stack(list(raw.values()))
    same_as_next = np.all(matrix[:-1] == matrix[1:], axis=1)
    lead = int(np.argmin(same_as_next)) if not same_as_next.all() else frames - 1
    mask[:lead] = False
    trail = int(np.argmin(same_as_next[::-1])) if not same_as_next.all() else 0
    if trail:
        mask[frames - trail :] = False
    return mask


def _fuse(
    run: StoredRun, cfg: Any, rows: Mapping[str, np.ndarray], frames: int, weights: Mapping[str, float] | None
) -> np.ndarray:
    """The fused per-frame score exactly as ``pipelines.score`` computes it."""
    return fuse_video(run.method, cfg, rows, frames, weights=weights, calibration=run.calibration)["score"]


# --------------------------------------------------------------------------------------------- fused columns


def task_matrix(run: StoredRun, cfg: Any, names: Sequence[str], video_id: str) -> np.ndarray:
    """``[frames, len(names)]``: the video's fused score with one-hot weights, one column per task.

    For a fusion linear in its weights, the fused score of weights ``w`` is ``task_matrix(...) @ w``.
    """
    frames = run.num_frames[video_id]
    columns = []
    for name in names:
        onehot = {other: float(other == name) for other in names}
        columns.append(_fuse(run, cfg, run.rows[video_id], frames, onehot))
    return np.column_stack(columns)


def is_linear(
    run: StoredRun, cfg: Any, names: Sequence[str], matrices: Mapping[str, np.ndarray], seed: int = 0
) -> bool:
    """Whether ``fuse`` is linear in the weights on these videos: two random weight vectors must give ``A @ w``."""
    rng = np.random.default_rng(seed)
    for video_id, matrix in matrices.items():
        for _ in range(2):
            w = rng.uniform(0.05, 2.0, size=len(names))
            direct = _fuse(run, cfg, run.rows[video_id], run.num_frames[video_id], dict(zip(names, w.tolist())))
            scale = max(float(np.max(np.abs(direct))), 1.0)
            if not np.allclose(matrix @ w, direct, rtol=_RTOL, atol=_ATOL * scale * 1e3):
                return False
    return True


def fused_scores(
    run: StoredRun, cfg: Any, names: Sequence[str], weights: np.ndarray, video_id: str, linear: bool
) -> np.ndarray:
    """``[frames, points]`` fused scores of one video for weight rows ``weights [points, len(names)]``."""
    if linear:
        return task_matrix(run, cfg, names, video_id) @ np.asarray(weights, dtype=np.float64).T
    frames = run.num_frames[video_id]
    return np.column_stack(
        [_fuse(run, cfg, run.rows[video_id], frames, dict(zip(names, w.tolist()))) for w in np.atleast_2d(weights)]
    )


# ------------------------------------------------------------------------------------------------------ AUROC


def auroc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of ``scores [frames, points]`` against 0/1 ``labels``, via Mann–Whitney U.

    Ties get average ranks, which is what ``sklearn.metrics.roc_auc_score`` computes; ``nan`` when ``labels``
    hold one class only.

    Example:
        >>> auroc_columns(np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]]), np.array([0, 1, 1])).tolist()
        [1.0, 0.0]
    """
    y = np.asarray(labels).astype(bool)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return np.full(np.shape(scores)[1], np.nan)
    ranks = rankdata(scores, axis=0)
    return (ranks[y].sum(axis=0) - positives * (positives + 1) / 2.0) / (positives * negatives)


def padded_auroc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-column macro-AUROC term of one video: the pad of :func:`pipelines.evaluate.padded_video_auroc`.

    Example:
        >>> padded_auroc_columns(np.array([[0.2], [0.5], [0.9]]), np.array([1, 1, 1])).tolist()
        [0.875]
    """
    padded = np.vstack([scores.min(axis=0, keepdims=True), scores, scores.max(axis=0, keepdims=True)])
    return auroc_columns(padded, np.concatenate([[0], np.asarray(labels, dtype=np.int64), [1]]))


def _evaluate(
    run: StoredRun,
    cfg: Any,
    names: Sequence[str],
    weights: np.ndarray,
    labels: Mapping[str, np.ndarray],
    video_ids: Sequence[str],
    bases: Mapping[str, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Micro and macro AUROC of every weight row on ``video_ids`` (``bases``: task matrices, linear fusion only)."""
    y = np.concatenate([labels[v] for v in video_ids])
    micro = np.empty(len(weights))
    macro = np.empty(len(weights))
    for chunk in _chunks(len(weights), y.size):
        w = weights[chunk]
        per_video = {
            v: bases[v] @ w.T if bases is not None else fused_scores(run, cfg, names, w, v, linear=False)
            for v in video_ids
        }
        for v, values in per_video.items():
            if not np.isfinite(values).all():
                raise ValueError(f"fusion gave non-finite scores for video {v!r} (constant task scores?)")
        micro[chunk] = auroc_columns(np.concatenate([per_video[v] for v in video_ids]), y)
        macro[chunk] = np.mean([padded_auroc_columns(per_video[v], labels[v]) for v in video_ids], axis=0)
    return micro, macro


def _chunks(points: int, frames: int) -> Iterator[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(frames, 1))
    for start in range(0, points, step):
        yield slice(start, min(start + step, points))


# ------------------------------------------------------------------------------------------------------ sweep


def score_sweep(
    scores_uri: str,
    labels_uri: str,
    out: str,
    grid: ScoreGrid,
    *,
    selection: str = "validation",
    val_fraction: float = 0.5,
    seed: int = 0,
    objective: str | None = None,
) -> SweepResult:
    """Evaluate every grid point of fusion weights on a scoring run's stored task scores.

    Args:
        scores_uri: A finished scoring run (``OUT`` of ``jobs/score.py``).
        labels_uri: Frame labels (a store with ``labels.parquet``, see :func:`pipelines.evaluate.load_labels`).
        out: Where results, best configs, heat-maps and ``summary.json`` go.
        grid: Weights, their values and fusion-only config fields (``configs/<method>/sweep.yaml``).
        selection: ``validation`` (choose on ``val_fraction`` of the labelled videos, report the rest) or
            ``test`` (choose on all labelled videos: optimistic, as in the papers' ablations).
        val_fraction: Fraction of the labelled videos that choose (``selection="validation"``).
        seed: Seed of the selection split and of the linearity check.
        objective: Overrides ``grid.objective``.

    Returns:
        The sorted results table, the best row, the held-out metrics of the best point and the files written.

    Raises:
        ValueError: for a bad protocol, unknown fusion weights or labelled videos the run did not score.
    """
    started = time.perf_counter()
    objective = objective or grid.objective
    labels = load_labels(labels_uri)
    chosen, held_out = split_selection(labels, selection, val_fraction, seed)
    run = load_scoring_run(scores_uri, chosen + held_out)
    names = list(grid.weights)
    weights = grid.weight_matrix()
    if weights.size == 0:
        raise ValueError("the score grid has no point with a non-zero weight")
    rows: list[dict[str, Any]] = []
    linear_by_point: dict[str, bool] = {}
    for config_point in grid_points(grid.config) or [{}]:
        cfg = method_config_with(run.method.config_class, run.config, config_point)
        bases = {v: task_matrix(run, cfg, names, v) for v in chosen}
        linear = _try_linear(run, cfg, names, bases, seed)
        linear_by_point[repr(config_point)] = linear
        micro, macro = _evaluate(run, cfg, names, weights, labels, chosen, bases if linear else None)
        for i, w in enumerate(weights):
            row = {**config_point, **{grid.column(n): float(v) for n, v in zip(names, w)}}
            rows.append({**row, "micro_auroc": _finite(micro[i]), "macro_auroc": _finite(macro[i])})
    table = sort_by_objective(pa.Table.from_pylist(rows), objective)
    best = table.slice(0, 1).to_pylist()[0]
    best_cfg = method_config_with(run.method.config_class, run.config, {k: best[k] for k in grid.config})
    best_weights = {n: float(best[grid.column(n)]) for n in names}
    check = _check_best(run, best_cfg, best_weights, labels, chosen, best)
    heldout = _heldout_metrics(run, best_cfg, best_weights, labels, held_out) if held_out else None
    exact = all(run.exact[v] for v in chosen + held_out)
    warnings = [
        f"the best point sets {k}={best[k]!r} but the scoring run used {k}={getattr(run.config, k)!r}: "
        f"jobs/score.py --weights-config carries the weights only, so score with a checkpoint config that sets {k}"
        for k in grid.config
        if best[k] != getattr(run.config, k, best[k])
    ]
    notes = _notes(run, selection, val_fraction, chosen, held_out, objective, heldout, exact, linear_by_point)
    notes += [f"warning: {w}" for w in warnings]
    files = write_results(out, table, objective, title=f"Score-weight sweep: {run.method.name}", notes=notes)
    files.update(_write_best(out, run, grid, best_cfg, best_weights, best, objective, selection, heldout))
    dims = [k for k in grid.config if len(grid.config[k]) > 1] + [grid.column(n) for n in names]
    files["heatmaps"] = write_heatmaps(out, table, dims, objective, best)
    summary = {
        "kind": "score",
        "method": run.method.name,
        "scores": scores_uri,
        "labels": labels_uri,
        "objective": objective,
        "selection": selection,
        "selection_note": SELECTION_NOTES[selection],
        "val_fraction": val_fraction if selection == "validation" else None,
        "seed": seed,
        "selection_videos": chosen,
        "heldout_videos": held_out,
        "calibration": run.calibration_mode,
        "points": table.num_rows,
        "linear": linear_by_point,
        "exact": exact,
        "inexact_videos": sorted(v for v in chosen + held_out if not run.exact[v]),
        "best": best,
        "best_check": check,
        "heldout": heldout,
        "warnings": warnings,
        "files": files,
        "duration_s": round(time.perf_counter() - started, 3),
    }
    storage.write_json_atomic(storage.join(out, "summary.json"), summary)
    return SweepResult(out, table, best, heldout, files, summary)


def _try_linear(run: StoredRun, cfg: Any, names: Sequence[str], bases: Mapping[str, np.ndarray], seed: int) -> bool:
    try:
        return is_linear(run, cfg, names, bases, seed)
    except (ValueError, KeyError):  # e.g. a fusion that rejects one-hot weights: evaluate point by point
        return False


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _check_best(
    run: StoredRun,
    cfg: Any,
    weights: Mapping[str, float],
    labels: Mapping[str, np.ndarray],
    video_ids: Sequence[str],
    best: Mapping[str, Any],
) -> dict[str, Any]:
    """Re-fuse the best point directly and compare its AUROC with the table's (guards the vectorised path)."""
    scores = {v: _fuse(run, cfg, run.rows[v], run.num_frames[v], weights) for v in video_ids}
    metrics = frame_metrics(scores, {v: labels[v] for v in video_ids})
    for key in ("micro_auroc", "macro_auroc"):
        direct, table = metrics[key], best[key]
        if (direct is None) != (table is None) or (direct is not None and abs(direct - table) > 1e-9):
            raise RuntimeError(
                f"vectorised {key} {table} of the best point differs from direct fusion ({direct}): "
                f"{run.method.name}.fuse does not behave as the sweep assumes"
            )
    return {"micro_auroc": metrics["micro_auroc"], "macro_auroc": metrics["macro_auroc"], "agrees": True}


def _heldout_metrics(
    run: StoredRun, cfg: Any, weights: Mapping[str, float], labels: Mapping[str, np.ndarray], video_ids: list[str]
) -> dict[str, Any]:
    scores = {v: _fuse(run, cfg, run.rows[v], run.num_frames[v], weights) for v in video_ids}
    metrics = frame_metrics(scores, {v: labels[v] for v in video_ids})
    return {k: metrics[k] for k in ("micro_auroc", "macro_auroc", "pr_auc", "num_videos", "num_frames")}


def _notes(
    run: StoredRun,
    selection: str,
    val_fraction: float,
    chosen: Sequence[str],
    held_out: Sequence[str],
    objective: str,
    heldout: Mapping[str, Any] | None,
    exact: bool,
    linear: Mapping[str, bool],
) -> list[str]:
    notes = [
        f"scoring run: `{run.uri}` ({run.calibration_mode} calibration)",
        f"selection: **{selection}** — {SELECTION_NOTES[selection]}",
        f"objective: {objective} on {len(chosen)} selection video(s)"
        + (f" ({val_fraction:.0%} of the labelled videos)" if selection == "validation" else ""),
        "fusion: " + ("vectorised (fuse is linear in the weights)" if all(linear.values()) else "fuse per point"),
    ]
    if heldout is not None:
        notes.append(
            f"best point on the {len(held_out)} held-out video(s): micro AUROC {_fmt(heldout['micro_auroc'])}, "
            f"macro AUROC {_fmt(heldout['macro_auroc'])}"
        )
    if not exact:
        notes.append(
            "re-fusion could not reproduce some stored scores exactly (see summary.json inexact_videos): "
            "the table is approximate for those videos"
        )
    return notes


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def _write_best(
    out: str,
    run: StoredRun,
    grid: ScoreGrid,
    cfg: Any,
    weights: Mapping[str, float],
    best: Mapping[str, Any],
    objective: str,
    selection: str,
    heldout: Mapping[str, Any] | None,
) -> dict[str, str]:
    fields = {grid.weights[n]: weights[n] for n in weights if grid.weights[n]}
    best_cfg = method_config_with(run.method.config_class, cfg, fields)
    held = "" if heldout is None else f"; held-out micro AUROC {_fmt(heldout['micro_auroc'])}"
    header = (
        f"Best point of a {run.method.name} score-weight sweep of {run.uri}\n"
        f"{objective} {_fmt(best[objective])} on the selection videos (selection: {selection}){held}"
    )
    weights_uri = write_yaml(
        storage.join(out, "best_weights.yaml"),
        {"weights": dict(weights), "config": {k: best[k] for k in grid.config} | fields},
        header + "\nUse: python jobs/score.py --checkpoint CKPT --data STORE --out OUT "
        "--weights-config best_weights.yaml\n'config' lists the fusion-only config fields of this point.",
    )
    config_uri = write_yaml(
        storage.join(out, "best_config.yaml"),
        {"method": run.method.name, **config_to_dict(best_cfg)},
        header + f"\nUse: python jobs/train_<method>.py --config best_config.yaml (method {run.method.name})",
    )
    return {"best_weights": weights_uri, "best_config": config_uri}
