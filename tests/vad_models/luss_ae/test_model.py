import pytest
import torch
from torch import nn

from vad_models.luss_ae.config import LussAeConfig
from vad_models.luss_ae.model import LussAe, PrpHead


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def model_256() -> LussAe:
    torch.manual_seed(0)
    return LussAe(LussAeConfig()).eval()


def test_parameter_counts_match_the_paper(model_256: LussAe) -> None:
    # REFERENCE §1.2 / paper Table 6: 3DCAE 5.98M, LUSS-AE 6.12M.
    assert _count(model_256.encoder) == 2_990_784
    assert _count(model_256.decoder) == 2_990_017
    assert _count(model_256.encoder) + _count(model_256.decoder) == 5_980_801
    assert _count(model_256.ffp_head) == 28
    assert _count(model_256.prp_head.conv) == 73_760
    assert _count(model_256.prp_head.mlp) == 69_858
    assert _count(model_256) == 6_124_447


def test_parameter_count_does_not_depend_on_frame_size() -> None:
    assert _count(LussAe(LussAeConfig(height=64, width=96))) == 6_124_447


def test_layer_list_follows_memae() -> None:
    model = LussAe(LussAeConfig())
    convs = [m for m in model.encoder if isinstance(m, nn.Conv3d)]
    assert [c.stride for c in convs] == [(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert [c.out_channels for c in convs] == [96, 128, 256, 256]
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.encoder) == 4
    deconvs = [m for m in model.decoder if isinstance(m, nn.ConvTranspose3d)]
    assert [d.out_channels for d in deconvs] == [256, 128, 96, 1]
    assert deconvs[-1].stride == (1, 2, 2) and deconvs[-1].output_padding == (0, 1, 1)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.decoder) == 3
    assert isinstance(model.decoder[-1], nn.ConvTranspose3d)  # no BN/activation after the last layer
    assert model.ffp_head.conv.stride == (16, 1, 1)


def test_forward_shapes_at_256(model_256: LussAe) -> None:
    clip = torch.rand(1, 1, 16, 256, 256) * 2 - 1
    with torch.inference_mode():
        z = model_256.encoder(clip)
        out = model_256(clip)
    assert z.shape == (1, 256, 2, 16, 16)
    assert out.recon.shape == (1, 1, 16, 256, 256)
    assert out.pred.shape == (1, 1, 1, 256, 256)
    assert out.logits.shape == (1, 2)
    assert out.recon.abs().max() <= 1 and out.pred.abs().max() <= 1


@pytest.mark.parametrize("size", [(64, 64), (16, 16), (48, 80)])
def test_forward_shapes_at_other_sizes(size: tuple[int, int]) -> None:
    h, w = size
    model = LussAe(LussAeConfig(height=h, width=w)).eval()
    clip, rate = torch.rand(2, 1, 16, h, w), torch.rand(3, 1, 16, h, w)
    with torch.inference_mode():
        out = model(clip, rate)
    assert out.recon.shape == (2, 1, 16, h, w)
    assert out.pred.shape == (2, 1, 1, h, w)
    assert out.logits.shape == (3, 2)


def test_prp_head_pool_equals_original_maxpool_at_256() -> None:
    head = PrpHead(256, 32, 4, (128, 32))
    conv_map = torch.randn(2, 32, 8, 8)  # the conv output at 256x256 input
    torch.testing.assert_close(head.pool2d(conv_map), nn.MaxPool2d(2)(conv_map))
    z = torch.randn(2, 256, 2, 16, 16)
    torch.testing.assert_close(head.pool3d(z).amax(dim=2), nn.MaxPool3d(2)(z)[:, :, 0])


def test_scoring_reuses_the_clip_encoding() -> None:
    torch.manual_seed(0)
    model = LussAe(LussAeConfig(height=32, width=32)).eval()
    clip = torch.rand(2, 1, 16, 32, 32)
    calls = {"encoder": 0, "decoder": 0}
    hooks = [
        getattr(model, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
        for name in calls
    ]
    with torch.inference_mode():
        alone = model(clip)
        assert calls == {"encoder": 1, "decoder": 1}  # decoder run once for both heads
        paired = model(clip, clip)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(alone.logits, paired.logits)


def test_gradients_reach_every_parameter() -> None:
    model = LussAe(LussAeConfig(height=32, width=32))
    out = model(torch.rand(2, 1, 16, 32, 32), torch.rand(2, 1, 16, 32, 32))
    (out.recon.mean() + out.pred.mean() + out.logits.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "shape, match",
    [
        ((2, 16, 32, 32), "clip must be"),
        ((2, 3, 16, 32, 32), "clip must be"),
        ((2, 1, 8, 32, 32), "clip must be"),
        ((2, 1, 16, 40, 32), "multiples of 16"),
    ],
)
def test_bad_shapes_raise(shape: tuple[int, ...], match: str) -> None:
    model = LussAe(LussAeConfig(height=32, width=32))
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape))
    with pytest.raises(ValueError, match="rate_clip"):
        model(torch.zeros(1, 1, 16, 32, 32), torch.zeros(1, 1, 15, 32, 32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"height": 40}, "multiples of 16"),
        ({"clip_len": 12}, "clip_len"),
        ({"error": "psnr"}, "error"),
        ({"prp_strides": (1, 2)}, "prp_strides"),
        ({"prp_prob": 1.5}, "prp_prob"),
        ({"robust_percentiles": (99.0, 1.0)}, "robust_percentiles"),
        ({"autocast": "fp8"}, "autocast"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"alpha_prp": -1.0}, "alpha"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LussAeConfig(**kwargs)


def test_config_coerces_yaml_lists_to_tuples() -> None:
    cfg = LussAeConfig(prp_strides=[2, 3], robust_percentiles=[5, 95])  # type: ignore[arg-type]
    assert cfg.prp_strides == (2, 3) and cfg.robust_percentiles == (5, 95)
    hash(cfg)
