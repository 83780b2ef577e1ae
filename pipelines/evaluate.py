"""Frame-level evaluation: score/label alignment, micro and macro AUROC, PR-AUC, EER, plots.

Two AUROCs are in use in the literature and they are not comparable (REFERENCE.md §5, "Micro vs macro AUC"),
so every result here names the one it is:

- **micro** AUROC: the frames of all videos concatenated into one ROC (MemAE, LUSS-AE, RTFM and most papers);
- **macro** AUROC: the mean of per-video AUROCs (SSMTL, seed 003 §4; UBnormal). A video whose frames are all
  normal or all abnormal has no AUROC of its own, so every video is padded first, following UBnormal's
  ``scripts/compute_auc_score.py``: one normal frame is prepended and one abnormal frame appended. UBnormal
  scores the pads 0 and 1, assuming per-video min-max-scaled scores; here the pads get the video's own minimum
  and maximum score, which is the same thing for scaled scores and keeps the metric invariant to any increasing
  rescaling of a video's scores. Every video is padded, including two-class ones (as UBnormal does).

Alignment conventions (each score writer records which one it uses; see :func:`window_to_frame`):
``"center"`` (MemAE's ``labels[8:-7]`` for 16-frame windows), ``"last"`` (LUSS-AE's future-frame target,
``start + 16`` for a 17-frame window), ``"first"``, and ``"snippet16"`` (RTFM/MT-VAE: one score per
non-overlapping 16-frame snippet, repeated; :func:`snippet_to_frames`). Frames no window scores (the video's
edges) take the nearest scored frame's value (:func:`align_to_frames`).

Example:
    >>> import numpy as np
    >>> m = frame_metrics({"v": np.array([0.1, 0.2, 0.9, 0.8])}, {"v": np.array([0, 0, 1, 1], np.uint8)})
    >>> m["micro_auroc"], m["macro_auroc"], m["eer"]
    (1.0, 1.0, 0.0)
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from pipelines import storage
from pipelines.plots import plot_roc, plot_score_curve

__all__ = [
    "AUROC_DEFINITIONS",
    "CONVENTIONS",
    "align_to_frames",
    "equal_error_rate",
    "evaluate",
    "frame_metrics",
    "load_labels",
    "load_scores",
    "padded_video_auroc",
    "plot_roc",
    "plot_score_curve",
    "snippet_to_frames",
    "window_to_frame",
]

CONVENTIONS = ("center", "last", "first")

AUROC_DEFINITIONS = {
    "micro_auroc": "ROC AUC over the frames of all videos concatenated (sklearn roc_auc_score).",
    "macro_auroc": (
        "Mean over videos of roc_auc_score([0] + labels + [1], [min(s)] + s + [max(s)]): every video is padded "
        "with one normal frame scored at the video's minimum score and one abnormal frame scored at its "
        "maximum (UBnormal's pad of (0, 0) and (1, 1) for per-video min-max-scaled scores)."
    ),
    "pr_auc": "Average precision (sklearn average_precision_score) over all frames concatenated, anomaly = 1.",
    "eer": "Equal error rate on the micro ROC: FPR where FPR = 1 - TPR, linearly interpolated between ROC points.",
}


# ------------------------------------------------------------------------------------------------- alignment
def window_to_frame(window_starts: np.ndarray, window: int, convention: str = "center") -> np.ndarray:
    """The frame each window's score belongs to.

    Args:
        window_starts: First frame index of each window.
        window: Frames per window.
        convention: ``"center"`` (``start + window // 2``; frame 8 of a 16-frame window, MemAE's
            ``labels[8:-7]``), ``"last"`` (``start + window - 1``; the predicted frame of LUSS-AE's 17-frame
            window) or ``"first"`` (``start``).

    Returns:
        int64 frame indices, one per window.

    Example:
        >>> window_to_frame(np.array([0, 1]), 16, "center").tolist()
        [8, 9]
        >>> window_to_frame(np.array([0]), 17, "last").tolist()
        [16]
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    offsets = {"center": window // 2, "last": window - 1, "first": 0}
    if convention not in offsets:
        raise ValueError(f"unknown alignment convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    return np.asarray(window_starts, dtype=np.int64) + offsets[convention]


def align_to_frames(frame_idx: np.ndarray, values: np.ndarray, num_frames: int) -> np.ndarray:
    """Dense per-frame values from values at some frames; every other frame takes the nearest scored frame's value.

    Ties (a frame exactly between two scored frames) take the earlier one.

    Args:
        frame_idx: Distinct frame indices in ``[0, num_frames)``, any order.
        values: One value per index.
        num_frames: Frames in the video.

    Returns:
        float64 ``[num_frames]``.

    Example:
        >>> align_to_frames(np.array([2, 4]), np.array([1.0, 3.0]), 7).tolist()
        [1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0]
    """
    idx = np.asarray(frame_idx, dtype=np.int64).ravel()
    vals = np.asarray(values, dtype=np.float64).ravel()
    if idx.size != vals.size:
        raise ValueError(f"frame_idx has {idx.size} entries but values has {vals.size}")
    if idx.size == 0:
        raise ValueError("no scored frames to align")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if idx.min() < 0 or idx.max() >= num_frames:
        raise ValueError(f"frame indices must lie in [0, {num_frames}); got {idx.min()}..{idx.max()}")
    order = np.argsort(idx, kind="stable")
    idx, vals = idx[order], vals[order]
    if np.any(np.diff(idx) == 0):
        raise ValueError(f"duplicate frame indices, e.g. {int(idx[np.flatnonzero(np.diff(idx) == 0)[0]])}")
    frames = np.arange(num_frames)
    right = np.clip(np.searchsorted(idx, frames), 0, idx.size - 1)  # first scored frame >= f
    left = np.clip(right - 1, 0, idx.size - 1)
    take_left = np.abs(frames - idx[left]) <= np.abs(idx[right] - frames)
    return np.where(take_left, vals[left], vals[right])


def snippet_to_frames(snippet_scores: np.ndarray, snippet_len: int = 16, num_frames: int | None = None) -> np.ndarray:
    """Per-frame scores from one score per non-overlapping snippet (RTFM's ``np.repeat(pred, 16)``).

    Frames past the last full snippet (the tail RTFM drops) take the last snippet's score.

    Args:
        snippet_scores: ``[S]`` scores of consecutive snippets starting at frame 0.
        snippet_len: Frames per snippet.
        num_frames: Frames in the video; must be covered by ``floor`` or ``ceil(num_frames / snippet_len)``
            snippets. ``None`` means ``S * snippet_len``.

    Returns:
        float64 ``[num_frames]``.

    Example:
        >>> snippet_to_frames(np.array([0.1, 0.9]), snippet_len=2, num_frames=5).tolist()
        [0.1, 0.1, 0.9, 0.9, 0.9]
    """
    scores = np.asarray(snippet_scores, dtype=np.float64).ravel()
    if snippet_len < 1:
        raise ValueError(f"snippet_len must be >= 1, got {snippet_len}")
    if scores.size == 0:
        raise ValueError("no snippet scores")
    n = scores.size * snippet_len if num_frames is None else int(num_frames)
    expected = {n // snippet_len, -(-n // snippet_len)}
    if scores.size not in expected:
        raise ValueError(
            f"{scores.size} snippets of {snippet_len} frames cannot cover {n} frames (expected {sorted(expected)})"
        )
    frames = np.repeat(scores, snippet_len)[:n]
    return np.concatenate([frames, np.full(n - frames.size, scores[-1])])


# --------------------------------------------------------------------------------------------------- metrics
def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs.

    Walks the ROC (sklearn ``roc_curve``) to the first point with ``FPR >= FNR`` and interpolates linearly
    between it and the previous point.

    Returns:
        ``(eer, threshold)``; the threshold is the interpolated score threshold.

    Example:
        >>> equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
        (0.5, 0.6)
    """
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # non-decreasing along the curve: -1 at the start, +1 at the end
    i = int(np.argmax(diff >= 0))
    if i == 0 or diff[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    lo, hi = thresholds[i - 1], thresholds[i]
    threshold = hi if not np.isfinite(lo) else lo + w * (hi - lo)
    return float(eer), float(threshold)


def padded_video_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of one video with the macro pad: a normal frame at ``min(scores)``, an abnormal one at ``max(scores)``.

    Example:
        >>> padded_video_auroc(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9]))
        0.875
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.concatenate([[0], np.asarray(labels, dtype=np.int64), [1]])
    return float(roc_auc_score(y, np.concatenate([[s.min()], s, [s.max()]])))


def _checked_pairs(
    scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not labels:
        raise ValueError("no labelled videos to evaluate")
    missing = sorted(set(labels) - set(scores))
    if missing:
        raise ValueError(f"no scores for {len(missing)} labelled video(s): {', '.join(missing[:5])}")
    pairs = []
    for vid in sorted(labels):
        s = np.asarray(scores[vid], dtype=np.float64).ravel()
        y = np.asarray(labels[vid]).ravel()
        if s.size != y.size:
            raise ValueError(f"video {vid!r}: {s.size} scores but {y.size} frame labels")
        if s.size == 0:
            raise ValueError(f"video {vid!r} has no frames")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"video {vid!r}: {int((~np.isfinite(s)).sum())} non-finite scores")
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"video {vid!r}: frame labels must be 0 or 1, got values {np.unique(y)[:5].tolist()}")
        pairs.append((vid, s, y.astype(np.int64)))
    return pairs


def frame_metrics(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Frame-level metrics of per-frame ``scores`` (higher = more anomalous) against 0/1 frame ``labels``.

    Videos are those in ``labels``; scored videos without labels are counted in ``unlabelled_videos`` and
    otherwise ignored. Metrics that are undefined (e.g. micro AUROC when no frame is anomalous) are ``None``.

    Args:
        scores: video id -> ``[num_frames]`` scores.
        labels: video id -> ``[num_frames]`` 0/1 labels.

    Returns:
        ``micro_auroc``, ``macro_auroc``, ``pr_auc``, ``eer``, ``eer_threshold``, ``num_videos``,
        ``num_frames``, ``num_anomalous_frames``, ``single_class_videos``, ``unlabelled_videos``,
        ``per_video`` ({id: {num_frames, anomalous_frames, auroc_padded}}) and ``auroc_definitions``.

    Raises:
        ValueError: A labelled video has no scores, or its score and label lengths differ (the message names
            the video and both lengths), or scores are not finite.

    Example:
        >>> m = frame_metrics({"a": np.array([0.0, 1.0])}, {"a": np.array([1, 1], np.uint8)})
        >>> m["micro_auroc"], round(m["macro_auroc"], 4), m["single_class_videos"]
        (None, 0.8333, ['a'])
    """
    pairs = _checked_pairs(scores, labels)
    all_s = np.concatenate([s for _, s, _ in pairs])
    all_y = np.concatenate([y for _, _, y in pairs])
    per_video = {
        vid: {"num_frames": int(y.size), "anomalous_frames": int(y.sum()), "auroc_padded": padded_video_auroc(y, s)}
        for vid, s, y in pairs
    }
    two_class = 0 < all_y.sum() < all_y.size
    eer, eer_threshold = equal_error_rate(all_y, all_s) if two_class else (None, None)
    return {
        "micro_auroc": float(roc_auc_score(all_y, all_s)) if two_class else None,
        "macro_auroc": float(np.mean([v["auroc_padded"] for v in per_video.values()])),
        "pr_auc": float(average_precision_score(all_y, all_s)) if all_y.any() else None,
        "eer": eer,
        "eer_threshold": eer_threshold,
        "num_videos": len(pairs),
        "num_frames": int(all_y.size),
        "num_anomalous_frames": int(all_y.sum()),
        "single_class_videos": sorted(vid for vid, _, y in pairs if y.min() == y.max()),
        "unlabelled_videos": len(set(scores) - set(labels)),
        "per_video": per_video,
        "auroc_definitions": dict(AUROC_DEFINITIONS),
    }


# --------------------------------------------------------------------------------------------------- loading
def load_scores(scores_uri: str) -> dict[str, np.ndarray]:
    """Per-frame scores of a score store: ``OUT`` (holding ``scores/``), ``OUT/scores`` or one Parquet file.

    Each file has columns ``video_id``, ``frame_idx``, ``score`` (one row per frame, as ``pipelines/score.py``
    writes them; a file may hold several videos).

    Returns:
        video id -> float64 scores ordered by frame.

    Raises:
        ValueError: Missing columns, a video present in two files, or frame indices that are not exactly
            ``0 .. n-1`` (align sparse scores with :func:`align_to_frames` first).
        FileNotFoundError: Nothing at ``scores_uri``.
    """
    root = scores_uri
    if not scores_uri.endswith(".parquet") and storage.is_dir(storage.join(scores_uri, "scores")):
        root = storage.join(scores_uri, "scores")
    files = storage.list_files(root, suffixes=(".parquet",))
    if not files:
        raise ValueError(f"no score files (*.parquet) under {scores_uri!r}")
    out: dict[str, np.ndarray] = {}
    for uri in files:
        table = storage.read_parquet(uri)
        lacking = {"video_id", "frame_idx", "score"} - set(table.column_names)
        if lacking:
            raise ValueError(f"score file {uri!r} lacks column(s) {sorted(lacking)}; has {table.column_names}")
        vids = np.asarray(table.column("video_id").to_pylist(), dtype=object)
        idx = table.column("frame_idx").to_numpy().astype(np.int64)
        values = table.column("score").to_numpy().astype(np.float64)
        for vid in dict.fromkeys(vids.tolist()):
            if vid in out:
                raise ValueError(f"video {vid!r} has scores in more than one file under {scores_uri!r}")
            mask = vids == vid
            order = np.argsort(idx[mask], kind="stable")
            frames = idx[mask][order]
            if not np.array_equal(frames, np.arange(frames.size)):
                raise ValueError(
                    f"video {vid!r} in {uri!r}: frame_idx must be exactly 0..{frames.size - 1} (one score per frame)"
                )
            out[str(vid)] = values[mask][order]
    return out


def _labels_array(vid: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"frame labels of {vid!r} must be a 1-D array of 0/1, got shape {arr.shape}")
    return arr.astype(np.uint8)


def load_labels(uri: str) -> dict[str, np.ndarray]:
    """Frame labels from a store (``labels.parquet``), a folder corpus (``DIR/labels/*.npy``) or a labels folder.

    Args:
        uri: A store root, a ``labels.parquet`` file, a folder-format corpus root or a folder of ``<id>.npy``.

    Returns:
        video id -> uint8 0/1 per frame.

    Raises:
        ValueError: No labels found (the message lists the layouts looked for) or malformed labels.
    """
    table_uri = uri if uri.endswith(".parquet") else storage.join(uri, "labels.parquet")
    if storage.exists(table_uri):
        table = storage.read_parquet(table_uri)
        if not {"video_id", "frame_labels"} <= set(table.column_names):
            raise ValueError(f"{table_uri!r} needs columns video_id, frame_labels; has {table.column_names}")
        ids, frames = table.column("video_id").to_pylist(), table.column("frame_labels").to_pylist()
        return {str(v): _labels_array(v, f) for v, f in zip(ids, frames)}
    folder = storage.join(uri, "labels")
    folder = folder if storage.is_dir(folder) else uri
    files = storage.list_files(folder, suffixes=(".npy",)) if storage.is_dir(folder) else []
    if not files:
        raise ValueError(
            f"no frame labels at {uri!r}: expected STORE/labels.parquet, DIR/labels/*.npy or a folder of *.npy"
        )
    out = {}
    for f in files:
        vid = posixpath.basename(f)[: -len(".npy")]
        out[vid] = _labels_array(vid, np.load(io.BytesIO(storage.read_bytes(f)), allow_pickle=False))
    return out


# ----------------------------------------------------------------------------------------------------- driver
def load_regions(scores_uri: str) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """The scored regions of a run (``OUT/regions/``) by video, and the frame size their boxes refer to.

    Raises:
        FileNotFoundError: If the run stored no regions (frame-level methods do not).
    """
    from pipelines.region_metrics import ScoredRegions

    root = storage.join(scores_uri, "regions")
    if not storage.is_dir(root):
        raise FileNotFoundError(f"{scores_uri} holds no regions/ folder: only object-level methods (SSMTL) write one")
    out, size = {}, None
    for uri in storage.list_files(root, suffixes=(".parquet",)):
        table = storage.read_parquet(uri)
        video_id = uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet")
        col = {c: table.column(c).to_numpy() for c in ("frame_idx", "x1", "y1", "x2", "y2", "score")}
        boxes = np.stack([col["x1"], col["y1"], col["x2"], col["y2"]], axis=1).reshape(-1, 4)
        out[video_id] = ScoredRegions(col["frame_idx"].astype(np.int64), boxes, col["score"].astype(np.float64))
        if len(table) and size is None:
            size = (int(table.column("frame_height")[0].as_py()), int(table.column("frame_width")[0].as_py()))
    return out, size


def region_metrics(scores_uri: str, regions_gt: str, num_frames: Mapping[str, int]) -> dict[str, Any]:
    """RBDC and TBDC of a run's stored regions against region annotations (boxes rescaled to the store's frames).

    Example:
        >>> region_metrics("outputs/ssmtl/scores", "corpus/labels", {"test_000": 240})  # doctest: +SKIP
        {'rbdc': 0.41, 'tbdc': 0.77, 'num_regions': 310, ...}
    """
    from pipelines.region_metrics import load_ground_truth, region_track_metrics

    pred, size = load_regions(scores_uri)
    gt = {k: v for k, v in load_ground_truth(regions_gt, size=size).items() if k in num_frames}
    result = region_track_metrics(gt, {k: v for k, v in pred.items() if k in num_frames}, dict(num_frames))
    return {**result.as_dict(), "regions_gt": regions_gt}


def evaluate(
    scores_uri: str,
    labels_uri: str,
    out_uri: str | None = None,
    plots: bool = True,
    regions_gt: str | None = None,
) -> dict[str, Any]:
    """Evaluate a score store against frame labels; optionally write ``metrics.json`` and PNG plots.

    Args:
        scores_uri: Score store (see :func:`load_scores`).
        labels_uri: Labels (see :func:`load_labels`).
        out_uri: Where to write ``metrics.json``, ``plots/<video_id>.png`` (score curve with the ground-truth
            anomalous frames shaded) and ``plots/roc.png`` (micro ROC). Nothing is written when ``None``.
        plots: Write the PNG plots (with ``out_uri``).
        regions_gt: Folder of region annotations (``<video>.boxes.json`` or track ``<video>.txt``, see
            :func:`pipelines.region_metrics.load_ground_truth`): adds ``rbdc`` and ``tbdc`` computed from the
            run's ``regions/`` (object-level methods).

    Returns:
        The metrics of :func:`frame_metrics` plus ``scores_uri`` and ``labels_uri`` (and ``rbdc``/``tbdc``).

    Example:
        >>> m = evaluate("outputs/demo/scores", "outputs/demo/store", out_uri="outputs/demo/eval")  # doctest: +SKIP
        >>> m["micro_auroc"] > 0.8  # doctest: +SKIP
        True
    """
    scores, labels = load_scores(scores_uri), load_labels(labels_uri)
    metrics = {**frame_metrics(scores, labels), "scores_uri": scores_uri, "labels_uri": labels_uri}
    if regions_gt is not None:
        metrics.update(region_metrics(scores_uri, regions_gt, {v: len(s) for v, s in scores.items()}))
    if out_uri is None:
        return metrics
    storage.write_json_atomic(storage.join(out_uri, "metrics.json"), metrics)
    if plots:
        plot_dir = storage.join(out_uri, "plots")
        for vid in sorted(labels):
            auroc = metrics["per_video"][vid]["auroc_padded"]
            title = f"{vid}  (padded AUROC {auroc:.3f})"
            plot_score_curve(storage.safe_join(plot_dir, f"{vid}.png"), scores[vid], labels[vid], title=title)
        if metrics["micro_auroc"] is not None:
            ids = sorted(labels)
            all_scores = np.concatenate([scores[v] for v in ids])
            all_labels = np.concatenate([labels[v] for v in ids])
            plot_roc(storage.join(plot_dir, "roc.png"), all_scores, all_labels, eer=metrics["eer"])
    return metrics
