"""Object scores -> pixel-level anomaly maps -> frame scores (§3.4), and late fusion of two score runs (§3.5).

§3.4: "we reassemble the detected objects in a pixel-level anomaly map for each frame ... we apply a 3D mean
filter. The anomaly score for a certain frame is given by the maximum score in the corresponding anomaly map.
The final frame-level anomaly scores are obtained by applying a temporal Gaussian filter."

Maps are painted on a grid of ``cell x cell``-pixel cells (a 240x360 frame at cell 4 is a 60x90 map; cell 1 is
the paper's pixel-level map) and processed in chunks of frames with a halo of half the filter length, so memory
stays bounded for hours of video. Boxes snap outwards to whole cells, so cells must stay well below the object
size (see ``SsmtlConfig.map_cell``). Pixels not covered by any box score 0; overlapping boxes keep their maximum.

Example:
    >>> import numpy as np
    >>> scores = frame_scores_from_boxes(
    ...     frame_idx=np.array([2]), boxes=np.array([[0, 0, 8, 8]]), object_scores=np.array([1.0]),
    ...     num_frames=5, height=16, width=16, cell=4, filter_frames=1, filter_pixels=1, sigma=0.0)
    >>> scores.tolist()
    [0.0, 0.0, 1.0, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d, uniform_filter

from vad_models.ops import paint_boxes

__all__ = ["frame_scores_from_boxes", "late_fusion", "paint_boxes"]

_CHUNK_FRAMES = 1024


def frame_scores_from_boxes(
    frame_idx: np.ndarray,
    boxes: np.ndarray,
    object_scores: np.ndarray,
    num_frames: int,
    height: int,
    width: int,
    cell: int = 4,
    filter_frames: int = 5,
    filter_pixels: int = 16,
    sigma: float = 3.0,
) -> np.ndarray:
    """Frame scores of one video from its scored boxes (§3.4).

    Args:
        frame_idx: ``[K]`` frame of each scored box.
        boxes: ``[K, 4]`` ``x1, y1, x2, y2`` in pixels of a ``height x width`` frame.
        object_scores: ``[K]`` object anomaly scores (0 = background level).
        num_frames: Frames in the video; frames without boxes score from an empty map.
        height: Frame height in pixels.
        width: Frame width in pixels.
        cell: Pixels per map cell.
        filter_frames: Temporal size of the 3D mean filter (1 = none).
        filter_pixels: Spatial size of the 3D mean filter in pixels (rounded to cells).
        sigma: Temporal Gaussian standard deviation in frames (0 = none).

    Returns:
        ``[num_frames]`` float64 frame scores.
    """
    frame_idx = np.asarray(frame_idx, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    object_scores = np.asarray(object_scores, dtype=np.float64)
    if not len(frame_idx) == len(boxes) == len(object_scores):
        raise ValueError(f"frame_idx, boxes and scores differ in length: {len(frame_idx)}, {len(boxes)}, "
                         f"{len(object_scores)}")
    if len(frame_idx) and (frame_idx.min() < 0 or frame_idx.max() >= num_frames):
        raise ValueError(f"box frames must lie in [0, {num_frames}), got {frame_idx.min()}..{frame_idx.max()}")
    if cell < 1 or filter_frames < 1 or filter_pixels < 1:
        raise ValueError("cell, filter_frames and filter_pixels must be >= 1")
    grid = (max(1, -(-height // cell)), max(1, -(-width // cell)))
    size = (filter_frames, max(1, round(filter_pixels / cell)), max(1, round(filter_pixels / cell)))
    halo = filter_frames // 2
    out = np.zeros(num_frames, dtype=np.float64)
    for first in range(0, num_frames, _CHUNK_FRAMES):
        stop = min(first + _CHUNK_FRAMES, num_frames)
        lo, hi = max(first - halo, 0), min(stop + halo, num_frames)
        maps = paint_boxes(frame_idx, boxes, object_scores, (lo, hi), grid, cell)
        if size != (1, 1, 1):
            maps = uniform_filter(maps, size=size, mode="nearest")  # the 3D mean filter
        out[first:stop] = maps[first - lo : stop - lo].reshape(stop - first, -1).max(axis=1)
    if sigma > 0 and num_frames > 1:
        out = gaussian_filter1d(out, sigma, mode="nearest")
    return out


def _minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min() if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def late_fusion(object_scores: np.ndarray, frame_scores: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Late fusion of object-level and frame-level frame scores of one video (§3.5).

    Each score series is min-max normalised over the video (their raw scales differ), then
    ``weight * object + (1 - weight) * frame``.

    Example:
        >>> late_fusion(np.array([0.0, 2.0, 1.0]), np.array([1.0, 3.0, 5.0]), weight=0.5).tolist()
        [0.0, 0.75, 0.75]
    """
    object_scores, frame_scores = np.asarray(object_scores), np.asarray(frame_scores)
    if object_scores.shape != frame_scores.shape:
        raise ValueError(f"score series differ in shape: {object_scores.shape} vs {frame_scores.shape}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    return weight * _minmax(object_scores) + (1.0 - weight) * _minmax(frame_scores)
