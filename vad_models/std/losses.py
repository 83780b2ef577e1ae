"""STD training losses (Chang et al., PR 2022): the autoencoder losses of eqs. 3 and 6 and the joint-phase turns.

The cluster loss of eq. 11 lives in :mod:`vad_models.std.clustering`; eq. 12 combines both in
:meth:`vad_models.std.method.StdMethod.training_loss`.

Example:
    >>> [is_centre_turn(s, StdConfig(ae_steps_per_turn=2)) for s in range(6)]
    [False, False, True, False, False, True]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vad_models.ops import gradient_loss
from vad_models.std.config import StdConfig
from vad_models.std.model import StdOutput

__all__ = ["autoencoder_losses", "is_centre_turn"]


def is_centre_turn(step: int, cfg: StdConfig) -> bool:
    """Whether global step ``step`` of the joint phase optimises the centres (else the autoencoders).

    Example:
        >>> [is_centre_turn(s, StdConfig()) for s in range(4)]
        [False, True, False, True]
    """
    return step % (cfg.ae_steps_per_turn + cfg.centre_steps_per_turn) >= cfg.ae_steps_per_turn


def autoencoder_losses(
    out: StdOutput, first: torch.Tensor, target_diff: torch.Tensor, cfg: StdConfig
) -> dict[str, torch.Tensor]:
    """``l_a`` (eq. 3, mean square error of the first frame) and ``l_m`` (eq. 6: l2 + gradient loss).

    Args:
        out: The model output for the clip's input frames.
        first: ``(N, 3, H, W)`` first frame ``x_fif`` (the spatial target).
        target_diff: ``(N, 3, H, W)`` RGB difference ``x_lif - x_fif`` (the motion target).
        cfg: Holds ``gradient_weight``.

    Returns:
        ``{"spatial", "motion", "motion_l2", "motion_gradient"}`` -> scalar tensors.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> out = StdOutput(x, x, x, torch.rand(2, 4, 1, 1))
        >>> float(autoencoder_losses(out, x, x, StdConfig())["motion"])
        0.0
    """
    spatial = F.mse_loss(out.recon_first, first)
    motion_l2 = F.mse_loss(out.diff, target_diff)
    motion_gradient = gradient_loss(out.diff, target_diff)
    return {
        "spatial": spatial,
        "motion": motion_l2 + cfg.gradient_weight * motion_gradient,
        "motion_l2": motion_l2,
        "motion_gradient": motion_gradient,
    }
