import pytest
import torch
from torch import nn

from vad_models.mtvae.config import MtVaeConfig
from vad_models.mtvae.model import MtVaeModel, MultiTaskVae, NonLocalBlock1d, RtfmHost, SnippetClassifier


def _linear_widths(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize(
    ("arch", "encoder", "latent", "decoder"),
    [
        ("arch1", [(2048, 1024), (1024, 512)], 256, [(256, 512), (512, 1024), (1024, 2048)]),
        ("arch2", [(2048, 1024), (1024, 512), (512, 256)], 128, [(128, 256), (256, 512), (512, 1024), (1024, 2048)]),
        (
            "arch3",
            [(2048, 1024), (1024, 512), (512, 512), (512, 256)],
            256,
            [(256, 256), (256, 512), (512, 512), (512, 1024), (1024, 2048)],
        ),
    ],
)
def test_mtvae_architectures_follow_table5(arch, encoder, latent, decoder) -> None:
    vae = MultiTaskVae(2048, MtVaeConfig(vae_arch=arch).vae_dims)
    assert _linear_widths(vae.encoder) == encoder
    assert vae.mu.out_features == vae.logvar.out_features == latent
    assert _linear_widths(vae.decoder_normal) == decoder == _linear_widths(vae.decoder_abnormal)
    recon, mu, logvar = vae(torch.rand(5, 2048), abnormal=True)
    assert recon.shape == (5, 2048) and mu.shape == logvar.shape == (5, latent)


def test_decoders_are_separate_networks() -> None:
    vae = MultiTaskVae(16, (32, 8))
    z = torch.randn(4, 8)
    assert not torch.allclose(vae.decode(z, abnormal=True), vae.decode(z, abnormal=False))


def test_snippet_classifier_shapes_and_errors() -> None:
    net = SnippetClassifier(16, 8, 4, 0.7).eval()
    assert net(torch.rand(2, 10, 5, 16)).shape == (2, 10, 5)
    with pytest.raises(ValueError, match="SnippetClassifier"):
        net(torch.rand(3, 15))


def test_rtfm_host_shapes_single_snippet_and_errors() -> None:
    host = RtfmHost(64, 32, 16, 0.7).eval()
    feats, logits = host(torch.rand(3, 7, 64))
    assert feats.shape == (3, 7, 64) and logits.shape == (3, 7)
    assert host(torch.rand(1, 1, 64))[1].shape == (1, 1)  # a one-snippet video still scores
    with pytest.raises(ValueError, match="RtfmHost"):
        host(torch.rand(7, 64))


def test_non_local_block_starts_as_identity() -> None:
    block = NonLocalBlock1d(8).eval()
    x = torch.randn(2, 8, 5)
    assert torch.allclose(block(x), x)


def test_container_holds_every_part_and_scores_in_unit_interval() -> None:
    for host, kind in (("rtfm", RtfmHost), ("mlp", SnippetClassifier)):
        net = MtVaeModel(MtVaeConfig(feature_dim=64, host=host, vae_width_divisor=16)).eval()
        assert isinstance(net.host, kind) and isinstance(net.vae, MultiTaskVae)
        scores = net(torch.rand(2, 6, 64))
        assert scores.shape == (2, 6) and ((scores >= 0) & (scores <= 1)).all()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="vae_arch"):
        MtVaeConfig(vae_arch="arch4")
    with pytest.raises(ValueError, match="host"):
        MtVaeConfig(host="transformer")
    with pytest.raises(ValueError, match="divide by 4"):
        MtVaeConfig(feature_dim=30)
