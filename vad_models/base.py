"""The Method interface every anomaly detector implements (and, re-exported, the frame-spec registry).

``pipelines/`` only ever talks to this interface, so adding a method touches ``vad_models/<method>/``,
its configs and its jobs only (DESIGN.md, "The Method interface").

Data flow, for every method:

1. A *store* (clip store, object-tube store or feature store; Parquet) holds rows. A clip-store row is one
   *segment*: ``video_id, dataset, split, start_frame, num_frames, fps, frames`` with ``frames`` a uint8 array
   ``[n, H, W, C]``. Segments overlap by ``window - 1`` frames so every window lies inside one row.
2. Training: ``make_examples`` turns a numpy batch of store rows into training examples (numpy, one leading
   dimension); Ray Train streams them to workers, which call ``training_loss`` on torch batches.
3. Scoring: ``task_scores`` turns a numpy batch of store rows into raw per-window scores tagged with
   ``video_id`` and ``frame_idx`` (the frame each window's score belongs to). The pipeline groups them per
   video, calls ``fuse`` and fills every frame of the video.

Example:
    >>> from vad_models.registry import get_method
    >>> method = get_method("luss_ae")  # doctest: +SKIP
    >>> cfg = method.config_class(height=64, width=64)  # doctest: +SKIP
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

# Re-exported: the frame specs live in a torch-free module so that decode workers never import torch.
from vad_models.frame_spec import FrameSpec, get_frame_spec, register_frame_spec

__all__ = [
    "FrameSpec",
    "InputSpec",
    "Method",
    "Phase",
    "TrainContext",
    "get_frame_spec",
    "host_tensor",
    "model_device",
    "register_frame_spec",
]


@dataclass(frozen=True)
class InputSpec:
    """What a method reads.

    Attributes:
        store: ``"clips"``, ``"tubes"`` or ``"features"``.
        frame_spec: Name of the registered :class:`FrameSpec` of the clip store it needs.
        alignment: Human-readable label convention recorded with every score file, e.g. ``"last"``
            (score belongs to the window's last frame), ``"center"``, ``"snippet16"``.
        group_by_video: When True, ``make_examples`` gets all rows of one video at once.
    """

    store: str
    frame_spec: str
    alignment: str
    group_by_video: bool = False


@dataclass(frozen=True)
class Phase:
    """One training phase (most methods have one; STD and MT-VAE chain several)."""

    name: str
    epochs: int


@dataclass
class TrainContext:
    """Where training stands, passed to ``training_loss`` and the phase hooks."""

    phase: str
    epoch: int
    step: int
    world_rank: int = 0
    world_size: int = 1
    state: dict[str, Any] = field(default_factory=dict)


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter (CPU for a parameter-free module)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def host_tensor(array: Any) -> torch.Tensor:
    """A contiguous CPU tensor of ``array``, sharing its memory unless the array is read-only.

    Batches that Ray Data hands over zero-copy from Arrow are read-only; ``torch.from_numpy`` would warn on every
    batch and leave a tensor whose writes are undefined, so those are copied (frames are uint8: the copy is small
    next to the model).

    Example:
        >>> frozen = np.zeros((2, 3), dtype=np.uint8)
        >>> frozen.flags.writeable = False
        >>> host_tensor(frozen).shape
        torch.Size([2, 3])
    """
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class Method(ABC):
    """A video anomaly detection method: model builder, losses, raw task scores and their fusion.

    Subclasses set ``name`` and ``config_class`` (a frozen dataclass whose defaults come from the paper;
    every hyperparameter is defined there once) and are registered in :mod:`vad_models.registry`.
    Configs must have ``epochs: int``, ``batch_size: int`` and ``lr: float`` fields.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    @abstractmethod
    def input_spec(self, cfg: Any) -> InputSpec:
        """Which store and frame spec the method reads."""

    @abstractmethod
    def build_model(self, cfg: Any) -> nn.Module:
        """Build the (randomly initialised) network for ``cfg``."""

    @abstractmethod
    def make_examples(self, rows: dict[str, np.ndarray], cfg: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Turn a numpy batch of store rows into training examples.

        Args:
            rows: Column name -> array, as Ray Data's numpy batch format gives (``frames`` may be an object
                array of per-row ``[n, H, W, C]`` uint8 arrays when segment lengths differ).
            cfg: The method config.
            rng: Random generator for sampling (e.g. LUSS-AE's accelerated clips).

        Returns:
            Column name -> numeric array, all with the same leading dimension (may be 0).
        """

    @abstractmethod
    def training_loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: Any, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss": total, <part>: value, ...}`` for one batch of examples (already on device)."""

    @abstractmethod
    def task_scores(self, model: nn.Module, rows: dict[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray]:
        """Raw per-window scores (higher = more anomalous) for a numpy batch of store rows.

        Returns:
            ``video_id`` (str array), ``frame_idx`` (int64, the frame each window scores) and one float
            array per raw task score, all of the same length.
        """

    @abstractmethod
    def fuse(
        self,
        scores: Mapping[str, np.ndarray],
        cfg: Any,
        weights: Mapping[str, float] | None = None,
        calibration: Mapping[str, tuple[float, float]] | None = None,
        num_frames: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fuse one video's raw task scores into anomaly scores (higher = more anomalous).

        Args:
            scores: Column -> array for all score rows of one video, sorted by ``frame_idx`` (includes
                ``frame_idx``; may hold several rows per frame, e.g. one per detected object).
            cfg: The method config (holds the default weights).
            weights: Optional override of the fusion weights (score-weight sweeps).
            calibration: Task name -> (centre, scale) fitted on normal videos (see
                :meth:`fit_calibration`); ``None`` means the paper's per-video normalisation.
            num_frames: Frames in the video, when known (methods that score frames without windows,
                e.g. frames with no detected object, use it).

        Returns:
            ``(frame_idx, score)``: distinct ascending frame indices and one fused score each. The pipeline
            fills frames not listed with the nearest listed score.
        """

    @classmethod
    @abstractmethod
    def smoke_config(cls) -> Any:
        """A tiny config (e.g. 32x32 or 64x64 frames, 1 epoch) for contract tests and smoke runs."""

    @classmethod
    @abstractmethod
    def smoke_rows(cls, rng: np.random.Generator, cfg: Any = None) -> dict[str, np.ndarray]:
        """A fake numpy batch of store rows in this method's exact store-row format (``cfg`` defaults to smoke)."""

    def score_columns(self, cfg: Any) -> list[str]:
        """Names of the raw task-score columns ``task_scores`` returns (used for calibration)."""
        return []

    def phases(self, cfg: Any) -> list[Phase]:
        """Training phases in order; one phase of ``cfg.epochs`` by default."""
        return [Phase("train", int(cfg.epochs))]

    def configure_optimizer(self, model: nn.Module, cfg: Any, phase: str) -> torch.optim.Optimizer:
        """Optimizer for ``phase``; Adam at ``cfg.lr`` over all parameters by default."""
        return torch.optim.Adam(model.parameters(), lr=float(cfg.lr))

    def configure_scheduler(self, optimizer: torch.optim.Optimizer, cfg: Any, phase: str) -> Any | None:
        """Per-epoch LR scheduler for ``phase`` (``None`` = constant LR)."""
        return None

    def on_phase_start(
        self, model: nn.Module, phase: str, batches: Iterable[dict[str, torch.Tensor]], cfg: Any, ctx: TrainContext
    ) -> None:
        """Hook run once when a phase begins (e.g. STD's K-means initialisation). No-op by default."""
        return None

    def regions(
        self,
        scores: Mapping[str, np.ndarray],
        cfg: Any,
        weights: Mapping[str, float] | None = None,
        calibration: Mapping[str, tuple[float, float]] | None = None,
    ) -> dict[str, np.ndarray] | None:
        """Scored image regions of one video, for object-level methods; ``None`` (the default) for the others.

        Scoring runs store them as ``OUT/regions/<dataset>/<video_id>.parquet`` and evaluation computes RBDC and
        TBDC from them (:mod:`pipelines.region_metrics`).

        Args:
            scores: The video's raw rows from :meth:`task_scores`, ordered by ``frame_idx``.
            cfg: The method config.
            weights: Fusion weight overrides, as for :meth:`fuse`.
            calibration: Calibration statistics, as for :meth:`fuse`.

        Returns:
            ``frame_idx``, ``x1``, ``y1``, ``x2``, ``y2`` (pixels of the store's frames), ``frame_height``,
            ``frame_width`` and ``score`` (higher = more anomalous), one entry per region.
        """
        return None

    def anomaly_maps(self, model: nn.Module, rows: dict[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray] | None:
        """Per-pixel anomaly maps of the windows in a numpy batch of store rows; ``None`` (the default) if none.

        Review reports overlay them on the thumbnails of the top events (:mod:`pipelines.anomaly_maps`). Windows
        follow :meth:`task_scores`: a window's map belongs to the frame it scores. Object-level methods need not
        implement this: their stored regions already say where (see :meth:`regions`).

        Args:
            model: The trained network (switched to eval mode by the implementation).
            rows: Store rows in the method's store-row format (e.g. one clip-store segment per window).
            cfg: The method config.

        Returns:
            ``video_id`` (str), ``frame_idx`` (int64) and ``map`` (float32 ``[N, h, w]`` in pixels of the store's
            frames, higher = more anomalous), or ``None`` when the method has no pixel-level map.
        """
        return None

    def fit_calibration(self, normal_scores: Iterable[Mapping[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
        """Fit per-task (median, inter-quartile range) on the raw scores of held-out normal videos.

        Used by the calibrated scoring mode so that a quiet video stays quiet (per-video rescaling assumes
        every video holds an anomaly).
        """
        chunks: dict[str, list[np.ndarray]] = {}
        for video in normal_scores:
            for key, values in video.items():
                chunks.setdefault(key, []).append(np.asarray(values, dtype=np.float64))
        out: dict[str, tuple[float, float]] = {}
        for key, parts in chunks.items():
            values = np.concatenate(parts)
            q25, q50, q75 = np.percentile(values, [25, 50, 75])
            out[key] = (float(q50), float(max(q75 - q25, 1e-12)))
        return out
