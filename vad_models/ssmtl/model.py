"""SSMTL networks: the shared 3D CNN of Table 1 and the four prediction heads of §3.2.

Shared 3D CNN (input ``(N, 3, T, 64, 64)``, RGB in [0, 1]); every conv is 3x3x3, padding "same", stride 1,
followed by BatchNorm and ReLU; max-pooling is spatial only (1x2x2) except the last one, which also pools over
the whole time axis, so each task may use its own ``T`` (7 frames for the arrow of time and motion irregularity,
6 for the middle box, 1 for distillation)::

    shallow: conv a | pool | conv b | pool | conv b | pool+time            -> (N, b, 8, 8)
    deep:    conv a, conv a | pool | conv b, conv b | pool | conv b | pool | conv b | pool+time  -> (N, b, 4, 4)
    narrow: (a, b) = (16, 32); wide: (32, 64)

Batch norm keeps running statistics of the longest training sequences only (the 7-frame windows), see
:func:`_frozen_running_stats`.

Heads (2D only): the arrow-of-time, irregularity and distillation heads are conv3x3(32)+ReLU, 2x2 max-pool,
dense (2, 2 and ``teacher_dim + num_classes`` units); the middle-box decoder has one nearest-neighbour 2x
upsampling per pooling layer and one 3x3 conv per 3D conv layer, the last with 3 filters (RGB).

Example:
    >>> import torch
    >>> net = SsmtlNet(encoder_stages("shallow_narrow"), tasks=("arrow", "middle"))
    >>> out = net(arrow=torch.rand(2, 3, 7, 64, 64), middle=torch.rand(2, 3, 6, 64, 64))
    >>> out["arrow"].shape, out["middle"].shape
    (torch.Size([2, 2]), torch.Size([2, 3, 64, 64]))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["ClassifierHead", "MiddleBoxDecoder", "Shared3DCNN", "SsmtlNet", "encoder_stages"]


def encoder_stages(variant: str, narrow_filters: tuple[int, int] = (16, 32)) -> tuple[tuple[int, ...], ...]:
    """Conv filters of each pooling stage of a Table 1 variant.

    Args:
        variant: ``shallow_narrow``, ``shallow_wide``, ``deep_narrow`` or ``deep_wide``.
        narrow_filters: ``(first, later)`` filters of the narrow nets; wide nets double both.

    Returns:
        One tuple of conv widths per max-pooling layer (the stage's convs run before its pooling).

    Example:
        >>> encoder_stages("deep_wide")
        ((32, 32), (64, 64), (64,), (64,))
    """
    depth, _, width = variant.partition("_")
    if depth not in ("shallow", "deep") or width not in ("narrow", "wide"):
        raise ValueError(f"unknown variant {variant!r}; expected shallow|deep _ narrow|wide")
    a, b = (f * (2 if width == "wide" else 1) for f in narrow_filters)
    if depth == "shallow":
        return ((a,), (b,), (b,))
    return ((a, a), (b, b), (b,), (b,))


def _conv3d_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


class Shared3DCNN(nn.Module):
    """The shared 3D CNN of Table 1 (BN makes the conv bias redundant, so convs have none)."""

    def __init__(self, stages: Sequence[Sequence[int]], in_channels: int = 3) -> None:
        super().__init__()
        if not stages or any(not s for s in stages):
            raise ValueError(f"stages must be non-empty lists of conv widths, got {stages}")
        blocks, cin = [], in_channels
        for stage in stages:
            layers: list[nn.Module] = []
            for cout in stage:
                layers += _conv3d_bn_relu(cin, cout)
                cin = cout
            layers.append(nn.MaxPool3d((1, 2, 2)))  # spatial 2x2 pooling, stride 2
            blocks.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*blocks)
        self.in_channels = in_channels
        self.out_channels = cin
        self.num_pools = len(stages)
        self.num_convs = sum(len(s) for s in stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode object-centric sequences.

        Args:
            x: ``(N, C, T, H, W)`` with ``H`` and ``W`` divisible by ``2 ** num_pools``; any ``T >= 1``.

        Returns:
            ``(N, C', H / 2**P, W / 2**P)``: the last pooling also takes the maximum over time (Table 1, ":").
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        factor = 2**self.num_pools
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"H and W must be divisible by {factor}, got {tuple(x.shape[-2:])}")
        x = self.stages(x)  # (N, C', T, H/2^P, W/2^P)
        return x.amax(dim=2)  # global temporal max-pooling -> (N, C', H/2^P, W/2^P)


class ClassifierHead(nn.Module):
    """Arrow-of-time / irregularity / distillation head: conv3x3 + ReLU, 2x2 max-pool, dropout, dense."""

    def __init__(self, in_channels: int, spatial: int, out_features: int, filters: int = 32, dropout: float = 0.0):
        super().__init__()
        if spatial < 2 or spatial % 2:
            raise ValueError(f"head input must be an even spatial size >= 2, got {spatial}")
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, filters, 3, padding=1),  # (N, filters, s, s)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, filters, s/2, s/2)
            nn.Flatten(),  # (N, filters * s^2 / 4)
            nn.Dropout(dropout),
            nn.Linear(filters * (spatial // 2) ** 2, out_features),  # (N, out_features)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C, s, s)`` encoder features -> ``(N, out_features)`` logits (or regression outputs)."""
        return self.layers(features)


class MiddleBoxDecoder(nn.Module):
    """Middle-box head (§3.2): nearest 2x upsampling per pooling layer, one 3x3 conv per 3D conv layer.

    The encoder stages are mirrored (deep: ``up, conv, up, conv, up, conv, conv, up, conv, conv``); all convs
    but the last have ``filters`` channels with BN + ReLU, the last has 3 with a sigmoid (pixels in [0, 1]).
    """

    def __init__(self, in_channels: int, stages: Sequence[Sequence[int]], filters: int = 32, out_channels: int = 3):
        super().__init__()
        convs = [len(s) for s in reversed(stages)]
        layers: list[nn.Module] = []
        cin, remaining = in_channels, sum(convs)
        for count in convs:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            for _ in range(count):
                remaining -= 1
                if remaining == 0:
                    layers += [nn.Conv2d(cin, out_channels, 3, padding=1), nn.Sigmoid()]
                else:
                    layers += [nn.Conv2d(cin, filters, 3, padding=1, bias=False), nn.BatchNorm2d(filters)]
                    layers.append(nn.ReLU(inplace=True))
                    cin = filters
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C, s, s)`` encoder features -> ``(N, 3, s * 2**P, s * 2**P)`` reconstructed middle box."""
        return self.layers(features)


class SsmtlNet(nn.Module):
    """Shared 3D CNN plus one head per trained task (heads of tasks not trained are not built).

    Args:
        stages: Conv widths per pooling stage (see :func:`encoder_stages`).
        tasks: Trained tasks among ``arrow``, ``irregularity``, ``middle``, ``distill``.
        crop_size: Input height and width.
        distill_dim: Output units of the distillation head (teacher features + detector classes).
        head_filters: Filters of the heads' 2D convs.
        head_dropout: Dropout of the arrow-of-time and irregularity heads.
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]],
        tasks: Sequence[str] = ("arrow", "irregularity", "middle", "distill"),
        crop_size: int = 64,
        distill_dim: int = 1080,
        head_filters: int = 32,
        head_dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.encoder = Shared3DCNN(stages)
        self.tasks = tuple(tasks)
        self.crop_size = crop_size
        spatial, width = crop_size // 2 ** len(stages), self.encoder.out_channels
        heads: dict[str, nn.Module] = {}
        if "arrow" in self.tasks:
            heads["arrow"] = ClassifierHead(width, spatial, 2, head_filters, head_dropout)
        if "irregularity" in self.tasks:
            heads["irregularity"] = ClassifierHead(width, spatial, 2, head_filters, head_dropout)
        if "middle" in self.tasks:
            heads["middle"] = MiddleBoxDecoder(width, stages, head_filters)
        if "distill" in self.tasks:
            heads["distill"] = ClassifierHead(width, spatial, distill_dim, head_filters, 0.0)
        self.heads = nn.ModuleDict(heads)

    def forward(
        self,
        arrow: torch.Tensor | None = None,
        irregularity: torch.Tensor | None = None,
        middle: torch.Tensor | None = None,
        distill: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run each given task input through the shared encoder and that task's head.

        Args:
            arrow: ``(N, 3, 2t+1, S, S)`` forward or backward sequences.
            irregularity: ``(N, 3, 2t+1, S, S)`` consecutive or intermittent sequences (may be ``arrow`` itself,
                e.g. at inference, which encodes it once).
            middle: ``(N, 3, 2t, S, S)`` sequences without their middle frame.
            distill: ``(N, 3, 1, S, S)`` middle frames (the teachers' input).

        Returns:
            Task name -> output for each given input: ``arrow`` and ``irregularity`` ``(N, 2)`` logits,
            ``middle`` ``(N, 3, S, S)`` in [0, 1], ``distill`` ``(N, distill_dim)``.
        """
        inputs = {"arrow": arrow, "irregularity": irregularity, "middle": middle, "distill": distill}
        given = {k: v for k, v in inputs.items() if v is not None}
        for name, x in given.items():
            if name not in self.heads:
                raise ValueError(f"task {name!r} was not trained by this model (tasks: {list(self.tasks)})")
            if x.ndim != 5 or tuple(x.shape[-2:]) != (self.crop_size, self.crop_size):
                raise ValueError(f"{name} input must be (N, 3, T, {self.crop_size}, {self.crop_size}), got {x.shape}")
        longest = max((x.shape[2] for x in given.values()), default=0)
        features: dict[str, torch.Tensor] = {}
        if arrow is not None and irregularity is not None:
            if irregularity is arrow:
                features["arrow"] = features["irregularity"] = self.encoder(arrow)
            elif arrow.shape == irregularity.shape:  # one encoder pass for both 7-frame batches
                both = self.encoder(torch.cat([arrow, irregularity]))
                features["arrow"], features["irregularity"] = both.split(arrow.shape[0])
        for name, x in given.items():
            if name not in features:
                with _frozen_running_stats(self.encoder, self.training and x.shape[2] < longest):
                    features[name] = self.encoder(x)
        return {name: self.heads[name](feat) for name, feat in features.items()}


@contextmanager
def _frozen_running_stats(module: nn.Module, frozen: bool) -> Iterator[None]:
    """Let ``module``'s batch-norm layers normalise with batch statistics without updating their running ones.

    The shared encoder sees sequences of several lengths per training step (7 frames for the arrow of time and
    motion irregularity, 6 for the middle box, 1 for distillation); zero-padded 3x3x3 convolutions give very
    different activation statistics for 1 and 7 frames. If every pass fed the running statistics, inference
    would normalise 7-frame windows with a mixture dominated by the last (1-frame) pass. Measured on the demo
    preset (one trained model): the test objects' mean p(intermittent) was 0.92 and the micro AUROC 0.78; with
    running statistics re-estimated on 7-frame windows, 0.31 and 0.92. Only the passes of the longest sequences
    (the 7-frame windows that inference feeds to the arrow and irregularity heads) update them. The paper
    (Table 1: BN after every conv) does not say how its shared BN statistics are kept; this is that choice.
    """
    if not frozen:
        yield
        return
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
