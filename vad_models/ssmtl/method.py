"""SSMTL as a :class:`~vad_models.base.Method`: proxy-task losses (eqs. 1-5), raw task scores and fusion (§3.4).

Store rows are object tubes (``pipelines/detections.py`` builds them): ``video_id, dataset, split, frame_idx,
video_frames, height, width, box [4], conf, class_id, class_probs [C], tube uint8 [L, S, S, 3]`` and, when built
with a teacher, ``teacher_features [D]``.

Raw task scores per object (higher = more anomalous): ``arrow`` p(backward), ``irregularity`` p(intermittent),
``middle`` mean absolute error of the reconstructed middle box, ``distill`` |detector probability - student
probability| of the detected class. Each score row also carries its box (``x1, y1, x2, y2``) and frame size
(``frame_height, frame_width``) so :meth:`SsmtlMethod.fuse` can paint the pixel-level anomaly maps.

Example:
    >>> import numpy as np
    >>> method = SsmtlMethod()
    >>> cfg = method.smoke_config()
    >>> examples = method.make_examples(method.smoke_rows(np.random.default_rng(0)), cfg, np.random.default_rng(1))
    >>> sorted(examples)[:3]
    ['arrow', 'arrow_label', 'distill_target']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_models.base import InputSpec, Method, TrainContext, host_tensor, model_device
from vad_models.ssmtl.config import TASKS, SsmtlConfig
from vad_models.ssmtl.model import SsmtlNet, encoder_stages
from vad_models.ssmtl.pixel_map import frame_scores_from_boxes, late_fusion
from vad_models.ssmtl.sampling import (
    arrow_samples,
    central_window,
    irregularity_samples,
    middle_box_samples,
    stack_tubes,
    temporal_split_mask,
)

__all__ = ["BOX_COLUMNS", "SsmtlMethod", "object_scores"]

BOX_COLUMNS = ("x1", "y1", "x2", "y2")


def _stack(column: Any, width: int, name: str) -> np.ndarray:
    """``[B, width]`` float32 from a Ray numpy column (2D array or object array of vectors)."""
    arr = np.asarray(column)
    if arr.dtype == object:
        arr = np.stack([np.asarray(v, np.float32) for v in column]) if len(column) else np.zeros((0, width))
    arr = arr.astype(np.float32).reshape(len(arr), -1)
    if arr.shape[1] != width:
        raise ValueError(f"{name} has {arr.shape[1]} values per row, the config expects {width}")
    return arr


def _clips(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, H, W, 3)`` -> float ``(B, 3, T, H, W)`` in [0, 1]."""
    return x.permute(0, 4, 1, 2, 3).float().div(255.0)


def _distill_target(rows: Mapping[str, np.ndarray], cfg: SsmtlConfig) -> np.ndarray:
    """Eq. 4 target: teacher features then detector class probabilities, ``[B, teacher_dim + num_classes]``."""
    probs = _stack(rows["class_probs"], cfg.num_classes, "class_probs (detector classes; set num_classes)")
    if cfg.teacher_dim == 0:
        return probs
    if "teacher_features" not in rows:
        raise ValueError("task 'distill' needs teacher features, but the tube store has none: rebuild it with "
                         "--teacher PATH, or drop 'distill' from tasks (or set teacher_dim=0)")
    feats = _stack(rows["teacher_features"], cfg.teacher_dim, "teacher_features (set teacher_dim)")
    return np.concatenate([feats, probs], axis=1)


def object_scores(
    scores: Mapping[str, np.ndarray],
    cfg: SsmtlConfig,
    weights: Mapping[str, float] | None = None,
    calibration: Mapping[str, tuple[float, float]] | None = None,
) -> np.ndarray:
    """Object anomaly score (eq. 6): the weighted average of the raw task scores present in ``scores``.

    Args:
        scores: Task name -> per-object raw scores.
        cfg: Holds the default weights (all 1: the paper's plain average).
        weights: Optional per-task weight overrides.
        calibration: Optional task -> (centre, scale); each task score becomes ``(x - centre) / scale``.

    Example:
        >>> object_scores({"arrow": np.array([0.2]), "middle": np.array([0.4])}, SsmtlConfig()).tolist()
        [0.30000000000000004]
    """
    tasks = [t for t in TASKS if t in cfg.tasks and t in scores]
    if not tasks:
        raise ValueError(f"no task score columns among {list(scores)}; expected some of {list(cfg.tasks)}")
    w = {t: cfg.task_weight(t) for t in tasks}
    for name, value in (weights or {}).items():
        if name not in TASKS:
            raise ValueError(f"unknown task weight {name!r}; tasks: {TASKS}")
        if name in w:
            w[name] = float(value)
    total = sum(w.values())
    if total <= 0:
        raise ValueError(f"task weights must sum to a positive value, got {w}")
    out = np.zeros(len(scores[tasks[0]]), dtype=np.float64)
    for t in tasks:
        x = np.asarray(scores[t], dtype=np.float64)
        if calibration and t in calibration:
            centre, scale = calibration[t]
            x = (x - centre) / scale
        out += w[t] * x
    return out / total


class SsmtlMethod(Method):
    """Self-supervised multi-task learning on object tubes (Georgescu et al., CVPR 2021)."""

    name = "ssmtl"
    config_class = SsmtlConfig

    def input_spec(self, cfg: SsmtlConfig) -> InputSpec:
        return InputSpec(store="tubes", frame_spec="ssmtl", alignment="object")

    def build_model(self, cfg: SsmtlConfig) -> nn.Module:
        return SsmtlNet(
            encoder_stages(cfg.variant, cfg.narrow_filters),
            tasks=cfg.tasks,
            crop_size=cfg.crop_size,
            distill_dim=cfg.distill_dim,
            head_filters=cfg.head_filters,
            head_dropout=cfg.head_dropout,
        )

    def score_columns(self, cfg: SsmtlConfig) -> list[str]:
        return [t for t in TASKS if t in cfg.tasks]

    def make_examples(self, rows: dict[str, np.ndarray], cfg: SsmtlConfig, rng: np.random.Generator) -> dict:
        """One example per tube: the inputs and targets of every trained task (§3.3).

        Added columns: ``arrow``/``irregularity`` uint8 ``[B, 2t+1, S, S, 3]`` with int64 ``*_label``;
        ``middle_input`` ``[B, 2t, S, S, 3]``; ``middle_target`` ``[B, S, S, 3]`` (also the distillation input);
        ``distill_target`` float32 ``[B, teacher_dim + num_classes]``.
        """
        tubes = stack_tubes(rows["tube"])
        if tubes.shape[2:4] != (cfg.crop_size, cfg.crop_size):
            raise ValueError(f"tubes are {tubes.shape[2]}x{tubes.shape[3]} but crop_size={cfg.crop_size}")
        windows = central_window(tubes, cfg.half_window)
        out: dict[str, np.ndarray] = {}
        if "arrow" in cfg.tasks:
            out["arrow"], out["arrow_label"] = arrow_samples(windows, rng, cfg.arrow_prob)
        if "irregularity" in cfg.tasks:
            out["irregularity"], out["irregularity_label"] = irregularity_samples(
                tubes, cfg.half_window, cfg.max_gap, rng, cfg.irregular_prob
            )
        middle_input, middle_target = middle_box_samples(windows)
        if "middle" in cfg.tasks:
            out["middle_input"] = middle_input
        out["middle_target"] = middle_target
        if "distill" in cfg.tasks:
            out["distill_target"] = _distill_target(rows, cfg)
        return out

    def training_loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: SsmtlConfig, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        """Eq. 5: ``L_arrow + L_irregularity + L_middle + lambda * L_distill`` over the trained tasks."""
        target = _clips(batch["middle_target"][:, None])  # (B, 3, 1, S, S)
        outputs = model(
            arrow=_clips(batch["arrow"]) if "arrow" in cfg.tasks else None,
            irregularity=_clips(batch["irregularity"]) if "irregularity" in cfg.tasks else None,
            middle=_clips(batch["middle_input"]) if "middle" in cfg.tasks else None,
            distill=target if "distill" in cfg.tasks else None,
        )
        parts: dict[str, torch.Tensor] = {}
        for task in ("arrow", "irregularity"):
            if task in outputs:
                parts[task] = F.cross_entropy(outputs[task], batch[f"{task}_label"].long())  # eqs. 1, 2
        if "middle" in outputs:
            parts["middle"] = F.l1_loss(outputs["middle"], target[:, :, 0])  # eq. 3
        if "distill" in outputs:
            parts["distill"] = F.l1_loss(outputs["distill"], batch["distill_target"].float())  # eq. 4
        total = sum(v * (cfg.lam if k == "distill" else 1.0) for k, v in parts.items())
        return {"loss": total, **parts}

    def task_scores(self, model: nn.Module, rows: dict[str, np.ndarray], cfg: SsmtlConfig) -> dict[str, np.ndarray]:
        """Raw per-object task scores (§3.4) plus box and frame-size columns for the pixel maps."""
        tubes = stack_tubes(rows["tube"])
        windows = central_window(tubes, cfg.half_window)
        boxes = _stack(rows["box"], 4, "box")
        out: dict[str, np.ndarray] = {
            "video_id": np.asarray([str(v) for v in rows["video_id"]], dtype=object),
            "frame_idx": np.asarray(rows["frame_idx"], dtype=np.int64),
            **{name: boxes[:, i].astype(np.float64) for i, name in enumerate(BOX_COLUMNS)},
            "frame_height": np.asarray(rows["height"], dtype=np.float64),
            "frame_width": np.asarray(rows["width"], dtype=np.float64),
        }
        parts: dict[str, list[np.ndarray]] = {t: [] for t in self.score_columns(cfg)}
        class_id = np.asarray(rows["class_id"], dtype=np.int64)
        probs = _stack(rows["class_probs"], cfg.num_classes, "class_probs") if "distill" in cfg.tasks else None
        device, was_training = model_device(model), model.training
        model.eval()
        try:
            with torch.inference_mode():
                for lo in range(0, len(tubes), cfg.batch_size):
                    sl = slice(lo, lo + cfg.batch_size)
                    self._score_chunk(model, cfg, windows[sl], class_id[sl], probs, sl, device, parts)
        finally:
            model.train(was_training)
        for task, chunks in parts.items():
            out[task] = np.concatenate(chunks) if chunks else np.zeros(0)
        return out

    @staticmethod
    def _score_chunk(
        model: nn.Module,
        cfg: SsmtlConfig,
        windows: np.ndarray,
        class_id: np.ndarray,
        probs: np.ndarray | None,
        sl: slice,
        device: torch.device,
        parts: dict[str, list[np.ndarray]],
    ) -> None:
        window = _clips(host_tensor(windows).to(device))  # (b, 3, 2t+1, S, S)
        t = cfg.half_window
        target = window[:, :, t]  # (b, 3, S, S)
        outputs = model(
            arrow=window if "arrow" in cfg.tasks else None,
            irregularity=window if "irregularity" in cfg.tasks else None,
            middle=torch.cat([window[:, :, :t], window[:, :, t + 1 :]], dim=2) if "middle" in cfg.tasks else None,
            distill=target[:, :, None] if "distill" in cfg.tasks else None,
        )
        for task in ("arrow", "irregularity"):
            if task in outputs:
                parts[task].append(outputs[task].float().softmax(dim=1)[:, 1].cpu().numpy().astype(np.float64))
        if "middle" in outputs:
            mae = (outputs["middle"].float() - target).abs().mean(dim=(1, 2, 3))
            parts["middle"].append(mae.cpu().numpy().astype(np.float64))
        if "distill" in outputs:
            student = outputs["distill"].float().cpu().numpy()[:, cfg.teacher_dim :]  # class-probability part
            rows = np.arange(len(class_id))
            parts["distill"].append(np.abs(probs[sl][rows, class_id] - student[rows, class_id]).astype(np.float64))

    def fuse(
        self,
        scores: Mapping[str, np.ndarray],
        cfg: SsmtlConfig,
        weights: Mapping[str, float] | None = None,
        calibration: Mapping[str, tuple[float, float]] | None = None,
        num_frames: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Object scores -> pixel-level anomaly maps -> 3D mean filter -> frame maximum -> temporal Gaussian.

        Frames without any scored object take the empty-map value (0), so with ``num_frames`` every frame of
        the video is returned.
        """
        frame_idx = np.asarray(scores.get("frame_idx", np.zeros(0)), dtype=np.int64)
        if num_frames is None:
            num_frames = int(frame_idx.max()) + 1 if len(frame_idx) else 0
        if len(frame_idx) == 0:
            return np.arange(num_frames, dtype=np.int64), np.zeros(num_frames)
        if all(c in scores for c in BOX_COLUMNS):
            boxes = np.stack([np.asarray(scores[c], dtype=np.float64) for c in BOX_COLUMNS], axis=1)
        else:  # no boxes (e.g. scores from another tool): every object covers its whole frame
            boxes = np.tile([0.0, 0.0, 1.0, 1.0], (len(frame_idx), 1))
        height = float(np.max(scores["frame_height"])) if "frame_height" in scores else float(boxes[:, 3].max())
        width = float(np.max(scores["frame_width"])) if "frame_width" in scores else float(boxes[:, 2].max())
        values = object_scores(scores, cfg, weights, calibration)
        fused = frame_scores_from_boxes(
            frame_idx, boxes, values, num_frames, int(np.ceil(height)), int(np.ceil(width)),
            cell=cfg.map_cell, filter_frames=cfg.mean_filter_frames, filter_pixels=cfg.mean_filter_pixels,
            sigma=cfg.temporal_sigma,
        )
        return np.arange(num_frames, dtype=np.int64), fused

    def regions(
        self,
        scores: Mapping[str, np.ndarray],
        cfg: SsmtlConfig,
        weights: Mapping[str, float] | None = None,
        calibration: Mapping[str, tuple[float, float]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every detected object's box with its object score (eq. 6), for RBDC/TBDC (§4.1)."""
        frame_idx = np.asarray(scores.get("frame_idx", np.zeros(0)), dtype=np.int64)
        out = {"frame_idx": frame_idx}
        for name in (*BOX_COLUMNS, "frame_height", "frame_width"):
            out[name] = np.asarray(scores.get(name, np.zeros(len(frame_idx))), dtype=np.float64)
        out["score"] = object_scores(scores, cfg, weights, calibration) if len(frame_idx) else np.zeros(0)
        return out

    def late_fusion(self, object_level: np.ndarray, frame_level: np.ndarray, cfg: SsmtlConfig) -> np.ndarray:
        """§3.5: fuse one video's object-level and frame-level frame scores (weight ``cfg.late_fusion_weight``)."""
        return late_fusion(object_level, frame_level, cfg.late_fusion_weight)

    def validation_mask(self, rows: Mapping[str, np.ndarray], cfg: SsmtlConfig) -> np.ndarray:
        """§4.2: True for tube rows in the last ``1 - train_fraction`` of their video (the validation part)."""
        return ~temporal_split_mask(rows["frame_idx"], rows["video_frames"], cfg.train_fraction)

    @classmethod
    def smoke_config(cls) -> SsmtlConfig:
        return SsmtlConfig(
            variant="shallow_narrow", half_window=2, max_gap=2, crop_size=32, teacher_dim=8, num_classes=3,
            epochs=1, batch_size=4, mean_filter_pixels=8,
        )

    @classmethod
    def smoke_rows(cls, rng: np.random.Generator, cfg: SsmtlConfig | None = None) -> dict[str, np.ndarray]:
        """Fake tube-store rows for ``cfg`` (default :meth:`smoke_config`): two videos, several objects per frame."""
        cfg = cls.smoke_config() if cfg is None else cfg
        n, s = 6, cfg.crop_size
        probs = rng.dirichlet(np.ones(cfg.num_classes), size=n).astype(np.float32)
        x1 = rng.uniform(0, 60, size=n)
        y1 = rng.uniform(0, 40, size=n)
        rows = {
            "video_id": np.array(["v0"] * 3 + ["v1"] * 3, dtype=object),
            "dataset": np.array(["smoke"] * n, dtype=object),
            "split": np.array(["train"] * n, dtype=object),
            "frame_idx": np.array([3, 3, 9, 0, 5, 7], dtype=np.int64),
            "video_frames": np.full(n, 12, dtype=np.int64),
            "height": np.full(n, 64, dtype=np.int64),
            "width": np.full(n, 96, dtype=np.int64),
            "box": np.stack([x1, y1, x1 + 24, y1 + 20], axis=1).astype(np.float32),
            "conf": probs.max(axis=1),
            "class_id": probs.argmax(axis=1).astype(np.int64),
            "class_probs": probs,
            "tube": rng.integers(0, 256, size=(n, cfg.tube_frames, s, s, 3), dtype=np.uint8),
        }
        if "distill" in cfg.tasks and cfg.teacher_dim:
            rows["teacher_features"] = rng.normal(size=(n, cfg.teacher_dim)).astype(np.float32)
        return rows
