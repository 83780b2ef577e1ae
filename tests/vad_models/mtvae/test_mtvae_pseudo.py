import pytest
import torch

from vad_models.mtvae.model import MultiTaskVae
from vad_models.mtvae.pseudo import make_pseudo_videos, pseudo_abnormal, pseudo_counts, pseudo_normal


@pytest.fixture()
def vae() -> MultiTaskVae:
    torch.manual_seed(0)
    return MultiTaskVae(16, (32, 8))


def test_pseudo_abnormal_replaces_half_the_snippets_in_every_crop(vae: MultiTaskVae) -> None:
    videos = torch.rand(4, 10, 9, 16)  # (B, crops, T, F), odd T
    fake, replaced = pseudo_abnormal(vae, videos, torch.Generator().manual_seed(1))
    assert fake.shape == videos.shape and replaced.shape == (4, 9)
    assert replaced.sum(dim=1).tolist() == [4, 4, 4, 4]  # T // 2
    changed = (fake != videos).any(dim=-1)  # (B, crops, T)
    assert torch.equal(changed, replaced[:, None, :].expand_as(changed))  # same positions in all crops
    assert torch.equal(fake[~replaced[:, None, :].expand_as(changed)], videos[~replaced[:, None, :].expand_as(changed)])


def test_pseudo_abnormal_uses_the_abnormal_decoder(vae: MultiTaskVae) -> None:
    with torch.no_grad():
        for p in vae.decoder_abnormal.parameters():
            p.zero_()
    fake, replaced = pseudo_abnormal(vae, torch.rand(2, 3, 6, 16))
    assert fake[replaced[:, None, :].expand(2, 3, 6)].abs().sum() == 0


def test_pseudo_normal_passes_every_snippet_through_the_normal_decoder(vae: MultiTaskVae) -> None:
    with torch.no_grad():
        for p in vae.decoder_normal.parameters():
            p.zero_()
    videos = torch.rand(2, 3, 6, 16)
    fake = pseudo_normal(vae, videos)
    assert fake.shape == videos.shape and fake.abs().sum() == 0


@pytest.mark.parametrize(("ratio", "expected"), [(1.0, 6), (2.0, 12), (0.0, 0)])
def test_make_pseudo_videos_counts_and_flips_labels(vae: MultiTaskVae, ratio: float, expected: int) -> None:
    videos = torch.rand(6, 2, 8, 16)
    labels = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    pseudo, pseudo_labels = make_pseudo_videos(vae, videos, labels, ratio)
    assert pseudo.shape == (expected, 2, 8, 16)
    assert pseudo_labels.tolist() == [1.0] * 4 * int(ratio) + [0.0] * 2 * int(ratio)  # video order kept


def test_make_pseudo_videos_under_bf16_autocast_keeps_the_videos_dtype(vae: MultiTaskVae) -> None:
    """Training with ``precision="bf16"`` runs the decoders under autocast; the pseudo batch stays float32."""
    videos, labels = torch.rand(4, 2, 8, 16), torch.tensor([0.0, 1.0, 0.0, 1.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pseudo, pseudo_labels = make_pseudo_videos(vae, videos, labels, 1.0)
    assert pseudo.dtype == torch.float32 and pseudo.shape == videos.shape and torch.isfinite(pseudo).all()
    assert pseudo_labels.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_half_ratio_uses_about_half_the_videos() -> None:
    counts = pseudo_counts(4000, 0.5, torch.Generator().manual_seed(0))
    assert set(counts.tolist()) == {0, 1} and 1800 < int(counts.sum()) < 2200


def test_wrong_feature_width_raises(vae: MultiTaskVae) -> None:
    with pytest.raises(ValueError, match="pseudo videos"):
        pseudo_normal(vae, torch.rand(2, 3, 6, 15))
