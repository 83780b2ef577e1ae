import math

import numpy as np
import pytest
import torch

from vad_models import ops


def _eq10(kernel_size: int, sigma: float) -> torch.Tensor:
    """Eq. 10 of the LUSS-AE paper, written out element by element."""
    r = kernel_size // 2
    return torch.tensor(
        [
            [math.exp(-(i * i + j * j) / (2 * sigma**2)) / (2 * math.pi * sigma**2) for j in range(-r, r + 1)]
            for i in range(-r, r + 1)
        ],
        dtype=torch.float64,
    )


def _impulse(h: int = 16, w: int = 16, at: tuple[int, int] = (8, 8)) -> torch.Tensor:
    x = torch.zeros(1, 1, h, w, dtype=torch.float64)
    x[0, 0, at[0], at[1]] = 1.0
    return x


# ------------------------------------------------------------------------------------------------- kernels
def test_gaussian_kernel_is_eq10_normalised() -> None:
    k = ops.gaussian_kernel2d(5, 1.0, dtype=torch.float64)
    expected = _eq10(5, 1.0)
    torch.testing.assert_close(k, expected / expected.sum())
    assert k.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(k, k.T)
    assert k.argmax().item() == 12  # centre of 5x5


@pytest.mark.parametrize("size, sigma", [(4, 1.0), (0, 1.0), (5, 0.0), (5, -1.0)])
def test_gaussian_kernel_rejects_bad_arguments(size: int, sigma: float) -> None:
    with pytest.raises(ValueError, match="kernel_size|sigma"):
        ops.gaussian_kernel2d(size, sigma)


def test_gaussian_blur_of_impulse_is_the_kernel() -> None:
    out = ops.gaussian_blur(_impulse(), 5, 1.0, padding="zeros")
    torch.testing.assert_close(out[0, 0, 6:11, 6:11], ops.gaussian_kernel2d(5, 1.0, dtype=torch.float64))
    assert out.sum().item() == pytest.approx(1.0)


def test_gaussian_blur_padding_modes() -> None:
    ones = torch.ones(2, 3, 8, 8)
    torch.testing.assert_close(ops.gaussian_blur(ones, padding="reflect"), ones)
    torch.testing.assert_close(ops.gaussian_blur(ones, padding="replicate"), ones)
    zero_padded = ops.gaussian_blur(ones, padding="zeros")
    assert zero_padded[0, 0, 0, 0] < 1.0 and zero_padded[0, 0, 4, 4] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="padding"):
        ops.gaussian_blur(ones, padding="circular")


def test_gaussian_blur_accepts_any_leading_shape() -> None:
    x = torch.rand(2, 3, 4, 8, 8)
    out = ops.gaussian_blur(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[1, 2, 3], ops.gaussian_blur(x[1, 2, 3]))


def test_blur_pool_is_blur_then_subsample() -> None:
    x = torch.rand(2, 1, 12, 10, dtype=torch.float64)
    for padding in ops.PADDING_MODES:
        pooled = ops.blur_pool(x, 5, 1.0, 2, padding)
        assert pooled.shape == (2, 1, 6, 5)
        torch.testing.assert_close(pooled, ops.gaussian_blur(x, 5, 1.0, padding)[..., ::2, ::2])
    with pytest.raises(ValueError, match="stride"):
        ops.blur_pool(x, stride=0)


# -------------------------------------------------------------------------------------------- error measures
def test_errors_of_an_impulse_by_hand() -> None:
    h = w = 16
    k = ops.gaussian_kernel2d(5, 1.0, dtype=torch.float64)
    errors = ops.image_errors(_impulse(h, w, (8, 8)))
    assert errors["mse"].item() == pytest.approx(1 / (h * w))
    assert errors["pse"].item() == pytest.approx(float((k**2).sum()) / (h * w))
    # Stride-2 samples at even rows/cols hit the kernel at offsets -2, 0, +2 around the impulse.
    assert errors["bpe"].item() == pytest.approx(float((k[::2, ::2] ** 2).sum()) / (h * w))
    # At an odd position the samples fall on offsets -1, +1.
    odd = ops.image_errors(_impulse(h, w, (9, 9)))
    assert odd["bpe"].item() == pytest.approx(float((k[1::2, 1::2] ** 2).sum()) / (h * w))
    assert odd["mse"].item() == pytest.approx(errors["mse"].item())


def test_errors_of_a_constant_residual() -> None:
    errors = ops.image_errors(torch.full((3, 1, 8, 8), 0.5, dtype=torch.float64), pse_padding="reflect",
                              bpe_padding="reflect")
    for name in ("mse", "pse"):
        torch.testing.assert_close(errors[name], torch.full((3,), 0.25, dtype=torch.float64))
    # The subsampled map has a quarter of the pixels; eq. 11 still divides by the full H * W.
    torch.testing.assert_close(errors["bpe"], torch.full((3,), 0.25 / 4, dtype=torch.float64))


def test_errors_are_per_image_and_smooth_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(4, 1, 32, 32, generator=gen)
    errors = ops.image_errors(noise)
    assert all(v.shape == (4,) for v in errors.values())
    assert (errors["pse"] < errors["mse"] / 3).all()  # white noise loses most of its power under the blur
    torch.testing.assert_close(errors["mse"], noise.square().mean(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match="residual"):
        ops.image_errors(noise[0])


# ------------------------------------------------------------------------------------------------- rescaling
def test_robust_stats_and_rescale() -> None:
    values = np.arange(101.0)
    assert ops.robust_stats(values) == (50.0, 98.0)
    assert ops.robust_stats(values, (25.0, 75.0)) == (50.0, 50.0)
    np.testing.assert_allclose(ops.robust_rescale(values), (values - 50.0) / 98.0)


def test_robust_rescale_ignores_an_outlier_that_min_max_does_not() -> None:
    values = np.r_[np.linspace(0.0, 1.0, 200), 1000.0]
    robust = ops.robust_rescale(values)
    minmax = ops.minmax_rescale(values)
    assert robust[:200].max() - robust[:200].min() > 0.9  # normal range keeps its spread
    assert minmax[:200].max() < 0.002  # squashed by the single extreme value
    assert minmax.min() == 0.0 and minmax.max() == 1.0


def test_rescaling_a_constant_video_gives_zeros() -> None:
    np.testing.assert_array_equal(ops.robust_rescale(np.full(10, 3.0)), np.zeros(10))
    np.testing.assert_array_equal(ops.minmax_rescale(np.full(10, 3.0)), np.zeros(10))


@pytest.mark.parametrize(
    "values, kwargs, match",
    [
        (np.zeros(0), {}, "empty"),
        (np.array([1.0, np.nan]), {}, "NaN"),
        (np.arange(5.0), {"percentiles": (99.0, 1.0)}, "percentiles"),
    ],
)
def test_robust_stats_rejects_bad_input(values: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ops.robust_stats(values, **kwargs)


def test_rescale_rejects_non_positive_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        ops.rescale(np.ones(3), 0.0, 0.0)


# ------------------------------------------------------------------------------------------- gradient loss
def test_gradient_loss_by_hand() -> None:
    target = torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]])
    pred = torch.zeros(2, 3)
    # |g_x(target)| = [[1, 2], [1, 2]] -> mean 1.5; |g_y(target)| = 0.
    assert ops.gradient_loss(pred, target).item() == pytest.approx(1.5)
    assert ops.gradient_loss(pred, target, alpha=2.0).item() == pytest.approx(2.5)
    # Only gradient magnitudes matter: a shifted or sign-flipped image has no gradient loss.
    assert ops.gradient_loss(-target + 7.0, target).item() == pytest.approx(0.0)


def test_gradient_loss_backward_and_errors() -> None:
    pred = torch.rand(2, 3, 8, 8, requires_grad=True)
    loss = ops.gradient_loss(pred, torch.rand(2, 3, 8, 8))
    loss.backward()
    assert loss.ndim == 0 and pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shapes differ"):
        ops.gradient_loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="alpha"):
        ops.gradient_loss(torch.zeros(4, 4), torch.zeros(4, 4), alpha=0.0)
