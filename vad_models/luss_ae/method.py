"""LUSS-AE as a :class:`~vad_models.base.Method`: clip sampling, the joint loss, raw task scores and fusion.

Lohani et al., VISAPP 2023: training loss eq. 7 (VCR eq. 3 + FFP eq. 4 + PRP eq. 6, with accelerated clips
sampled as in eq. 5), anomaly scores eqs. 12-14 with the MSE / PSE / BPE measures of eqs. 8, 9, 11, robust
per-video rescaling eq. 16 and the weighted sum eq. 15.

Each 17-frame window (16 inputs + the frame to predict) scores its last frame, the FFP target ("the anomaly
score for frame T + 1", §3.2.2): ``frame_idx = start + 16``. The first 16 frames of a video get no score of
their own; the pipeline fills them from the nearest scored frame.

Where this differs from the released code (devashishlohani/luss-ae_vad), the paper is followed:

* cross-entropy on logits (the code applies it on top of a softmax);
* accelerated clips never run past the segment (the code clamps indices, repeating the last frame);
* PRP scores are rescaled robustly like the others (the code uses min-max: ``prp_rescale="minmax"``);
* BPE divides by the full-resolution ``C*H*W`` (eq. 11; the code takes the mean of the pooled map, a constant
  factor ``b**2`` that rescaling removes).

Example:
    >>> import numpy as np
    >>> method = LussAeMethod()
    >>> cfg = LussAeMethod.smoke_config()
    >>> rng = np.random.default_rng(0)
    >>> examples = method.make_examples(LussAeMethod.smoke_rows(rng), cfg, rng)
    >>> examples["clip"].shape[1:], examples["prp_clip"].shape[1:]
    ((17, 32, 32), (16, 32, 32))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.windows import segment_windows
from vad_models import ops
from vad_models.base import InputSpec, Method, TrainContext, host_tensor, model_device
from vad_models.luss_ae.config import ERROR_TYPES, LussAeConfig
from vad_models.luss_ae.model import LussAe

__all__ = ["LussAeMethod", "sample_prp_clips"]

_TASKS = ("vcr", "ffp", "prp")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-valued pixels ``[0, 255]`` -> float ``[-1, 1]`` (x / 127.5 - 1, §4.3)."""
    return pixels.float() / 127.5 - 1.0


def sample_prp_clips(
    frames: np.ndarray, count: int, clip_len: int, prob: float, strides: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` PRP inputs from one segment (eq. 5): normal-rate (label 0) or accelerated (label 1) clips.

    A sample is accelerated with probability ``prob``; its temporal gap ``s`` is drawn uniformly from the
    ``strides`` whose clip ``V_{T,s}`` fits in the segment, and its start uniformly among the starts where it
    fits, so every frame is a real frame ``start + t * s`` of the same video (the released code clamps indices
    at the video end instead, repeating the last frame). When no stride fits (a short last segment), the
    sample stays at normal rate. Normal-rate clips start uniformly in the segment, independently of the
    VCR window, as the released code draws them from a separate loader.

    Args:
        frames: ``[n, ...]`` frames of one segment.
        count: Samples to draw.
        clip_len: Frames per clip ``T``.
        prob: Probability of an accelerated clip.
        strides: Candidate temporal gaps.
        rng: Random generator.

    Returns:
        ``(clips [count, clip_len, ...], labels int64 [count])``.

    Example:
        >>> frames = np.arange(100, dtype=np.uint8)[:, None]
        >>> clips, labels = sample_prp_clips(frames, 4, 16, 1.0, (2,), np.random.default_rng(0))
        >>> labels.tolist(), np.diff(clips[0, :, 0]).tolist() == [2] * 15
        ([1, 1, 1, 1], True)
    """
    n = len(frames)
    if n < clip_len:
        raise ValueError(f"segment has {n} frames, fewer than one clip of {clip_len}")
    fitting = np.array([s for s in strides if (clip_len - 1) * s < n], dtype=np.int64)
    accelerated = rng.random(count) < prob if fitting.size else np.zeros(count, dtype=bool)
    gaps = np.ones(count, dtype=np.int64)
    if fitting.size:
        gaps[accelerated] = rng.choice(fitting, size=int(accelerated.sum()))
    starts = rng.integers(0, n - (clip_len - 1) * gaps)  # uniform in [0, n - span]
    index = starts[:, None] + gaps[:, None] * np.arange(clip_len)  # [count, T]
    return frames[index], accelerated.astype(np.int64)


class LussAeMethod(Method):
    """LUSS-AE: reconstruction + future-frame prediction + playback-rate prediction on one 3D conv AE."""

    name = "luss_ae"
    config_class = LussAeConfig

    # ----------------------------------------------------------------------------------------------- setup
    def input_spec(self, cfg: LussAeConfig) -> InputSpec:
        return InputSpec(store="clips", frame_spec="luss_ae", alignment="last")

    def build_model(self, cfg: LussAeConfig) -> nn.Module:
        return LussAe(cfg)

    def score_columns(self, cfg: LussAeConfig) -> list[str]:
        return [f"{task}_{err}" for task in ("vcr", "ffp") for err in ERROR_TYPES] + ["prp"]

    @classmethod
    def smoke_config(cls) -> LussAeConfig:
        """A tiny configuration for smoke and contract tests (32x32 frames)."""
        return LussAeConfig(height=32, width=32, epochs=1, batch_size=4, score_batch_size=8)

    @classmethod
    def smoke_rows(cls, rng: np.random.Generator, cfg: LussAeConfig | None = None) -> dict[str, np.ndarray]:
        """A fake clip-store batch for ``cfg`` (default :meth:`smoke_config`): two videos, uneven segments."""
        cfg = cfg or cls.smoke_config()
        lengths, starts, videos = (40, 24, 20), (0, 24, 0), ("v0", "v0", "v1")
        frames = np.empty(len(lengths), dtype=object)
        for i, n in enumerate(lengths):
            frames[i] = rng.integers(0, 256, size=(n, cfg.height, cfg.width, 1), dtype=np.uint8)
        return {
            "video_id": np.array(videos),
            "dataset": np.array(["synthetic"] * 3),
            "split": np.array(["train"] * 3),
            "start_frame": np.array(starts, dtype=np.int64),
            "num_frames": np.array(lengths, dtype=np.int64),
            "fps": np.full(3, 25.0),
            "frames": frames,
        }

    # -------------------------------------------------------------------------------------------- training
    def make_examples(
        self, rows: dict[str, np.ndarray], cfg: LussAeConfig, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Training examples from clip-store segments.

        Returns:
            ``clip`` uint8 ``[N, T+1, H, W]`` (every window at ``cfg.train_stride``: 16 inputs + the FFP target),
            ``prp_clip`` uint8 ``[N, T, H, W]`` and ``prp_label`` int64 ``[N]`` (1 = accelerated), one PRP
            sample per window drawn from the same segment.
        """
        window = cfg.clip_len + 1
        clips, prp_clips, labels = [], [], []
        for _, _, frames in _segments(rows, cfg):
            views, _ = segment_windows(frames[..., None], 0, window, cfg.train_stride)
            if len(views) == 0:
                continue
            clips.append(views[..., 0])
            prp, lab = sample_prp_clips(frames, len(views), cfg.clip_len, cfg.prp_prob, cfg.prp_strides, rng)
            prp_clips.append(prp)
            labels.append(lab)
        if not clips:
            hw = (cfg.height, cfg.width)
            return {
                "clip": np.zeros((0, window, *hw), np.uint8),
                "prp_clip": np.zeros((0, cfg.clip_len, *hw), np.uint8),
                "prp_label": np.zeros(0, np.int64),
            }
        return {
            "clip": np.concatenate(clips),
            "prp_clip": np.concatenate(prp_clips),
            "prp_label": np.concatenate(labels),
        }

    def training_loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: LussAeConfig, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        """Eq. 7: ``lambda_vcr * MSE(recon) + lambda_ffp * MSE(pred) + lambda_prp * CE(logits, label)``.

        Cross-entropy is taken on the head's logits (the released code applies it on top of a softmax, i.e.
        softmax twice).
        """
        missing = {"clip", "prp_clip", "prp_label"} - set(batch)
        if missing:
            raise KeyError(f"LUSS-AE batch lacks {sorted(missing)}; it has {sorted(batch)}")
        clip = _to_unit_range(batch["clip"]).unsqueeze(1)  # (B,1,T+1,H,W)
        if clip.shape[2] != cfg.clip_len + 1:
            raise ValueError(f"clip must hold {cfg.clip_len + 1} frames, got shape {tuple(batch['clip'].shape)}")
        inputs, target = clip[:, :, : cfg.clip_len], clip[:, :, cfg.clip_len :]
        out = model(inputs, _to_unit_range(batch["prp_clip"]).unsqueeze(1))
        vcr = F.mse_loss(out.recon, inputs)
        ffp = F.mse_loss(out.pred, target)
        prp = F.cross_entropy(out.logits.float(), batch["prp_label"].long())
        loss = cfg.lambda_vcr * vcr + cfg.lambda_ffp * ffp + cfg.lambda_prp * prp
        return {"loss": loss, "vcr": vcr.detach(), "ffp": ffp.detach(), "prp": prp.detach()}

    # --------------------------------------------------------------------------------------------- scoring
    def task_scores(self, model: nn.Module, rows: dict[str, np.ndarray], cfg: LussAeConfig) -> dict[str, np.ndarray]:
        """Raw scores of every 17-frame window (stride 1) of every segment; switches ``model`` to eval mode.

        Each segment's uint8 frames go to the model's device once; windows are views built there and
        converted to float ``score_batch_size`` at a time.

        Returns:
            ``video_id``, ``frame_idx`` (``start + 16``, the FFP target), ``vcr_{mse,pse,bpe}`` (eq. 12, mean
            over the 16 frames), ``ffp_{mse,pse,bpe}`` (eq. 13) and ``prp`` (eq. 14, p(accelerated)).
        """
        model.eval()
        device = model_device(model)
        columns = self.score_columns(cfg)
        parts: dict[str, list[np.ndarray]] = {key: [] for key in ("video_id", "frame_idx", *columns)}
        with torch.inference_mode():
            for video_id, start, frames in _segments(rows, cfg):
                if len(frames) <= cfg.clip_len:
                    continue
                scores = self._score_segment(model, host_tensor(frames).to(device), cfg)
                count = len(frames) - cfg.clip_len
                parts["video_id"].append(np.full(count, video_id, dtype=object))
                parts["frame_idx"].append(start + cfg.clip_len + np.arange(count, dtype=np.int64))
                for key in columns:
                    parts[key].append(scores[key])
        out = {key: np.concatenate(chunks) if chunks else np.zeros(0) for key, chunks in parts.items()}
        out["video_id"] = out["video_id"].astype(str)
        out["frame_idx"] = out["frame_idx"].astype(np.int64)
        return out

    def _score_segment(self, model: nn.Module, frames: torch.Tensor, cfg: LussAeConfig) -> dict[str, np.ndarray]:
        """Scores of all windows of one segment; ``frames`` is ``(n, H, W)`` uint8 on the model's device."""
        err_args = (cfg.kernel_size, cfg.sigma, cfg.blur_stride, cfg.pse_padding, cfg.bpe_padding)
        chunks: dict[str, list[torch.Tensor]] = {}
        for inputs, target, out in _window_outputs(model, frames, cfg):
            b, h, w = len(inputs), inputs.shape[-2], inputs.shape[-1]
            # VCR: per-frame errors of the 16 reconstructed frames, averaged over time (eq. 12).
            vcr = ops.image_errors((out.recon.float() - inputs).reshape(-1, 1, h, w), *err_args)
            ffp = ops.image_errors((out.pred.float() - target).reshape(b, 1, h, w), *err_args)
            for err in ERROR_TYPES:
                chunks.setdefault(f"vcr_{err}", []).append(vcr[err].view(b, cfg.clip_len).mean(1))
                chunks.setdefault(f"ffp_{err}", []).append(ffp[err])
            chunks.setdefault("prp", []).append(torch.softmax(out.logits.float(), dim=1)[:, 1])
        return {key: torch.cat(values).cpu().numpy().astype(np.float64) for key, values in chunks.items()}

    def anomaly_maps(self, model: nn.Module, rows: dict[str, np.ndarray], cfg: LussAeConfig) -> dict[str, np.ndarray]:
        """Per-pixel FFP residual of every 17-frame window: the squared Gaussian-blurred prediction error.

        The map is the per-pixel term of the PSE of eq. 9 applied to the future-frame prediction (eq. 13),
        ``G_sigma * (J_hat - J)`` squared, so its mean over the pixels is the window's ``ffp_pse`` score; the blur
        makes it follow the object rather than single noisy pixels. Windows and ``frame_idx`` are those of
        :meth:`task_scores` (``start + 16``, the predicted frame).

        Example:
            >>> cfg = LussAeMethod.smoke_config()
            >>> method = LussAeMethod()
            >>> rows = method.smoke_rows(np.random.default_rng(0), cfg)
            >>> maps = method.anomaly_maps(method.build_model(cfg), rows, cfg)
            >>> maps["map"].shape[1:] == (cfg.height, cfg.width)
            True
        """
        model.eval()
        device = model_device(model)
        parts: dict[str, list[np.ndarray]] = {"video_id": [], "frame_idx": [], "map": []}
        with torch.inference_mode():
            for video_id, start, frames in _segments(rows, cfg):
                if len(frames) <= cfg.clip_len:
                    continue
                pixels = host_tensor(frames).to(device)
                for _, target, out in _window_outputs(model, pixels, cfg):
                    residual = (out.pred.float() - target).flatten(1, 2)  # (b, 1, H, W)
                    blurred = ops.gaussian_blur(residual, cfg.kernel_size, cfg.sigma, cfg.pse_padding)
                    parts["map"].append(blurred.square()[:, 0].cpu().numpy().astype(np.float32))
                count = len(frames) - cfg.clip_len
                parts["video_id"].append(np.full(count, video_id, dtype=object))
                parts["frame_idx"].append(start + cfg.clip_len + np.arange(count, dtype=np.int64))
        if not parts["map"]:
            return {"video_id": np.zeros(0, dtype=str), "frame_idx": np.zeros(0, dtype=np.int64),
                    "map": np.zeros((0, cfg.height, cfg.width), dtype=np.float32)}
        return {
            "video_id": np.concatenate(parts["video_id"]).astype(str),
            "frame_idx": np.concatenate(parts["frame_idx"]).astype(np.int64),
            "map": np.concatenate(parts["map"]),
        }

    # ---------------------------------------------------------------------------------------------- fusion
    def fuse(
        self,
        scores: Mapping[str, np.ndarray],
        cfg: LussAeConfig,
        weights: Mapping[str, float] | None = None,
        calibration: Mapping[str, tuple[float, float]] | None = None,
        num_frames: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Eq. 15 on rescaled scores: ``alpha_vcr * A_VCR + alpha_ffp * A_FFP + alpha_prp * A_PRP``.

        Without ``calibration`` each task score is rescaled per video (eq. 16: median and 1-99 percentile
        range for ``cfg.rescale``; ``cfg.prp_rescale`` for PRP). With it, the given ``(centre, scale)`` of each
        raw column (``vcr_<error>``, ``ffp_<error>``, ``prp``) is used instead, so a quiet video stays quiet.
        Rows sharing a frame are averaged first. ``weights`` may override ``{"vcr", "ffp", "prp"}``; a task
        weighted 0 is skipped.
        """
        alphas = {"vcr": cfg.alpha_vcr, "ffp": cfg.alpha_ffp, "prp": cfg.alpha_prp}
        unknown = set(weights or {}) - set(alphas)
        if unknown:
            raise ValueError(f"unknown LUSS-AE fusion weights {sorted(unknown)}; expected a subset of {_TASKS}")
        alphas.update(weights or {})
        frame_idx = np.asarray(scores["frame_idx"], dtype=np.int64)
        frames, inverse = np.unique(frame_idx, return_inverse=True)
        total = np.zeros(len(frames), dtype=np.float64)
        if len(frames) == 0:
            return frames, total
        counts = np.bincount(inverse, minlength=len(frames))
        for task in _TASKS:
            if alphas[task] == 0:
                continue  # a switched-off task needs neither its column nor its calibration
            column = "prp" if task == "prp" else f"{task}_{cfg.error}"
            if column not in scores:
                raise KeyError(f"LUSS-AE fusion needs score column {column!r}; got {sorted(scores)}")
            values = np.bincount(inverse, weights=np.asarray(scores[column], np.float64), minlength=len(frames))
            values /= counts
            if calibration is not None:
                if column not in calibration:
                    raise KeyError(f"calibration has no entry for {column!r}; it has {sorted(calibration)}")
                centre, scale = calibration[column]
            elif (cfg.prp_rescale if task == "prp" else cfg.rescale) == "robust":
                centre, scale = ops.robust_stats(values, cfg.robust_percentiles)
            else:
                centre, scale = ops.minmax_stats(values)
            total += float(alphas[task]) * ops.rescale(values, centre, scale)
        return frames, total


def _window_outputs(
    model: nn.Module, frames: torch.Tensor, cfg: LussAeConfig
) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
    """Run the model on every 17-frame window (stride 1) of one segment, ``score_batch_size`` windows at a time.

    ``frames`` is ``(n, H, W)`` uint8 on the model's device; windows are views built there and converted to
    float per batch. Yields ``(inputs (b,1,T,H,W), target (b,1,1,H,W), model output)`` in [-1, 1] units.
    """
    windows = frames.unfold(0, cfg.clip_len + 1, 1).permute(0, 3, 1, 2)  # (n-T, T+1, H, W) view
    amp = _AUTOCAST_DTYPES.get(cfg.autocast)
    for i in range(0, len(windows), cfg.score_batch_size):
        clip = _to_unit_range(windows[i : i + cfg.score_batch_size]).unsqueeze(1)  # (b,1,T+1,H,W)
        inputs, target = clip[:, :, : cfg.clip_len], clip[:, :, cfg.clip_len :]
        with torch.autocast(frames.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(inputs)
        yield inputs, target, out


def _segments(rows: Mapping[str, np.ndarray], cfg: LussAeConfig) -> Iterator[tuple[str, int, np.ndarray]]:
    """Yield ``(video_id, start_frame, frames [n, H, W] uint8)`` for every row of a clip-store batch."""
    for key in ("video_id", "start_frame", "frames"):
        if key not in rows:
            raise KeyError(f"clip-store rows lack column {key!r}; got {sorted(rows)}")
    for video_id, start, frames in zip(rows["video_id"], rows["start_frame"], rows["frames"], strict=True):
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 1:
            raise ValueError(
                f"LUSS-AE needs grayscale uint8 frames [n, H, W, 1]; video {video_id!r} has "
                f"{frames.dtype} {frames.shape}"
            )
        if frames.shape[1:3] != (cfg.height, cfg.width):
            raise ValueError(
                f"video {video_id!r} frames are {frames.shape[1]}x{frames.shape[2]}, config expects "
                f"{cfg.height}x{cfg.width}; set height/width to the clip store's frame size"
            )
        yield str(video_id), int(start), frames[..., 0]

