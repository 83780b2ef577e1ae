"""Model checkpoints: a directory of plain files any node can read, loaded without unpickling code.

Layout of one checkpoint directory::

    model.pt          state_dict of the unwrapped model (tensors only)
    optimizer.pt      optimizer state_dict (tensors + plain containers)
    train_state.json  {"phase_index", "phase", "epoch" (next epoch to run), "step", "finished"}
    config.json       {"method", "method_config", "package_version", "metrics"}
    calibration.json  optional {task: [centre, scale]} fitted on held-out normal videos
    calibration_scores.parquet  optional raw task scores of those videos (video_id, fps, frame_idx, columns):
                      scoring runs fuse them like new footage to set event thresholds on known-normal video
    _SUCCESS          written last: a directory without it is incomplete and ignored

A training output directory keeps ``checkpoints/<phase>-<epoch>/`` plus ``latest.json`` (and ``best.json``
when a validation loss exists), single small objects replaced atomically, pointing at the current one.
Everything is loaded with ``torch.load(weights_only=True)``: a checkpoint cannot execute code.

Example:
    >>> loaded = load_checkpoint("outputs/demo/train")  # doctest: +SKIP
    >>> loaded.method.name, loaded.model.training  # doctest: +SKIP
    ('luss_ae', False)
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch
from torch import nn

from pipelines import storage
from pipelines.config import config_from_dict, config_to_dict
from vad_models.base import Method
from vad_models.registry import get_method

__all__ = [
    "CheckpointError",
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_tensor_file",
    "resolve_checkpoint_dir",
    "write_checkpoint",
]

_REQUIRED = ("model.pt", "config.json", "train_state.json")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or unsafe to load."""


@dataclass
class LoadedCheckpoint:
    """A model restored from a checkpoint, ready for inference (``eval()`` mode)."""

    uri: str
    method: Method
    config: Any
    model: nn.Module
    train_state: dict[str, Any]
    calibration: dict[str, tuple[float, float]] | None
    checkpoint_id: str
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration_scores: pa.Table | None = None


def load_tensor_file(data: bytes, *, what: str) -> Any:
    """Deserialize a torch file with ``weights_only=True`` (tensors and plain containers only).

    Raises:
        CheckpointError: when the file holds anything else (e.g. a pickled object that would run code).
    """
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError variants
        raise CheckpointError(
            f"refusing to load {what}: it is not a plain tensor file loadable with weights_only=True ({exc})"
        ) from exc


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_checkpoint(
    directory: str,
    *,
    method_name: str,
    config: Any,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any] | None,
    train_state: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    calibration: dict[str, tuple[float, float]] | None = None,
    calibration_scores: pa.Table | None = None,
) -> str:
    """Write one checkpoint directory (local path or any storage URI); ``_SUCCESS`` goes last.

    Returns:
        The directory URI.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("vad-ray")
    except PackageNotFoundError:  # running from a source tree without install
        package_version = "0+unknown"
    meta = {
        "method": method_name,
        "method_config": config_to_dict(config),
        "package_version": package_version,
        "metrics": metrics or {},
    }
    storage.write_bytes_atomic(storage.join(directory, "model.pt"), _torch_bytes(model_state))
    if optimizer_state is not None:
        storage.write_bytes_atomic(storage.join(directory, "optimizer.pt"), _torch_bytes(optimizer_state))
    storage.write_json_atomic(storage.join(directory, "train_state.json"), train_state)
    storage.write_json_atomic(storage.join(directory, "config.json"), meta)
    if calibration is not None:
        payload = {k: [float(c), float(s)] for k, (c, s) in calibration.items()}
        storage.write_json_atomic(storage.join(directory, "calibration.json"), payload)
    if calibration_scores is not None:
        storage.write_parquet_atomic(storage.join(directory, "calibration_scores.parquet"), calibration_scores)
    storage.write_text_atomic(storage.join(directory, "_SUCCESS"), "")
    return directory


def resolve_checkpoint_dir(uri: str) -> str:
    """Turn a training output dir (with ``latest.json``/``best.json``) or a checkpoint dir into the latter.

    Raises:
        CheckpointError: with what was expected when nothing usable is at ``uri``.
    """
    if storage.exists(storage.join(uri, "model.pt")):
        if not storage.exists(storage.join(uri, "_SUCCESS")):
            raise CheckpointError(f"checkpoint {uri} is incomplete (no _SUCCESS): it was interrupted while written")
        return uri
    for pointer in ("best.json", "latest.json"):
        pointer_uri = storage.join(uri, pointer)
        if storage.exists(pointer_uri):
            target = storage.read_json(pointer_uri)["checkpoint"]
            return resolve_checkpoint_dir(storage.join(uri, target))
    raise CheckpointError(
        f"no checkpoint at {uri}: expected a checkpoint directory (model.pt, config.json, train_state.json, "
        "_SUCCESS) or a training output directory with latest.json"
    )


def load_checkpoint(uri: str, *, device: str | torch.device = "cpu", prefer: str = "best") -> LoadedCheckpoint:
    """Load a checkpoint for inference.

    Args:
        uri: A checkpoint directory or a training output directory (``best.json`` is preferred over
            ``latest.json`` when ``prefer="best"``).
        device: Where to put the model.
        prefer: ``"best"`` or ``"latest"`` when ``uri`` is a training output directory.

    Returns:
        The method, its config, the model in ``eval()`` mode, the calibration (if any) and a stable
        ``checkpoint_id`` (sha256 prefix of the weights) used to skip already-scored videos.
    """
    if prefer == "latest" and storage.exists(storage.join(uri, "latest.json")):
        uri = storage.join(uri, storage.read_json(storage.join(uri, "latest.json"))["checkpoint"])
    directory = resolve_checkpoint_dir(uri)
    for name in _REQUIRED:
        if not storage.exists(storage.join(directory, name)):
            raise CheckpointError(f"checkpoint {directory} lacks {name}")
    meta = storage.read_json(storage.join(directory, "config.json"))
    method = get_method(meta["method"])
    config = config_from_dict(method.config_class, meta["method_config"])
    weights = storage.read_bytes(storage.join(directory, "model.pt"))
    state = load_tensor_file(weights, what=storage.join(directory, "model.pt"))
    model = method.build_model(config)
    model.load_state_dict(state)
    model.to(device).eval()
    calibration = None
    calibration_uri = storage.join(directory, "calibration.json")
    if storage.exists(calibration_uri):
        calibration = {k: (float(v[0]), float(v[1])) for k, v in storage.read_json(calibration_uri).items()}
    calibration_scores = None
    if storage.exists(storage.join(directory, "calibration_scores.parquet")):
        calibration_scores = storage.read_parquet(storage.join(directory, "calibration_scores.parquet"))
    return LoadedCheckpoint(
        uri=directory,
        method=method,
        config=config,
        model=model,
        train_state=storage.read_json(storage.join(directory, "train_state.json")),
        calibration=calibration,
        checkpoint_id=hashlib.sha256(weights).hexdigest()[:16],
        metrics=meta.get("metrics", {}),
        calibration_scores=calibration_scores,
    )


def point_to(out: str, pointer: str, checkpoint_rel: str, extra: dict[str, Any] | None = None) -> None:
    """Atomically replace ``out/<pointer>`` (``latest.json`` / ``best.json``) to name ``checkpoint_rel``."""
    storage.write_json_atomic(storage.join(out, pointer), {"checkpoint": checkpoint_rel, **(extra or {})})


def checkpoint_rel_name(phase_index: int, phase: str, epoch: int) -> str:
    """Relative directory name of a checkpoint, sortable by training progress."""
    return f"checkpoints/{phase_index:02d}-{phase}-epoch{epoch:04d}"


def read_pointer(out: str, pointer: str = "latest.json") -> str | None:
    """Checkpoint directory named by ``out/<pointer>``, or ``None`` when absent."""
    uri = storage.join(out, pointer)
    if not storage.exists(uri):
        return None
    return storage.join(out, json.loads(storage.read_text(uri))["checkpoint"])
