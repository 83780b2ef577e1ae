"""Constants and small helpers shared by tests (import as ``tests.helpers``)."""

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Overrides of the LUSS-AE config for a model small enough to train in seconds on 2 CPU cores.
TINY_LUSS_OVERRIDES = (
    "height=32",
    "width=32",
    "encoder_channels=[16,16,32,32]",
    "prp_hidden=[32,16]",
    "epochs=1",
    "batch_size=8",
    "train_stride=4",
)


def load_job(name: str) -> ModuleType:
    """Import ``jobs/<name>.py`` as a module (jobs are scripts, not a package), e.g. to call its ``main(argv)``."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def method_smoke_setup(name: str) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """``(method, smoke config, smoke store rows)`` of a registered method (the contract tests' inputs)."""
    from vad_models.registry import get_method

    method = get_method(name)
    cfg = type(method).smoke_config()
    rows = type(method).smoke_rows(np.random.default_rng(0))
    return method, cfg, rows


def method_smoke_examples(method: Any, rows: dict[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray]:
    """Training examples from smoke rows, grouped per video for ``group_by_video`` methods as the trainer does."""
    rng = np.random.default_rng(1)
    if not method.input_spec(cfg).group_by_video:
        return method.make_examples(rows, cfg, rng)
    video_ids = np.asarray(rows["video_id"])
    parts = [
        method.make_examples({k: np.asarray(v)[video_ids == vid] for k, v in rows.items()}, cfg, rng)
        for vid in np.unique(video_ids)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def method_smoke_batch(examples: dict[str, np.ndarray], cfg: Any, device: Any = "cpu") -> dict[str, Any]:
    """The first ``cfg.batch_size`` examples as a tensor batch on ``device``, as the trainer feeds them."""
    import torch

    return {
        k: torch.from_numpy(np.ascontiguousarray(v[: int(cfg.batch_size)])).to(device) for k, v in examples.items()
    }
