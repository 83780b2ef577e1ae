"""Thumbnail strips for the review report: read a few source frames, mark the peak, overlay anomaly maps.

Frames come from the source named by the store manifest's ``uri``, told apart as :mod:`pipelines.decode` does:
a video file (decoded with decord's ``get_batch``, which seeks, so a frame deep into an hour-long video does not
decode the hour before it; remote videos are fetched with :func:`pipelines.storage.local_copy`) or a folder of
frame images (UCSD Ped2, ShanghaiTech test), read image by image.

Example:
    >>> import numpy as np
    >>> frames = np.zeros((3, 48, 64, 3), np.uint8)
    >>> make_strip(frames, highlight=1, height=24).shape
    (24, 100, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import decord
import numpy as np

from pipelines import storage
from pipelines.decode import DecodeError, is_video_file, list_frame_files

__all__ = ["make_strip", "overlay_heatmap", "read_frames", "strip_indices", "write_png"]

_GAP_PX = 2  # white gap between thumbnails
_BORDER_PX = 2  # red frame around the peak thumbnail
_RED = np.array([220, 30, 30], dtype=np.float32)


def strip_indices(start: int, end: int, peak: int, num_frames: int, count: int = 5) -> list[int]:
    """``count`` frame indices centred on ``peak``, spread over the event, inside ``[0, num_frames)``.

    Example:
        >>> strip_indices(10, 29, 20, 100, count=5)
        [12, 16, 20, 24, 28]
    """
    if count < 1 or num_frames < 1:
        raise ValueError(f"strip_indices needs count >= 1 and num_frames >= 1, got {count}, {num_frames}")
    step = max(1, (end - start + 1) // count)
    offsets = step * (np.arange(count) - count // 2)
    return sorted({int(i) for i in np.clip(peak + offsets, 0, num_frames - 1)})


def read_frames(uri: str, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Read frames ``indices`` of a video file or an image-frame folder as RGB uint8 ``[H, W, 3]`` arrays.

    Frame numbers follow :mod:`pipelines.decode` (the ingest's numbering): decode order for videos, natural
    file-name order for frame folders. Indices past the end are left out of the result (a manifest frame
    count can differ slightly from what the decoder sees).

    Args:
        uri: Local path or URI of a video file, or of a folder of frame images.
        indices: Frame indices to read.

    Returns:
        Frame index -> RGB frame.

    Raises:
        DecodeError: If the input does not exist or cannot be decoded (the message names ``uri``).
    """
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    if not is_video_file(uri):
        files = list_frame_files(uri)
        out = {}
        for i in (i for i in wanted if i < len(files)):
            image = cv2.imdecode(np.frombuffer(storage.read_bytes(files[i]), np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise DecodeError(f"cannot decode frame image {files[i]}")
            out[i] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return out
    try:
        with storage.local_copy(uri) as path:
            reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            present = [i for i in wanted if i < len(reader)]
            batch = reader.get_batch(present).asnumpy() if present else np.empty((0,))
            del reader  # release FFmpeg's buffers before the temporary copy goes
    except FileNotFoundError:
        raise DecodeError(f"video {uri} does not exist") from None
    except (RuntimeError, decord.DECORDError) as exc:
        raise DecodeError(f"cannot decode {uri}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return {i: np.ascontiguousarray(frame) for i, frame in zip(present, batch)}


def overlay_heatmap(frame: np.ndarray, heat: np.ndarray, max_alpha: float = 0.6) -> np.ndarray:
    """Blend a heat map over an RGB frame as translucent red (opacity grows with the normalised heat).

    Args:
        frame: RGB uint8 ``[H, W, 3]``.
        heat: Float ``[h, w]`` anomaly map of any scale and size (min-max normalised, resized to the frame;
            non-finite values count as the minimum).
        max_alpha: Opacity of the hottest pixel.

    Returns:
        RGB uint8 ``[H, W, 3]``.

    Example:
        >>> out = overlay_heatmap(np.zeros((4, 4, 3), np.uint8), np.eye(2))
        >>> int(out[0, 0, 0]) > 0, int(out[0, 3, 0])
        (True, 0)
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"an anomaly map must be a non-empty 2-D [h, w] array, got shape {heat.shape}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"overlay_heatmap needs an RGB frame [H, W, 3], got shape {frame.shape}")
    finite = np.isfinite(heat)
    low = float(heat[finite].min()) if finite.any() else 0.0
    heat = np.where(finite, heat, low) - low
    heat /= max(float(heat.max()), 1e-12)
    alpha = cv2.resize(heat, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)[..., None] * max_alpha
    return (frame.astype(np.float32) * (1 - alpha) + _RED * alpha).round().clip(0, 255).astype(np.uint8)


def make_strip(
    frames: Sequence[np.ndarray] | np.ndarray,
    highlight: int | None = None,
    height: int = 96,
) -> np.ndarray:
    """Resize frames to one height and place them side by side, a red border around ``frames[highlight]``.

    Args:
        frames: RGB uint8 frames ``[H, W, 3]`` (sizes may differ).
        highlight: Position of the frame to outline (the event's peak), or ``None``.
        height: Thumbnail height in pixels (widths keep each frame's aspect ratio).

    Returns:
        RGB uint8 ``[height, total_width, 3]`` on a white background.
    """
    if len(frames) == 0:
        raise ValueError("make_strip needs at least one frame")
    thumbs = []
    for k, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"make_strip needs RGB uint8 frames [H, W, 3]; frame {k} is {frame.dtype} {frame.shape}")
        width = max(1, round(frame.shape[1] * height / frame.shape[0]))
        thumb = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        if k == highlight:
            thumb = thumb.copy()
            thumb[:_BORDER_PX], thumb[-_BORDER_PX:] = _RED, _RED
            thumb[:, :_BORDER_PX], thumb[:, -_BORDER_PX:] = _RED, _RED
        thumbs.append(thumb)
    gap = np.full((height, _GAP_PX, 3), 255, np.uint8)
    return np.concatenate([part for t in thumbs for part in (t, gap)][:-1], axis=1)


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
