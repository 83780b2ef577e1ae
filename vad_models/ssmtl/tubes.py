"""Object-centric sequences ("tubes", §3.1): the same box cropped from frames ``i-h .. i+h``, resized to 64x64.

"For each detected object in the frame i, we create an object-centric temporal sequence by simply cropping the
corresponding bounding box from frames {i-t, ..., i+t} (without performing any object tracking), resizing each
cropped image to 64x64 pixels." Tubes are stored wider than the 7-frame window (``L = 2 t max_gap + 1``
frames) so the motion-irregularity task can draw intermittent frames from them; frame indices outside the
video repeat its first or last frame.

Clip-store segments overlap by ``O >= L - 1`` frames, so every tube lies inside one segment. Each detection
frame is *owned* by exactly one segment (:func:`owned_frames`), so building tubes is a per-segment map with no
cross-row join.

Example:
    >>> owned_frames(start=0, n=128, overlap=24, video_frames=300)
    (0, 115)
    >>> owned_frames(start=104, n=128, overlap=24, video_frames=300)
    (116, 219)
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["crop_tubes", "owned_frames"]


def owned_frames(start: int, n: int, overlap: int, video_frames: int) -> tuple[int, int]:
    """Inclusive range of detection frames whose tubes a segment builds.

    Args:
        start: First frame of the segment.
        n: Frames in the segment.
        overlap: Frames shared by consecutive segments of the store.
        video_frames: Frames in the video.

    Returns:
        ``(lo, hi)``; consecutive segments give adjacent ranges covering ``0 .. video_frames - 1``.
    """
    last = start + n >= video_frames
    lo = 0 if start == 0 else start + (overlap + 1) // 2
    hi = max(video_frames, start + n) - 1 if last else start + n - 1 - overlap // 2
    return lo, hi


def crop_tubes(
    frames: np.ndarray,
    start: int,
    video_frames: int,
    frame_idx: np.ndarray,
    boxes: np.ndarray,
    length: int,
    size: int = 64,
) -> np.ndarray:
    """Crop one tube per box from a segment's frames.

    Args:
        frames: ``[n, H, W, 3]`` uint8 frames ``start .. start+n-1`` of one video.
        start: Video index of ``frames[0]``.
        video_frames: Frames in the video (indices beyond it are clamped to the last frame).
        frame_idx: ``[K]`` centre frame of each tube.
        boxes: ``[K, 4]`` ``x1, y1, x2, y2`` in pixels.
        length: Tube length ``L`` (odd).
        size: Output side in pixels.

    Returns:
        ``[K, L, size, size, 3]`` uint8.

    Raises:
        ValueError: a tube needs frames outside the segment (the store's overlap is smaller than ``L - 1``).
    """
    if length % 2 == 0:
        raise ValueError(f"tube length must be odd, got {length}")
    n, height, width = frames.shape[:3]
    half = length // 2
    out = np.empty((len(frame_idx), length, size, size, 3), dtype=np.uint8)
    end = min(start + n, video_frames) - 1
    for k, (t, box) in enumerate(zip(np.asarray(frame_idx, np.int64), np.asarray(boxes, np.float64))):
        index = np.clip(np.arange(t - half, t + half + 1), 0, video_frames - 1)
        if index.min() < start or index.max() > end:
            raise ValueError(f"tube of frame {t} needs frames {index.min()}..{index.max()} but the segment holds "
                             f"{start}..{end}: the clip store's overlap must be >= {length - 1} frames")
        x1, y1 = int(np.clip(np.floor(box[0]), 0, width - 1)), int(np.clip(np.floor(box[1]), 0, height - 1))
        x2, y2 = int(np.clip(np.ceil(box[2]), x1 + 1, width)), int(np.clip(np.ceil(box[3]), y1 + 1, height))
        for j, f in enumerate(index - start):
            out[k, j] = cv2.resize(frames[f, y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LINEAR)
    return out
