import pytest
import torch

from vad_models.ssmtl.config import VARIANTS, SsmtlConfig
from vad_models.ssmtl.method import SsmtlMethod
from vad_models.ssmtl.model import Shared3DCNN, SsmtlNet, encoder_stages

# Table 1 by hand: 3x3x3 convs without bias (BN follows) = 27 * c_in * c_out, plus 2 * c_out BN parameters.
#   shallow_narrow 3-16-32-32:            27 * (48 + 512 + 1024) + 2 * 80 = 42,928
#   shallow_wide   3-32-64-64:            27 * (96 + 2048 + 4096) + 2 * 160 = 168,800
#   deep_narrow    3-16-16-32-32-32-32:   27 * (48 + 256 + 512 + 3 * 1024) + 2 * 160 = 105,296
#   deep_wide      3-32-32-64-64-64-64:   27 * (96 + 1024 + 2048 + 3 * 4096) + 2 * 320 = 417,952
ENCODER_PARAMS = {"shallow_narrow": 42_928, "shallow_wide": 168_800, "deep_narrow": 105_296, "deep_wide": 417_952}
FEATURES = {"shallow_narrow": (32, 8), "shallow_wide": (64, 8), "deep_narrow": (32, 4), "deep_wide": (64, 4)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_parameter_count_and_shape(variant: str) -> None:
    encoder = Shared3DCNN(encoder_stages(variant))
    assert sum(p.numel() for p in encoder.parameters()) == ENCODER_PARAMS[variant]
    assert encoder.num_convs == (3 if variant.startswith("shallow") else 6)
    channels, side = FEATURES[variant]
    assert encoder(torch.rand(2, 3, 7, 64, 64)).shape == (2, channels, side, side)


@pytest.mark.parametrize("variant", VARIANTS)
def test_heads_on_table1_input(variant: str) -> None:
    cfg = SsmtlConfig(variant=variant)
    net = SsmtlMethod().build_model(cfg).eval()
    clip = torch.rand(2, 3, 7, 64, 64)  # [B, 3, 7, 64, 64]
    with torch.no_grad():
        out = net(arrow=clip, irregularity=clip, middle=clip[:, :, :6], distill=clip[:, :, 3:4])
    assert out["arrow"].shape == out["irregularity"].shape == (2, 2)
    assert out["middle"].shape == (2, 3, 64, 64)
    assert 0.0 <= float(out["middle"].min()) and float(out["middle"].max()) <= 1.0
    assert out["distill"].shape == (2, 1080)  # 1000 ResNet-50 features + 80 COCO classes
    decoder = net.heads["middle"]
    convs = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    ups = [m for m in decoder.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(convs) == net.encoder.num_convs and len(ups) == net.encoder.num_pools  # §3.2
    assert convs[-1].out_channels == 3


def test_temporal_pooling_lets_each_task_use_its_own_length() -> None:
    encoder = Shared3DCNN(encoder_stages("shallow_narrow")).eval()
    for frames in (1, 6, 7, 25):
        assert encoder(torch.rand(1, 3, frames, 64, 64)).shape == (1, 32, 8, 8)


def test_arrow_and_irregularity_share_one_encoder_pass_when_given_the_same_clip() -> None:
    net = SsmtlNet(encoder_stages("shallow_narrow"), tasks=("arrow", "irregularity")).eval()
    calls = []
    net.encoder.register_forward_hook(lambda *_: calls.append(1))
    clip = torch.rand(1, 3, 7, 64, 64)
    with torch.no_grad():
        out = net(arrow=clip, irregularity=clip)
        separate = net(arrow=clip)["arrow"]
    assert len(calls) == 2  # one pass for both tasks, one for the second call
    torch.testing.assert_close(out["arrow"], separate)


def test_bad_inputs_raise_clear_errors() -> None:
    net = SsmtlNet(encoder_stages("shallow_narrow"), tasks=("arrow", "middle"))
    with pytest.raises(ValueError, match="not trained"):
        net(distill=torch.rand(1, 3, 1, 64, 64))
    with pytest.raises(ValueError, match="64, 64"):
        net(arrow=torch.rand(1, 3, 7, 32, 32))
    with pytest.raises(ValueError, match="expected"):
        net.encoder(torch.rand(1, 1, 7, 64, 64))
    with pytest.raises(ValueError, match="unknown variant"):
        encoder_stages("medium_wide")
    assert "distill" not in net.heads


def test_only_the_longest_sequences_update_the_batch_norm_running_statistics() -> None:
    """Inference normalises 7-frame windows with the running statistics: the 6-frame middle-box and 1-frame
    distillation passes of a training step use their batch statistics but leave the running ones alone."""
    torch.manual_seed(0)
    stages = encoder_stages("shallow_narrow")
    arrow, irregularity = torch.rand(4, 3, 7, 16, 16), torch.rand(4, 3, 7, 16, 16)
    alone = SsmtlNet(stages, crop_size=16, distill_dim=1).train()
    joint = SsmtlNet(stages, crop_size=16, distill_dim=1).train()
    joint.load_state_dict(alone.state_dict())
    alone(arrow=arrow, irregularity=irregularity)
    middle, distill = torch.rand(4, 3, 6, 16, 16), torch.rand(4, 3, 1, 16, 16)
    joint(arrow=arrow, irregularity=irregularity, middle=middle, distill=distill)
    for name, value in alone.encoder.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(joint.encoder.state_dict()[name], value)
    norm = joint.encoder.stages[0][1]
    assert norm.momentum == 0.1 and norm.running_mean.abs().sum() > 0  # restored, and the 7-frame pass counted
