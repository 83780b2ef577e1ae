"""Loading user-supplied I3D weights safely, and converting published key layouts.

Nothing here downloads anything: the user brings a weights file. Files are read with
``torch.load(weights_only=True)`` (plain tensors only; a pickle that would run code is refused) or, for ``.npz``,
``numpy.load(allow_pickle=False)``.

Expected keys (layout ``"native"``, the names of :class:`~vad_models.i3d.model.I3DResNet50`, which are also the
pytorch-resnet3d names): ``conv1.weight``, ``bn1.{weight,bias,running_mean,running_var,num_batches_tracked}``,
``layer{1..4}.{b}.conv{1,2,3}.weight``, ``layer{1..4}.{b}.bn{1,2,3}.*``, ``layer{1..4}.0.downsample.0.weight``,
``layer{1..4}.0.downsample.1.*``. A classifier (``fc.*``), a ``module.`` prefix (DataParallel) and a wrapping
``{"state_dict": ...}`` are accepted and dropped.

Layout ``"caffe2"``: the blob names of the caffe2 Kinetics I3D ResNet-50 (``i3d_baseline_32x2_IN_pretrain_400k``),
optionally under ``{"blobs": ...}``: ``conv1_w``, ``res_conv1_bn_{s,b,rm,riv}``, ``res{2..5}_{b}_branch2{a,b,c}_w``,
``res{2..5}_{b}_branch2{a,b,c}_bn_{s,b,rm,riv}``, ``res{2..5}_0_branch1_w``, ``res{2..5}_0_branch1_bn_*``
(``s`` = BN weight, ``b`` = bias, ``rm`` = running mean, ``riv`` = running variance); ``pred_*`` and ``*momentum*``
blobs are dropped. The original ``.pkl`` is a Python pickle and is refused; convert it once, in a trusted
environment, to ``.npz`` (``numpy.savez(out, **blobs)``) and pass that.

Example:
    >>> native = {"layer1.0.conv1.weight": 0, "bn1.running_var": 1}
    >>> sorted(native_to_caffe2(native))
    ['res2_0_branch2a_w', 'res_conv1_bn_riv']
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "KEY_LAYOUTS",
    "caffe2_to_native",
    "convert_state_dict",
    "load_i3d_weights",
    "native_to_caffe2",
    "read_state_dict",
    "sha256_file",
]

KEY_LAYOUTS = ("native", "caffe2")

_BN_SUFFIX = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_BN_SUFFIX_INV = {v: k for k, v in _BN_SUFFIX.items()}
_BRANCH2 = {"a": "1", "b": "2", "c": "3"}
_BRANCH2_INV = {v: k for k, v in _BRANCH2.items()}

_C2_STEM = re.compile(r"^(?:conv1_w|res_conv1_bn_(s|b|rm|riv))$")
_C2_BRANCH2 = re.compile(r"^res(\d)_(\d+)_branch2([abc])_(w|bn_(?:s|b|rm|riv))$")
_C2_BRANCH1 = re.compile(r"^res(\d)_(\d+)_branch1_(w|bn_(?:s|b|rm|riv))$")
_NATIVE = re.compile(r"^layer(\d)\.(\d+)\.(conv|bn)([123])\.(\w+)$")
_NATIVE_DS = re.compile(r"^layer(\d)\.(\d+)\.downsample\.([01])\.(\w+)$")


def _c2_param(kind: str, conv_name: str, bn_name: str) -> str:
    """caffe2 suffix (``w`` or ``bn_<s|b|rm|riv>``) → native ``<module>.<param>``."""
    if kind == "w":
        return f"{conv_name}.weight"
    return f"{bn_name}.{_BN_SUFFIX[kind[3:]]}"


def caffe2_to_native(blobs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Rename caffe2 I3D ResNet-50 blobs to :class:`~vad_models.i3d.model.I3DResNet50` parameter names.

    Args:
        blobs: Blob name → array or tensor (classifier ``pred_*`` and ``*momentum*`` blobs are dropped).

    Returns:
        Native key → float tensor.

    Raises:
        ValueError: naming blobs that belong to no known layer.

    Example:
        >>> out = caffe2_to_native({"res3_1_branch2b_bn_riv": np.ones(2, np.float32)})
        >>> list(out)
        ['layer2.1.bn2.running_var']
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in blobs.items():
        if key.startswith("pred_") or "momentum" in key:
            continue
        if m := _C2_STEM.match(key):
            name = "conv1.weight" if key == "conv1_w" else f"bn1.{_BN_SUFFIX[m.group(1)]}"
        elif m := _C2_BRANCH2.match(key):
            stage, block, branch, kind = m.groups()
            prefix = f"layer{int(stage) - 1}.{block}"
            idx = _BRANCH2[branch]
            name = _c2_param(kind, f"{prefix}.conv{idx}", f"{prefix}.bn{idx}")
        elif m := _C2_BRANCH1.match(key):
            stage, block, kind = m.groups()
            prefix = f"layer{int(stage) - 1}.{block}.downsample"
            name = _c2_param(kind, f"{prefix}.0", f"{prefix}.1")
        else:
            unknown.append(key)
            continue
        out[name] = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
    if unknown:
        raise ValueError(f"{len(unknown)} caffe2 blobs match no I3D ResNet-50 layer, e.g. {sorted(unknown)[:5]}")
    return out


def native_to_caffe2(state: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`caffe2_to_native` (``num_batches_tracked`` has no caffe2 blob and is dropped).

    Raises:
        ValueError: naming keys that belong to no known layer.
    """
    out: dict[str, Any] = {}
    unknown = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key == "conv1.weight":
            name = "conv1_w"
        elif key.startswith("bn1.") and key[4:] in _BN_SUFFIX_INV:
            name = f"res_conv1_bn_{_BN_SUFFIX_INV[key[4:]]}"
        elif m := _NATIVE.match(key):
            layer, block, kind, idx, param = m.groups()
            stem = f"res{int(layer) + 1}_{block}_branch2{_BRANCH2_INV[idx]}"
            name = f"{stem}_w" if kind == "conv" else f"{stem}_bn_{_BN_SUFFIX_INV.get(param, param)}"
        elif m := _NATIVE_DS.match(key):
            layer, block, idx, param = m.groups()
            stem = f"res{int(layer) + 1}_{block}_branch1"
            name = f"{stem}_w" if idx == "0" else f"{stem}_bn_{_BN_SUFFIX_INV.get(param, param)}"
        else:
            unknown.append(key)
            continue
        out[name] = value
    if unknown:
        raise ValueError(f"{len(unknown)} keys match no I3D ResNet-50 layer, e.g. {sorted(unknown)[:5]}")
    return out


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a weights file without executing code.

    ``.npz`` is read with ``allow_pickle=False``; anything else with ``torch.load(weights_only=True)``. A top-level
    ``"state_dict"`` or ``"blobs"`` mapping is unwrapped.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a plain mapping of arrays/tensors (e.g. a pickle that would run code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights file not found: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            data: Any = {k: npz[k] for k in npz.files}
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as exc:
            raise ValueError(
                f"refusing to load {path}: it is not a plain tensor state_dict (torch.load(weights_only=True) "
                f"rejected it: {str(exc).splitlines()[0]}). Convert trusted weights to a state_dict or .npz first."
            ) from None
    for wrapper in ("state_dict", "blobs"):
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{path} does not hold a non-empty mapping of parameter name -> tensor")
    return dict(data)


def convert_state_dict(data: Mapping[str, Any], layout: str = "native") -> dict[str, torch.Tensor]:
    """Bring a state dict of ``layout`` to native keys, dropping classifier weights and ``module.`` prefixes.

    Example:
        >>> sorted(convert_state_dict({"module.fc.weight": 0, "module.conv1.weight": torch.zeros(1)}))
        ['conv1.weight']
    """
    if layout not in KEY_LAYOUTS:
        raise ValueError(f"weights layout must be one of {KEY_LAYOUTS}, got {layout!r}")
    if layout == "caffe2":
        return caffe2_to_native(data)
    out = {}
    for key, value in data.items():
        key = key.removeprefix("module.")
        if key.startswith("fc."):
            continue
        out[key] = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_i3d_weights(model: nn.Module, path: str | Path, layout: str = "native") -> str:
    """Load a user's weights file into ``model`` (strict: every parameter and buffer must be present).

    Args:
        model: An :class:`~vad_models.i3d.model.I3DResNet50`.
        path: ``.pt``/``.pth`` state dict (``torch.load(weights_only=True)``) or ``.npz``.
        layout: ``"native"`` or ``"caffe2"`` key names (see the module docstring).

    Returns:
        The file's sha256 (recorded in the feature store metadata).

    Raises:
        ValueError: unsafe file, missing/unexpected keys (with a hint about ``layout``) or shape mismatches.
    """
    state = convert_state_dict(read_state_dict(path), layout)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        hint = " (caffe2 blob names? pass layout/--weights-layout caffe2)" if any("_w" in k for k in unexpected) else ""
        raise ValueError(
            f"{path} does not fit I3DResNet50(feature_dim={getattr(model, 'feature_dim', '?')}): "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}{hint}"
        )
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items() if v.shape != expected[k].shape
    ]
    if bad:
        raise ValueError(f"{path}: {len(bad)} tensors have the wrong shape, e.g. {bad[:3]}")
    model.load_state_dict(state, strict=False)  # num_batches_tracked may be absent; everything else is checked
    return sha256_file(path)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m vad_models.i3d.weights SRC DST --layout caffe2``: write a native-key state dict."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("src", help="weights file (.pt/.pth state dict or .npz; never a raw pickle)")
    parser.add_argument("dst", help="output .pt file with native I3DResNet50 keys")
    parser.add_argument("--layout", choices=KEY_LAYOUTS, default="caffe2", help="key layout of SRC")
    args = parser.parse_args(argv)
    state = {k: v.contiguous() for k, v in convert_state_dict(read_state_dict(args.src), args.layout).items()}
    torch.save(state, args.dst)
    print(f"wrote {len(state)} tensors to {args.dst} (sha256 {sha256_file(args.dst)})")


if __name__ == "__main__":
    main()
