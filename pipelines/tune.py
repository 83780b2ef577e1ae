"""Hyper-parameter sweeps: what both kinds share (sweep files, the selection protocol, result outputs).

Two sweeps answer two different questions (seed 000 §3.3 and §4.3 for LUSS-AE's λ and α):

- **loss sweep** (:mod:`pipelines.tune_loss`): a Ray Tune grid over training-loss weights (LUSS-AE's
  ``lambda_*`` of eq. 7, STD's ``lambda_r`` of eq. 12, SSMTL's ``lam`` of eq. 5, MT-VAE's ``kl_weight`` of eq. 6);
  every trial trains a model, scores the selection videos and reports their AUROC;
- **score sweep** (:mod:`pipelines.tune_score`): a grid over fusion weights (LUSS-AE's ``alpha_*`` of eq. 15) and
  fusion-only config fields (the error measure), computed from the raw task scores a scoring run stored; the
  network never runs again.

Both choose on the *selection* videos (:func:`split_selection`) and write, under ``OUT``::

    results.parquet     one row per grid point, sorted by the objective (best first)
    results.md          the same table (top rows) with the protocol spelled out
    best_config.yaml    the best point as a method config (``jobs/train_<method>.py --config``)
    best_weights.yaml   score sweeps: ``weights:`` for ``jobs/score.py --weights-config``
    heatmaps/*.png      the objective over 2-D slices of the grid through the best point
    summary.json        protocol, best point, held-out AUROC of the best point, files

Sweep files (``configs/<method>/sweep.yaml``) hold a ``loss:`` and a ``score:`` section; see
:func:`load_sweep_spec`.

Example:
    >>> spec = load_sweep_spec("configs/luss_ae/sweep.yaml")  # doctest: +SKIP
    >>> spec.loss.grid  # doctest: +SKIP
    {'lambda_ffp': (0.0, 0.4), 'lambda_prp': (0.0, 1.0)}
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipelines import storage
from pipelines.config import ConfigError, config_to_dict, method_config_with

__all__ = [
    "OBJECTIVES",
    "SELECTIONS",
    "LossGrid",
    "ScoreGrid",
    "SweepResult",
    "SweepSpec",
    "default_sweep_path",
    "grid_points",
    "load_sweep_spec",
    "method_config_with",
    "point_key",
    "split_selection",
    "value_label",
    "write_heatmaps",
    "write_results",
    "write_yaml",
]

OBJECTIVES = ("micro_auroc", "macro_auroc")
SELECTIONS = ("validation", "test")
ROOT = Path(__file__).resolve().parents[1]

SELECTION_NOTES = {
    "validation": (
        "chosen on a held-out subset of the labelled videos (selection videos); the best point's AUROC is then "
        "reported on the remaining videos, which played no part in the choice"
    ),
    "test": (
        "chosen on the test labels themselves, as the papers' ablations do: the reported AUROC of the best point "
        "is optimistic and must not be compared with results obtained without tuning on the test set"
    ),
}


# ------------------------------------------------------------------------------------------------ sweep files


@dataclass(frozen=True)
class LossGrid:
    """The ``loss:`` section of a sweep file: a grid over method config fields, one training run per point.

    Attributes:
        grid: Config field (``a.b`` for nested fields) -> values; every combination is one Tune trial.
        objective: Metric to maximise on the selection videos (``micro_auroc`` or ``macro_auroc``).
    """

    grid: dict[str, tuple[Any, ...]]
    objective: str = "micro_auroc"


@dataclass(frozen=True)
class ScoreGrid:
    """The ``score:`` section: fusion weights (and fusion-only config fields) evaluated on stored task scores.

    Attributes:
        weights: Weight name as ``method.fuse(weights=...)`` spells it -> the method config field that holds its
            default (``None`` when the config has none, e.g. STD's exponents).
        values: Values every weight takes; all combinations except the all-zero one are evaluated.
        config: Config field -> values for fields that only change fusion (e.g. LUSS-AE's ``error``).
        objective: Metric to maximise on the selection videos.
    """

    weights: dict[str, str | None]
    values: tuple[float, ...]
    config: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    objective: str = "micro_auroc"

    def weight_matrix(self) -> np.ndarray:
        """All weight combinations except all-zero, ``[points, len(weights)]`` (row order of ``itertools.product``).

        Example:
            >>> ScoreGrid({"a": None, "b": None}, (0.0, 1.0)).weight_matrix().tolist()
            [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
        """
        combos = np.array(list(itertools.product(self.values, repeat=len(self.weights))), dtype=np.float64)
        return combos[np.any(combos != 0, axis=1)]

    def column(self, weight: str) -> str:
        """Results-table column of ``weight``: its config field, else ``weight_<name>``."""
        return self.weights[weight] or f"weight_{weight}"


@dataclass(frozen=True)
class SweepSpec:
    """A parsed ``configs/<method>/sweep.yaml``."""

    method: str
    loss: LossGrid | None = None
    score: ScoreGrid | None = None


@dataclass
class SweepResult:
    """What a sweep produced (the same facts are in ``OUT/summary.json``).

    Attributes:
        out: The output URI.
        table: One row per grid point, best first.
        best: The best row (``{}`` when no point finished).
        heldout: Metrics of the best point on the held-out videos (``None`` for ``selection="test"``).
        files: What was written, by kind.
        summary: The JSON summary.
        complete: False when some trials did not finish (rerun the same command to resume).
    """

    out: str
    table: pa.Table
    best: dict[str, Any]
    heldout: dict[str, Any] | None
    files: dict[str, Any]
    summary: dict[str, Any]
    complete: bool = True


def default_sweep_path(method: str) -> Path:
    """``configs/<method>/sweep.yaml`` of this checkout."""
    return ROOT / "configs" / method / "sweep.yaml"


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Parse a sweep file.

    Format::

        method: luss_ae
        loss:
          objective: micro_auroc            # or macro_auroc
          grid: {lambda_ffp: [0.0, 0.4], lambda_prp: [0.0, 1.0]}
        score:
          objective: micro_auroc
          weights: {vcr: alpha_vcr, ffp: alpha_ffp, prp: alpha_prp}   # fuse() name -> config field (or null)
          values: {start: 0.0, stop: 1.0, step: 0.1}                  # or an explicit list
          config: {error: [mse, pse, bpe]}                            # fusion-only config fields

    Raises:
        ConfigError: naming the offending key when the file is malformed.
    """
    try:
        data = yaml.safe_load(storage.read_text(str(path))) or {}
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist") from None
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise ConfigError(f"sweep file {path} must be a mapping with a 'method' name")
    unknown = set(data) - {"method", "loss", "score"}
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown key(s) {sorted(unknown)}; expected method, loss, score")
    return SweepSpec(
        method=data["method"],
        loss=_loss_grid(data["loss"], path) if data.get("loss") is not None else None,
        score=_score_grid(data["score"], path) if data.get("score") is not None else None,
    )


def _objective(section: Mapping[str, Any], where: str) -> str:
    objective = section.get("objective", "micro_auroc")
    if objective not in OBJECTIVES:
        raise ConfigError(f"{where}.objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


def _value_list(values: Any, where: str) -> tuple[Any, ...]:
    if isinstance(values, Mapping):
        lacking = {"start", "stop", "step"} - set(values)
        if lacking or float(values["step"]) <= 0:
            raise ConfigError(f"{where} needs start, stop and a positive step, got {dict(values)}")
        start, stop, step = (float(values[k]) for k in ("start", "stop", "step"))
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        return tuple(float(round(start + step * i, 10)) for i in range(max(count, 0)))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where} must be a non-empty list of values (or start/stop/step), got {values!r}")
    return tuple(values)


def _loss_grid(section: Any, path: str | Path) -> LossGrid:
    if not isinstance(section, Mapping) or not isinstance(section.get("grid"), Mapping) or not section["grid"]:
        raise ConfigError(f"sweep file {path}: 'loss' needs a non-empty 'grid' mapping of config field -> values")
    unknown = set(section) - {"grid", "objective"}
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown key(s) {sorted(unknown)} in 'loss'")
    grid = {str(k): _value_list(v, f"loss.grid.{k}") for k, v in section["grid"].items()}
    return LossGrid(grid=grid, objective=_objective(section, "loss"))


def _score_grid(section: Any, path: str | Path) -> ScoreGrid:
    if not isinstance(section, Mapping) or not isinstance(section.get("weights"), Mapping) or not section["weights"]:
        raise ConfigError(f"sweep file {path}: 'score' needs a non-empty 'weights' mapping (fuse name -> field)")
    unknown = set(section) - {"weights", "values", "config", "objective"}
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown key(s) {sorted(unknown)} in 'score'")
    values = tuple(float(v) for v in _value_list(section.get("values"), "score.values"))
    if min(values) < 0:
        raise ConfigError(f"score.values must be >= 0, got {values}")
    config = {str(k): _value_list(v, f"score.config.{k}") for k, v in (section.get("config") or {}).items()}
    weights = {str(k): (str(v) if v is not None else None) for k, v in section["weights"].items()}
    return ScoreGrid(weights=weights, values=values, config=config, objective=_objective(section, "score"))


# ---------------------------------------------------------------------------------------------- grid helpers


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a ``field -> values`` grid, in ``itertools.product`` order.

    Example:
        >>> grid_points({"a": [1, 2], "b": ["x"]})
        [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
    """
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def value_label(value: Any) -> Any:
    """How a grid value shows in tables and heat-maps: scalars as they are, linked fields as ``a=1,b=2``.

    Example:
        >>> value_label({"lambda_ffp": 0.0, "alpha_ffp": 0.0}), value_label(0.4)
        ('lambda_ffp=0.0,alpha_ffp=0.0', 0.4)
    """
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return value


def point_key(point: Mapping[str, Any]) -> str:
    """A stable, path-safe directory name for one grid point (readable prefix + short hash).

    Example:
        >>> point_key({"lambda_ffp": 0.4, "lambda_prp": 1.0})
        'lambda_ffp=0.4,lambda_prp=1.0-bff611b3'
    """
    text = json.dumps({k: point[k] for k in sorted(point)}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    readable = ",".join(f"{k}={value_label(point[k])}" for k in sorted(point))
    readable = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", readable)[:80]
    return f"{readable}-{digest}"


# ---------------------------------------------------------------------------------------- selection protocol


def split_selection(
    labels: Mapping[str, np.ndarray], selection: str, val_fraction: float = 0.5, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split the labelled videos into those that choose the grid point and those that report it.

    ``selection="test"`` uses every labelled video for both (the papers' optimistic protocol). With
    ``"validation"`` a deterministic ``val_fraction`` of the videos (ranked by a hash of ``seed`` and the id,
    separately among videos with and without anomalous frames, so both parts keep anomalies when they can)
    choose; the rest only report the chosen point.

    Returns:
        ``(selection_ids, heldout_ids)``, each sorted; ``heldout_ids`` is empty for ``"test"``.

    Raises:
        ValueError: for an unknown protocol, a fraction outside (0, 1) or too few labelled videos.

    Example:
        >>> labels = {f"v{i}": np.array([0, i % 2], np.uint8) for i in range(4)}
        >>> chosen, held_out = split_selection(labels, "validation", 0.5)
        >>> len(chosen), len(held_out), sorted(chosen + held_out) == sorted(labels)
        (2, 2, True)
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    ids = sorted(labels)
    if not ids:
        raise ValueError("no labelled videos: a sweep needs frame labels (STORE/labels.parquet)")
    if selection == "test":
        return ids, []
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1) for --selection validation, got {val_fraction}")
    if len(ids) < 2:
        raise ValueError(
            f"--selection validation needs at least 2 labelled videos, got {len(ids)}; use --selection test "
            "(and read its warning) or add labelled videos"
        )
    chosen: list[str] = []
    groups = ([v for v in ids if np.any(labels[v])], [v for v in ids if not np.any(labels[v])])
    for group in groups:
        ranked = sorted(group, key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).hexdigest())
        chosen += ranked[: int(math.floor(len(ranked) * val_fraction + 0.5))]
    held_out = [v for v in ids if v not in set(chosen)]
    if not chosen or not held_out:  # tiny sets: keep one video on each side
        ranked = sorted(ids, key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).hexdigest())
        chosen = chosen or ranked[:1]
        held_out = [v for v in ids if v not in set(chosen)] or [chosen.pop()]
    return sorted(chosen), sorted(held_out)


# ---------------------------------------------------------------------------------------------------- outputs


def write_yaml(uri: str, data: Mapping[str, Any], header: str = "") -> str:
    """Write ``data`` as YAML (keys in the given order) with ``#`` comment lines from ``header``."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = yaml.safe_dump(_plain(dict(data)), sort_keys=False, default_flow_style=None, width=120)
    storage.write_text_atomic(uri, comments + body)
    return uri


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    return value


def sort_by_objective(table: pa.Table, objective: str) -> pa.Table:
    """Rows by ``objective`` descending; rows without a value (undefined AUROC, failed trials) last."""
    values = np.asarray(table.column(objective).to_pylist(), dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(values), -values, np.inf), kind="stable")
    return table.take(pa.array(order, pa.int64()))


def write_results(
    out: str,
    table: pa.Table,
    objective: str,
    *,
    title: str,
    notes: Sequence[str],
    top: int = 30,
    parquet_only: Sequence[str] = (),
) -> dict[str, str]:
    """Write ``results.parquet`` (all rows, sorted) and ``results.md`` (the best ``top`` rows and ``notes``).

    Columns in ``parquet_only`` (long paths, JSON) are left out of the Markdown table.

    Returns:
        ``{"parquet": uri, "markdown": uri}``.
    """
    table = sort_by_objective(table, objective)
    parquet_uri = storage.join(out, "results.parquet")
    storage.write_parquet_atomic(parquet_uri, table)
    lines = [f"# {title}", ""] + [f"- {note}" for note in notes] + [""]
    shown = table.slice(0, top).to_pylist()
    columns = [c for c in table.column_names if c not in parquet_only]
    lines.append("| rank | " + " | ".join(columns) + " |")
    lines.append("|---:|" + "|".join("---" for _ in columns) + "|")
    for rank, row in enumerate(shown, start=1):
        lines.append(f"| {rank} | " + " | ".join(_cell(row[c]) for c in columns) + " |")
    if table.num_rows > top:
        lines += ["", f"{table.num_rows - top} more row(s) in results.parquet."]
    markdown_uri = storage.join(out, "results.md")
    storage.write_text_atomic(markdown_uri, "\n".join(lines) + "\n")
    return {"parquet": parquet_uri, "markdown": markdown_uri}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def write_heatmaps(
    out: str, table: pa.Table, dims: Sequence[str], objective: str, best: Mapping[str, Any]
) -> list[str]:
    """One PNG per pair of swept dimensions: the objective over that pair, other dimensions fixed at ``best``.

    Cells without a grid point (e.g. the excluded all-zero weights) stay blank.

    Returns:
        The URIs written (``OUT/heatmaps/<a>__<b>.png``).
    """
    rows = table.to_pylist()
    written = []
    for a, b in itertools.combinations(dims, 2):
        others = [d for d in dims if d not in (a, b)]
        sliced = [r for r in rows if all(r[d] == best[d] for d in others)]
        xs, ys = _axis(r[a] for r in sliced), _axis(r[b] for r in sliced)
        if len(xs) < 2 or len(ys) < 2:
            continue
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in sliced:
            value = r[objective]
            grid[ys.index(r[b]), xs.index(r[a])] = np.nan if value is None else float(value)
        fixed = ", ".join(f"{d}={best[d]}" for d in others)
        title = f"{objective} over {a} × {b} (best outlined in red)" + (f"\n{fixed}" if fixed else "")
        uri = storage.safe_join(out, "heatmaps", f"{_safe(a)}__{_safe(b)}.png")
        storage.write_bytes_atomic(uri, _heatmap_png(grid, xs, ys, a, b, title, best.get(a), best.get(b)))
        written.append(uri)
    return written


def _axis(values: Any) -> list[Any]:
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique)
    except TypeError:  # mixed types: keep first-seen order
        return unique


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _heatmap_png(
    grid: np.ndarray, xs: list[Any], ys: list[Any], x_name: str, y_name: str, title: str, bx: Any, by: Any
) -> bytes:
    xticks, yticks = [_tick(x) for x in xs], [_tick(y) for y in ys]
    crowded = len(xs) > 6 or max(len(t) for t in xticks) > 10
    label_width = 0.07 * max(len(t) for t in yticks)  # inches taken by the y tick labels
    fig = Figure(figsize=(max(4.5, 2.2 + label_width + 0.55 * len(xs)), max(3.5, 1.8 + 0.45 * len(ys))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(xs)), xticks, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_yticks(range(len(ys)), yticks)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(title, fontsize=9)
    if len(xs) * len(ys) <= 64 and np.isfinite(grid).any():
        middle = np.nanmin(grid) + 0.5 * (np.nanmax(grid) - np.nanmin(grid))
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):  # dark text on the bright end of viridis
                color = "black" if value > middle else "white"
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color=color)
    if bx in xs and by in ys:  # outline the best cell
        x, y = xs.index(bx), ys.index(by)
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _tick(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
