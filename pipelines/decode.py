"""Decoding videos and frame folders into fixed-size uint8 frames, in bounded memory.

Two kinds of input, told apart by the URI's extension:

* **Video files** (``.mp4 .avi .mkv .mov``) are decoded with decord's ``VideoReader`` pinned to
  ``num_threads=1`` (one Ray task = one core, REFERENCE.md §10), :data:`DECODE_CHUNK` frames per
  ``get_batch`` call, never the whole video at once; the reader is released when the generator ends (or the
  :class:`FrameSource` is closed).
  decord needs a local file, so ``s3://`` (and ``memory://``) videos are first downloaded to a temporary file by
  :func:`pipelines.storage.local_copy`, which is deleted when decoding ends (the task's local disk must hold
  one video at a time).
* **Frame folders** (any other URI: a directory of ``.jpg .jpeg .png .tif .tiff .bmp`` images, e.g. UCSD Ped2 or
  the ShanghaiTech test set) are read image by image in natural order (``2.jpg`` before ``10.jpg``) with
  OpenCV (``cv2.imdecode`` of the bytes from :mod:`pipelines.storage`, so local, ``s3://`` and unicode paths
  all work without a temporary copy).

**One resize path for both.** Frames are decoded at full resolution, converted to gray with
``cv2.COLOR_RGB2GRAY`` when the spec wants one channel, then resized with ``cv2.INTER_AREA``. decord's
decode-time resize (``VideoReader(..., width=, height=)``) is about twice as fast at 64x64 but was not used:
measured on a textured 240x360 H.264 clip it differs from decode + ``INTER_AREA`` by 2.2-3.3 levels on average
(99th percentile 8-12, max up to 40) because FFmpeg scales in YUV with its own filter, and it fails outright for
some sizes (e.g. 48x32: "DECORDArrayCopyFromTo: The size must exactly match"). Frame folders cannot use it
anyway, and datasets such as ShanghaiTech mix videos (train) with frame folders (test), so a single OpenCV path
keeps train and test pixels consistent.

**Memory** is bounded by one chunk of full-resolution frames plus one segment of output frames, whatever the
video length (tests/pipelines/test_decode.py measures it on a 3,000-frame video against a 300-frame one).

**Frame counts.** The number of frames a video has is the number decoded, not what its container reports
(an AVI header may count dropped frames; a truncated MKV decodes fewer frames than its duration implies).
Any decoding error raises :class:`DecodeError`.

**One pass.** :class:`FrameSource` opens an input once: opening probes it (frame 0 decoded, kept as the first
chunk), iterating decodes the rest. :func:`probe`, :func:`iter_frames`, :func:`iter_segments` and
:func:`count_frames` are one-call wrappers around it; the clip store uses it directly so that each video is
downloaded and decoded exactly once while a failure to open still tells apart from a failure part-way.

Example:
    >>> from vad_models.base import FrameSpec
    >>> spec = FrameSpec(64, 64, 1, window=5, segment_frames=32)
    >>> for start, frames in iter_segments("videos/cam1.mp4", spec):  # doctest: +SKIP
    ...     print(start, frames.shape)  # 0 (32, 64, 64, 1), then 28 (32, 64, 64, 1), ...
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import decord
import numpy as np

from pipelines import storage

if TYPE_CHECKING:  # only the attributes are used: decoding does not need torch
    from vad_models.frame_spec import FrameSpec

__all__ = [
    "DECODE_CHUNK",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DecodeError",
    "FrameSource",
    "VideoInfo",
    "count_frames",
    "decoder_info",
    "is_video_file",
    "iter_frames",
    "iter_segments",
    "list_frame_files",
    "natural_key",
    "probe",
    "resize_frames",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DECODE_CHUNK = 32  # frames per decord get_batch / per image batch: bounds the full-resolution working set

# FFmpeg prints every damaged packet to stderr; the errors that matter reach the caller as DecodeError.
decord.logging.set_level(decord.logging.QUIET)


class DecodeError(RuntimeError):
    """A video or frame folder could not be decoded; the message names the input and what failed."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about an input without decoding it all.

    Attributes:
        num_frames: Frames the container (or folder) reports; the decoded count is authoritative
            (see :func:`count_frames`).
        fps: Average frame rate; ``nan`` for frame folders (images carry no timing).
        height: Native frame height in pixels.
        width: Native frame width in pixels.
    """

    num_frames: int
    fps: float
    height: int
    width: int


def is_video_file(uri: str) -> bool:
    """Whether ``uri`` names a video file (by extension) rather than a frame folder.

    Example:
        >>> is_video_file("s3://b/cams/01.AVI"), is_video_file("/data/Test001")
        (True, False)
    """
    return uri.lower().endswith(VIDEO_EXTENSIONS)


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``frame2.jpg`` before ``frame10.jpg``.

    Example:
        >>> sorted(["f10.jpg", "f2.jpg", "f1.jpg"], key=natural_key)
        ['f1.jpg', 'f2.jpg', 'f10.jpg']
    """
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p)


def list_frame_files(uri: str) -> list[str]:
    """Image files directly inside a frame folder, in natural order.

    Raises:
        DecodeError: If the folder does not exist or holds no image.

    Example:
        >>> list_frame_files("data/UCSDped2/Test/Test001")[:2]  # doctest: +SKIP
        ['data/UCSDped2/Test/Test001/001.tif', 'data/UCSDped2/Test/Test001/002.tif']
    """
    try:
        files = storage.list_files(uri, suffixes=IMAGE_EXTENSIONS, recursive=False)
    except FileNotFoundError:
        raise DecodeError(f"frame folder {uri} does not exist") from None
    if not files:
        raise DecodeError(f"frame folder {uri} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(files, key=lambda f: natural_key(posixpath.basename(f)))


def probe(uri: str) -> VideoInfo:
    """Frame count, frame rate and native size of a video file or frame folder (decodes one frame).

    Raises:
        DecodeError: If the input cannot be opened or its first frame cannot be decoded.

    Example:
        >>> probe("videos/cam1.mp4")  # doctest: +SKIP
        VideoInfo(num_frames=1500, fps=25.0, height=480, width=856)
    """
    with FrameSource(uri) as source:
        return source.info


class FrameSource:
    """One input opened once: :attr:`info` (what :func:`probe` returns), then every frame, in one pass.

    Opening *is* the probe: a video's container is opened and frame 0 decoded, a frame folder is listed and its
    first image read. So a :class:`DecodeError` from the constructor means the input cannot be opened at all, and
    one raised while iterating means it failed part-way (the clip store's quarantine stages ``probe`` and
    ``decode``). Frame 0 is kept and handed out as the first chunk, so nothing is decoded twice, and a remote
    video is downloaded once. The frames can be iterated once; :meth:`close` (or leaving the ``with`` block)
    releases the decoder and any temporary local copy.

    Attributes:
        uri: The input.
        info: Its :class:`VideoInfo` (container-reported frame count; native size of frame 0).

    Example:
        >>> with FrameSource("videos/cam1.mp4") as source:  # doctest: +SKIP
        ...     fps = source.info.fps
        ...     starts = [start for start, _ in source.segments(spec)]
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._stack = contextlib.ExitStack()
        self._reader: decord.VideoReader | None = None
        self._files: list[str] = []
        self._first: np.ndarray | None = None  # frame 0, RGB [1, h, w, 3], until the frames are iterated
        try:
            if is_video_file(uri):
                try:  # s3:// and memory:// are downloaded to a temporary file, deleted by close()
                    path = self._stack.enter_context(storage.local_copy(uri))
                except FileNotFoundError:
                    raise DecodeError(f"video {uri} does not exist") from None
                self._reader = _open_reader(path, uri)
                self._first = _get_batch(self._reader, [0], uri)
                total, fps = len(self._reader), float(self._reader.get_avg_fps())
            else:
                self._files = list_frame_files(uri)
                self._first = _read_image(self._files[0])[None]
                total, fps = len(self._files), float("nan")
        except BaseException:
            self.close()
            raise
        self.info = VideoInfo(total, fps, int(self._first.shape[1]), int(self._first.shape[2]))

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder now (not at some later garbage collection) and delete any temporary copy."""
        self._reader = None
        self._first = None
        self._stack.close()

    def chunks(self, chunk_frames: int = DECODE_CHUNK) -> Iterator[np.ndarray]:
        """Every frame at native resolution, RGB uint8 ``[k, h, w, 3]``: frame 0 alone, then ``chunk_frames`` at a time.

        Raises:
            DecodeError: On any decode failure (after the earlier chunks were yielded).
            RuntimeError: If the frames were iterated before (one pass per source).
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if self._first is None:
            raise RuntimeError(f"the frames of {self.uri} were already read (or the source is closed)")
        first, self._first = self._first, None
        yield first
        if self._reader is not None:
            total = len(self._reader)
            for begin in range(1, total, chunk_frames):
                yield _get_batch(self._reader, list(range(begin, min(total, begin + chunk_frames))), self.uri)
            return
        for begin in range(1, len(self._files), chunk_frames):
            chunk = []
            for name in self._files[begin : begin + chunk_frames]:
                img = _read_image(name)
                if img.shape != first.shape[1:]:
                    raise DecodeError(
                        f"frame {name} is {img.shape[1]}x{img.shape[0]} but the first frame of {self.uri} is "
                        f"{first.shape[2]}x{first.shape[1]}"
                    )
                chunk.append(img)
            yield np.stack(chunk)

    def frames(
        self, height: int | None = None, width: int | None = None, channels: int = 3, chunk_frames: int = DECODE_CHUNK
    ) -> Iterator[np.ndarray]:
        """Every frame as ``[k, height, width, channels]`` uint8 chunks (see :func:`iter_frames`)."""
        for chunk in self.chunks(chunk_frames):
            yield resize_frames(chunk, height, width, channels)

    def segments(self, spec: FrameSpec, size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """The overlapping segments of :func:`iter_segments`, from this source."""
        height, width, channels = _output_geometry(spec, size)
        return _segments(self.frames(height, width, channels), spec.segment_frames, spec.effective_overlap)


def resize_frames(frames: np.ndarray, height: int | None, width: int | None, channels: int) -> np.ndarray:
    """RGB frames ``[n, h, w, 3]`` to ``[n, height, width, channels]`` uint8 (the one resize path).

    Gray conversion (``cv2.COLOR_RGB2GRAY``) happens at native resolution, then ``cv2.INTER_AREA`` resizes;
    ``height``/``width`` of ``None`` keep the native size.

    Example:
        >>> resize_frames(np.zeros((2, 48, 64, 3), np.uint8), 24, 32, 1).shape
        (2, 24, 32, 1)
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 frames [n, h, w, 3], got {frames.dtype} {frames.shape}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    n, h, w = frames.shape[:3]
    out_h, out_w = height or h, width or w
    out = np.empty((n, out_h, out_w, channels), dtype=np.uint8)
    for i, frame in enumerate(frames):
        img = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if channels == 1 else frame
        if (out_h, out_w) != (h, w):
            img = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)
        out[i] = img.reshape(out_h, out_w, channels)
    return out


def iter_frames(
    uri: str,
    height: int | None = None,
    width: int | None = None,
    channels: int = 3,
    chunk_frames: int = DECODE_CHUNK,
) -> Iterator[np.ndarray]:
    """Every frame of a video file or frame folder, in chunks of ``[k, height, width, channels]`` uint8.

    Args:
        uri: Video file or frame folder (local, ``file://``, ``s3://``, ``memory://``).
        height: Output height (``None``: native).
        width: Output width (``None``: native).
        channels: 1 (gray) or 3 (RGB).
        chunk_frames: Frames decoded per step (bounds memory).

    Yields:
        Consecutive chunks, ``k <= chunk_frames`` frames each.

    Raises:
        DecodeError: On any open or decode failure (mid-way failures raise after earlier chunks were yielded).

    Example:
        >>> sum(len(c) for c in iter_frames("videos/cam1.mp4", 64, 64, 1))  # doctest: +SKIP
        1500
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    with FrameSource(uri) as source:
        yield from source.frames(height, width, channels, chunk_frames)


def count_frames(uri: str, spec: FrameSpec | None = None, size: tuple[int, int] | None = None) -> int:
    """Decode every frame (through the same path as :func:`iter_segments`) and return how many there are.

    A video whose count is returned here decodes cleanly.

    Args:
        uri: Video file or frame folder.
        spec: Output frame spec (``None``: native RGB).
        size: ``(height, width)`` overriding the spec's size.

    Raises:
        DecodeError: If any frame fails to decode.

    Example:
        >>> count_frames("videos/cam1.mp4")  # doctest: +SKIP
        1500
    """
    height, width, channels = _output_geometry(spec, size)
    return sum(len(chunk) for chunk in iter_frames(uri, height, width, channels))


def iter_segments(uri: str, spec: FrameSpec, size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Overlapping segments of ``spec.segment_frames`` frames: the rows of a clip store.

    Consecutive segments share ``spec.effective_overlap`` frames, so with the default overlap of
    ``window - 1`` every window of ``window`` frames lies inside exactly one segment. The last segment may be
    shorter; it is emitted only when it holds frames the previous one does not (a video shorter than one
    segment gives one short segment).

    Args:
        uri: Video file or frame folder.
        spec: Frame spec (size, channels, window, segment length, overlap).
        size: ``(height, width)`` overriding the spec's size.

    Yields:
        ``(start_frame, frames)`` with ``frames`` a new ``[n, H, W, C]`` uint8 array per segment.

    Raises:
        DecodeError: On any decoding failure; segments yielded before it are then incomplete, so callers that
            must not keep partial videos hold them back until the last one came (the clip store stages them).

    Example:
        >>> spec = FrameSpec(64, 64, 1, window=17, segment_frames=128)  # doctest: +SKIP
        >>> [s for s, _ in iter_segments("videos/300_frames.mp4", spec)]  # doctest: +SKIP
        [0, 112, 224]
    """
    with FrameSource(uri) as source:
        yield from source.segments(spec, size)


def decoder_info() -> dict[str, str | int]:
    """How frames are decoded and resized, recorded in every store's ``_store.json``.

    Example:
        >>> sorted(decoder_info())
        ['chunk_frames', 'gray', 'images', 'resize', 'video']
    """
    return {
        "video": f"decord {decord.__version__} (VideoReader, num_threads=1, get_batch)",
        "images": f"opencv {cv2.__version__} (imdecode, natural order)",
        "resize": "full-resolution decode, then cv2.resize INTER_AREA",
        "gray": "cv2.cvtColor RGB2GRAY before resizing",
        "chunk_frames": DECODE_CHUNK,
    }


# ----------------------------------------------------------------------------------------------------------------
# Internals


def _output_geometry(spec: FrameSpec | None, size: tuple[int, int] | None) -> tuple[int | None, int | None, int]:
    height, width = (spec.height, spec.width) if spec is not None else (None, None)
    if size is not None:
        height, width = int(size[0]), int(size[1])
        if height <= 0 or width <= 0:
            raise ValueError(f"size must be positive (height, width), got {size}")
    return height, width, spec.channels if spec is not None else 3


def _segments(chunks: Iterator[np.ndarray], seg_len: int, overlap: int) -> Iterator[tuple[int, np.ndarray]]:
    """Overlapping segments of ``seg_len`` frames (``overlap`` shared) from a stream of frame chunks."""
    buf: np.ndarray | None = None
    filled, start = 0, 0
    for chunk in chunks:
        if buf is None:
            buf = np.empty((seg_len, *chunk.shape[1:]), dtype=np.uint8)
        pos = 0
        while pos < len(chunk):
            take = min(seg_len - filled, len(chunk) - pos)
            buf[filled : filled + take] = chunk[pos : pos + take]
            filled, pos = filled + take, pos + take
            if filled == seg_len:
                done, buf = buf, np.empty_like(buf)
                buf[:overlap] = done[seg_len - overlap :]  # the next segment starts with the shared frames
                yield start, done
                start, filled = start + seg_len - overlap, overlap
    # After a full segment the first `overlap` frames of the buffer were already emitted.
    if buf is not None and filled > (overlap if start > 0 else 0):
        yield start, buf[:filled].copy()


def _open_reader(path: str, uri: str) -> decord.VideoReader:
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except FileNotFoundError:
        raise
    except Exception as exc:  # decord raises RuntimeError/DECORDError with FFmpeg's reason
        raise DecodeError(f"cannot open video {uri}: {_first_line(exc)}") from None
    if len(reader) == 0:
        del reader
        raise DecodeError(f"video {uri} has no video frames")
    return reader


def _get_batch(reader: decord.VideoReader, indices: list[int], uri: str) -> np.ndarray:
    try:
        return reader.get_batch(indices).asnumpy()
    except Exception as exc:
        raise DecodeError(
            f"decoding frames {indices[0]}-{indices[-1]} of {uri} failed: {_first_line(exc)}"
        ) from None


def _read_image(uri: str) -> np.ndarray:
    """One image as RGB uint8 ``[h, w, 3]`` (gray images are replicated to three equal channels)."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as exc:  # StorageError propagates: an outage is not a property of the input
        raise DecodeError(f"cannot read frame {uri}: {exc}") from None
    img = None
    if data:
        try:
            img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            img = None
    if img is None:
        raise DecodeError(f"cannot decode frame {uri} ({len(data)} bytes): not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def _first_line(exc: BaseException) -> str:
    """Strip decord's ``[time] file.cc:line:`` prefixes and C++ stack traces from an error; keep the reason."""
    lines = [_LOG_PREFIX.sub("", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("Stack trace", "[bt]"))]
    return (lines[0] if lines else type(exc).__name__)[:300]
