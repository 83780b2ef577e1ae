"""Networks of the MT-VAE pipeline (seed 004): snippet classifier, multi-task VAE, RTFM-style host, container.

Shapes use N videos (or video-crops), T snippets and F feature channels (2048 for ResNet-50 I3D).

Example:
    >>> import torch
    >>> from vad_models.mtvae.config import MtVaeConfig
    >>> net = MtVaeModel(MtVaeConfig(feature_dim=64)).eval()
    >>> net(torch.rand(2, 8, 64)).shape  # host snippet scores in [0, 1]
    torch.Size([2, 8])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vad_models.mtvae.config import MtVaeConfig

__all__ = [
    "MtVaeModel",
    "MultiScaleTemporalNetwork",
    "MultiTaskVae",
    "NonLocalBlock1d",
    "RtfmHost",
    "SnippetClassifier",
]


def _check_features(x: torch.Tensor, dim: int, name: str) -> None:
    if x.ndim < 2 or x.shape[-1] != dim:
        raise ValueError(f"{name} expects (..., {dim}) features, got shape {tuple(x.shape)}")


class SnippetClassifier(nn.Module):
    """φ of §3.1: FC F→h1→h2→1 with ReLU and dropout; returns logits (σ is applied by the losses/scores)."""

    def __init__(self, dim: int, hidden1: int, hidden2: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(
            nn.Linear(dim, hidden1), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden1, hidden2), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden2, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Snippet logits.

        Args:
            x: ``(..., F)`` snippet features.

        Returns:
            ``(...)`` logits.
        """
        _check_features(x, self.dim, "SnippetClassifier")
        return self.net(x).squeeze(-1)


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers between consecutive ``widths`` with ReLU after every layer but the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MultiTaskVae(nn.Module):
    """Shared encoder, a normal and an abnormal decoder (§3.2.3, Fig. 2; widths from §4.1 / Table 5).

    Arch1 = ``dims (1024, 512, 256)``: encoder F→1024→512, heads 512→256 for μ and log σ², decoders
    256→512→1024→F (the encoder's widths reversed).
    """

    def __init__(self, dim: int, dims: tuple[int, ...]) -> None:
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"MultiTaskVae needs at least one hidden width and a latent width, got {dims}")
        hidden, latent = list(dims[:-1]), dims[-1]
        self.dim, self.latent_dim = dim, latent
        self.encoder = nn.Sequential(_mlp([dim, *hidden]), nn.ReLU(inplace=True))  # (n, F) -> (n, hidden[-1])
        self.mu = nn.Linear(hidden[-1], latent)
        self.logvar = nn.Linear(hidden[-1], latent)
        widths = [latent, *reversed(hidden), dim]
        self.decoder_normal = _mlp(widths)  # d⁻
        self.decoder_abnormal = _mlp(widths)  # d⁺

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., F)`` features → ``(μ, log σ²)``, each ``(..., latent)``."""
        _check_features(x, self.dim, "MultiTaskVae")
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Reparameterised draw ``z = μ + σ·ε``."""
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor, abnormal: bool) -> torch.Tensor:
        """``(..., latent)`` → ``(..., F)`` through the abnormal (d⁺) or normal (d⁻) decoder."""
        return (self.decoder_abnormal if abnormal else self.decoder_normal)(z)

    def forward(self, x: torch.Tensor, abnormal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct snippets through one decoder.

        Args:
            x: ``(n, F)`` snippet features.
            abnormal: Use the abnormal decoder (else the normal one).

        Returns:
            ``(reconstruction (n, F), μ (n, latent), log σ² (n, latent))``.
        """
        mu, logvar = self.encode(x)
        return self.decode(self.sample(mu, logvar), abnormal), mu, logvar


class NonLocalBlock1d(nn.Module):
    """Dot-product non-local block over time (Wang et al., 2018), as in RTFM's MTN; identity at initialisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta = nn.Conv1d(channels, inner, 1)
        self.phi = nn.Conv1d(channels, inner, 1)
        self.g = nn.Conv1d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv1d(inner, channels, 1), nn.BatchNorm1d(channels))
        nn.init.zeros_(self.out[1].weight)  # start as identity (the residual carries the input)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T)`` → ``(N, C, T)``."""
        theta, phi, g = self.theta(x), self.phi(x), self.g(x)  # (N, C/2, T) each
        affinity = torch.einsum("nct,ncs->nts", theta, phi) / x.shape[-1]  # (N, T, T)
        y = torch.einsum("nts,ncs->nct", affinity, g)  # (N, C/2, T)
        return x + self.out(y)


class MultiScaleTemporalNetwork(nn.Module):
    """RTFM's multi-scale temporal network (MTN, REFERENCE.md §1.4).

    Three dilated temporal convs (dilation 1, 2, 4) and a 1×1 conv followed by a non-local block, each F→F/4,
    concatenated, fused by a temporal conv back to F channels, plus the input (residual).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        branch = dim // 4
        self.dilated = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(dim, branch, 3, padding=d, dilation=d), nn.ReLU(inplace=True), nn.BatchNorm1d(branch)
            )
            for d in (1, 2, 4)
        )
        self.local = nn.Sequential(nn.Conv1d(dim, branch, 1), nn.ReLU(inplace=True))
        self.non_local = NonLocalBlock1d(branch)
        self.fuse = nn.Sequential(nn.Conv1d(4 * branch, dim, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, T, F)`` → ``(N, T, F)`` temporally contextualised features."""
        h = x.transpose(1, 2)  # (N, F, T)
        parts = [branch(h) for branch in self.dilated]  # 3 × (N, F/4, T)
        parts.append(self.non_local(self.local(h)))  # (N, F/4, T)
        return (self.fuse(torch.cat(parts, dim=1)) + h).transpose(1, 2)  # (N, T, F)


class RtfmHost(nn.Module):
    """RTFM-style host: MTN features (whose magnitudes the top-k loss uses) and a snippet classifier."""

    def __init__(self, dim: int, hidden1: int, hidden2: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.mtn = MultiScaleTemporalNetwork(dim)
        self.classifier = SnippetClassifier(dim, hidden1, hidden2, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Snippet features and logits of whole videos.

        Args:
            x: ``(N, T, F)`` snippet features of N videos (or video-crops).

        Returns:
            ``(features (N, T, F), logits (N, T))``.
        """
        if x.ndim != 3:
            raise ValueError(f"RtfmHost expects (N, T, F) features, got shape {tuple(x.shape)}")
        _check_features(x, self.dim, "RtfmHost")
        feats = self.mtn(x)
        return feats, self.classifier(feats)


class MtVaeModel(nn.Module):
    """All trained parts in one module (one checkpoint): baseline, MT-VAE and host (MLP or RTFM-style).

    The per-channel input statistics ``feature_mean`` / ``feature_std`` (buffers, so they travel in the checkpoint)
    are the identity (0 / 1) unless ``standardise_features`` fitted them (:meth:`set_feature_stats`). The parts
    take standardised features (:meth:`standardise`); :meth:`forward` takes raw ones.
    """

    def __init__(self, cfg: MtVaeConfig) -> None:
        super().__init__()
        h1, h2, p = cfg.classifier_hidden1, cfg.classifier_hidden2, cfg.dropout
        self.register_buffer("feature_mean", torch.zeros(cfg.feature_dim))
        self.register_buffer("feature_std", torch.ones(cfg.feature_dim))
        self.baseline = SnippetClassifier(cfg.feature_dim, h1, h2, p)
        self.vae = MultiTaskVae(cfg.feature_dim, cfg.vae_dims)
        self.host: nn.Module = (
            RtfmHost(cfg.feature_dim, h1, h2, p)
            if cfg.host == "rtfm"
            else SnippetClassifier(cfg.feature_dim, h1, h2, p)
        )

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., F)`` raw features → ``(x − feature_mean) / feature_std`` (the identity until fitted)."""
        _check_features(x, self.feature_mean.shape[0], "MtVaeModel")
        return (x - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the standardisation statistics (``(F,)`` each; ``std`` is floored at 1e-6 for constant channels)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-6))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Checkpoints written before the statistics existed hold raw-feature models: load them as the identity.
        state_dict.setdefault(prefix + "feature_mean", torch.zeros_like(self.feature_mean))
        state_dict.setdefault(prefix + "feature_std", torch.ones_like(self.feature_std))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def host_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(N, T, F)`` standardised → ``(logits (N, T), MTN features (N, T, F) or None for the MLP host)``."""
        if isinstance(self.host, RtfmHost):
            feats, logits = self.host(x)
            return logits, feats
        return self.host(x), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Host anomaly scores.

        Args:
            x: ``(N, T, F)`` raw snippet features (standardised here).

        Returns:
            ``(N, T)`` scores in [0, 1].
        """
        return torch.sigmoid(self.host_logits(self.standardise(x))[0])
