import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vad_models.i3d.model import I3DResNet50
from vad_models.i3d.weights import (
    caffe2_to_native,
    convert_state_dict,
    load_i3d_weights,
    main,
    native_to_caffe2,
    read_state_dict,
)


def _net(seed: int = 0) -> I3DResNet50:
    torch.manual_seed(seed)
    return I3DResNet50(base_channels=2)


def test_key_converter_round_trip() -> None:
    state = _net().state_dict()
    blobs = native_to_caffe2(state)
    assert "res2_0_branch1_w" in blobs and "res5_2_branch2c_bn_riv" in blobs and "res_conv1_bn_s" in blobs
    back = caffe2_to_native(blobs)
    expected = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)


def test_caffe2_names_map_to_the_expected_layers() -> None:
    one = np.ones(1, np.float32)
    names = caffe2_to_native(
        {"res2_0_branch1_w": one, "res5_2_branch2c_bn_riv": one, "res3_1_branch2a_bn_s": one, "pred_w": one,
         "res_conv1_bn_rm": one, "conv1_w_momentum": one}
    )  # fmt: skip
    assert sorted(names) == [
        "bn1.running_mean", "layer1.0.downsample.0.weight", "layer2.1.bn1.weight", "layer4.2.bn3.running_var"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="match no I3D"):
        caffe2_to_native({"res2_0_branch9_w": one})


def test_native_layout_drops_classifier_and_dataparallel_prefix() -> None:
    out = convert_state_dict({"module.conv1.weight": torch.zeros(1), "module.fc.weight": torch.zeros(1)})
    assert list(out) == ["conv1.weight"]


def test_load_native_and_caffe2_files(tmp_path: Path) -> None:
    source = _net(seed=1)
    pt = tmp_path / "i3d.pt"
    torch.save(source.state_dict(), pt)
    target = _net(seed=2)
    digest = load_i3d_weights(target, pt)
    assert digest == hashlib.sha256(pt.read_bytes()).hexdigest()
    assert torch.equal(target.conv1.weight, source.conv1.weight)

    npz = tmp_path / "i3d_c2.npz"
    np.savez(npz, **{k: v.numpy() for k, v in native_to_caffe2(source.state_dict()).items()})
    other = _net(seed=3)
    with pytest.raises(ValueError, match="caffe2"):  # wrong layout: the error says which flag to pass
        load_i3d_weights(other, npz)
    load_i3d_weights(other, npz, layout="caffe2")
    assert torch.equal(other.layer4[2].bn3.running_var, source.layer4[2].bn3.running_var)


def test_converter_cli_writes_a_native_state_dict(tmp_path: Path) -> None:
    source = _net(seed=4)
    npz = tmp_path / "c2.npz"
    np.savez(npz, **{k: v.numpy() for k, v in native_to_caffe2(source.state_dict()).items()})
    main([str(npz), str(tmp_path / "native.pt"), "--layout", "caffe2"])
    load_i3d_weights(_net(), tmp_path / "native.pt")


def test_missing_keys_and_wrong_shapes_are_reported(tmp_path: Path) -> None:
    state = _net().state_dict()
    state.pop("conv1.weight")
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="1 missing keys"):
        load_i3d_weights(_net(), tmp_path / "partial.pt")
    wide = I3DResNet50(base_channels=4).state_dict()
    torch.save(wide, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="wrong shape"):
        load_i3d_weights(_net(), tmp_path / "wide.pt")


class _Exploit:
    """Unpickling this would create a directory: the side effect proves whether code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.makedirs, (self.marker,))


def test_malicious_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"conv1.weight": _Exploit(str(marker))}, evil)
    with pytest.raises(ValueError, match="refusing to load"):
        read_state_dict(evil)
    with pytest.raises(ValueError, match="refusing to load"):
        load_i3d_weights(_net(), evil)
    assert not marker.exists()


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")
