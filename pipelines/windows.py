"""Clip windows from clip-store segments, without copies and without cross-row joins.

Consecutive segments of a clip store overlap by ``window - 1`` frames, so every window of ``window`` frames
lies inside exactly one segment: window starts ``0 .. n - window`` of each segment partition the video.

Example:
    >>> import numpy as np
    >>> frames = np.zeros((20, 8, 8, 1), np.uint8)
    >>> windows, starts = segment_windows(frames, start_frame=100, window=17)
    >>> windows.shape, starts.tolist()
    ((4, 17, 8, 8, 1), [100, 101, 102, 103])
"""

from __future__ import annotations

import numpy as np

__all__ = ["segment_windows", "window_starts"]


def window_starts(num_frames: int, window: int, stride: int = 1) -> np.ndarray:
    """Offsets (within a segment of ``num_frames``) of every window of length ``window`` at ``stride``.

    Args:
        num_frames: Frames in the segment.
        window: Frames per window (frames inside a window are consecutive).
        stride: Step between consecutive window starts.

    Returns:
        int64 array of offsets; empty when the segment is shorter than one window.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if num_frames < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, num_frames - window + 1, stride, dtype=np.int64)


def segment_windows(
    frames: np.ndarray, start_frame: int, window: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """All windows of one segment as a zero-copy view.

    Args:
        frames: ``[n, H, W, C]`` uint8 frames of one segment.
        start_frame: Index in the video of ``frames[0]``.
        window: Frames per window.
        stride: Step between window starts.

    Returns:
        ``(windows, starts)``: ``windows`` is ``[N, window, H, W, C]`` (a read-only strided view of
        ``frames``) and ``starts`` the video frame index of each window's first frame.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"frames must be [n, H, W, C], got shape {frames.shape}")
    offsets = window_starts(frames.shape[0], window, stride)
    if offsets.size == 0:
        empty = np.zeros((0, window, *frames.shape[1:]), dtype=frames.dtype)
        return empty, offsets
    view = np.lib.stride_tricks.sliding_window_view(frames, window, axis=0)  # [n-w+1, H, W, C, w]
    view = np.moveaxis(view, -1, 1)[::stride]  # [N, w, H, W, C], still a view
    return view, offsets + int(start_frame)
