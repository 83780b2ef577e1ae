"""Snippets, ten crops and normalisation for the I3D extractor (torch ops, so they run on the GPU too).

Crop geometry (REFERENCE.md §2, field recipe): four corners and the centre of each frame, then the same five on
the horizontally flipped frame. For 256×340 frames and 224 crops the centre crop is rows 16:240, cols 58:282.

Example:
    >>> import numpy as np, torch
    >>> from vad_models.i3d.config import I3DConfig
    >>> cfg = I3DConfig(height=40, width=56, crop_size=32)
    >>> clips = torch.zeros(2, 16, 40, 56, 3, dtype=torch.uint8)  # (N, T, H, W, C)
    >>> preprocess(clips, cfg).shape  # (N·10, C, T, crop, crop)
    torch.Size([20, 3, 16, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.windows import segment_windows
from vad_models.i3d.config import CROP_ORDERS, I3DConfig

__all__ = ["CropBox", "crop_boxes", "preprocess", "segment_snippets", "ten_crop"]


@dataclass(frozen=True)
class CropBox:
    """One crop: ``frame[top:top+size, left:left+size]`` of the (optionally horizontally flipped) frame."""

    name: str
    top: int
    left: int
    size: int
    flip: bool


def crop_boxes(height: int, width: int, size: int, order: str = "field") -> list[CropBox]:
    """The ten crop boxes of a ``height``×``width`` frame in ``order``.

    Boxes of flipped crops are coordinates in the flipped frame. The centre offset is ``(H − size) // 2``
    (equal to torchvision's ``round((H − size) / 2)`` whenever ``H − size`` is even, as for 256×340 / 224).

    Example:
        >>> [(b.name, b.top, b.left) for b in crop_boxes(256, 340, 224)][:3]
        [('tl', 0, 0), ('tr', 0, 116), ('center', 16, 58)]
    """
    if order not in CROP_ORDERS:
        raise ValueError(f"crop order must be one of {sorted(CROP_ORDERS)}, got {order!r}")
    if not 0 < size <= min(height, width):
        raise ValueError(f"crop size {size} does not fit a {height}x{width} frame")
    corners = {
        "tl": (0, 0),
        "tr": (0, width - size),
        "center": ((height - size) // 2, (width - size) // 2),
        "bl": (height - size, 0),
        "br": (height - size, width - size),
    }
    boxes = []
    for name in CROP_ORDERS[order]:
        base = name.removesuffix("_flip")
        top, left = corners[base]
        boxes.append(CropBox(name, top, left, size, flip=name.endswith("_flip")))
    return boxes


def ten_crop(clips: torch.Tensor, size: int, order: str = "field") -> torch.Tensor:
    """Ten crops of every clip.

    Args:
        clips: ``(N, T, H, W, C)`` frames (any dtype).
        size: Crop side.
        order: A key of :data:`~vad_models.i3d.config.CROP_ORDERS`.

    Returns:
        ``(N, 10, T, size, size, C)``, crops in ``order``.
    """
    if clips.ndim != 5:
        raise ValueError(f"ten_crop expects (N, T, H, W, C) clips, got shape {tuple(clips.shape)}")
    height, width = clips.shape[2], clips.shape[3]
    flipped = clips.flip(3)
    crops = [
        (flipped if b.flip else clips)[:, :, b.top : b.top + size, b.left : b.left + size]
        for b in crop_boxes(height, width, size, order)
    ]
    return torch.stack(crops, dim=1)


def preprocess(clips: torch.Tensor, cfg: I3DConfig) -> torch.Tensor:
    """uint8 snippets → normalised ten-crop model input.

    Args:
        clips: ``(N, T, H, W, 3)`` uint8 snippets of ``cfg.height``×``cfg.width`` frames.
        cfg: Extractor settings (crop size and order, normalisation).

    Returns:
        ``(N·10, 3, T, crop, crop)`` float32, crop-major within each snippet (snippet n's crops are rows
        ``10n … 10n+9``).
    """
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"preprocess expects (N, T, H, W, 3) uint8 snippets, got shape {tuple(clips.shape)}")
    if tuple(clips.shape[2:4]) != (cfg.height, cfg.width):
        raise ValueError(
            f"frames are {clips.shape[2]}x{clips.shape[3]} but the extractor is pinned to {cfg.height}x{cfg.width}"
        )
    mean, std = cfg.norm_mean_std
    crops = ten_crop(clips, cfg.crop_size, cfg.crop_order)  # (N, 10, T, s, s, 3)
    x = crops.flatten(0, 1).permute(0, 4, 1, 2, 3)  # (N·10, 3, T, s, s)
    return (x.float() - mean) / std


def segment_snippets(frames: np.ndarray, start_frame: int, snippet_frames: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping snippets of one clip-store segment; the tail that does not fill a snippet is dropped.

    Args:
        frames: ``(n, H, W, C)`` uint8 frames of a segment.
        start_frame: Video frame index of ``frames[0]``; must be a multiple of ``snippet_frames`` so snippet
            boundaries are the same for every segment of a video.
        snippet_frames: Frames per snippet.

    Returns:
        ``(snippets, starts)``: ``(n // snippet_frames, snippet_frames, H, W, C)`` view and the video frame index
        of each snippet's first frame.
    """
    if start_frame % snippet_frames:
        raise ValueError(
            f"segment starts at frame {start_frame}, not a multiple of {snippet_frames}: snippets would straddle "
            "segments (the clip store needs overlap 0 and a segment length that is a multiple of the snippet length)"
        )
    return segment_windows(frames, start_frame, snippet_frames, stride=snippet_frames)
