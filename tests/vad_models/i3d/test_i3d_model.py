import pytest
import torch
from torch import nn

from vad_models.i3d.model import BLOCKS, INFLATION, I3DResNet50, init_random_features


def test_published_network_gives_2048_features_for_one_16x224_snippet() -> None:
    torch.manual_seed(0)
    net = I3DResNet50().eval()
    with torch.inference_mode():
        out = net(torch.randn(1, 3, 16, 224, 224))
    assert out.shape == (1, 2048)
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_parameter_count_of_the_backbone() -> None:
    # ResNet-50 I3D without the Kinetics classifier; + fc 2048x400 (819,600) gives the published 28.04M.
    assert sum(p.numel() for p in I3DResNet50().parameters()) == 27_223_872


def test_layer_list_follows_the_reference() -> None:
    net = I3DResNet50(base_channels=4)
    assert net.conv1.kernel_size == (5, 7, 7) and net.conv1.stride == (2, 2, 2)
    assert net.maxpool1.kernel_size == (2, 3, 3) and net.maxpool2.kernel_size == (2, 1, 1)
    layers = [net.layer1, net.layer2, net.layer3, net.layer4]
    assert tuple(len(layer) for layer in layers) == BLOCKS
    for layer, pattern, stride in zip(layers, INFLATION, (1, 2, 2, 2)):
        assert tuple(int(block.conv1.kernel_size[0] == 3) for block in layer) == pattern
        assert layer[0].conv2.stride == (1, stride, stride)  # spatial only: time is pooled by the max-pools
        assert layer[0].downsample is not None and all(block.downsample is None for block in layer[1:])


def test_narrow_backbone_is_configurable_and_pools_time_by_eight() -> None:
    net = I3DResNet50(base_channels=4).eval()
    assert net.feature_dim == 128
    with torch.no_grad():
        assert net(torch.zeros(3, 3, 8, 32, 32)).shape == (3, 128)


@pytest.mark.parametrize("shape", [(1, 1, 16, 64, 64), (1, 3, 4, 64, 64), (3, 16, 64, 64), (1, 3, 16, 16, 16)])
def test_bad_input_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="I3DResNet50"):
        I3DResNet50(base_channels=2)(torch.zeros(shape))


def test_random_features_are_seeded_orthogonal_filters_with_identity_batch_norm() -> None:
    net = I3DResNet50(base_channels=4)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    init_random_features(net, seed=5)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG is untouched
    again = init_random_features(I3DResNet50(base_channels=4), seed=5)
    other = init_random_features(I3DResNet50(base_channels=4), seed=6)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(net.conv1.weight, other.conv1.weight)
    for m in net.modules():
        if isinstance(m, nn.Conv3d):
            w = m.weight.flatten(1)
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # orthogonal rows or columns, norm sqrt(2)
            assert torch.allclose(gram, 2 * torch.eye(gram.shape[0]), atol=1e-4)
        elif isinstance(m, nn.BatchNorm3d):
            assert (m.weight == 1).all() and (m.bias == 0).all() and (m.running_var == 1).all()
    with torch.no_grad():  # activations neither explode nor vanish through the 16 residual blocks
        out = net.eval()(torch.randn(2, 3, 16, 64, 64))
    assert torch.isfinite(out).all() and 0.1 < float(out.norm(dim=1).mean()) < 100
