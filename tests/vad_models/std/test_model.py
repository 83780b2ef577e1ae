from __future__ import annotations

import pytest
import torch
from torch import nn

from vad_models.std.config import StdConfig
from vad_models.std.model import MotionAutoencoder, SpatialAutoencoder, StdModel, UpBlock, VarianceAttention


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_shapes_at_paper_resolution_batch_one() -> None:
    cfg = StdConfig()  # 256x256, base 32: the paper's / released code's sizes
    model = StdModel(cfg).eval()
    with torch.no_grad():
        z_a, recon = model.spatial(torch.rand(1, 3, 256, 256))
        z_m, diff = model.motion(torch.rand(1, 12, 256, 256))  # 4 stacked RGB frames
        out = model(torch.rand(1, 3, 4, 256, 256))
    assert z_a.shape == z_m.shape == (1, 256, 32, 32)
    assert recon.shape == diff.shape == (1, 3, 256, 256)
    assert out.recon_first.shape == out.diff.shape == out.pred_last.shape == (1, 3, 256, 256)
    assert out.representation.shape == (1, 512, 32, 32)
    assert model.centres.shape == (32, 512)


def test_shapes_at_64_and_prediction_is_reconstruction_plus_difference() -> None:
    model = StdModel(StdConfig(height=64, width=64))
    out = model(torch.rand(2, 3, 4, 64, 64))
    assert out.pred_last.shape == (2, 3, 64, 64)
    assert out.representation.shape == (2, 512, 8, 8)
    torch.testing.assert_close(out.pred_last, out.recon_first + out.diff)


def test_representation_is_in_unit_range_with_unit_norm() -> None:
    model = StdModel(StdConfig(height=32, width=32, base_channels=4))
    r = model(torch.rand(3, 3, 4, 32, 32)).representation
    assert r.min() >= 0 and r.max() <= 1
    torch.testing.assert_close(r.norm(dim=1), torch.ones(3, 4, 4))
    assert model.representation(torch.zeros(1, 3, 4, 32, 32)).shape == (1, 64, 4, 4)


def test_streams_see_the_right_frames() -> None:
    model = StdModel(StdConfig(height=32, width=32, base_channels=4)).eval()
    frames = torch.rand(1, 3, 4, 32, 32)
    changed = frames.clone()
    changed[:, :, 1:] = torch.rand(1, 3, 3, 32, 32)  # only frames 1-3 differ: the spatial stream sees frame 0
    with torch.no_grad():
        a, b = model(frames), model(changed)
    torch.testing.assert_close(a.recon_first, b.recon_first)
    assert not torch.allclose(a.diff, b.diff)


def test_batchnorm_follows_each_spatial_encoder_block_and_motion_stream_has_none() -> None:
    spatial = SpatialAutoencoder(base_channels=4, negative_slope=0.2)
    kinds = [type(m).__name__ for m in spatial.encoder]
    assert kinds == [
        "Conv2d", "LeakyReLU", "ResBlock", "BatchNorm2d", "ResBlock", "BatchNorm2d", "ResBlock", "BatchNorm2d",
        "Conv2d", "ReLU",
    ]  # fmt: skip
    motion = MotionAutoencoder(in_frames=4, base_channels=4, negative_slope=0.2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in motion.modules())
    assert sum(isinstance(m, VarianceAttention) for m in motion.modules()) == 3
    assert sum(isinstance(m, nn.PixelShuffle) for m in spatial.decoder.modules()) == 3
    assert any(isinstance(m, nn.LeakyReLU) for m in motion.modules())


def test_variance_attention_preserves_shape_and_follows_eqs_8_9() -> None:
    attention = VarianceAttention(6)
    x = torch.randn(2, 6, 5, 7)
    weights, att = attention.attention_map(x)
    assert weights.shape == att.shape == (2, 1, 5, 7)
    # eq. 9: a softmax over the spatial positions (sums to 1), then l2-normalised over them
    torch.testing.assert_close(weights.sum((1, 2, 3)), torch.ones(2))
    torch.testing.assert_close(att.square().sum((1, 2, 3)), torch.ones(2))
    out = attention(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x * torch.exp(att))


def test_variance_attention_highlights_the_high_variance_position() -> None:
    attention = VarianceAttention(4)
    with torch.no_grad():  # identity embedding: v is the channel variance of the input itself (eq. 8)
        attention.embed.weight.copy_(torch.eye(4)[:, :, None, None])
        attention.embed.bias.zero_()
    x = torch.ones(1, 4, 3, 3)
    x[0, :, 1, 2] = torch.tensor([0.0, 2.0, -1.0, 3.0])
    weights, att = attention.attention_map(x)
    assert att[0, 0].argmax().item() == 1 * 3 + 2
    variance = torch.tensor([0.0, 2.0, -1.0, 3.0]).var(unbiased=False)
    expected = torch.full((9,), 1.0)
    expected[5] = torch.exp(variance)
    torch.testing.assert_close(weights.flatten(), expected / expected.sum())


def test_bad_shapes_raise_clear_errors() -> None:
    model = StdModel(StdConfig(height=32, width=32, base_channels=4))
    with pytest.raises(ValueError, match=r"\(N, 3, 4, H, W\)"):
        model(torch.rand(1, 3, 5, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, 4, H, W\)"):
        model(torch.rand(1, 1, 4, 32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.rand(1, 3, 4, 30, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        UpBlock(6, 4, 0.2)
    with pytest.raises(ValueError, match="VarianceAttention"):
        VarianceAttention(3)(torch.rand(3, 4, 4))


def test_set_centres_copies_in_place_and_marks_initialised() -> None:
    model = StdModel(StdConfig(height=32, width=32, base_channels=4, num_clusters=3))
    param = model.centres
    assert not bool(model.centres_initialised)
    new = torch.rand(3, 64)
    model.set_centres(new)
    assert model.centres is param and bool(model.centres_initialised)
    torch.testing.assert_close(model.centres.detach(), new)
    assert "centres" in model.state_dict() and "centres_initialised" in model.state_dict()
    assert all(p is not param for p in model.autoencoder_parameters())
    with pytest.raises(ValueError, match="centres must have shape"):
        model.set_centres(torch.rand(2, 64))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        StdConfig(height=60)
    with pytest.raises(ValueError, match="even"):
        StdConfig(base_channels=3)
    with pytest.raises(ValueError, match="batch_size=0"):
        StdConfig(batch_size=0)
    with pytest.raises(ValueError, match="kmeans_max_points"):
        StdConfig(kmeans_max_points=4)


def test_backward_on_channels_last_clips_does_not_crash() -> None:
    """Clips arrive as uint8 ``(N, T, H, W, 3)`` and are permuted, so the first frame is a channels-last view.

    Without ``.contiguous()`` on it, the spatial stream's backward pass corrupted the heap (segfault or "double
    free") in torch 2.13's oneDNN CPU convolution at 64x64 with ``base_channels=8``.
    """
    model = StdModel(StdConfig(height=64, width=64, base_channels=8))
    clip = torch.rand(2, 5, 64, 64, 3).permute(0, 4, 1, 2, 3)  # (N, 3, T, H, W), strided like training batches
    out = model(clip[:, :, :-1])
    (out.recon_first.square().mean() + out.diff.square().mean()).backward()
    assert all(p.grad is not None for p in model.spatial.parameters())
