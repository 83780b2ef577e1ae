"""Training examples of the MT-VAE pipeline: one per video, built from its feature-store rows.

Each example holds

* ``segments`` ``[C, S, F]``: every crop's snippet sequence resampled to S segments by linear interpolation
  (§4.1: "each video is sampled to the same number of snippets using linear interpolation", S = 32) — the input
  of the baseline and the host;
* ``vae_feats`` ``[M, F]`` and ``vae_mask`` ``[M]``: up to M = 1,024 of the video's snippets (§4.1), drawn
  without replacement in time order, each from one random crop, zero-padded — the input of the MT-VAE;
* ``video_label`` ``[]`` (0 normal, 1 abnormal) and ``num_snippets`` ``[]``.

Example:
    >>> import numpy as np
    >>> resample_linear(np.array([[0.0], [2.0]]), 3)[:, 0].tolist()
    [0.0, 1.0, 2.0]
"""

from __future__ import annotations

import numpy as np

from vad_models.mtvae.config import MtVaeConfig

__all__ = ["EXAMPLE_COLUMNS", "empty_examples", "resample_linear", "video_example", "video_features"]

EXAMPLE_COLUMNS = ("segments", "vae_feats", "vae_mask", "video_label", "num_snippets")


def resample_linear(x: np.ndarray, length: int) -> np.ndarray:
    """Resample a sequence ``[n, ...]`` to ``[length, ...]`` by linear interpolation; end points are kept.

    A single snippet is repeated.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("cannot resample an empty snippet sequence")
    pos = np.linspace(0.0, n - 1, length)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).reshape(-1, *([1] * (x.ndim - 1))).astype(x.dtype)
    return (1 - w) * x[lo] + w * x[hi]


def video_features(rows: dict[str, np.ndarray], mask: np.ndarray, cfg: MtVaeConfig, video_id: str) -> np.ndarray:
    """The selected rows' snippet features in snippet order: ``[n, C, F]`` float32 (shape-checked)."""
    order = np.argsort(np.asarray(rows["snippet_idx"])[mask], kind="stable")
    picked = np.asarray(rows["features"])[mask][order]
    feats = np.stack([np.asarray(f, dtype=np.float32) for f in picked]) if len(picked) else np.zeros((0,))
    if feats.ndim != 3 or feats.shape[1:] != (cfg.num_crops, cfg.feature_dim):
        raise ValueError(
            f"video {video_id}: features must be [snippets, {cfg.num_crops}, {cfg.feature_dim}], got {feats.shape} "
            "(feature_dim/num_crops in the config must match the feature store)"
        )
    return feats


def video_example(feats: np.ndarray, label: int, cfg: MtVaeConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One example (see the module docstring) from a video's ``[n, C, F]`` features and label."""
    n, crops, dim = feats.shape
    segments = resample_linear(feats, cfg.num_segments).transpose(1, 0, 2)  # (C, S, F)
    m = min(n, cfg.max_snippets)
    picked = np.sort(rng.choice(n, size=m, replace=False))
    vae_feats = np.zeros((cfg.max_snippets, dim), np.float32)
    vae_feats[:m] = feats[picked, rng.integers(0, crops, size=m)]
    vae_mask = np.zeros(cfg.max_snippets, np.float32)
    vae_mask[:m] = 1.0
    return {
        "segments": np.ascontiguousarray(segments, dtype=np.float32),
        "vae_feats": vae_feats,
        "vae_mask": vae_mask,
        "video_label": np.float32(label),
        "num_snippets": np.int64(n),
    }


def empty_examples(cfg: MtVaeConfig) -> dict[str, np.ndarray]:
    """Zero examples with the right column shapes."""
    return {
        "segments": np.zeros((0, cfg.num_crops, cfg.num_segments, cfg.feature_dim), np.float32),
        "vae_feats": np.zeros((0, cfg.max_snippets, cfg.feature_dim), np.float32),
        "vae_mask": np.zeros((0, cfg.max_snippets), np.float32),
        "video_label": np.zeros(0, np.float32),
        "num_snippets": np.zeros(0, np.int64),
    }
