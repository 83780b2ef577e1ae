"""Pseudo videos from a trained multi-task VAE (§3.2.3, Fig. 3; ratio: Table 6).

* Pseudo abnormal: from a normal video, T/2 snippets chosen at random go through the encoder, a latent is drawn
  and the **abnormal** decoder replaces them; the other T/2 stay original.
* Pseudo normal: from an abnormal video, **every** snippet goes through the encoder and the **normal** decoder
  (which snippets are abnormal is unknown).

The same snippet positions are replaced in all crops of a video, so a pseudo video keeps one timeline. The
generators work on any ``(B, C, T, F)`` representation; the host phase uses the S-segment videos it trains on.
Generation runs under ``torch.no_grad``: the VAE is fixed once trained.

Example:
    >>> import torch
    >>> from vad_models.mtvae.model import MultiTaskVae
    >>> vae = MultiTaskVae(16, (32, 8))
    >>> videos = torch.rand(3, 2, 6, 16)  # (B, crops, T, F)
    >>> fake, replaced = pseudo_abnormal(vae, videos)
    >>> fake.shape, replaced.sum(dim=1).tolist()
    (torch.Size([3, 2, 6, 16]), [3, 3, 3])
"""

from __future__ import annotations

import math

import torch

from vad_models.mtvae.model import MultiTaskVae

__all__ = ["make_pseudo_videos", "pseudo_abnormal", "pseudo_counts", "pseudo_normal"]


def _check_videos(videos: torch.Tensor, vae: MultiTaskVae) -> None:
    if videos.ndim != 4 or videos.shape[-1] != vae.dim:
        raise ValueError(f"pseudo videos need (B, crops, T, {vae.dim}) features, got shape {tuple(videos.shape)}")


@torch.no_grad()
def pseudo_abnormal(
    vae: MultiTaskVae, videos: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo abnormal videos from normal ones: T/2 random snippets replaced by abnormal-decoder outputs.

    Args:
        vae: The trained multi-task VAE.
        videos: ``(B, C, T, F)`` normal videos (C crops).
        generator: Optional RNG for the choice of positions.

    Returns:
        ``(pseudo (B, C, T, F), replaced (B, T) bool)`` with exactly ``T // 2`` replaced positions per video.
    """
    _check_videos(videos, vae)
    b, _, t, _ = videos.shape
    noise = torch.rand(b, t, generator=generator, device="cpu").to(videos.device)
    chosen = noise.argsort(dim=1)[:, : t // 2]  # (B, T/2) random positions
    replaced = torch.zeros(b, t, dtype=torch.bool, device=videos.device).scatter_(1, chosen, True)
    mu, logvar = vae.encode(videos)
    fake = vae.decode(vae.sample(mu, logvar), abnormal=True)  # (B, C, T, F)
    return torch.where(replaced[:, None, :, None], fake, videos), replaced


@torch.no_grad()
def pseudo_normal(vae: MultiTaskVae, videos: torch.Tensor) -> torch.Tensor:
    """Pseudo normal videos from abnormal ones: every snippet through the normal decoder.

    Args:
        vae: The trained multi-task VAE.
        videos: ``(B, C, T, F)`` abnormal videos.

    Returns:
        ``(B, C, T, F)`` pseudo normal videos.
    """
    _check_videos(videos, vae)
    mu, logvar = vae.encode(videos)
    return vae.decode(vae.sample(mu, logvar), abnormal=False)


def pseudo_counts(num_videos: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pseudo videos to draw per original video: ``floor(ratio)`` plus one with probability ``ratio % 1``.

    Ratio ½ therefore uses about half of the videos once, 1 every video once and 2 every video twice
    (Table 6's settings), in expectation over an epoch.

    Example:
        >>> pseudo_counts(4, 2.0).tolist()
        [2, 2, 2, 2]
    """
    whole, frac = math.floor(ratio), ratio - math.floor(ratio)
    extra = (torch.rand(num_videos, generator=generator) < frac).long()
    return torch.full((num_videos,), whole, dtype=torch.long) + extra


def make_pseudo_videos(
    vae: MultiTaskVae,
    videos: torch.Tensor,
    labels: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo videos for one batch: abnormal ones from its normal videos, normal ones from its abnormal videos.

    Args:
        vae: The trained multi-task VAE.
        videos: ``(B, C, T, F)`` original videos.
        labels: ``(B,)`` video labels (1 abnormal, 0 normal).
        ratio: Pseudo videos per original video (see :func:`pseudo_counts`).
        generator: Optional RNG (counts and positions).

    Returns:
        ``(pseudo (P, C, T, F), pseudo_labels (P,))``; P may be 0.
    """
    _check_videos(videos, vae)
    repeats = pseudo_counts(videos.shape[0], ratio, generator).to(videos.device)
    source = videos.repeat_interleave(repeats, dim=0)
    source_labels = labels.repeat_interleave(repeats, dim=0)
    normal = source_labels < 0.5
    out = torch.empty_like(source)
    if normal.any():
        # decoder outputs are bf16 under autocast; the pseudo videos keep the originals' dtype
        out[normal] = pseudo_abnormal(vae, source[normal], generator)[0].to(out.dtype)
    if (~normal).any():
        out[~normal] = pseudo_normal(vae, source[~normal]).to(out.dtype)
    return out, (normal).to(videos.dtype)  # normal sources become abnormal (1) and vice versa
