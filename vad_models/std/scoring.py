"""STD anomaly scores (Chang et al., PR 2022, §3.7): per-window raw parts and their per-video fusion.

Per window (its score belongs to the predicted last frame) four raw parts, all "higher = more anomalous",
with ``P`` the number of pixels (dividing by ``sqrt(P)`` only makes the values independent of the frame size):

- ``pred_error``: ``||x_lif - x̄_lif||_2 / sqrt(P)``, the Euclidean distance between the last frame and its
  prediction over all pixel positions (eq. 13's second factor);
- ``cluster_distance``: the mean of ``D_u``, the eq. 10 distance map upsampled (nearest) to the frame size, i.e.
  the mean of eq. 10 over the ``H_r x W_r`` positions (eq. 13's first factor);
- ``std_score``: eq. 13's denominator as written, "the multiplication of their prediction quality and the
  cluster distance" (§3.7): ``cluster_distance * pred_error``;
- ``pixel_score``: the same product taken pixel by pixel before the norm, ``||D_u ⊙ (x_lif - x̄_lif)||_2 /
  sqrt(P)`` (the conclusion's "fuse the prediction with the cluster distance in the pixel-level"; the released
  code also fuses per pixel, as the mean of the per-pixel squared error times ``D_u``). Where ``D_u`` is
  constant it equals ``std_score``; elsewhere errors at positions far from every centre weigh more.

The fusion default is ``std_score``, eq. 13's frame-level product (an earlier version fused ``pixel_score``).
On the synthetic corpus the pixel-level product ranked anomalies worse with the same checkpoints (micro AUROC,
``demo`` preset with ``configs/std/synthetic.yaml``: 0.79 vs 0.84; smaller runs: 0.74 vs 0.80), probably because
``D_u`` is an 8x coarser map whose values mostly re-weight background reconstruction errors, while the frame-level
product keeps the two cues independent. Unlike the released code, which also aligns labels one frame off, we
follow eq. 13's Euclidean distance and score the predicted frame itself.

Fusion (:func:`fuse_scores`) forms ``a = prod_k part_k ** w_k`` (default: ``std_score`` alone), the regularity
``s = 1 / a`` (eq. 13), rescales it per video to ``S(t)`` in ``[0, 1]`` (eq. 14; high = normal) and returns the
anomaly score ``1 - S(t)`` so that, as for every method, higher means more anomalous.

Example:
    >>> import numpy as np
    >>> idx, score = fuse_scores({"frame_idx": np.array([4, 5, 6]), "std_score": np.array([1.0, 4.0, 2.0])})
    >>> idx.tolist(), score.round(3).tolist()
    ([4, 5, 6], [0.0, 1.0, 0.667])
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from vad_models.ops import minmax_rescale
from vad_models.std.clustering import cluster_distance
from vad_models.std.model import StdModel

__all__ = ["DEFAULT_WEIGHTS", "SCORE_COLUMNS", "fuse_scores", "window_scores"]

SCORE_COLUMNS = ("pred_error", "cluster_distance", "std_score", "pixel_score")
DEFAULT_WEIGHTS: Mapping[str, float] = {"std_score": 1.0}


def window_scores(model: StdModel, clip: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """Raw parts of a batch of windows.

    Args:
        model: The STD model (in eval mode; the caller disables autograd).
        clip: ``(N, 3, T, H, W)`` float windows in ``[0, 1]``; the last frame is the prediction target.
        alpha: Soft-assignment sharpness of eq. 10.

    Returns:
        ``{"pred_error", "cluster_distance", "std_score", "pixel_score"}`` -> ``(N,)`` tensors. Before the
        K-means initialisation has run (a pre-train-only checkpoint) ``D_u`` is taken as 1, so ``std_score``
        and ``pixel_score`` equal ``pred_error`` (the "without deep K-means" row of Table 3), with a warning.

    Example:
        >>> from vad_models.std.config import StdConfig
        >>> model = StdModel(StdConfig(height=32, width=32, base_channels=4, num_clusters=2)).eval()
        >>> model.set_centres(torch.rand(2, 64))
        >>> with torch.no_grad():
        ...     parts = window_scores(model, torch.rand(3, 3, 5, 32, 32), alpha=25.0)
        >>> sorted(parts), tuple(parts["std_score"].shape)
        (['cluster_distance', 'pixel_score', 'pred_error', 'std_score'], (3,))
    """
    out = model(clip[:, :, :-1])
    sq_err = (clip[:, :, -1] - out.pred_last).square().sum(1)  # (N, H, W) squared RGB distance per pixel
    if bool(model.centres_initialised):
        d_map = cluster_distance(out.representation, model.centres, alpha)  # (N, H/8, W/8), eq. 10
        d_u = F.interpolate(d_map[:, None], size=sq_err.shape[-2:], mode="nearest")[:, 0]  # (N, H, W)
    else:
        warnings.warn(
            "STD cluster centres are not initialised (checkpoint from before the joint phase); scoring with the "
            "prediction error only (D_u = 1)",
            RuntimeWarning,
            stacklevel=2,
        )
        d_u = torch.ones_like(sq_err)
    pred_error, distance = sq_err.mean((1, 2)).sqrt(), d_u.mean((1, 2))
    return {
        "pred_error": pred_error,
        "cluster_distance": distance,
        "std_score": distance * pred_error,  # eq. 13's denominator
        "pixel_score": (d_u.square() * sq_err).mean((1, 2)).sqrt(),  # the pixel-level variant
    }


def _log_denominator(scores: Mapping[str, np.ndarray], weights: Mapping[str, float], eps: float) -> np.ndarray:
    unknown = sorted(set(weights) - set(SCORE_COLUMNS))
    if unknown or not weights:
        raise ValueError(f"fusion weights must name some of {list(SCORE_COLUMNS)}, got {sorted(weights)}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"fusion weights must be >= 0, got {dict(weights)}")
    missing = [k for k in weights if k not in scores]
    if missing:
        raise ValueError(f"scores lack the columns {missing} named by the fusion weights")
    return sum(w * np.log(np.maximum(np.asarray(scores[k], np.float64), eps)) for k, w in weights.items())


def fuse_scores(
    scores: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | None = None,
    calibration: Mapping[str, tuple[float, float]] | None = None,
    eps: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse one video's raw parts into per-frame anomaly scores (eqs. 13-14, complemented).

    Args:
        scores: ``frame_idx`` plus raw part columns for all windows of one video.
        weights: Part -> exponent of the denominator ``a = prod_k part_k ** w_k`` (default ``{"std_score": 1}``,
            the paper; ``{"pred_error": 1}`` is the ablation without the cluster distance).
        calibration: Part -> ``(centre, scale)`` fitted on held-out normal videos. When given, the per-video
            min-max of eq. 14 (which assumes every video holds an anomaly) is replaced by a fixed normalisation:
            the score is ``log(a / a_ref)`` with ``a_ref = prod_k centre_k ** w_k``, i.e. ``log(s_ref / s)``,
            0 for a window as regular as the median normal window and positive when less regular. The scale is
            not used: the log ratio is already unit-free and any fixed rescaling keeps the ranking.
        eps: Floor on the parts before the logarithm (``score_eps`` of the config).

    Returns:
        ``(frame_idx, score)``: distinct ascending frames and one anomaly score each (higher = more anomalous;
        in ``[0, 1]`` without calibration, 0 everywhere when the video's regularity is constant). Several
        windows of one frame are averaged in log space.

    Raises:
        ValueError: on unknown or negative weights, or calibration missing a weighted part.

    Example:
        >>> parts = {"frame_idx": np.array([4, 5]), "pred_error": np.array([1.0, 2.0]), "std_score": np.ones(2)}
        >>> fuse_scores(parts, weights={"pred_error": 1.0})[1].tolist()
        [0.0, 1.0]
        >>> fuse_scores(parts, calibration={"std_score": (0.5, 1.0)})[1].round(3).tolist()  # log(a / 0.5)
        [0.693, 0.693]
    """
    weights = DEFAULT_WEIGHTS if weights is None else weights
    frame_idx = np.asarray(scores["frame_idx"], dtype=np.int64)
    if frame_idx.size == 0:
        return frame_idx, np.zeros(0, dtype=np.float64)
    log_a = _log_denominator(scores, weights, eps)  # log of eq. 13's denominator
    frames, inverse = np.unique(frame_idx, return_inverse=True)
    log_a = np.bincount(inverse, weights=log_a) / np.bincount(inverse)
    if calibration is None:
        regularity = np.exp(-log_a)  # s of eq. 13
        return frames, minmax_rescale(-regularity)  # = 1 - S(t) of eq. 14
    missing = [k for k in weights if k not in calibration]
    if missing:
        raise ValueError(f"calibration lacks the parts {missing}; it has {sorted(calibration)}")
    log_ref = sum(w * np.log(max(float(calibration[k][0]), eps)) for k, w in weights.items())
    return frames, log_a - log_ref
