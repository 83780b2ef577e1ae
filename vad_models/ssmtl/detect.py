"""Object detectors for the SSMTL detection stage; nothing here downloads weights.

§3.1: "we detect the objects in each frame using a pre-trained YOLOv3 detector".

A :class:`Detector` consumes the frames of one video in order and emits per-frame detections: boxes
``x1, y1, x2, y2`` in frame pixels, a confidence, a class id and class probabilities (kept for the distillation
task, §3.3 task 4). Detectors may answer late (a background model needs frames after ``t`` to judge frame
``t``), so the protocol is streaming: :meth:`~Detector.reset` per video, :meth:`~Detector.update` with
consecutive frames, :meth:`~Detector.flush` at the end of the video.

Built-ins (:func:`build_detector`):

* ``background`` - :class:`BackgroundDetector`, for fixed cameras without weights: running-median background
  over a centred window of sampled frames, foreground mask, morphology, connected components. One class
  (``"object"``); the confidence is ``d / (d + diff_threshold)`` with ``d`` the blob's mean difference to the
  background, so 0.5 means "just at the threshold" and 0.8 "four times the threshold".
* ``torchscript`` - :class:`TorchScriptDetector`, a user's detector (e.g. YOLO) exported with ``torch.jit``.
  It is called on ``float32 [B, 3, H, W]`` RGB frames in [0, 1] and returns either a list of ``B`` tensors
  ``[K_i, 6 + C]`` or one padded tensor ``[B, K, 6 + C]`` (rows with ``conf <= 0`` are padding), columns
  ``x1, y1, x2, y2, conf, class_id, p_0 .. p_{C-1}`` in input pixels, after its own NMS and resizing. With
  ``C = 0`` the probabilities become ``conf * one_hot(class_id)`` (``DetectConfig.num_classes`` classes).
  ONNX models are not loaded directly (onnxruntime is not a dependency): convert them to TorchScript.
* ``whole_frame`` - :class:`WholeFrameDetector`, one box per frame: the frame-level variant of §3.5.

Example:
    >>> import numpy as np
    >>> det = WholeFrameDetector()
    >>> det.reset()
    >>> [d.boxes.tolist() for d in det.update(np.zeros((2, 4, 6, 3), np.uint8), start_frame=0)]
    [[[0.0, 0.0, 6.0, 4.0]], [[0.0, 0.0, 6.0, 4.0]]]
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from vad_models.ssmtl.config import DetectConfig

__all__ = [
    "BackgroundDetector",
    "Detector",
    "FrameDetections",
    "TorchScriptDetector",
    "WholeFrameDetector",
    "build_detector",
]


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one frame.

    Attributes:
        frame_idx: Frame index in the video.
        boxes: ``[K, 4]`` float32 ``x1, y1, x2, y2`` in pixels.
        conf: ``[K]`` float32 confidence in [0, 1].
        class_id: ``[K]`` int64.
        class_probs: ``[K, C]`` float32 class probabilities.
    """

    frame_idx: int
    boxes: np.ndarray
    conf: np.ndarray
    class_id: np.ndarray
    class_probs: np.ndarray

    @staticmethod
    def empty(frame_idx: int, num_classes: int) -> FrameDetections:
        """No detection in frame ``frame_idx``."""
        return FrameDetections(
            frame_idx,
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, num_classes), np.float32),
        )

    def keep(self, mask: np.ndarray) -> FrameDetections:
        """The detections where ``mask`` is True."""
        return FrameDetections(self.frame_idx, self.boxes[mask], self.conf[mask], self.class_id[mask],
                               self.class_probs[mask])


@runtime_checkable
class Detector(Protocol):
    """Streaming per-video detector (see the module docstring)."""

    num_classes: int

    def reset(self) -> None:
        """Forget all state: the next frames start a new video."""

    def update(self, frames: np.ndarray, start_frame: int) -> list[FrameDetections]:
        """Consume ``[n, H, W, 3]`` uint8 RGB frames ``start_frame .. start_frame+n-1`` (consecutive).

        Returns detections for zero or more frames, in frame order, possibly of earlier frames.
        """

    def flush(self) -> list[FrameDetections]:
        """End of video: detections of every frame not yet returned."""


class WholeFrameDetector:
    """One box covering the whole frame, confidence 1, class 0 (the frame-level variant, §3.5)."""

    num_classes = 1

    def reset(self) -> None:
        return None

    def update(self, frames: np.ndarray, start_frame: int) -> list[FrameDetections]:
        n, h, w = frames.shape[:3]
        box = np.array([[0.0, 0.0, w, h]], np.float32)
        one = np.ones(1, np.float32)
        return [FrameDetections(start_frame + i, box, one, np.zeros(1, np.int64), one[:, None]) for i in range(n)]

    def flush(self) -> list[FrameDetections]:
        return []


class BackgroundDetector:
    """Foreground blobs against a running-median background (fixed cameras, no weights).

    The background of frame ``t`` is the per-pixel median of ``bg_samples`` frames sampled every ``bg_stride``
    frames in a window centred on ``t`` (shifted inwards at the ends of the video), so objects that move are
    not part of it and nothing is learned from the first frames only (a MOG2 model would leave "ghosts" of
    objects present at the start). Frames are answered once the window's last sample has arrived (a delay of
    about ``bg_samples * bg_stride / 2`` frames) or at :meth:`flush`; memory holds the samples and the waiting
    frames only.
    """

    num_classes = 1

    def __init__(self, cfg: DetectConfig) -> None:
        self.cfg = cfg
        self._kernels: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}  # frame height -> (open, close)
        self.reset()

    def reset(self) -> None:
        self._samples: dict[int, np.ndarray] = {}  # sample number k -> frame k * stride
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        self._next = 0
        self._cache: tuple[tuple[int, ...], np.ndarray] | None = None

    def update(self, frames: np.ndarray, start_frame: int) -> list[FrameDetections]:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [n, H, W, 3] RGB, got {frames.shape}")
        if start_frame != self._next:
            raise ValueError(f"frames must arrive in order: expected frame {self._next}, got {start_frame}")
        for i, frame in enumerate(frames):
            t = start_frame + i
            if t % self.cfg.bg_stride == 0:
                self._samples[t // self.cfg.bg_stride] = frame
            self._pending.append((t, frame))
        self._next = start_frame + len(frames)
        return self._drain(final=False)

    def flush(self) -> list[FrameDetections]:
        return self._drain(final=True)

    def _window(self, t: int, last_sample: int) -> range:
        """Sample numbers of frame ``t``'s background window (``last_sample`` = highest sample that can exist)."""
        n = self.cfg.bg_samples
        lo = round(t / self.cfg.bg_stride) - n // 2
        lo = max(0, min(lo, last_sample - n + 1))
        return range(lo, min(lo + n, last_sample + 1))

    def _drain(self, final: bool) -> list[FrameDetections]:
        out = []
        known = max(self._samples) if self._samples else -1
        while self._pending:
            t, frame = self._pending[0]
            horizon = known if final else 1 << 62  # before the end, the window may still extend to the right
            window = self._window(t, horizon)
            if window.stop - 1 > known:
                break  # the window's last sample has not arrived yet
            self._pending.popleft()
            out.append(self._detect(t, frame, self._background(tuple(window))))
            # keep what any waiting frame may still need, including windows shifted inwards at the video end
            oldest = self._window(self._pending[0][0], horizon).start if self._pending else window.start
            oldest = min(oldest, known - self.cfg.bg_samples + 1)
            for k in [k for k in self._samples if k < oldest]:
                del self._samples[k]
        return out

    def _background(self, window: tuple[int, ...]) -> np.ndarray:
        if self._cache is None or self._cache[0] != window:
            stack = np.stack([self._samples[k] for k in window])
            self._cache = (window, np.median(stack, axis=0).astype(np.int16))
        return self._cache[1]

    def _morphology(self, height: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Opening and closing kernels for frames ``height`` pixels tall (``None`` when smaller than 3 pixels).

        Sizes are rounded down to odd numbers: OpenCV anchors a kernel at its centre, and an even kernel would
        shift every mask (and box) by a pixel.
        """
        if height not in self._kernels:
            sizes = [2 * int(f * height / 2) + 1 for f in (self.cfg.open_size, self.cfg.close_size)]
            self._kernels[height] = tuple(  # type: ignore[assignment]
                cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)) if k >= 3 else None for k in sizes
            )
        return self._kernels[height]

    def _detect(self, t: int, frame: np.ndarray, background: np.ndarray) -> FrameDetections:
        cfg = self.cfg
        diff = np.abs(frame.astype(np.int16) - background).max(axis=2).astype(np.float32)  # [H, W]
        mask = (diff > cfg.diff_threshold).astype(np.uint8)
        opening, closing = self._morphology(mask.shape[0])
        if opening is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, opening)
        if closing is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, closing)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        h, w = mask.shape
        area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
        keep = np.flatnonzero((area >= cfg.min_area * h * w) & (area <= cfg.max_area * h * w)) + 1
        if keep.size == 0:
            return FrameDetections.empty(t, 1)
        # mean difference inside each blob -> confidence d / (d + threshold)
        sums = np.bincount(labels.ravel(), weights=diff.ravel(), minlength=count)
        mean_diff = sums[keep] / stats[keep, cv2.CC_STAT_AREA]
        conf = (mean_diff / (mean_diff + cfg.diff_threshold)).astype(np.float32)
        x, y = stats[keep, cv2.CC_STAT_LEFT], stats[keep, cv2.CC_STAT_TOP]
        bw, bh = stats[keep, cv2.CC_STAT_WIDTH], stats[keep, cv2.CC_STAT_HEIGHT]
        mx, my = cfg.box_margin * bw, cfg.box_margin * bh
        boxes = np.stack([x - mx, y - my, x + bw + mx, y + bh + my], axis=1)
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        return FrameDetections(t, boxes, conf, np.zeros(len(keep), np.int64), conf[:, None].copy())


class TorchScriptDetector:
    """A user's detector exported to TorchScript (output format in the module docstring)."""

    def __init__(self, cfg: DetectConfig, device: str | torch.device | None = None) -> None:
        if not cfg.weights:
            raise ValueError("TorchScriptDetector needs DetectConfig.weights (a TorchScript file path)")
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.model = torch.jit.load(cfg.weights, map_location=self.device).eval()
        except (RuntimeError, ValueError, OSError) as exc:
            raise ValueError(f"cannot load TorchScript detector {cfg.weights!r}: {exc}. ONNX or pickled models "
                             "must be exported with torch.jit.script/trace first") from exc
        self.num_classes = cfg.num_classes or 0  # learned from the first output when the model emits probabilities
        self.reset()

    def reset(self) -> None:
        self._buffer: list[tuple[int, np.ndarray]] = []

    def update(self, frames: np.ndarray, start_frame: int) -> list[FrameDetections]:
        out = []
        for i, frame in enumerate(np.asarray(frames)):
            self._buffer.append((start_frame + i, frame))
            if len(self._buffer) >= self.cfg.batch_frames:
                out += self._run()
        return out

    def flush(self) -> list[FrameDetections]:
        return self._run() if self._buffer else []

    @torch.inference_mode()
    def _run(self) -> list[FrameDetections]:
        index = [t for t, _ in self._buffer]
        batch = np.stack([f for _, f in self._buffer])
        self._buffer = []
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)  # [B, 3, H, W]
        raw = self.model(x)
        per_frame = list(raw.unbind(0)) if isinstance(raw, torch.Tensor) else list(raw)
        if len(per_frame) != len(index):
            raise ValueError(f"TorchScript detector returned {len(per_frame)} outputs for {len(index)} frames")
        h, w = batch.shape[1:3]
        return [self._parse(t, out.detach().float().cpu().numpy(), h, w) for t, out in zip(index, per_frame)]

    def _parse(self, t: int, rows: np.ndarray, h: int, w: int) -> FrameDetections:
        if rows.ndim != 2 or rows.shape[1] < 6:
            raise ValueError(f"detector output must be [K, 6 + C] (x1, y1, x2, y2, conf, cls, probs...), "
                             f"got {rows.shape}")
        rows = rows[rows[:, 4] > 0]
        class_id = rows[:, 5].round().astype(np.int64)
        if rows.shape[1] > 6:
            probs = rows[:, 6:].astype(np.float32)
        else:
            if not self.cfg.num_classes:
                raise ValueError("the detector outputs no class probabilities: set detect.num_classes")
            if (class_id >= self.cfg.num_classes).any() or (class_id < 0).any():
                raise ValueError(f"class id out of range [0, {self.cfg.num_classes}) in detector output")
            probs = np.zeros((len(rows), self.cfg.num_classes), np.float32)
            probs[np.arange(len(rows)), class_id] = rows[:, 4]
        if self.num_classes == 0:
            self.num_classes = probs.shape[1]
        elif probs.shape[1] != self.num_classes:
            raise ValueError(f"detector output has {probs.shape[1]} class columns, expected {self.num_classes}")
        boxes = np.clip(rows[:, :4], 0, [w, h, w, h]).astype(np.float32)
        return FrameDetections(t, boxes, rows[:, 4].astype(np.float32), class_id, probs)


def build_detector(cfg: DetectConfig) -> Detector:
    """The detector named by ``cfg.detector``.

    Example:
        >>> type(build_detector(DetectConfig(detector="background"))).__name__
        'BackgroundDetector'
    """
    if cfg.detector == "background":
        return BackgroundDetector(cfg)
    if cfg.detector == "whole_frame":
        return WholeFrameDetector()
    if cfg.detector == "torchscript":
        return TorchScriptDetector(cfg)
    raise ValueError(f"unknown detector {cfg.detector!r}")
