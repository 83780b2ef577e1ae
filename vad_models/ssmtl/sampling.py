"""Training samples of the proxy tasks (§3.3) from stored object tubes, and the train/validation split (§4.2).

A stored tube holds ``L = 2 t max_gap + 1`` frames centred on the detection frame (index ``c = L // 2``), so both
the consecutive window ``c-t .. c+t`` and the widest intermittent window fit inside it.

Labels are 0-based versions of the paper's classes: arrow of time 0 = forward, 1 = backward; motion irregularity
0 = consecutive, 1 = intermittent.

Example:
    >>> import numpy as np
    >>> offsets = intermittent_offsets(np.random.default_rng(0), half_window=3, max_gap=4)
    >>> len(offsets), int(offsets[3])
    (7, 0)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "arrow_samples",
    "central_window",
    "intermittent_offsets",
    "irregularity_samples",
    "middle_box_samples",
    "split_train_val",
    "stack_tubes",
    "temporal_split_mask",
]


def stack_tubes(tubes: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``[B, L, H, W, 3]`` uint8 tubes from a Ray numpy column (a regular array or an object array of tubes)."""
    arr = np.asarray(tubes)
    if arr.dtype == object:
        arr = np.stack([np.asarray(t) for t in tubes]) if len(tubes) else np.zeros((0, 1, 1, 1, 3), np.uint8)
    if arr.ndim != 5 or arr.shape[-1] != 3:
        raise ValueError(f"tubes must be [B, L, H, W, 3], got shape {arr.shape}")
    return arr


def central_window(tubes: np.ndarray, half_window: int) -> np.ndarray:
    """The consecutive window ``c-t .. c+t`` around each tube's centre frame: ``[B, 2t+1, H, W, 3]`` (a view)."""
    length = tubes.shape[1]
    if length % 2 == 0 or length < 2 * half_window + 1:
        raise ValueError(f"tubes must have an odd length >= {2 * half_window + 1}, got {length}")
    c = length // 2
    return tubes[:, c - half_window : c + half_window + 1]


def arrow_samples(windows: np.ndarray, rng: np.random.Generator, prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Task 1, arrow of time: reverse each window with probability ``prob``.

    Args:
        windows: ``[B, T, H, W, 3]`` consecutive windows in temporal order.
        rng: Random generator.
        prob: Probability of a backward sample.

    Returns:
        ``(clips, labels)``: ``clips`` ``[B, T, H, W, 3]``; ``labels`` int64, 1 where the clip runs backward.

    Example:
        >>> w = np.arange(3)[None, :, None, None, None] * np.ones((1, 3, 1, 1, 3), np.uint8)
        >>> clips, labels = arrow_samples(w, np.random.default_rng(0), prob=1.0)
        >>> clips[0, :, 0, 0, 0].tolist(), labels.tolist()
        ([2, 1, 0], [1])
    """
    labels = (rng.random(len(windows)) < prob).astype(np.int64)
    clips = np.where(labels[:, None, None, None, None].astype(bool), windows[:, ::-1], windows)
    return clips, labels


def intermittent_offsets(rng: np.random.Generator, half_window: int, max_gap: int) -> np.ndarray:
    """Frame offsets of one intermittent sequence (§3.3, task 2).

    Keep the middle frame, then add ``t`` preceding and ``t`` succeeding frames, each step skipping frames with a
    random gap drawn from ``{1, .., max_gap}``. At least one gap exceeds 1 (an all-ones draw would be a
    consecutive sequence labelled intermittent), so the draw is repeated in that rare case.

    Returns:
        ``[2t+1]`` int64 ascending offsets relative to the middle frame, ``0`` at index ``t``.
    """
    if max_gap < 2:
        raise ValueError(f"intermittent sequences need max_gap >= 2, got {max_gap}")
    while True:
        gaps = rng.integers(1, max_gap + 1, size=(2, half_window))
        if (gaps > 1).any():
            break
    before = -np.cumsum(gaps[0])[::-1]
    after = np.cumsum(gaps[1])
    return np.concatenate([before, [0], after]).astype(np.int64)


def irregularity_samples(
    tubes: np.ndarray, half_window: int, max_gap: int, rng: np.random.Generator, prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Task 2, motion irregularity: consecutive windows, or with probability ``prob`` intermittent ones.

    Args:
        tubes: ``[B, L, H, W, 3]`` stored tubes with ``L >= 2 t max_gap + 1``.
        half_window: ``t``.
        max_gap: Largest gap between two chosen frames.
        rng: Random generator.
        prob: Probability of an intermittent sample.

    Returns:
        ``(clips, labels)``: ``clips`` ``[B, 2t+1, H, W, 3]``; ``labels`` int64, 1 where intermittent.
    """
    need = 2 * half_window * max_gap + 1
    if tubes.shape[1] < need:
        raise ValueError(f"intermittent windows with gaps up to {max_gap} need tubes of >= {need} frames, "
                         f"got {tubes.shape[1]}; rebuild the tube store or lower max_gap")
    c = tubes.shape[1] // 2
    labels = (rng.random(len(tubes)) < prob).astype(np.int64)
    consecutive = np.arange(-half_window, half_window + 1)
    index = np.stack([intermittent_offsets(rng, half_window, max_gap) if lab else consecutive for lab in labels])
    index = index.reshape(len(tubes), 2 * half_window + 1) + c
    clips = np.take_along_axis(tubes, index[:, :, None, None, None], axis=1)
    return clips, labels


def middle_box_samples(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Task 3, middle box: the ``2t`` frames around the middle as input, the middle frame as target.

    Returns:
        ``(inputs [B, 2t, H, W, 3], targets [B, H, W, 3])``.
    """
    t = windows.shape[1] // 2
    inputs = np.concatenate([windows[:, :t], windows[:, t + 1 :]], axis=1)
    return inputs, np.ascontiguousarray(windows[:, t])


def temporal_split_mask(frame_idx: np.ndarray, video_frames: np.ndarray, train_fraction: float) -> np.ndarray:
    """The paper's split (§4.2): the first ``train_fraction`` of each video's frames train, the rest validate.

    Args:
        frame_idx: Detection frame of each tube row.
        video_frames: Frames in that row's video.
        train_fraction: e.g. 0.85.

    Returns:
        Boolean mask, True for training rows.

    Example:
        >>> temporal_split_mask(np.array([0, 84, 85, 99]), np.array([100] * 4), 0.85).tolist()
        [True, True, False, False]
    """
    frame_idx = np.asarray(frame_idx, dtype=np.int64)
    limit = np.floor(np.asarray(video_frames, dtype=np.float64) * train_fraction)
    return frame_idx < limit


def split_train_val(video_ids: Sequence[str], frac: float = 0.85, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split whole videos into train and validation sets (for corpora of many short videos).

    The paper splits *within* each video instead (:func:`temporal_split_mask`); a per-video split keeps
    validation tubes from sharing frames with training tubes when videos are short. The assignment is a pure
    function of ``(video id, seed)``, so it is stable when videos are added.

    Args:
        video_ids: Distinct training video ids.
        frac: Fraction of videos used for training (at least one video is kept for each side when possible).
        seed: Changes the assignment.

    Returns:
        ``(train_ids, val_ids)``, each sorted.

    Example:
        >>> train, val = split_train_val([f"v{i}" for i in range(20)], frac=0.85, seed=0)
        >>> len(train), len(val)
        (17, 3)
    """
    ids = sorted(set(map(str, video_ids)))
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    if len(ids) < 2 or frac == 1.0:
        return ids, []
    n_val = min(len(ids) - 1, max(1, round(len(ids) * (1.0 - frac))))
    ranked = sorted(ids, key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).hexdigest())
    val = set(ranked[:n_val])
    return [v for v in ids if v not in val], sorted(val)
