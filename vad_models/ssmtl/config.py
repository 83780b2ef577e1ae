"""SSMTL hyperparameters, each defined once.

Paper: Georgescu et al., "Anomaly Detection in Video via Self-Supervised and Multi-Task Learning", CVPR 2021;
section numbers below refer to it.

Two frozen dataclasses: :class:`DetectConfig` (the object-detection stage that feeds the tube store) and
:class:`SsmtlConfig` (tubes, network, training and scoring), which nests the former as ``detect`` so one YAML file
per dataset (``configs/ssmtl/<dataset>.yaml``) describes the whole method.

Example:
    >>> cfg = SsmtlConfig(variant="shallow_narrow")
    >>> cfg.batch_size, cfg.window, cfg.tube_frames
    (256, 7, 25)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DETECTORS",
    "PAPER_BATCH_SIZE",
    "TASKS",
    "VARIANTS",
    "DetectConfig",
    "SsmtlConfig",
]

VARIANTS = ("shallow_narrow", "shallow_wide", "deep_narrow", "deep_wide")  # Table 1
TASKS = ("arrow", "irregularity", "middle", "distill")  # §3.3, tasks 1-4
# §4.2: "mini-batches of 256 samples for the shallow+narrow architecture, 128 samples for the deep+narrow and
# shallow+wide architectures and 64 samples for the deep+wide architecture".
PAPER_BATCH_SIZE = {"shallow_narrow": 256, "shallow_wide": 128, "deep_narrow": 128, "deep_wide": 64}
DETECTORS = ("background", "torchscript", "whole_frame")


@dataclass(frozen=True)
class DetectConfig:
    """The detection stage (§3.1 uses YOLOv3; see :mod:`vad_models.ssmtl.detect` for the built-in detectors).

    Attributes:
        detector: ``"background"`` (offline running-median background subtraction for fixed cameras, no
            weights), ``"torchscript"`` (a user's detector exported to TorchScript, path in ``weights``) or
            ``"whole_frame"`` (one box covering each frame: the frame-level variant of §3.5).
        weights: TorchScript file of the user's detector (``detector="torchscript"`` only).
        conf_threshold: Detections below this confidence are dropped (§4.2: 0.8 on Avenue and ShanghaiTech,
            0.5 on UCSD Ped2; the same threshold at training and inference).
        num_classes: Classes of a TorchScript detector that outputs no class-probability columns (its
            probabilities become ``conf * one_hot(class)``); ``None`` when the detector outputs them.
        batch_frames: Frames per TorchScript detector call.
        bg_samples: Frames the background median is taken over (odd).
        bg_stride: Frames between two background samples (the median spans ``bg_samples * bg_stride`` frames).
        diff_threshold: Per-pixel difference to the background (0-255, max over RGB) that counts as foreground.
        open_size: Morphological opening size as a fraction of the frame height (removes speckle noise;
            3 px at 240 px; below 1.5 px no opening).
        close_size: Morphological closing size as a fraction of the frame height (joins the parts of one
            object; 7 px at 240 px).
        min_area: Smallest blob kept, as a fraction of the frame area.
        max_area: Largest blob kept, as a fraction of the frame area (lighting changes flood the mask).
        box_margin: Each box side grows by this fraction of the box size (crops keep some context).
    """

    detector: str = "background"
    weights: str | None = None
    conf_threshold: float = 0.8
    num_classes: int | None = None
    batch_frames: int = 16
    bg_samples: int = 9
    bg_stride: int = 8
    diff_threshold: float = 25.0
    open_size: float = 0.0125
    close_size: float = 0.03
    min_area: float = 0.0005
    max_area: float = 0.5
    box_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detect.detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.detector == "torchscript" and not self.weights:
            raise ValueError("detect.detector='torchscript' needs detect.weights=<path to a TorchScript file>")
        if not 0.0 <= self.conf_threshold <= 1.0:
            raise ValueError(f"detect.conf_threshold must be in [0, 1], got {self.conf_threshold}")
        if self.bg_samples < 1 or self.bg_samples % 2 == 0:
            raise ValueError(f"detect.bg_samples must be a positive odd number, got {self.bg_samples}")
        if self.bg_stride < 1 or self.batch_frames < 1:
            raise ValueError("detect.bg_stride and detect.batch_frames must be >= 1")
        if not 0.0 <= self.min_area < self.max_area <= 1.0:
            raise ValueError(f"need 0 <= detect.min_area < detect.max_area <= 1, got {self.min_area}, {self.max_area}")


@dataclass(frozen=True)
class SsmtlConfig:
    """SSMTL: object tubes, the shared 3D CNN with four heads, training and scoring.

    Attributes:
        variant: 3D CNN of Table 1: ``shallow_narrow``, ``shallow_wide``, ``deep_narrow`` or ``deep_wide``
            (the paper's reported results use deep+wide).
        tasks: Proxy tasks trained and scored (§3.3): ``arrow``, ``irregularity``, ``middle``, ``distill``.
            ``distill`` needs teacher features in the tube store (built with a teacher, see
            :mod:`vad_models.ssmtl.teachers`); without a teacher, drop it here explicitly.
        half_window: ``t`` of §3.1: a tube window spans frames ``i-t .. i+t`` (§4.2: t=3, 7 frames).
        max_gap: Largest gap between the frames of an intermittent sequence (§3.3 task 2: gaps in {1..4}).
        crop_size: Side of the square RGB object crops (§3.2: 64). Smaller crops are a departure for small
            frames only: when the detected objects are a few pixels tall (the synthetic corpus ingested at
            64x64: 4-13 px), a 16 px crop keeps every object pixel and a 64 px one only upsamples them, at
            16x the compute (``configs/ssmtl/synthetic.yaml``).
        narrow_filters: Filters of the first / later conv layers of the narrow nets (Table 1: 16, 32); the wide
            nets double them.
        head_filters: Filters of the 2D conv layers of the heads and the middle-box decoder (§3.2: 32).
        head_dropout: Dropout before the final dense layer of the three classification-style heads.
        teacher_dim: Length of the teacher's pre-softmax feature vector (ResNet-50: 1000); 0 distils the
            detector's class probabilities only.
        num_classes: Detector classes (MS COCO YOLOv3: 80; the background detector: 1).
        lam: Weight of the distillation loss, lambda of eq. 5 (§4.2: 0.5 Ped2, 0.2 Avenue and ShanghaiTech).
        arrow_prob: Probability that a training window is reversed (arrow of time, label 1 = backward).
        irregular_prob: Probability that a training window is intermittent (label 1 = intermittent).
        epochs: Training epochs (§4.2: 30).
        lr: Adam learning rate (§4.2: 1e-3).
        batch_size: Examples per step; 0 takes the paper's value for ``variant`` (§4.2: 256/128/128/64).
        train_fraction: Share of each training video used for training; the rest validates (§4.2: first 85%
            of the frames of each video).
        task_weights: Weight of each task's raw score in the object score (eq. 6 averages them: all 1).
        map_cell: Pixels per cell of the anomaly map. 1 is §3.4's pixel-level map; a coarser grid keeps long
            high-resolution videos cheap (the default 4 at 240x360, where objects span tens of pixels), but
            each box is snapped outwards to whole cells, so it must stay well below the object size: on
            64x64 frames with 3-6 px people, 4 px cells widen boxes by up to ~3x depending on where they
            fall, and one trained model scored 0.87 micro AUROC with 1 px cells but 0.64 with 4 px cells.
        mean_filter_frames: Temporal size of the 3D mean filter over the anomaly maps (§3.4).
        mean_filter_pixels: Spatial size, in frame pixels, of the 3D mean filter.
        temporal_sigma: Standard deviation, in frames, of the temporal Gaussian filter on frame scores (§3.4).
        late_fusion_weight: Weight of the object-level scores when fused with frame-level scores (§3.5).
        detect: Detection-stage settings.
    """

    variant: str = "deep_wide"
    tasks: tuple[str, ...] = TASKS
    half_window: int = 3
    max_gap: int = 4
    crop_size: int = 64
    narrow_filters: tuple[int, int] = (16, 32)
    head_filters: int = 32
    head_dropout: float = 0.3
    teacher_dim: int = 1000
    num_classes: int = 80
    lam: float = 0.2
    arrow_prob: float = 0.5
    irregular_prob: float = 0.5
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 0
    train_fraction: float = 0.85
    task_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    map_cell: int = 4
    mean_filter_frames: int = 5
    mean_filter_pixels: int = 16
    temporal_sigma: float = 3.0
    late_fusion_weight: float = 0.5
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names from {TASKS}, got {list(self.tasks)}")
        if self.half_window < 1 or self.max_gap < 1:
            raise ValueError(f"half_window and max_gap must be >= 1, got {self.half_window}, {self.max_gap}")
        if "irregularity" in self.tasks and self.max_gap < 2:
            raise ValueError(f"the irregularity task needs max_gap >= 2 (intermittent frames), got {self.max_gap}")
        if self.crop_size % 16:
            raise ValueError(f"crop_size must be a multiple of 16 (four 2x poolings), got {self.crop_size}")
        if len(self.task_weights) != len(TASKS):
            raise ValueError(f"task_weights needs one weight per task {TASKS}, got {self.task_weights}")
        if self.batch_size < 0:
            raise ValueError(f"batch_size must be >= 0 (0 = the paper's value), got {self.batch_size}")
        if self.batch_size == 0:
            object.__setattr__(self, "batch_size", PAPER_BATCH_SIZE[self.variant])
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.teacher_dim < 0 or self.num_classes < 1:
            raise ValueError(f"need teacher_dim >= 0 and num_classes >= 1, got {self.teacher_dim}, {self.num_classes}")
        if isinstance(self.detect, dict):  # tolerate a plain mapping (e.g. from JSON)
            object.__setattr__(self, "detect", DetectConfig(**self.detect))

    @property
    def window(self) -> int:
        """Frames of one object-centric sequence, ``2t + 1`` (§3.1)."""
        return 2 * self.half_window + 1

    @property
    def tube_frames(self) -> int:
        """Frames stored per tube: the widest intermittent window, ``2 t max_gap + 1`` (§3.3 task 2)."""
        return 2 * self.half_window * self.max_gap + 1

    @property
    def distill_dim(self) -> int:
        """Length of the distillation target: teacher features then detector class probabilities (eq. 4)."""
        return self.teacher_dim + self.num_classes

    def task_weight(self, task: str) -> float:
        """Default fusion weight of ``task``."""
        return float(self.task_weights[TASKS.index(task)])
