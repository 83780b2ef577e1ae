"""uint8 snippets → ten-crop I3D features: the compute step of the feature-store actor, usable without Ray.

Example:
    >>> import numpy as np
    >>> from vad_models.i3d.config import I3DConfig
    >>> from vad_models.i3d.model import I3DResNet50
    >>> cfg = I3DConfig(height=64, width=80, crop_size=48, base_channels=2)
    >>> net = I3DResNet50(base_channels=2).eval()
    >>> snippets = [np.zeros((16, 64, 80, 3), np.uint8)] * 3
    >>> snippet_features(net, snippets, cfg, batch_size=2).shape  # (snippets, crops, 2048 / 64 * base_channels)
    (3, 10, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vad_models.base import model_device
from vad_models.i3d.config import I3DConfig
from vad_models.i3d.transforms import preprocess

__all__ = ["snippet_features"]


@torch.inference_mode()
def snippet_features(
    model: nn.Module,
    snippets: Sequence[np.ndarray],
    cfg: I3DConfig,
    batch_size: int,
    autocast: torch.dtype | None = None,
) -> np.ndarray:
    """Ten-crop features of ``[T, H, W, 3]`` uint8 snippets, ``batch_size`` snippets (×10 crops) per forward.

    The uint8 snippets are copied to the model's device as they are (a quarter of the float bytes) and cropped,
    normalised and cast there (:func:`~vad_models.i3d.transforms.preprocess`).

    Args:
        model: An :class:`~vad_models.i3d.model.I3DResNet50` in eval mode, on its device.
        snippets: uint8 snippets of ``cfg.snippet_frames`` frames at ``cfg.height``×``cfg.width``.
        cfg: Extractor settings (crop size and order, normalisation).
        batch_size: Snippets per forward pass.
        autocast: Run the backbone under ``torch.autocast`` in this dtype (e.g. ``torch.bfloat16``); ``None`` keeps
            fp32.

    Returns:
        ``[len(snippets), 10, F]`` float32 features.
    """
    device = model_device(model)
    out = []
    for i in range(0, len(snippets), batch_size):
        chunk = torch.from_numpy(np.stack(snippets[i : i + batch_size])).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            feats = model(preprocess(chunk, cfg))  # (k·10, F)
        out.append(feats.view(chunk.shape[0], 10, -1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 10, cfg.feature_dim), np.float32)
