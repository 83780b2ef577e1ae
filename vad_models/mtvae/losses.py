"""Losses of the MT-VAE pipeline: video-level BCE (§3.1 Eq. 1), multi-task VAE (§3.2.3 Eqs. 4–6), RTFM host.

Example:
    >>> import torch
    >>> round(video_bce(torch.zeros(2, 10, 32), torch.tensor([0.0, 1.0])).item(), 4)  # σ(0) = 0.5: log 2
    0.6931
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vad_models.mtvae.config import MtVaeConfig
from vad_models.mtvae.model import MultiTaskVae

__all__ = ["gaussian_kl", "rtfm_loss", "vae_loss", "video_bce"]

_EPS = 1e-6


def _probability_bce(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE of probabilities (not logits: the scores are means of sigmoids) in fp32, autocast or not.

    CUDA autocast refuses ``binary_cross_entropy`` on probabilities (unsafe in half precision), so a bf16 training
    run (``precision="bf16"``) computes it with autocast off, on float32 copies.
    """
    with torch.autocast(probs.device.type, enabled=False):
        return F.binary_cross_entropy(probs.float(), labels.float())


def video_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1: BCE of the mean snippet score Ŷ = (1/S) Σ σ(φ(f_s)) against the video label.

    Args:
        logits: ``(B, C, S)`` snippet logits (C crops, each treated as a sample as in RTFM).
        labels: ``(B,)`` video labels in {0, 1}.

    Returns:
        Scalar loss (mean over videos and crops).
    """
    if logits.ndim != 3 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"video_bce expects (B, C, S) logits and (B,) labels, got {tuple(logits.shape)}, "
                         f"{tuple(labels.shape)}")  # fmt: skip
    video = torch.sigmoid(logits).mean(dim=2).clamp(_EPS, 1 - _EPS)  # (B, C)
    return _probability_bce(video, labels[:, None].expand_as(video))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample, summed over latent dimensions: ``(n, d)`` → ``(n,)`` (Eq. 3)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def vae_loss(
    vae: MultiTaskVae, normal: torch.Tensor, abnormal: torch.Tensor, kl_weight: float
) -> dict[str, torch.Tensor]:
    """Eq. 6: L = L_r + α·(KL⁺ + KL⁻), normal snippets through d⁻ and abnormal ones through d⁺.

    Each term is the mean over its snippets of the squared error summed over feature channels (Eq. 4) or of the KL
    summed over latent channels (Eq. 5), so one batch's normal/abnormal imbalance does not weight the decoders.
    An empty group contributes 0.

    Args:
        vae: The multi-task VAE.
        normal: ``(n, F)`` normal snippet features (from normal videos).
        abnormal: ``(m, F)`` abnormal snippet features (baseline score above the threshold).
        kl_weight: α.

    Returns:
        ``loss``, ``recon_normal``, ``recon_abnormal``, ``kl_normal``, ``kl_abnormal``, ``abnormal_snippets``.
    """
    anchor = sum(p.sum() for p in vae.parameters()) * 0.0  # keeps the graph when both groups are empty
    parts: dict[str, torch.Tensor] = {}
    total = anchor
    for name, x, flag in (("normal", normal, False), ("abnormal", abnormal, True)):
        if x.shape[0] == 0:
            parts[f"recon_{name}"] = parts[f"kl_{name}"] = anchor.detach()
            continue
        recon, mu, logvar = vae(x, abnormal=flag)
        rec = (recon - x).pow(2).sum(dim=-1).mean()
        kl = gaussian_kl(mu, logvar).mean()
        parts[f"recon_{name}"], parts[f"kl_{name}"] = rec.detach(), kl.detach()
        total = total + rec + kl_weight * kl
    parts["abnormal_snippets"] = torch.tensor(float(abnormal.shape[0]), device=total.device)
    parts["loss"] = total
    return parts


def rtfm_loss(
    feats: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, cfg: MtVaeConfig
) -> dict[str, torch.Tensor]:
    """RTFM-style host loss (REFERENCE.md §1.4): top-k feature magnitude learning.

    The k snippets of largest crop-mean feature magnitude stand for a video. Their mean score is classified with
    BCE; the mean top-k feature magnitude of abnormal videos is pushed a margin m above that of normal ones
    (hinge over all abnormal × normal pairs of the batch); abnormal videos' scores are kept sparse and smooth
    (per-video sums, the Sultani et al. terms RTFM adds).

    Args:
        feats: ``(B, C, T, F)`` MTN features.
        logits: ``(B, C, T)`` snippet logits.
        labels: ``(B,)`` video labels.
        cfg: Weights, k and margin.

    Returns:
        ``loss``, ``bce``, ``magnitude``, ``sparsity``, ``smoothness``.
    """
    if feats.ndim != 4 or logits.shape != feats.shape[:3]:
        raise ValueError(f"rtfm_loss expects (B, C, T, F) features and (B, C, T) logits, got "
                         f"{tuple(feats.shape)}, {tuple(logits.shape)}")  # fmt: skip
    b, c, t, f = feats.shape
    k = min(cfg.rtfm_k, t)
    magnitude = feats.norm(dim=-1).mean(dim=1)  # (B, T)
    top = magnitude.topk(k, dim=1).indices  # (B, k)
    scores = torch.sigmoid(logits).mean(dim=1)  # (B, T) crop-mean scores
    video = scores.gather(1, top).mean(dim=1).clamp(_EPS, 1 - _EPS)  # (B,)
    bce = _probability_bce(video, labels)
    top_feats = feats.gather(2, top[:, None, :, None].expand(b, c, k, f)).mean(dim=2)  # (B, C, F)
    top_magnitude = top_feats.norm(dim=-1).mean(dim=1)  # (B,)
    abnormal = labels > 0.5
    zero = bce * 0.0
    separability = zero
    if abnormal.any() and (~abnormal).any():
        gap = top_magnitude[abnormal][:, None] - top_magnitude[~abnormal][None, :]  # (Na, Nn)
        separability = F.relu(cfg.rtfm_margin - gap).mean()
    sparsity = smoothness = zero
    if abnormal.any():
        s = scores[abnormal]  # (Na, T)
        sparsity = s.sum(dim=1).mean()
        smoothness = (s[:, 1:] - s[:, :-1]).pow(2).sum(dim=1).mean()
    loss = (
        bce
        + cfg.rtfm_magnitude_weight * separability
        + cfg.rtfm_sparsity_weight * sparsity
        + cfg.rtfm_smoothness_weight * smoothness
    )
    return {
        "loss": loss,
        "bce": bce.detach(),
        "magnitude": separability.detach(),
        "sparsity": sparsity.detach(),
        "smoothness": smoothness.detach(),
    }
