"""LUSS-AE network: MemAE's 3D conv autoencoder with a future-frame head and a playback-rate head.

Lohani et al., "Leveraging Unsupervised and Self-Supervised Learning for Video Anomaly Detection", VISAPP 2023,
Fig. 1 and §4.3; the autoencoder is the 3DCAE of Gong et al. (ICCV 2019). Shapes below are for the paper's
``(N, 1, 16, 256, 256)`` input; any ``H, W`` divisible by 16 works.

Parameter counts at the defaults: encoder 2,990,784 + decoder 2,990,017 = 5,980,801 ("3DCAE 5.98M"); with the
FFP head (28), the PRP conv (73,760) and MLP (69,858): 6,124,447 ("LUSS-AE 6.12M", Table 6). The paper
calls the FFP head "a single 2D convolution"; the released code's Conv3d with a temporal stride of T (28
parameters) is what reproduces the published count, so that is what is built here. It reads the decoder
output before the tanh, ``H_FFP(Dec(Enc(X)))`` (§3.1.2).

Example:
    >>> import torch
    >>> from vad_models.luss_ae.config import LussAeConfig
    >>> model = LussAe(LussAeConfig(height=32, width=32)).eval()
    >>> out = model(torch.zeros(2, 1, 16, 32, 32))
    >>> tuple(out.recon.shape), tuple(out.pred.shape), tuple(out.logits.shape)
    ((2, 1, 16, 32, 32), (2, 1, 1, 32, 32), (2, 2))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vad_models.luss_ae.config import LussAeConfig

__all__ = ["Decoder3d", "Encoder3d", "FfpHead", "LussAe", "LussAeOutput", "PrpHead"]

# (T, H, W) strides of the four encoder convs; the decoder mirrors them.
_STRIDES = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))


class Encoder3d(nn.Sequential):
    """Four Conv3d(k3, p1) + BatchNorm3d + LeakyReLU blocks: ``(N, C, T, H, W) -> (N, 256, T/8, H/16, W/16)``."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], slope: float) -> None:
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip((in_channels, *widths[:-1]), widths, _STRIDES, strict=True):
            # (N,1,16,256,256) -> (N,96,16,128,128) -> (N,128,8,64,64) -> (N,256,4,32,32) -> (N,256,2,16,16)
            layers += [nn.Conv3d(c_in, c_out, 3, stride, padding=1), nn.BatchNorm3d(c_out), nn.LeakyReLU(slope)]
        super().__init__(*layers)


class Decoder3d(nn.Sequential):
    """Mirror of :class:`Encoder3d` with ConvTranspose3d; the last layer has no BN and no activation."""

    def __init__(self, out_channels: int, widths: tuple[int, ...], slope: float) -> None:
        rev = widths[::-1]  # 256, 256, 128, 96
        layers: list[nn.Module] = []
        outs = (*rev[1:], out_channels)
        for i, (c_in, c_out, stride) in enumerate(zip(rev, outs, _STRIDES[::-1], strict=True)):
            # (N,256,2,16,16) -> (N,256,4,32,32) -> (N,128,8,64,64) -> (N,96,16,128,128) -> (N,1,16,256,256)
            out_pad = tuple(s - 1 for s in stride)  # exact x2 upsampling along strided axes
            layers.append(nn.ConvTranspose3d(c_in, c_out, 3, stride, padding=1, output_padding=out_pad))
            if i < len(rev) - 1:
                layers += [nn.BatchNorm3d(c_out), nn.LeakyReLU(slope)]
        super().__init__(*layers)


class FfpHead(nn.Module):
    """Future-frame head ``H_FFP``: Conv3d(C -> C, k3, stride (T, 1, 1), p1) + tanh, ``T`` frames -> 1 frame."""

    def __init__(self, channels: int, clip_len: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, stride=(clip_len, 1, 1), padding=1)

    def forward(self, decoded: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, H, W)`` decoder output (before tanh) -> ``(N, C, 1, H, W)`` in ``[-1, 1]``."""
        return torch.tanh(self.conv(decoded))


class PrpHead(nn.Module):
    """Playback-rate head ``H_PRP`` on the encoder output; returns class logits (softmax is the caller's).

    MaxPool3d(2) -> max over the remaining time axis (a plain squeeze at T=16, where one step is left) ->
    Conv2d(256 -> 32, k3, p1) -> AdaptiveMaxPool2d(4) -> flatten (512) -> Linear 128 -> ReLU -> Linear 32 ->
    ReLU -> Linear 2. At 256x256 the adaptive pool is exactly the original MaxPool2d(2) (8x8 -> 4x4 in
    disjoint 2x2 windows); at other sizes it keeps the 512-d flatten, so the MLP and the parameter count do
    not depend on the frame size. ``ceil_mode`` lets 16x16 frames (a 1x1 encoder map) through the first pool.
    """

    def __init__(self, in_channels: int, conv_channels: int, pool_size: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.pool3d = nn.MaxPool3d(2, ceil_mode=True)
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, padding=1)
        self.pool2d = nn.AdaptiveMaxPool2d(pool_size)
        widths = (conv_channels * pool_size * pool_size, *hidden)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], 2))
        self.mlp = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, 256, T', h, w)`` encoder output -> ``(N, 2)`` logits (class 1 = accelerated)."""
        x = self.pool3d(z).amax(dim=2)  # (N,256,2,16,16) -> (N,256,1,8,8) -> (N,256,8,8)
        x = self.pool2d(self.conv(x))  # (N,32,8,8) -> (N,32,4,4)
        return self.mlp(x.flatten(1))  # (N,512) -> (N,2)


class LussAeOutput(NamedTuple):
    """Outputs of :class:`LussAe`: reconstruction, predicted next frame and playback-rate logits."""

    recon: torch.Tensor
    pred: torch.Tensor
    logits: torch.Tensor


class LussAe(nn.Module):
    """3D conv autoencoder trained jointly on clip reconstruction, future-frame and playback-rate prediction.

    Args:
        cfg: Method configuration (sizes, widths, clip length).
    """

    in_channels = 1  # grayscale clips (§4.3)

    def __init__(self, cfg: LussAeConfig) -> None:
        super().__init__()
        self.clip_len = cfg.clip_len
        self.encoder = Encoder3d(self.in_channels, cfg.encoder_channels, cfg.leaky_slope)
        self.decoder = Decoder3d(self.in_channels, cfg.encoder_channels, cfg.leaky_slope)
        self.ffp_head = FfpHead(self.in_channels, cfg.clip_len)
        self.prp_head = PrpHead(cfg.encoder_channels[-1], cfg.prp_conv_channels, cfg.prp_pool_size, cfg.prp_hidden)

    def _check(self, x: torch.Tensor, name: str) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels or x.shape[2] != self.clip_len:
            raise ValueError(
                f"{name} must be (N, {self.in_channels}, {self.clip_len}, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"{name} height and width must be multiples of 16, got {tuple(x.shape[-2:])}")

    def forward(self, clip: torch.Tensor, rate_clip: torch.Tensor | None = None) -> LussAeOutput:
        """Run all three tasks.

        Args:
            clip: ``(N, 1, T, H, W)`` clip in ``[-1, 1]`` (the VCR/FFP input ``X_VCR``).
            rate_clip: Optional ``(M, 1, T, H, W)`` PRP input ``X_PRP`` (training: a normal or accelerated clip,
                encoded separately, Fig. 1). ``None`` classifies ``clip`` itself, reusing its encoding (scoring).

        Returns:
            :class:`LussAeOutput` with ``recon`` ``(N, 1, T, H, W)`` (tanh), ``pred`` ``(N, 1, 1, H, W)`` (tanh)
            and ``logits`` ``(M or N, 2)``.
        """
        self._check(clip, "clip")
        z = self.encoder(clip)  # (N,256,T/8,H/16,W/16)
        decoded = self.decoder(z)  # (N,1,T,H,W), computed once for both heads
        if rate_clip is None:
            z_rate = z
        else:
            self._check(rate_clip, "rate_clip")
            z_rate = self.encoder(rate_clip)
        return LussAeOutput(torch.tanh(decoded), self.ffp_head(decoded), self.prp_head(z_rate))
