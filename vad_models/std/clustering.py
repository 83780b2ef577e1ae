"""Deep K-means of STD (§3.5): centre distances, soft assignment and losses (eqs. 10-11), K-means initialisation.

The initial centres come from scikit-learn's KMeans on representations of the pre-trained autoencoders.

Every feature-map position ``r_{h,w}`` (a ``D``-vector in ``[0, 1]``) is one point.

Example:
    >>> import torch
    >>> r = torch.rand(2, 8, 4, 4)
    >>> centres = torch.rand(3, 8)
    >>> cluster_distance(r, centres, alpha=25.0).shape
    torch.Size([2, 4, 4])
    >>> soft_assignment(centre_distances(r, centres), 25.0).sum(1).allclose(torch.ones(2, 4, 4))
    True
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans

__all__ = [
    "centre_distances",
    "cluster_distance",
    "cluster_loss",
    "kmeans_centres",
    "sample_points",
    "soft_assignment",
]


def _check(r: torch.Tensor, centres: torch.Tensor) -> None:
    if r.ndim != 4:
        raise ValueError(f"representation must be (N, D, H, W), got shape {tuple(r.shape)}")
    if centres.ndim != 2 or centres.shape[1] != r.shape[1]:
        raise ValueError(f"centres must be (K, {r.shape[1]}), got shape {tuple(centres.shape)}")


def _squared_distances(r: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    _check(r, centres)
    # ||r - c||^2 = ||r||^2 - 2 r.c + ||c||^2, per position: (N, D, H, W) x (K, D) -> (N, K, H, W)
    cross = torch.einsum("ndhw,kd->nkhw", r, centres)
    sq = r.square().sum(1, keepdim=True) - 2 * cross + centres.square().sum(1)[None, :, None, None]
    return sq.clamp_min(0.0)


def centre_distances(r: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of every position of ``r`` to every centre.

    Args:
        r: ``(N, D, H, W)`` representation.
        centres: ``(K, D)`` cluster centres.

    Returns:
        ``(N, K, H, W)`` distances ``||r_{h,w} - c_k||_2`` (differentiable at 0: the square root is floored).

    Example:
        >>> centre_distances(torch.zeros(1, 2, 1, 1), torch.tensor([[3.0, 4.0]])).item()
        5.0
    """
    return _squared_distances(r, centres).clamp_min(1e-12).sqrt()


def soft_assignment(distances: torch.Tensor, alpha: float) -> torch.Tensor:
    """Soft assignment of eq. 10: ``softmax_k(-alpha ||r - c_k||)`` over the centre axis (dim 1).

    Example:
        >>> soft_assignment(torch.tensor([[[[0.0]], [[1.0]]]]), alpha=1.0).flatten().tolist()  # doctest: +ELLIPSIS
        [0.731..., 0.268...]
    """
    return torch.softmax(-alpha * distances, dim=1)


def cluster_distance(r: torch.Tensor, centres: torch.Tensor, alpha: float) -> torch.Tensor:
    """``D(r_{h,w}, C)`` of eq. 10: the soft-assignment-weighted squared distance to the centres.

    Eq. 10 weights the *squared* distance; the released code weights the plain distance. We follow the paper.

    Args:
        r: ``(N, D, H, W)`` representation.
        centres: ``(K, D)`` centres.
        alpha: Soft-assignment sharpness.

    Returns:
        ``(N, H, W)`` map (gradients reach both ``r`` and ``centres``; detach one of them to freeze it).

    Example:
        >>> cluster_distance(torch.ones(1, 2, 1, 1), torch.ones(1, 2), alpha=25.0).item()
        0.0
    """
    sq = _squared_distances(r, centres)  # (N, K, H, W)
    weights = soft_assignment(sq.clamp_min(1e-12).sqrt(), alpha)  # (N, K, H, W)
    return (weights * sq).sum(1)


def cluster_loss(r: torch.Tensor, centres: torch.Tensor, alpha: float) -> torch.Tensor:
    """``L_cluster`` of eq. 11, averaged (not summed) over positions and the batch: a scalar.

    Averaging only divides eq. 11 by ``H_r W_r``, a constant, so the trade-off weight ``lambda_r`` of eq. 12
    stays the same at every frame size.

    Example:
        >>> float(cluster_loss(torch.zeros(2, 3, 4, 4), torch.zeros(5, 3), alpha=25.0))
        0.0
    """
    return cluster_distance(r, centres, alpha).mean()


def sample_points(r: torch.Tensor, per_clip: int, generator: torch.Generator) -> torch.Tensor:
    """Draw up to ``per_clip`` random positions of every clip's representation (§3.5, K-means initialisation).

    Args:
        r: ``(N, D, H, W)`` representation.
        per_clip: Positions per clip (all of them when the map is smaller).
        generator: CPU generator for reproducible draws.

    Returns:
        ``(N * min(per_clip, H W), D)`` points on the device of ``r``.

    Example:
        >>> sample_points(torch.rand(2, 8, 4, 4), 5, torch.Generator().manual_seed(0)).shape
        torch.Size([10, 8])
    """
    n, d, h, w = r.shape
    flat = r.permute(0, 2, 3, 1).reshape(n, h * w, d)  # (N, HW, D)
    k = min(per_clip, h * w)
    idx = torch.argsort(torch.rand(n, h * w, generator=generator), dim=1)[:, :k]  # (N, k) distinct positions
    return torch.gather(flat, 1, idx.to(r.device)[..., None].expand(n, k, d)).reshape(n * k, d)


def kmeans_centres(points: np.ndarray, num_clusters: int, seed: int, n_init: int) -> np.ndarray:
    """Initial centres: scikit-learn ``KMeans`` (k-means++ seeding) on pre-trained representations (§3.5, §4.2).

    Args:
        points: ``(M, D)`` representation vectors.
        num_clusters: ``K``.
        seed: ``random_state`` of KMeans.
        n_init: k-means++ restarts.

    Returns:
        ``(K, D)`` float32 centres.

    Raises:
        ValueError: when there are fewer points than clusters.

    Example:
        >>> pts = np.concatenate([np.zeros((5, 2)), np.ones((5, 2))])
        >>> sorted(kmeans_centres(pts, 2, seed=0, n_init=1)[:, 0].tolist())
        [0.0, 1.0]
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must be (M, D), got shape {points.shape}")
    if len(points) < num_clusters:
        raise ValueError(
            f"K-means initialisation needs at least num_clusters={num_clusters} representation points, got "
            f"{len(points)}: the train split yielded too few clips (raise kmeans_init_batches or "
            "kmeans_points_per_clip)"
        )
    kmeans = KMeans(n_clusters=num_clusters, init="k-means++", n_init=n_init, random_state=seed)
    return kmeans.fit(points).cluster_centers_.astype(np.float32)
