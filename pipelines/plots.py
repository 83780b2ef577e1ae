r"""PNG plots for evaluation and review: a video's score curve over its ground truth, and the ROC curve.

Figures are built with matplotlib's object API on the Agg canvas (no ``pyplot``, no global state), so plotting
is safe in worker threads and needs no display. ``render_*`` return PNG bytes; ``plot_*`` write them to any
storage URI atomically.

Example:
    >>> import numpy as np
    >>> png = render_score_curve(np.linspace(0, 1, 50), np.r_[np.zeros(25), np.ones(25)].astype(np.uint8))
    >>> png[:8] == b"\x89PNG\r\n\x1a\n"
    True
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from pipelines import storage

__all__ = ["anomalous_runs", "plot_roc", "plot_score_curve", "render_roc", "render_score_curve"]

_DPI = 100


def anomalous_runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of label 1 as ``(start, stop)`` frame ranges, ``stop`` exclusive.

    Example:
        >>> anomalous_runs(np.array([0, 1, 1, 0, 1]))
        [(1, 3), (4, 5)]
    """
    y = np.asarray(labels).astype(bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], y, [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def render_score_curve(
    scores: np.ndarray, labels: np.ndarray | None = None, title: str = "", fps: float | None = None
) -> bytes:
    """PNG of per-frame anomaly scores, with the ground-truth anomalous frames shaded.

    Args:
        scores: ``[num_frames]`` scores (higher = more anomalous).
        labels: Optional ``[num_frames]`` 0/1 frame labels; must match ``scores`` in length.
        title: Figure title.
        fps: When given, the x axis is in seconds instead of frames.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if labels is not None and len(labels) != s.size:
        raise ValueError(f"{s.size} scores but {len(labels)} labels")
    unit = 1.0 / fps if fps else 1.0
    fig = Figure(figsize=(8, 2.6))
    ax = fig.add_subplot()
    for i, (start, stop) in enumerate(anomalous_runs(labels) if labels is not None else []):
        ax.axvspan((start - 0.5) * unit, (stop - 0.5) * unit, color="tab:red", alpha=0.2, lw=0,
                   label="ground-truth anomaly" if i == 0 else None)  # fmt: skip
    ax.plot(np.arange(s.size) * unit, s, color="tab:blue", lw=1.2, label="anomaly score")
    ax.set_xlim(-0.5 * unit, (s.size - 0.5) * unit)
    ax.set_xlabel("time (s)" if fps else "frame")
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, fontsize=8, frameon=False, borderaxespad=0.2)
    fig.tight_layout()
    return _png(fig)


def render_roc(
    scores: np.ndarray, labels: np.ndarray, title: str = "ROC (all frames concatenated)", eer: float | None = None
) -> bytes:
    """PNG of the ROC curve of ``scores`` against 0/1 ``labels``, with its AUROC.

    Args:
        scores: Scores of all frames (higher = more anomalous).
        labels: 0/1 labels, same length.
        title: Figure title.
        eer: Equal error rate to mark at ``(eer, 1 - eer)`` (e.g. ``frame_metrics(...)["eer"]``).
    """
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size != s.size:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not 0 < y.sum() < y.size:
        raise ValueError("the ROC needs both normal and anomalous frames")
    fpr, tpr, _ = roc_curve(y, s)
    fig = Figure(figsize=(4.2, 4.2))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="tab:blue", lw=1.5, label=f"AUROC {roc_auc_score(y, s):.3f}")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
    if eer is not None:
        ax.plot([0, 1], [1, 0], color="0.85", ls=":", lw=1)  # FPR = FNR
        ax.scatter([eer], [1.0 - eer], color="tab:red", s=18, zorder=3, label=f"EER {eer:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def plot_score_curve(path: str, scores: np.ndarray, labels: np.ndarray | None = None, title: str = "") -> None:
    """Write :func:`render_score_curve` to ``path`` (any storage URI).

    Example:
        >>> plot_score_curve("memory://plots/v.png", np.random.rand(40), np.zeros(40, np.uint8))
    """
    storage.write_bytes_atomic(path, render_score_curve(scores, labels, title))


def plot_roc(path: str, scores: np.ndarray, labels: np.ndarray, eer: float | None = None) -> None:
    """Write :func:`render_roc` to ``path`` (any storage URI).

    Example:
        >>> plot_roc("memory://plots/roc.png", np.array([0.1, 0.9, 0.4]), np.array([0, 1, 1]), eer=0.0)
    """
    storage.write_bytes_atomic(path, render_roc(scores, labels, eer=eer))
