"""STD networks (Chang et al., "Video anomaly detection with spatio-temporal dissociation", PR 2022, §3.2-3.5).

Two streams over a clip of ``T = 5`` RGB frames in ``[0, 1]``:

- the spatial autoencoder (§3.2, Fig. 2) reconstructs the first frame (FIF) from ``z_a``;
- the motion U-Net autoencoder (§3.3, Fig. 4) reads the first four frames stacked on channels (12) and predicts
  the RGB difference ``x_lif - x_fif`` from ``z_m``, with the variance attention of §3.4 after every encoder
  block.

The predicted last frame is ``x̄_fif + x̄_diff`` (§3.7). ``z_a`` and ``z_m`` (both ``(N, 8b, H/8, W/8)``) are
concatenated per position and normalised into ``[0, 1]`` to give the representation ``r`` that the deep K-means
centres (a parameter of :class:`StdModel`) cluster.

Example:
    >>> import torch
    >>> from vad_models.std.config import StdConfig
    >>> model = StdModel(StdConfig(height=32, width=32, base_channels=4, num_clusters=2))
    >>> out = model(torch.rand(2, 3, 4, 32, 32))
    >>> tuple(out.pred_last.shape), tuple(out.representation.shape)
    ((2, 3, 32, 32), (2, 64, 4, 4))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vad_models.std.config import StdConfig

__all__ = [
    "MotionAutoencoder",
    "ResBlock",
    "SpatialAutoencoder",
    "StdModel",
    "StdOutput",
    "UpBlock",
    "VarianceAttention",
]

RGB = 3


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """ResNet basic block with its BatchNorms removed (§3.2, §3.3) and LeakyReLU instead of ReLU.

    ``act(conv3x3(act(conv3x3_s(x))) + shortcut(x))``; the shortcut is a strided 1x1 conv when the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, negative_slope: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(in_channels, out_channels, stride),
            nn.LeakyReLU(negative_slope),
            _conv3x3(out_channels, out_channels),
        )
        same = stride == 1 and in_channels == out_channels
        self.shortcut = nn.Identity() if same else nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, H / stride, W / stride)``."""
        return self.act(self.body(x) + self.shortcut(x))


class UpBlock(nn.Module):
    """Decoder block: pixel shuffle x2 in place of the strided conv (§3.2), optional U-Net skip, then a ResBlock.

    ``(N, C_in, H, W)`` -> PixelShuffle -> ``(N, C_in / 4, 2H, 2W)`` -> concat skip ``(N, C_skip, 2H, 2W)``
    -> ResBlock -> ``(N, C_out, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float, skip_channels: int = 0) -> None:
        super().__init__()
        if in_channels % 4:
            raise ValueError(f"pixel shuffle x2 needs a multiple of 4 input channels, got {in_channels}")
        self.shuffle = nn.PixelShuffle(2)
        self.block = ResBlock(in_channels // 4 + skip_channels, out_channels, 1, negative_slope)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Upsample ``x`` two-fold, concatenate ``skip`` (same output resolution) and refine."""
        x = self.shuffle(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.block(x)


class VarianceAttention(nn.Module):
    """Variance attention of §3.4 (eqs. 7-9, Fig. 5), placed after every motion-encoder block.

    ``f = W_g * z`` (eq. 7, a 1x1 conv embedding); ``v(h, w)`` is the variance of ``f`` over its ``D`` channels
    (eq. 8; the paper writes the per-channel deviation with ``||.||_2``, read literally an absolute value, while the
    text and the released code take the variance, which we follow); ``att`` is the softmax of ``v`` over the
    spatial positions, l2-normalised over those positions (eq. 9). The paper does not say how ``att`` re-weights
    the features; like the released code we multiply by ``exp(att)``, which keeps every weight in ``(1, e]``
    (no feature is suppressed, fast-moving positions are amplified). The released code also average-pools the
    features (8, 4, 2) before the variance; the paper does not, so neither do we.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(channels, channels, kernel_size=1)

    def attention_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial softmax of the channel variance and the attention map of eq. 9.

        Args:
            x: ``(N, C, H, W)`` motion features.

        Returns:
            ``(weights, att)``, both ``(N, 1, H, W)``: ``weights`` (the softmax of eq. 9) sums to 1 over the
            ``H x W`` positions of each sample; ``att`` is ``weights`` with unit l2 norm over the positions.
        """
        n, _, h, w = x.shape
        f = self.embed(x)  # (N, D, H, W), eq. 7
        v = f.var(dim=1, unbiased=False)  # (N, H, W), eq. 8
        weights = torch.softmax(v.reshape(n, h * w), dim=1)  # (N, H*W), eq. 9 inner part
        att = F.normalize(weights, p=2.0, dim=1)  # (N, H*W), eq. 9 outer l2 norm
        return weights.view(n, 1, h, w), att.view(n, 1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C, H, W)`` re-weighted by ``exp(att)``."""
        if x.ndim != 4:
            raise ValueError(f"VarianceAttention expects (N, C, H, W), got shape {tuple(x.shape)}")
        _, att = self.attention_map(x)
        return x * torch.exp(att)


class SpatialAutoencoder(nn.Module):
    """Spatial stream ``E_a``/``D_a`` (§3.2, eqs. 1-2, Fig. 2) reconstructing the first frame.

    Encoder: stem conv (b) -> three ResBlocks at stride 2 (2b, 4b, 8b), each *followed* by BatchNorm (the paper
    moves the block's BNs after it; the released code puts them before) -> 3x3 projection with ReLU, so that
    ``z_a >= 0`` (the clustered representation lies in ``[0, 1]`` after normalisation). Decoder: three
    pixel-shuffle UpBlocks (8b, 4b, 2b) and a 3x3 conv to RGB (released code: 256 -> 256 -> 128 -> 64 -> 3).
    """

    def __init__(self, base_channels: int, negative_slope: float) -> None:
        super().__init__()
        b, slope = base_channels, negative_slope
        self.encoder = nn.Sequential(
            _conv3x3(RGB, b),  # (N, b, H, W)
            nn.LeakyReLU(slope),
            ResBlock(b, 2 * b, 2, slope),  # (N, 2b, H/2, W/2)
            nn.BatchNorm2d(2 * b),
            ResBlock(2 * b, 4 * b, 2, slope),  # (N, 4b, H/4, W/4)
            nn.BatchNorm2d(4 * b),
            ResBlock(4 * b, 8 * b, 2, slope),  # (N, 8b, H/8, W/8)
            nn.BatchNorm2d(8 * b),
            _conv3x3(8 * b, 8 * b),  # z_a: (N, 8b, H/8, W/8)
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            UpBlock(8 * b, 8 * b, slope),  # (N, 8b, H/4, W/4)
            UpBlock(8 * b, 4 * b, slope),  # (N, 4b, H/2, W/2)
            UpBlock(4 * b, 2 * b, slope),  # (N, 2b, H, W)
            _conv3x3(2 * b, RGB),  # (N, 3, H, W)
        )

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` first frame -> ``(z_a (N, 8b, H/8, W/8), reconstruction (N, 3, H, W))``."""
        z = self.encoder(frame)
        return z, self.decoder(z)


class MotionAutoencoder(nn.Module):
    """Motion stream ``E_m``/``D_m`` (§3.3, eqs. 4-5, Fig. 4): a U-Net without BatchNorm predicting ``x̄_diff``.

    Encoder: stem conv (b) -> three [ResBlock stride 2, VarianceAttention] stages (2b, 4b, 8b) -> 3x3 projection
    with ReLU (``z_m >= 0``). Decoder: three pixel-shuffle UpBlocks, each concatenating the encoder feature of
    its output resolution (stage 2, stage 1, stem), then a 3x3 conv to RGB with no activation (a difference of
    frames lies in ``[-1, 1]``).
    """

    def __init__(self, in_frames: int, base_channels: int, negative_slope: float) -> None:
        super().__init__()
        b, slope = base_channels, negative_slope
        self.stem = nn.Sequential(_conv3x3(RGB * in_frames, b), nn.LeakyReLU(slope))  # (N, b, H, W)
        self.stages = nn.ModuleList(
            nn.Sequential(ResBlock(c_in, c_out, 2, slope), VarianceAttention(c_out))
            for c_in, c_out in ((b, 2 * b), (2 * b, 4 * b), (4 * b, 8 * b))
        )  # (N, 2b, H/2, W/2), (N, 4b, H/4, W/4), (N, 8b, H/8, W/8)
        self.project = nn.Sequential(_conv3x3(8 * b, 8 * b), nn.ReLU())  # z_m: (N, 8b, H/8, W/8)
        self.ups = nn.ModuleList(
            [
                UpBlock(8 * b, 4 * b, slope, skip_channels=4 * b),  # (N, 4b, H/4, W/4)
                UpBlock(4 * b, 2 * b, slope, skip_channels=2 * b),  # (N, 2b, H/2, W/2)
                UpBlock(2 * b, b, slope, skip_channels=b),  # (N, b, H, W)
            ]
        )
        self.head = _conv3x3(b, RGB)  # (N, 3, H, W)

    def encode(self, stacked: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(N, 3 (T-1), H, W)`` -> ``z_m`` and the skip features ``[stem, stage 1, stage 2]``."""
        skips = [self.stem(stacked)]
        x = skips[0]
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return self.project(x), skips[:-1]

    def forward(self, stacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3 (T-1), H, W)`` stacked frames -> ``(z_m (N, 8b, H/8, W/8), x̄_diff (N, 3, H, W))``."""
        z, skips = self.encode(stacked)
        x = z
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return z, self.head(x)


class StdOutput(NamedTuple):
    """What :class:`StdModel` returns (all float tensors)."""

    recon_first: torch.Tensor
    """``(N, 3, H, W)``: the spatial reconstruction ``x̄_fif`` of the first frame (eq. 2)."""
    diff: torch.Tensor
    """``(N, 3, H, W)``: the predicted RGB difference ``x̄_diff`` (eq. 5)."""
    pred_last: torch.Tensor
    """``(N, 3, H, W)``: the predicted last frame ``x̄_lif = x̄_fif + x̄_diff`` (§3.7)."""
    representation: torch.Tensor
    """``(N, D, H/8, W/8)``: ``r``, the concatenated ``z_a, z_m`` normalised into ``[0, 1]`` (§3.5)."""


class StdModel(nn.Module):
    """Both STD streams plus the deep K-means centres ``C`` (``(K, D)``, a parameter so checkpoints hold them).

    ``r`` is normalised into ``[0, 1]`` (§3.5 gives no formula) by l2-normalising the non-negative concatenation
    ``[z_a, z_m]`` at each position, as the released code does: every component then lies in ``[0, 1]`` and
    every distance to a centre in ``[0, 2]``. (The released code also l1-normalises ``z_a`` before the spatial
    decoder; the paper does not, so neither do we.) The ``centres_initialised`` buffer records whether the K-means
    initialisation has run (:meth:`set_centres`).
    """

    def __init__(self, cfg: StdConfig) -> None:
        super().__init__()
        self.in_frames = cfg.clip_length - 1
        self.spatial = SpatialAutoencoder(cfg.base_channels, cfg.negative_slope)
        self.motion = MotionAutoencoder(self.in_frames, cfg.base_channels, cfg.negative_slope)
        self.centres = nn.Parameter(torch.zeros(cfg.num_clusters, cfg.representation_channels))
        self.register_buffer("centres_initialised", torch.tensor(False))

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of both streams (everything except the cluster centres)."""
        return [p for name, p in self.named_parameters() if name != "centres"]

    @torch.no_grad()
    def set_centres(self, centres: torch.Tensor) -> None:
        """Copy ``centres`` (``(K, D)``) into the parameter in place (optimizers keep their reference)."""
        if tuple(centres.shape) != tuple(self.centres.shape):
            raise ValueError(f"centres must have shape {tuple(self.centres.shape)}, got {tuple(centres.shape)}")
        self.centres.copy_(centres.to(self.centres))
        self.centres_initialised.fill_(True)

    def _check(self, frames: torch.Tensor) -> None:
        if frames.ndim != 5 or frames.shape[1] != RGB or frames.shape[2] != self.in_frames:
            raise ValueError(
                f"StdModel expects (N, 3, {self.in_frames}, H, W) RGB input frames, got shape {tuple(frames.shape)}"
            )
        if frames.shape[-1] % 8 or frames.shape[-2] % 8:
            raise ValueError(f"frame height and width must be multiples of 8, got {tuple(frames.shape[-2:])}")

    def _streams_inputs(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, t, h, w = frames.shape
        # contiguous: a channels-last view (clips are permuted uint8 batches) crashed the backward pass of
        # oneDNN CPU convolutions (torch 2.13, heap corruption at 64x64 with base_channels=8)
        first = frames[:, :, 0].contiguous()  # (N, 3, H, W)
        stacked = frames.transpose(1, 2).reshape(n, RGB * t, h, w)  # (N, 3T, H, W), frame-major
        return first, stacked

    @staticmethod
    def _normalise(z_a: torch.Tensor, z_m: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.cat([z_a, z_m], dim=1), p=2.0, dim=1)  # (N, D, H/8, W/8) in [0, 1]

    def representation(self, frames: torch.Tensor) -> torch.Tensor:
        """Encoders only: ``(N, 3, T-1, H, W)`` -> ``r`` ``(N, D, H/8, W/8)`` (K-means initialisation)."""
        self._check(frames)
        first, stacked = self._streams_inputs(frames)
        z_m, _ = self.motion.encode(stacked)
        return self._normalise(self.spatial.encoder(first), z_m)

    def forward(self, frames: torch.Tensor) -> StdOutput:
        """Run both streams.

        Args:
            frames: ``(N, C=3, T-1, H, W)`` float input frames in ``[0, 1]`` (the clip without its last frame).

        Returns:
            :class:`StdOutput` with ``(N, 3, H, W)`` images and the ``(N, D, H/8, W/8)`` representation.

        Raises:
            ValueError: on a shape other than ``(N, 3, T-1, H, W)`` with ``H, W`` multiples of 8.
        """
        self._check(frames)
        first, stacked = self._streams_inputs(frames)
        z_a, recon_first = self.spatial(first)  # (N, 8b, H/8, W/8), (N, 3, H, W)
        z_m, diff = self.motion(stacked)  # (N, 8b, H/8, W/8), (N, 3, H, W)
        return StdOutput(recon_first, diff, recon_first + diff, self._normalise(z_a, z_m))
