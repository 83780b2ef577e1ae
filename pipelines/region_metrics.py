"""Region- and track-based detection criteria (RBDC, TBDC) for spatially localised anomaly scores.

Definitions (Ramachandra & Jones, "Street Scene: A new dataset and evaluation protocol for video anomaly
detection", WACV 2020; also §2.2 of Ramachandra et al.'s survey, TPAMI 2020), implemented from the text:

* The ground truth is a set of anomalous *regions* (boxes), each in one frame and each part of one anomalous
  *track* (the same event over consecutive frames). A method outputs scored regions per frame.
* For a score threshold, the detected regions are those scoring at least the threshold. A ground-truth region is
  *detected* when some detected region in its frame overlaps it with IoU >= beta (0.1). A detected region that
  overlaps no ground-truth region with IoU >= beta is a *false positive*.
* Region-based detection rate = detected ground-truth regions / all ground-truth regions. Track-based detection
  rate = detected tracks / all tracks, a track being detected when at least a fraction alpha (0.1) of its regions
  are. The false-positive rate is false-positive regions per frame, over *all* evaluated frames.
* RBDC (TBDC) is the area under the region (track) detection rate versus false positives per frame curve for
  false-positive rates from 0 to 1, divided by 1 so that it lies in [0, 1].

Curve conventions (not fixed by the definitions): the curve starts at (0, 0) (threshold above every score),
joins operating points linearly, and once every region is detected it stays flat up to one false positive per
frame (lowering the threshold further can add neither detections nor false positives).

Ground-truth formats read here:

* the synthetic corpus' ``labels/<video>.boxes.json`` (``{"frames": {"<t>": [{"box": [x1, y1, x2, y2],
  "track_id", "kind"}, ...]}, "width", "height"}``), see :func:`load_boxes_json`;
* per-video track files ``<video>.txt`` with one region per line, ``track_id, frame_idx, x1, y1, x2, y2``
  (commas or whitespace; 0-based frame index; pixels of the original video), the format of the ShanghaiTech
  track annotations published with Georgescu et al. (TPAMI 2021); Avenue tracks in the same format work too,
  see :func:`load_track_file`.

Example:
    >>> gt = {"v": GroundTruthRegions(np.array([0]), np.array([[0, 0, 10, 10]]), np.array([1]))}
    >>> pred = {"v": ScoredRegions(np.array([0]), np.array([[1, 1, 10, 10]]), np.array([0.9]))}
    >>> m = region_track_metrics(gt, pred, num_frames={"v": 10})
    >>> round(m.rbdc, 3), round(m.tbdc, 3)
    (1.0, 1.0)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipelines import storage

__all__ = [
    "GroundTruthRegions",
    "RegionMetrics",
    "ScoredRegions",
    "box_iou",
    "load_boxes_json",
    "load_ground_truth",
    "load_track_file",
    "region_track_metrics",
]


@dataclass(frozen=True)
class GroundTruthRegions:
    """Anomalous regions of one video: ``frame_idx [G]``, ``boxes [G, 4]`` (x1, y1, x2, y2), ``track_id [G]``."""

    frame_idx: np.ndarray
    boxes: np.ndarray
    track_id: np.ndarray


@dataclass(frozen=True)
class ScoredRegions:
    """A method's scored regions of one video: ``frame_idx [P]``, ``boxes [P, 4]``, ``scores [P]``."""

    frame_idx: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class RegionMetrics:
    """RBDC and TBDC plus the curves they integrate (``thresholds`` descending)."""

    rbdc: float
    tbdc: float
    thresholds: np.ndarray
    fp_per_frame: np.ndarray
    region_rate: np.ndarray
    track_rate: np.ndarray
    num_regions: int
    num_tracks: int
    num_frames: int

    def as_dict(self) -> dict[str, float | int]:
        """The scalar results (JSON-able)."""
        return {"rbdc": self.rbdc, "tbdc": self.tbdc, "num_regions": self.num_regions,
                "num_tracks": self.num_tracks, "num_frames": self.num_frames}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` boxes (x1, y1, x2, y2) -> ``[N, M]``.

    Example:
        >>> box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2], [5, 5, 6, 6]])).round(3).tolist()
        [[0.333, 0.0]]
    """
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match_video(
    gt: GroundTruthRegions | None, pred: ScoredRegions | None, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Match one video's predictions to its ground truth.

    Returns:
        ``(best, false_pos)``: per ground-truth region the best score of a prediction overlapping it with
        IoU >= beta (-inf if none), and the scores of predictions overlapping no region (each one is a false
        positive at every threshold up to its score).
    """
    n_gt = len(gt.frame_idx) if gt is not None else 0
    best = np.full(n_gt, -np.inf)
    if pred is None or len(pred.frame_idx) == 0:
        return best, np.zeros(0)
    scores = np.asarray(pred.scores, np.float64)
    matched = np.zeros(len(scores), bool)
    if n_gt:
        gt_frames, pred_frames = np.asarray(gt.frame_idx), np.asarray(pred.frame_idx)
        for frame in np.intersect1d(gt_frames, pred_frames):
            gi, pi = np.flatnonzero(gt_frames == frame), np.flatnonzero(pred_frames == frame)
            hits = box_iou(np.asarray(gt.boxes)[gi], np.asarray(pred.boxes)[pi]) >= beta  # [g, p]
            matched[pi] |= hits.any(axis=0)
            cand = np.where(hits, scores[pi][None, :], -np.inf).max(axis=1)
            best[gi] = np.maximum(best[gi], cand)
    return best, scores[~matched]


def _area(fp: np.ndarray, rate: np.ndarray, max_fp: float) -> float:
    """Normalised area on ``[0, max_fp]`` under the curve through (0, 0) and ``(fp_i, rate_i)`` (by threshold).

    Segments crossing ``max_fp`` are cut by linear interpolation; a curve ending before ``max_fp`` stays flat.
    """
    x, y = np.concatenate([[0.0], fp]), np.concatenate([[0.0], rate])
    x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
    keep = x0 < max_fp
    x0, x1, y0, y1 = x0[keep], x1[keep], y0[keep], y1[keep]
    over = x1 > max_fp
    y1 = np.where(over, y0 + (y1 - y0) * (max_fp - x0) / np.where(x1 > x0, x1 - x0, 1.0), y1)
    x1 = np.minimum(x1, max_fp)
    area = float(np.sum((x1 - x0) * (y0 + y1) / 2.0)) + max(0.0, max_fp - float(x[-1])) * float(y[-1])
    return area / max_fp


def region_track_metrics(
    gt: Mapping[str, GroundTruthRegions],
    pred: Mapping[str, ScoredRegions],
    num_frames: Mapping[str, int] | int,
    iou_threshold: float = 0.1,
    track_fraction: float = 0.1,
    max_fp_per_frame: float = 1.0,
) -> RegionMetrics:
    """RBDC and TBDC over a test set.

    Args:
        gt: Video id -> anomalous regions (videos without anomalies may be absent).
        pred: Video id -> scored regions (boxes in the same pixel coordinates as ``gt``).
        num_frames: Frames per evaluated video (every video of ``gt`` and ``pred`` must be listed), or the total.
        iou_threshold: beta, the IoU a detection needs to count (0.1 in Ramachandra & Jones).
        track_fraction: alpha, the fraction of a track's regions to detect (0.1).
        max_fp_per_frame: Upper end of the false-positive axis (1).

    Returns:
        :class:`RegionMetrics`.

    Raises:
        ValueError: no ground-truth region, or a video missing from ``num_frames``.
    """
    videos = sorted(set(gt) | set(pred))
    if isinstance(num_frames, Mapping):
        missing = [v for v in videos if v not in num_frames]
        if missing:
            raise ValueError(f"num_frames lacks videos {missing[:5]}")
        total_frames = int(sum(int(num_frames[v]) for v in set(num_frames) | set(videos)))
    else:
        total_frames = int(num_frames)
    if total_frames <= 0:
        raise ValueError("need at least one evaluated frame")
    region_best, fp_scores, track_best = [], [], []
    for video in videos:
        best, fps = _match_video(gt.get(video), pred.get(video), iou_threshold)
        region_best.append(best)
        fp_scores.append(fps)
        if video in gt and len(best):
            tracks = np.asarray([str(t) for t in gt[video].track_id])
            for track in np.unique(tracks):
                values = np.sort(best[tracks == track])[::-1]
                need = max(1, int(np.ceil(track_fraction * len(values) - 1e-9)))
                track_best.append(values[need - 1])  # detected once the need-th best region is
    regions = np.concatenate(region_best) if region_best else np.zeros(0)
    if regions.size == 0:
        raise ValueError("the ground truth has no anomalous region")
    false_pos = np.sort(np.concatenate(fp_scores))
    tracks_arr = np.sort(np.asarray(track_best, np.float64))
    regions_sorted = np.sort(regions)
    all_scores = np.concatenate([s.scores for s in pred.values()]) if pred else np.zeros(0)
    thresholds = np.unique(np.asarray(all_scores, np.float64))[::-1]

    def at_least(sorted_values: np.ndarray) -> np.ndarray:  # count of values >= each threshold
        return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="left")

    fp = at_least(false_pos) / total_frames
    region_rate = at_least(regions_sorted) / len(regions_sorted)
    track_rate = at_least(tracks_arr) / len(tracks_arr)
    return RegionMetrics(
        rbdc=_area(fp, region_rate, max_fp_per_frame),
        tbdc=_area(fp, track_rate, max_fp_per_frame),
        thresholds=thresholds,
        fp_per_frame=fp,
        region_rate=region_rate,
        track_rate=track_rate,
        num_regions=int(regions.size),
        num_tracks=len(tracks_arr),
        num_frames=total_frames,
    )


def load_boxes_json(uri: str, size: tuple[int, int] | None = None) -> GroundTruthRegions:
    """Regions from a synthetic-corpus ``<video>.boxes.json``.

    Args:
        uri: The JSON file.
        size: ``(height, width)`` to rescale the boxes to (e.g. the clip store's frame size); needs the
            document's ``height`` and ``width``. ``None`` keeps the video's pixels.
    """
    doc = storage.read_json(uri)
    frames = doc.get("frames", doc)
    rows = [(int(t), item["box"], item.get("track_id", 0)) for t, items in frames.items() for item in items]
    boxes = np.asarray([r[1] for r in rows], np.float64).reshape(-1, 4)
    if size is not None:
        if "height" not in doc or "width" not in doc:
            raise ValueError(f"{uri} has no height/width to rescale boxes from")
        boxes = boxes * np.array([size[1] / doc["width"], size[0] / doc["height"]] * 2)
    return GroundTruthRegions(np.asarray([r[0] for r in rows], np.int64), boxes,
                              np.asarray([str(r[2]) for r in rows], dtype=object))


def load_track_file(uri: str, scale: tuple[float, float] = (1.0, 1.0)) -> GroundTruthRegions:
    """Regions from a track file: one ``track_id, frame_idx, x1, y1, x2, y2`` line per region.

    Args:
        uri: The text file.
        scale: ``(sx, sy)`` multiplying x and y coordinates (original video pixels -> clip-store pixels).

    Raises:
        ValueError: naming the file and line of a malformed entry.
    """
    rows = []
    for number, line in enumerate(storage.read_text(uri).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        if len(parts) != 6:
            raise ValueError(f"{uri}:{number}: expected 'track_id, frame_idx, x1, y1, x2, y2', got {line!r}")
        try:
            rows.append((parts[0], int(float(parts[1])), [float(p) for p in parts[2:]]))
        except ValueError:
            raise ValueError(f"{uri}:{number}: non-numeric frame or box in {line!r}") from None
    boxes = np.asarray([r[2] for r in rows], np.float64).reshape(-1, 4) * np.array([scale[0], scale[1]] * 2)
    return GroundTruthRegions(np.asarray([r[1] for r in rows], np.int64), boxes,
                              np.asarray([r[0] for r in rows], dtype=object))


def load_ground_truth(folder: str, size: tuple[int, int] | None = None) -> dict[str, GroundTruthRegions]:
    """All ``<video>.boxes.json`` (synthetic) or ``<video>.txt`` (track files) under ``folder``, by video id.

    Example:
        >>> gt = load_ground_truth("corpus/labels", size=(64, 64))  # doctest: +SKIP
    """
    out: dict[str, GroundTruthRegions] = {}
    for uri in storage.list_files(folder, suffixes=(".boxes.json", ".txt"), recursive=False):
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".boxes.json"):
            out[name[: -len(".boxes.json")]] = load_boxes_json(uri, size)
        else:
            out[name[: -len(".txt")]] = load_track_file(uri)
    if not out:
        raise ValueError(f"no *.boxes.json or *.txt region annotations under {folder}")
    return out
