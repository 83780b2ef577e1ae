"""Shared ops: Gaussian blur, blur pooling, image errors, score rescaling, gradient loss, box painting.

Used by several methods: LUSS-AE's error measures (MSE, PSE, BPE; Lohani et al. 2023, §3.2.1, eqs. 8-11) and
robust per-video rescaling (eq. 16), STD's gradient loss (Chang et al., eq. 6), and the box painting of SSMTL's
pixel-level anomaly maps (§3.4), which review reports also use for any method's stored regions.

Example:
    >>> import torch
    >>> residual = torch.zeros(1, 1, 16, 16)
    >>> residual[0, 0, 8, 8] = 1.0
    >>> errors = image_errors(residual)
    >>> sorted(errors)
    ['bpe', 'mse', 'pse']
    >>> round(float(errors["mse"][0]), 6)  # 1 / (16 * 16)
    0.003906
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "paint_boxes",
    "PADDING_MODES",
    "blur_pool",
    "gaussian_blur",
    "gaussian_kernel2d",
    "gradient_loss",
    "image_errors",
    "minmax_rescale",
    "minmax_stats",
    "rescale",
    "robust_rescale",
    "robust_stats",
]

PADDING_MODES = ("zeros", "reflect", "replicate")


def gaussian_kernel2d(
    kernel_size: int = 5,
    sigma: float = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A ``[k, k]`` Gaussian kernel (eq. 10 of the LUSS-AE paper) normalised to sum 1.

    Eq. 10 uses the continuous normaliser ``1 / (2 pi sigma^2)``; on a truncated 5x5 grid with sigma=1 that
    sums to 0.982. We normalise the discrete kernel to sum 1 (unit DC gain, as kornia does), which only scales
    every error by the same constant and so changes no rescaled score.

    Args:
        kernel_size: Odd kernel width ``k``.
        sigma: Standard deviation in pixels.
        dtype: Kernel dtype.
        device: Kernel device.

    Returns:
        ``[kernel_size, kernel_size]`` tensor.

    Example:
        >>> k = gaussian_kernel2d(5, 1.0)
        >>> k.shape, round(float(k.sum()), 6)
        (torch.Size([5, 5]), 1.0)
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    coords = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, stride: int, padding: str) -> torch.Tensor:
    """Convolve every ``[H, W]`` plane of ``x`` (shape ``(..., H, W)``) with ``kernel`` at ``stride``."""
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    if x.ndim < 2:
        raise ValueError(f"expected a tensor of shape (..., H, W), got {tuple(x.shape)}")
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    planes = x.reshape(-1, 1, h, w)
    pad = kernel.shape[-1] // 2
    weight = kernel.to(dtype=x.dtype, device=x.device)[None, None]
    if padding == "zeros":
        out = F.conv2d(planes, weight, stride=stride, padding=pad)
    else:
        out = F.conv2d(F.pad(planes, (pad, pad, pad, pad), mode=padding), weight, stride=stride)
    return out.reshape(*lead, *out.shape[-2:])


def gaussian_blur(
    x: torch.Tensor, kernel_size: int = 5, sigma: float = 1.0, padding: str = "reflect"
) -> torch.Tensor:
    """Blur every ``[H, W]`` plane of ``x`` with a Gaussian (the ``* G_(sigma,k)`` of PSE, eq. 9).

    Args:
        x: ``(..., H, W)`` float tensor; each plane (channel, frame) is blurred independently.
        kernel_size: Odd kernel width.
        sigma: Gaussian standard deviation.
        padding: Border handling: ``"reflect"`` (kornia's ``gaussian_blur2d`` default), ``"zeros"`` or
            ``"replicate"``.

    Returns:
        Tensor of the same shape as ``x``.

    Example:
        >>> gaussian_blur(torch.ones(2, 1, 8, 8)).allclose(torch.ones(2, 1, 8, 8))
        True
    """
    return _depthwise(x, gaussian_kernel2d(kernel_size, sigma), 1, padding)


def blur_pool(
    x: torch.Tensor, kernel_size: int = 5, sigma: float = 1.0, stride: int = 2, padding: str = "zeros"
) -> torch.Tensor:
    """Gaussian low-pass then subsample by ``stride`` (``S_b(. * B_k)`` of BPE, eq. 11; Zhang 2019).

    Computed as one strided convolution, which equals blurring and keeping every ``stride``-th pixel.

    Args:
        x: ``(..., H, W)`` float tensor.
        kernel_size: Odd kernel width ``k``.
        sigma: Gaussian standard deviation.
        stride: Subsampling step ``b``.
        padding: Border handling; ``"zeros"`` is what kornia's ``blur_pool2d`` (used by the released code) does.

    Returns:
        ``(..., ceil(H / stride), ceil(W / stride))`` tensor.

    Example:
        >>> blur_pool(torch.ones(1, 1, 8, 8)).shape
        torch.Size([1, 1, 4, 4])
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return _depthwise(x, gaussian_kernel2d(kernel_size, sigma), stride, padding)


def image_errors(
    residual: torch.Tensor,
    kernel_size: int = 5,
    sigma: float = 1.0,
    stride: int = 2,
    pse_padding: str = "reflect",
    bpe_padding: str = "zeros",
) -> dict[str, torch.Tensor]:
    """MSE, PSE and BPE of a batch of residual images ``J_hat - J`` (LUSS-AE §3.2.1, eqs. 8, 9, 11).

    All three divide the squared Frobenius norm by ``C * H * W`` of the full-resolution image, as the paper's
    equations do; for BPE this is the mean square of the subsampled map divided by ``stride**2`` (the released
    code takes the plain mean, a constant factor that per-video rescaling removes).

    Args:
        residual: ``(N, C, H, W)`` float tensor.
        kernel_size: Gaussian kernel width ``k`` (paper: 5).
        sigma: Gaussian standard deviation (paper: 1).
        stride: BPE subsampling step ``b`` (paper: 2).
        pse_padding: Border handling of the PSE blur.
        bpe_padding: Border handling of the BPE blur pool.

    Returns:
        ``{"mse", "pse", "bpe"}`` -> ``(N,)`` float tensors.

    Example:
        >>> errs = image_errors(torch.full((3, 1, 8, 8), 2.0))
        >>> [round(float(errs[k][0]), 3) for k in ("mse", "pse")]
        [4.0, 4.0]
    """
    if residual.ndim != 4:
        raise ValueError(f"residual must be (N, C, H, W), got shape {tuple(residual.shape)}")
    size = residual[0].numel()
    flat = residual.flatten(1)
    return {
        "mse": flat.square().sum(1) / size,
        "pse": gaussian_blur(residual, kernel_size, sigma, pse_padding).flatten(1).square().sum(1) / size,
        "bpe": blur_pool(residual, kernel_size, sigma, stride, bpe_padding).flatten(1).square().sum(1) / size,
    }


def robust_stats(values: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[float, float]:
    """Median and inter-percentile range of ``values`` (the centre and scale of eq. 16, ``iqr_1-99``).

    Args:
        values: Scores of one video (any shape; flattened).
        percentiles: ``(low, high)`` percentiles bounding the range (paper: 1 and 99).

    Returns:
        ``(centre, scale)``; ``scale`` is floored at 1e-12 so a constant video rescales to zeros.

    Example:
        >>> robust_stats(np.arange(101.0))
        (50.0, 98.0)
    """
    values = _finite_1d(values)
    low, high = percentiles
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    p_low, median, p_high = np.percentile(values, [low, 50.0, high])
    return float(median), float(max(p_high - p_low, 1e-12))


def minmax_stats(values: np.ndarray) -> tuple[float, float]:
    """Minimum and range of ``values`` (the per-video min-max rescaling most VAD papers use).

    Example:
        >>> minmax_stats(np.array([2.0, 4.0, 3.0]))
        (2.0, 2.0)
    """
    values = _finite_1d(values)
    low, high = float(values.min()), float(values.max())
    return low, max(high - low, 1e-12)


def rescale(values: np.ndarray, centre: float, scale: float) -> np.ndarray:
    """``(values - centre) / scale`` as float64.

    Example:
        >>> rescale(np.array([1.0, 3.0]), 1.0, 2.0).tolist()
        [0.0, 1.0]
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return (np.asarray(values, dtype=np.float64) - centre) / scale


def robust_rescale(values: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Robust per-video rescaling (eq. 16): subtract the median, divide by the 1-99 inter-percentile range.

    Example:
        >>> robust_rescale(np.arange(101.0))[[0, 50, 100]].round(3).tolist()
        [-0.51, 0.0, 0.51]
    """
    return rescale(values, *robust_stats(values, percentiles))


def minmax_rescale(values: np.ndarray) -> np.ndarray:
    """Per-video min-max rescaling to ``[0, 1]``.

    Example:
        >>> minmax_rescale(np.array([2.0, 4.0, 3.0])).tolist()
        [0.0, 1.0, 0.5]
    """
    return rescale(values, *minmax_stats(values))


def _finite_1d(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("cannot compute rescaling statistics of an empty score array")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinite values")
    return values


def gradient_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Image-gradient loss (Mathieu et al. 2016; Liu et al. 2018; STD eq. 6 with ``alpha=1``).

    ``mean(| |g_x(target)| - |g_x(pred)| |^alpha) + mean(| |g_y(target)| - |g_y(pred)| |^alpha)`` with
    ``g_x``, ``g_y`` the finite differences between horizontally and vertically neighbouring pixels.

    Args:
        pred: ``(..., H, W)`` prediction.
        target: Tensor of the same shape.
        alpha: Exponent of the per-pixel gradient difference (1 = L1).

    Returns:
        Scalar tensor.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> float(gradient_loss(x, x))
        0.0
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim < 2 or pred.shape[-1] < 2 or pred.shape[-2] < 2:
        raise ValueError(f"expected (..., H, W) with H, W >= 2, got {tuple(pred.shape)}")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    loss = pred.new_zeros(())
    for dim in (-1, -2):
        grad_pred = pred.diff(dim=dim).abs()
        grad_target = target.diff(dim=dim).abs()
        loss = loss + (grad_target - grad_pred).abs().pow(alpha).mean()
    return loss


def paint_boxes(
    frame_idx: np.ndarray,
    boxes: np.ndarray,
    values: np.ndarray,
    frames: tuple[int, int],
    grid: tuple[int, int],
    cell: int,
) -> np.ndarray:
    """Paint box values into anomaly maps for frames ``frames[0] .. frames[1]-1`` (max over overlaps).

    Args:
        frame_idx: ``[K]`` frame of each box.
        boxes: ``[K, 4]`` ``x1, y1, x2, y2`` in frame pixels.
        values: ``[K]`` object scores.
        frames: ``(first, stop)`` frame range of the maps.
        grid: ``(rows, cols)`` of the map.
        cell: Pixels per map cell.

    Returns:
        ``[stop - first, rows, cols]`` float32 maps (0 where no box).
    """
    first, stop = frames
    rows, cols = grid
    maps = np.zeros((stop - first, rows, cols), dtype=np.float32)
    keep = (frame_idx >= first) & (frame_idx < stop)
    for f, (x1, y1, x2, y2), v in zip(frame_idx[keep], boxes[keep], values[keep]):
        c1, r1 = max(int(np.floor(x1 / cell)), 0), max(int(np.floor(y1 / cell)), 0)
        c2, r2 = min(int(np.ceil(x2 / cell)), cols), min(int(np.ceil(y2 / cell)), rows)
        if c2 > c1 and r2 > r1:
            view = maps[int(f) - first, r1:r2, c1:c2]
            np.maximum(view, np.float32(v), out=view)
    return maps
