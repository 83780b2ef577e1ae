"""STD as a :class:`~vad_models.base.Method`: examples, losses, the two training phases, scores and fusion.

Chang et al., "Video anomaly detection with spatio-temporal dissociation", Pattern Recognition 2022.

Training is one resumable run of two phases (§3.5, §4.2):

1. ``"pretrain"``: both autoencoders with ``l_a + l_m`` (eqs. 3 and 6), no cluster term.
2. ``"joint"``: :meth:`StdMethod.on_phase_start` initialises the centres with scikit-learn K-means on
   representations of the pre-trained model; then the two parts alternate by global step (``ctx.step``, so a
   resumed run keeps the rhythm): on autoencoder turns eq. 12 with the centres detached, on centre turns
   eq. 11 with the autoencoders frozen (eval mode, no autograd, so not even BatchNorm statistics move). One
   Adam holds both parameter groups at their own learning rates; a group that got no gradient this step
   (``grad is None`` after ``zero_grad(set_to_none=True)``) is skipped by Adam, so only the group on turn moves.
   Both turns report the value of eq. 12 as ``"loss"`` (the frozen part enters detached), so epoch means and
   validation losses compare across turns.

Example:
    >>> import numpy as np
    >>> method = StdMethod()
    >>> cfg = method.smoke_config()
    >>> examples = method.make_examples(method.smoke_rows(np.random.default_rng(0)), cfg, None)
    >>> examples["clip"].shape[1:]
    (5, 32, 32, 3)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from itertools import islice
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipelines.windows import segment_windows
from vad_models.base import InputSpec, Method, Phase, TrainContext, model_device
from vad_models.std.clustering import cluster_loss, kmeans_centres, sample_points
from vad_models.std.config import StdConfig
from vad_models.std.losses import autoencoder_losses, is_centre_turn
from vad_models.std.model import StdModel
from vad_models.std.scoring import SCORE_COLUMNS, fuse_scores, window_scores

__all__ = ["StdMethod"]

PRETRAIN, JOINT = "pretrain", "joint"


def _lr_factor(epoch: int, decay_epoch: int, factor: float) -> float:
    return factor if 0 < decay_epoch <= epoch else 1.0


def _unit_factor(epoch: int) -> float:
    return 1.0


def _std_model(model: nn.Module) -> StdModel:
    core = getattr(model, "module", model)  # unwrap DistributedDataParallel-style wrappers
    if not isinstance(core, StdModel):
        raise TypeError(f"STD needs a StdModel (from StdMethod.build_model), got {type(core).__name__}")
    return core


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration (BatchNorm uses and keeps its running statistics), then the previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _to_unit(clip: torch.Tensor, cfg: StdConfig) -> torch.Tensor:
    """uint8 ``(N, T, H, W, 3)`` windows -> float ``(N, 3, T, H, W)`` in ``[0, 1]`` (the released code's range)."""
    expected = (cfg.clip_length, cfg.height, cfg.width, 3)
    if clip.dtype != torch.uint8 or clip.ndim != 5 or tuple(clip.shape[1:]) != expected:
        shape = ", ".join(map(str, expected))
        raise ValueError(f"clip must be uint8 (N, {shape}), got {clip.dtype} {tuple(clip.shape)}")
    return clip.permute(0, 4, 1, 2, 3).float().div_(255.0)


def _segment_frames(frames: Any, cfg: StdConfig) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[1:] != (cfg.height, cfg.width, 3):
        raise ValueError(
            f"STD reads uint8 RGB segments of shape [n, {cfg.height}, {cfg.width}, 3], got {frames.dtype} "
            f"{frames.shape}; ingest the clip store with the 'std' frame spec or set height/width to match it"
        )
    return frames


class StdMethod(Method):
    """Spatio-temporal dissociation: spatial AE + motion U-Net with variance attention + deep K-means."""

    name = "std"
    config_class = StdConfig

    def input_spec(self, cfg: StdConfig) -> InputSpec:
        return InputSpec(store="clips", frame_spec="std", alignment="last")

    def build_model(self, cfg: StdConfig) -> nn.Module:
        return StdModel(cfg)

    def score_columns(self, cfg: StdConfig) -> list[str]:
        return list(SCORE_COLUMNS)

    def phases(self, cfg: StdConfig) -> list[Phase]:
        return [Phase(PRETRAIN, cfg.pretrain_epochs), Phase(JOINT, cfg.epochs)]

    @classmethod
    def smoke_config(cls) -> StdConfig:
        return StdConfig(
            height=32,
            width=32,
            base_channels=4,
            num_clusters=4,
            batch_size=2,
            pretrain_epochs=1,
            epochs=1,
            kmeans_init_batches=2,
            kmeans_points_per_clip=16,
            kmeans_n_init=1,
            score_batch_size=8,
        )

    @classmethod
    def smoke_rows(cls, rng: np.random.Generator, cfg: StdConfig | None = None) -> dict[str, np.ndarray]:
        """Fake clip-store rows for ``cfg`` (default :meth:`smoke_config`).

        Two videos: one in two overlapping segments of different lengths (so ``frames`` is an object array), one
        in a single short segment.
        """
        cfg = cls.smoke_config() if cfg is None else cfg
        overlap = cfg.clip_length - 1
        layout = [("smoke-0", 0, 8), ("smoke-0", 8 - overlap, 7), ("smoke-1", 0, 6)]
        frames = np.empty(len(layout), dtype=object)
        for i, (_, _, n) in enumerate(layout):
            frames[i] = rng.integers(0, 256, (n, cfg.height, cfg.width, 3), dtype=np.uint8)
        return {
            "video_id": np.array([v for v, _, _ in layout], dtype=object),
            "dataset": np.array(["smoke"] * len(layout), dtype=object),
            "split": np.array(["train"] * len(layout), dtype=object),
            "start_frame": np.array([s for _, s, _ in layout], dtype=np.int64),
            "num_frames": np.array([n for _, _, n in layout], dtype=np.int64),
            "fps": np.full(len(layout), 25.0),
            "frames": frames,
        }

    def make_examples(
        self, rows: dict[str, np.ndarray], cfg: StdConfig, rng: np.random.Generator | None
    ) -> dict[str, np.ndarray]:
        """Every window of ``clip_length`` frames at ``train_stride``: ``{"clip": uint8 [N, T, H, W, 3]}``.

        STD samples nothing at random, so ``rng`` is unused.
        """
        clips = [
            segment_windows(_segment_frames(frames, cfg), int(start), cfg.clip_length, cfg.train_stride)[0]
            for frames, start in zip(rows["frames"], rows["start_frame"])
        ]
        if not clips:
            return {"clip": np.zeros((0, cfg.clip_length, cfg.height, cfg.width, 3), dtype=np.uint8)}
        return {"clip": np.concatenate(clips)}

    def training_loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: StdConfig, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        core = _std_model(model)
        x = _to_unit(batch["clip"], cfg)  # (N, 3, T, H, W)
        first, target_diff = x[:, :, 0], x[:, :, -1] - x[:, :, 0]  # x_fif and x_diff = x_lif - x_fif
        if ctx.phase == PRETRAIN:
            parts = autoencoder_losses(model(x[:, :, :-1]), first, target_diff, cfg)
            parts["loss"] = parts["spatial"] + parts["motion"]
            return parts
        if ctx.phase != JOINT:
            raise ValueError(f"STD has phases {PRETRAIN!r} and {JOINT!r}, got {ctx.phase!r}")
        if not bool(core.centres_initialised):
            raise RuntimeError("STD joint phase without initialised centres: on_phase_start('joint') did not run")
        if is_centre_turn(ctx.step, cfg):  # eq. 11: only the centres get a gradient
            with torch.no_grad(), _frozen(core):
                out = model(x[:, :, :-1])
            centres = core.centres
        else:  # eq. 12 with the centres frozen
            out = model(x[:, :, :-1])
            centres = core.centres.detach()
        parts = autoencoder_losses(out, first, target_diff, cfg)
        parts["cluster"] = cluster_loss(out.representation, centres, cfg.alpha)
        parts["loss"] = parts["spatial"] + parts["motion"] + cfg.lambda_r * parts["cluster"]
        return parts

    def configure_optimizer(self, model: nn.Module, cfg: StdConfig, phase: str) -> torch.optim.Optimizer:
        """Adam over the autoencoders (pre-train); Adam with [autoencoders @ lr, centres @ centre_lr] (joint)."""
        core = _std_model(model)
        if phase == PRETRAIN:
            return torch.optim.Adam(core.autoencoder_parameters(), lr=cfg.lr)
        if phase == JOINT:
            groups = [
                {"params": core.autoencoder_parameters(), "lr": cfg.lr},
                {"params": [core.centres], "lr": cfg.centre_lr},
            ]
            return torch.optim.Adam(groups)
        raise ValueError(f"STD has phases {PRETRAIN!r} and {JOINT!r}, got {phase!r}")

    def configure_scheduler(self, optimizer: torch.optim.Optimizer, cfg: StdConfig, phase: str) -> Any | None:
        """Joint phase: autoencoder lr x ``lr_decay_factor`` from ``lr_decay_epoch`` on (§4.2); centres constant."""
        if phase != JOINT or cfg.lr_decay_epoch == 0:
            return None
        ae = partial(_lr_factor, decay_epoch=cfg.lr_decay_epoch, factor=cfg.lr_decay_factor)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [ae, _unit_factor])

    def on_phase_start(
        self,
        model: nn.Module,
        phase: str,
        batches: Iterable[dict[str, torch.Tensor]],
        cfg: StdConfig,
        ctx: TrainContext,
    ) -> None:
        """Joint phase: K-means centres from representations of the pre-trained model (§3.5, §4.2).

        Reads at most ``kmeans_init_batches`` batches (and ``kmeans_max_points`` points) of ``batches``, draws
        ``kmeans_points_per_clip`` random positions of each clip's representation ``r`` (eval mode), runs
        scikit-learn KMeans on rank 0 and broadcasts the centres to the other workers.
        """
        if phase != JOINT:
            return
        core = _std_model(model)
        device = model_device(core)
        generator = torch.Generator().manual_seed(cfg.seed + ctx.world_rank)
        chunks, total = [], 0
        with torch.no_grad(), _frozen(core):
            for batch in islice(batches, cfg.kmeans_init_batches):
                x = _to_unit(batch["clip"].to(device), cfg)
                points = sample_points(core.representation(x[:, :, :-1]), cfg.kmeans_points_per_clip, generator)
                chunks.append(points.cpu())
                total += len(points)
                if total >= cfg.kmeans_max_points:
                    break
        centres = torch.zeros_like(core.centres)
        if ctx.world_rank == 0:
            points = torch.cat(chunks)[: cfg.kmeans_max_points] if chunks else torch.zeros(0, centres.shape[1])
            fitted = kmeans_centres(points.numpy(), cfg.num_clusters, cfg.seed, cfg.kmeans_n_init)
            centres = torch.from_numpy(fitted).to(centres)
        if ctx.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.broadcast(centres, src=0)
        core.set_centres(centres)

    def task_scores(self, model: nn.Module, rows: dict[str, np.ndarray], cfg: StdConfig) -> dict[str, np.ndarray]:
        """Raw parts per window; ``frame_idx`` = window start + ``T - 1``, the predicted last frame."""
        core = _std_model(model)
        device = model_device(core)
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("video_id", "frame_idx", *SCORE_COLUMNS)}
        with torch.inference_mode(), _frozen(core):
            for video_id, frames, start in zip(rows["video_id"], rows["frames"], rows["start_frame"]):
                frames = _segment_frames(frames, cfg)
                windows, starts = segment_windows(frames, int(start), cfg.clip_length, cfg.score_stride)
                for i in range(0, len(windows), cfg.score_batch_size):
                    clip = torch.from_numpy(np.array(windows[i : i + cfg.score_batch_size]))  # writable copy
                    parts = window_scores(core, _to_unit(clip.to(device), cfg), cfg.alpha)
                    for key, value in parts.items():
                        columns[key].append(value.double().cpu().numpy())
                columns["frame_idx"].append(starts + cfg.clip_length - 1)
                columns["video_id"].append(np.full(len(starts), str(video_id), dtype=object))
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in columns.items()}
        out["frame_idx"] = out["frame_idx"].astype(np.int64)
        out["video_id"] = out["video_id"].astype(object)
        return out

    def fuse(
        self,
        scores: Mapping[str, np.ndarray],
        cfg: StdConfig,
        weights: Mapping[str, float] | None = None,
        calibration: Mapping[str, tuple[float, float]] | None = None,
        num_frames: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Eq. 13 then eq. 14 per video, complemented (higher = more anomalous); see :func:`fuse_scores`."""
        return fuse_scores(scores, weights=weights, calibration=calibration, eps=cfg.score_eps)
