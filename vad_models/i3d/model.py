"""ResNet-50 I3D (inflated 3D ResNet) returning 2048-d snippet features.

Layer list (REFERENCE.md §2; the Kinetics "I3D baseline" of the non-local paper, as RTFM's features use it):
conv1 3→64 k(5,7,7) s(2,2,2) → maxpool (2,3,3) s2 → layer1 (3 bottlenecks) → temporal maxpool (2,1,1) →
layer2 [4] s2 → layer3 [6] s2 → layer4 [3] s2 → AdaptiveAvgPool3d(1). A bottleneck's first conv is (3,1,1)
where the inflation pattern has a 1 and (1,1,1) otherwise; strides ≥ layer2 are spatial only.

Parameter names follow the torchvision/pytorch-resnet3d convention (``conv1``, ``bn1``, ``layerL.B.conv1``,
``layerL.B.downsample.0`` …), so such state dicts load directly; :mod:`vad_models.i3d.weights` converts the
caffe2 blob names. There is no classifier: the model ends at the pooled features.

Random features (``--random-init``, tests and demos only): :func:`init_random_features` draws every conv filter
bank as a seeded scaled orthogonal matrix (Saxe et al., 2014; gain √2 for ReLU) with batch norm at its identity
defaults. The constructor's Kaiming ``fan_out`` initialisation is a training recipe, not a feature extractor: with
batch norm at identity, the pooled features of six seeds had norms from 37 to 185 at base width 8 on the synthetic
corpus (3 to 10 with orthogonal filters), and the seed decided more of what a detector learns from them (MT-VAE
baseline micro AUROC down to 0.67 over 3 corpus x 6 backbone seeds, against 0.70 or more with orthogonal filters,
at the same mean of 0.77).

Example:
    >>> import torch
    >>> net = I3DResNet50(base_channels=8).eval()
    >>> net(torch.zeros(2, 3, 16, 64, 64)).shape
    torch.Size([2, 256])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BLOCKS", "INFLATION", "RANDOM_INIT_SCHEME", "Bottleneck3d", "I3DResNet50", "init_random_features"]

BLOCKS = (3, 4, 6, 3)
# 1 = the bottleneck's first conv is (3,1,1) (temporal), 0 = (1,1,1).
INFLATION = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))
EXPANSION = 4
MIN_FRAMES = 8  # conv1, maxpool1 and maxpool2 each halve time
# Recorded in a feature store's metadata next to "random-init" and the seed (see init_random_features).
RANDOM_INIT_SCHEME = "orthogonal conv filters (gain sqrt(2)), batch norm at identity (eval mode, default statistics)"


class Bottleneck3d(nn.Module):
    """1×1 (optionally 3×1×1) → 1×3×3 (spatial stride) → 1×1 bottleneck with a residual connection."""

    def __init__(self, in_channels: int, planes: int, stride: int, temporal: bool) -> None:
        super().__init__()
        kt = 3 if temporal else 1
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv3d(in_channels, planes, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class I3DResNet50(nn.Module):
    """ResNet-50 I3D feature extractor.

    Args:
        base_channels: Stem width; 64 is the published network (2048-d output). Smaller widths keep the layer
            list (tests, smoke runs).
    """

    def __init__(self, base_channels: int = 64) -> None:
        super().__init__()
        c = base_channels
        self.feature_dim = c * 8 * EXPANSION
        self.conv1 = nn.Conv3d(3, c, (5, 7, 7), stride=(2, 2, 2), padding=(2, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool1 = nn.MaxPool3d((2, 3, 3), stride=(2, 2, 2))
        self.maxpool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))
        self.layer1 = self._make_layer(c, c, stride=1, inflation=INFLATION[0])
        self.layer2 = self._make_layer(c * 4, c * 2, stride=2, inflation=INFLATION[1])
        self.layer3 = self._make_layer(c * 8, c * 4, stride=2, inflation=INFLATION[2])
        self.layer4 = self._make_layer(c * 16, c * 8, stride=2, inflation=INFLATION[3])
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_layer(in_channels: int, planes: int, stride: int, inflation: tuple[int, ...]) -> nn.Sequential:
        blocks = [Bottleneck3d(in_channels, planes, stride, bool(inflation[0]))]
        blocks += [Bottleneck3d(planes * EXPANSION, planes, 1, bool(t)) for t in inflation[1:]]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of normalised clips.

        Args:
            x: ``(N, 3, T, H, W)`` float clips, T ≥ 8 (16 for the published snippets), H, W ≥ 32.

        Returns:
            ``(N, 32·base_channels)`` features (``(N, 2048)`` for the published network).
        """
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3DResNet50 expects (N, 3, T, H, W) clips, got shape {tuple(x.shape)}")
        if x.shape[2] < MIN_FRAMES or min(x.shape[3:]) < 32:
            raise ValueError(f"I3DResNet50 needs T >= {MIN_FRAMES} and H, W >= 32, got shape {tuple(x.shape)}")
        x = self.maxpool1(self.relu(self.bn1(self.conv1(x))))  # (N, 64, T/4, 55, 55) for 16×224²
        x = self.maxpool2(self.layer1(x))  # (N, 256, T/8, 55, 55)
        x = self.layer2(x)  # (N, 512, T/8, 28, 28)
        x = self.layer3(x)  # (N, 1024, T/8, 14, 14)
        x = self.layer4(x)  # (N, 2048, T/8, 7, 7)
        return self.avgpool(x).flatten(1)  # (N, 2048)


def init_random_features(model: I3DResNet50, seed: int) -> I3DResNet50:
    """Re-draw ``model``'s filters as seeded random features (:data:`RANDOM_INIT_SCHEME`); returns ``model``.

    Every ``Conv3d`` weight, viewed as ``(out, in·kt·kh·kw)``, becomes a scaled orthogonal matrix (orthonormal
    rows or columns times √2, the ReLU gain), drawn in module order from ``torch.manual_seed(seed)`` without
    touching the caller's RNG. Batch norm keeps weight 1, bias 0, running mean 0 and variance 1, i.e. the
    identity in eval mode, so the network is a fixed random ReLU network. Deterministic per seed and base width.

    Example:
        >>> net = init_random_features(I3DResNet50(base_channels=2), seed=0)
        >>> w = net.conv1.weight.flatten(1)  # (2, 3·5·7·7): orthogonal rows of norm √2
        >>> torch.allclose(w @ w.T, 2 * torch.eye(2), atol=1e-5)
        True
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.orthogonal_(m.weight, gain=nn.init.calculate_gain("relu"))
            elif isinstance(m, nn.BatchNorm3d):
                m.reset_parameters()  # weight 1, bias 0, running mean 0, running variance 1
    return model
