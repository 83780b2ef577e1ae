"""Weakly supervised MT-VAE (seed 004) as a :class:`~vad_models.base.Method`: three phases in one model.

1. ``baseline`` (§3.1): snippet MLP, videos resampled to S = 32 segments, BCE of the mean snippet score against the
   video label (Eq. 1).
2. ``mtvae`` (§3.2.3–3.2.4): shared encoder, normal and abnormal decoders (Eq. 6); normal snippets come from
   normal videos, abnormal ones are the snippets of abnormal videos the frozen baseline scores above 0.5.
   Adam with per-epoch exponential decay γ = 0.95 (§4.1).
3. ``host`` (§4.2): the host detector (the baseline MLP or an RTFM-style network) trained on original videos plus
   pseudo videos drawn from the frozen MT-VAE for every batch (:mod:`vad_models.mtvae.pseudo`; ``host_pseudo``
   switches them off, which also drops phase 2). Drawing fresh pseudo videos every epoch keeps the paper's count
   per epoch (ratio × originals) without materialising a pseudo set.

Inputs: with ``standardise_features`` every part sees z-scored features, whose statistics are fitted on the
training examples when the baseline phase starts (:meth:`MtVaeMethod.on_phase_start`) and stored in the model.

Scoring: per feature-store row (one snippet), the host and baseline probabilities averaged over the 10 crops, tagged
with the snippet's start frame; :meth:`MtVaeMethod.fuse` spreads each snippet score over its 16 frames (alignment
``snippet16``, RTFM's ``np.repeat(pred, 16)``). The scores are probabilities, so without calibration they are used
as they are (weak supervision learns absolute scores; per-video rescaling would erase normal-video quietness).
The RTFM host looks at whole sequences: rows of a video should reach :meth:`task_scores` together.

Example:
    >>> from vad_models.registry import get_method
    >>> method = get_method("mtvae")
    >>> [p.name for p in method.phases(method.smoke_config())]
    ['baseline', 'mtvae', 'host']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vad_models.base import InputSpec, Method, Phase, TrainContext, model_device
from vad_models.mtvae.config import MtVaeConfig
from vad_models.mtvae.examples import EXAMPLE_COLUMNS, empty_examples, video_example, video_features
from vad_models.mtvae.losses import rtfm_loss, vae_loss, video_bce
from vad_models.mtvae.model import MtVaeModel
from vad_models.mtvae.pseudo import make_pseudo_videos

__all__ = ["MtVaeMethod"]

SCORE_COLUMNS = ("host_score", "baseline_score")


def _unwrap(model: nn.Module) -> MtVaeModel:
    net = getattr(model, "module", model)
    if not isinstance(net, MtVaeModel):
        raise TypeError(f"mtvae expects an MtVaeModel, got {type(net).__name__}")
    return net


class MtVaeMethod(Method):
    """Baseline → multi-task VAE → host detector with pseudo videos (see the module docstring)."""

    name = "mtvae"
    config_class = MtVaeConfig

    def input_spec(self, cfg: MtVaeConfig) -> InputSpec:
        return InputSpec(store="features", frame_spec="i3d", alignment="snippet16", group_by_video=True)

    def build_model(self, cfg: MtVaeConfig) -> nn.Module:
        return MtVaeModel(cfg)

    def score_columns(self, cfg: MtVaeConfig) -> list[str]:
        return list(SCORE_COLUMNS)

    def phases(self, cfg: MtVaeConfig) -> list[Phase]:
        phases = [Phase("baseline", int(cfg.epochs))]
        if cfg.host_pseudo:
            phases.append(Phase("mtvae", int(cfg.vae_epochs)))
        return [*phases, Phase("host", int(cfg.host_epochs))]

    def configure_optimizer(self, model: nn.Module, cfg: MtVaeConfig, phase: str) -> torch.optim.Optimizer:
        net = _unwrap(model)
        if phase == "baseline":
            return torch.optim.Adam(net.baseline.parameters(), lr=cfg.lr)
        if phase == "mtvae":
            return torch.optim.Adam(net.vae.parameters(), lr=cfg.vae_lr)
        if phase == "host":
            decay = cfg.rtfm_weight_decay if cfg.host == "rtfm" else 0.0
            return torch.optim.Adam(net.host.parameters(), lr=cfg.host_lr, weight_decay=decay)
        raise ValueError(f"mtvae has phases baseline, mtvae, host; got {phase!r}")

    def configure_scheduler(self, optimizer: torch.optim.Optimizer, cfg: MtVaeConfig, phase: str) -> Any | None:
        if phase == "mtvae":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.vae_lr_gamma)
        return None

    # ------------------------------------------------------------------------------------------- training

    def on_phase_start(
        self,
        model: nn.Module,
        phase: str,
        batches: Iterable[dict[str, torch.Tensor]],
        cfg: MtVaeConfig,
        ctx: TrainContext,
    ) -> None:
        """Baseline phase with ``standardise_features``: fit the per-channel mean and std of the training features.

        One pass over every crop of every segment of the worker's examples (float64 sums, all-reduced across
        workers so every rank holds the same statistics); the model keeps them as buffers, so a resumed run and
        scoring reuse them. Not called again when a run resumes inside or after the baseline phase.
        """
        if phase != "baseline" or not cfg.standardise_features:
            return
        net = _unwrap(model)
        device = model_device(net)
        sums = torch.zeros(3, cfg.feature_dim, dtype=torch.float64, device=device)  # count, Σx, Σx²
        for batch in batches:
            x = batch["segments"].to(device=device, dtype=torch.float64).reshape(-1, cfg.feature_dim)
            sums += torch.stack([torch.full_like(x[0], x.shape[0]), x.sum(0), x.pow(2).sum(0)])
        if ctx.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        count = sums[0].clamp_min(1.0)
        mean = sums[1] / count
        std = (sums[2] / count - mean.pow(2)).clamp_min(0.0).sqrt()
        net.set_feature_stats(mean.float(), std.float())

    def make_examples(
        self, rows: dict[str, np.ndarray], cfg: MtVaeConfig, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """One example per video among ``rows`` (the pipeline passes all rows of one video)."""
        video_ids = np.asarray(rows["video_id"]).astype(str)
        examples = []
        for video_id in dict.fromkeys(video_ids):
            mask = video_ids == video_id
            labels = np.unique(np.asarray(rows["video_label"])[mask])
            if len(labels) != 1 or int(labels[0]) not in (0, 1):
                raise ValueError(
                    f"video {video_id}: weak supervision needs a video label of 0 or 1, got {labels.tolist()} "
                    "(set it in video_labels.json / the manifest before extracting features)"
                )
            feats = video_features(rows, mask, cfg, video_id)
            examples.append(video_example(feats, int(labels[0]), cfg, rng))
        if not examples:
            return empty_examples(cfg)
        return {k: np.stack([e[k] for e in examples]) for k in EXAMPLE_COLUMNS}

    def training_loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: MtVaeConfig, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        net = _unwrap(model)
        labels = batch["video_label"].float().view(-1)
        segments = net.standardise(batch["segments"].float())  # (B, C, S, F)
        if ctx.phase == "baseline":
            bce = video_bce(net.baseline(segments), labels)
            return {"loss": bce, "bce": bce.detach()}
        if ctx.phase == "mtvae":
            return self._vae_step(net, batch, labels, cfg)
        if ctx.phase == "host":
            return self._host_step(net, segments, labels, cfg)
        raise ValueError(f"mtvae has phases baseline, mtvae, host; got {ctx.phase!r}")

    @staticmethod
    def _vae_step(
        net: MtVaeModel, batch: dict[str, torch.Tensor], labels: torch.Tensor, cfg: MtVaeConfig
    ) -> dict[str, torch.Tensor]:
        feats = net.standardise(batch["vae_feats"].float())  # (B, M, F); padding rows are masked below
        valid = batch["vae_mask"] > 0.5  # (B, M)
        net.baseline.eval()  # frozen after phase 1: no dropout when selecting abnormal snippets
        with torch.no_grad():
            score = torch.sigmoid(net.baseline(feats))  # (B, M)
        abnormal_video = (labels > 0.5)[:, None]
        normal = valid & ~abnormal_video
        abnormal = valid & abnormal_video & (score > cfg.abnormal_threshold)
        return vae_loss(net.vae, feats[normal], feats[abnormal], cfg.kl_weight)

    @staticmethod
    def _host_step(
        net: MtVaeModel, segments: torch.Tensor, labels: torch.Tensor, cfg: MtVaeConfig
    ) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        if cfg.host_pseudo:
            pseudo, pseudo_labels = make_pseudo_videos(net.vae, segments, labels, cfg.pseudo_ratio)
            segments = torch.cat([segments, pseudo])
            labels = torch.cat([labels, pseudo_labels])
            parts["pseudo_videos"] = torch.tensor(float(pseudo.shape[0]), device=segments.device)
        b, c, s, f = segments.shape
        logits, feats = net.host_logits(segments.reshape(b * c, s, f))  # crops as separate sequences (RTFM)
        if feats is None:
            bce = video_bce(logits.view(b, c, s), labels)
            return {"loss": bce, "bce": bce.detach(), **parts}
        return {**rtfm_loss(feats.view(b, c, s, f), logits.view(b, c, s), labels, cfg), **parts}

    # ------------------------------------------------------------------------------------------- scoring

    @torch.no_grad()
    def task_scores(self, model: nn.Module, rows: dict[str, np.ndarray], cfg: MtVaeConfig) -> dict[str, np.ndarray]:
        """Host and baseline probability of every snippet row (mean over crops), tagged with its start frame."""
        net = _unwrap(model)
        device = model_device(net)
        video_ids = np.asarray(rows["video_id"]).astype(str)
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("video_id", "frame_idx", *SCORE_COLUMNS)}
        for video_id in dict.fromkeys(video_ids):
            mask = video_ids == video_id
            feats = net.standardise(torch.from_numpy(video_features(rows, mask, cfg, video_id)).to(device))  # (n, C, F)
            baseline = torch.sigmoid(net.baseline(feats)).mean(dim=1)  # (n,)
            host = torch.sigmoid(net.host_logits(feats.transpose(0, 1))[0]).mean(dim=0)  # crops as sequences
            order = np.argsort(np.asarray(rows["snippet_idx"])[mask], kind="stable")  # as video_features orders
            starts = np.asarray(rows["start_frame"])[mask][order].astype(np.int64)
            out["video_id"].append(np.full(len(starts), video_id, dtype=object))
            out["frame_idx"].append(starts)
            out["host_score"].append(host.double().cpu().numpy())
            out["baseline_score"].append(baseline.double().cpu().numpy())
        if not out["video_id"]:
            return {"video_id": np.zeros(0, object), "frame_idx": np.zeros(0, np.int64),
                    **{k: np.zeros(0) for k in SCORE_COLUMNS}}  # fmt: skip
        return {k: np.concatenate(v) for k, v in out.items()}

    def fuse(
        self,
        scores: Mapping[str, np.ndarray],
        cfg: MtVaeConfig,
        weights: Mapping[str, float] | None = None,
        calibration: Mapping[str, tuple[float, float]] | None = None,
        num_frames: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted sum of the (optionally calibrated) snippet scores, spread over each snippet's 16 frames."""
        w = {"host_score": cfg.w_host, "baseline_score": cfg.w_baseline}
        unknown = set(weights or {}) - set(w)
        if unknown:
            raise ValueError(f"unknown mtvae fusion weights {sorted(unknown)}; known: {sorted(w)}")
        w.update(weights or {})
        starts = np.asarray(scores["frame_idx"], dtype=np.int64)
        fused = np.zeros(len(starts))
        for column, weight in w.items():
            values = np.asarray(scores[column], dtype=np.float64)
            if calibration and column in calibration:
                centre, scale = calibration[column]
                values = (values - centre) / scale
            fused += weight * values
        frame_idx = (starts[:, None] + np.arange(cfg.snippet_frames)).ravel()
        values = np.repeat(fused, cfg.snippet_frames)
        keep = frame_idx < num_frames if num_frames is not None else np.ones(len(frame_idx), bool)
        frame_idx, values = frame_idx[keep], values[keep]
        unique, inverse = np.unique(frame_idx, return_inverse=True)
        out = np.full(len(unique), -np.inf)
        np.maximum.at(out, inverse, values)  # several rows per frame (should not happen): keep the maximum
        return unique, out

    # ------------------------------------------------------------------------------------------- smoke

    @classmethod
    def smoke_config(cls) -> MtVaeConfig:
        """64-d features, 8 segments, ≤ 16 snippets per video, a 16× narrower MT-VAE, one epoch per phase."""
        return MtVaeConfig(
            feature_dim=64, num_segments=8, max_snippets=16, classifier_hidden1=32, classifier_hidden2=16,
            vae_width_divisor=16, epochs=1, vae_epochs=1, host_epochs=1, batch_size=4, rtfm_k=2,
        )  # fmt: skip

    @classmethod
    def smoke_rows(cls, rng: np.random.Generator, cfg: MtVaeConfig | None = None) -> dict[str, np.ndarray]:
        """Fake feature-store rows for ``cfg`` (default :meth:`smoke_config`): a normal and an abnormal video."""
        cfg = cls.smoke_config() if cfg is None else cfg
        lengths, labels = (5, 7), (0, 1)
        video_ids = np.concatenate([np.full(n, f"v{i}", dtype=object) for i, n in enumerate(lengths)])
        snippet_idx = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
        return {
            "video_id": video_ids,
            "dataset": np.full(len(video_ids), "smoke", dtype=object),
            "split": np.full(len(video_ids), "train", dtype=object),
            "snippet_idx": snippet_idx,
            "start_frame": snippet_idx * cfg.snippet_frames,
            "video_label": np.concatenate([np.full(n, lab, np.int8) for n, lab in zip(lengths, labels)]),
            "features": rng.random((len(video_ids), cfg.num_crops, cfg.feature_dim), dtype=np.float32),
        }
