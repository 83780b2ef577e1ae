"""A multi-phase run (STD: pre-train -> K-means init -> joint) resumes in the right phase after a crash.

The generic trainer records the phase in every checkpoint. A worker killed in the second epoch of the joint phase
must resume in that phase, keep the K-means centres it already fitted (no re-initialisation), and finish; a crash
right after the pre-training phase must re-run the K-means initialisation from the pre-trained weights.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.checkpoint import load_checkpoint, read_pointer
from pipelines.config import load_config
from pipelines.stores import read_store
from vad_models.registry import get_method
from vad_models.std.config import StdConfig

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = (
    "height=32", "width=32", "base_channels=4", "num_clusters=4", "batch_size=8", "pretrain_epochs=1", "epochs=2",
    "kmeans_init_batches=2", "kmeans_points_per_clip=16", "kmeans_n_init=1", "train_stride=4", "score_batch_size=8",
)


@pytest.fixture(scope="module")
def std_store(tiny_corpus: Path, ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    from pipelines.clip_store import build_clip_store

    out = str(tmp_path_factory.mktemp("std_store") / "store")
    build_clip_store("folder", str(tiny_corpus), out, "std", size=(32, 32))
    return out


def _steps_per_epoch(store: str, cfg: StdConfig) -> int:
    """Optimizer steps of one local-mode epoch: every training window of the train split, in batches."""
    method = get_method("std")
    rows = read_store(store, split="train").take_all()
    batch = {k: np.array([r[k] for r in rows] + [None], dtype=object)[:-1] for k in rows[0]}
    for key in ("start_frame", "num_frames"):
        batch[key] = batch[key].astype(np.int64)
    examples = method.make_examples(batch, cfg, np.random.default_rng(0))
    return math.ceil(len(next(iter(examples.values()))) / cfg.batch_size)


def _train(store: str, out: Path, marker: Path, crash_at: int) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, str(ROOT / "jobs" / "train_std.py"), "--data", store, "--out", str(out),
        "--val-fraction", "0", "--num-cpus", "2", *OVERRIDES,
    ]
    env = {**os.environ, "VAD_FAULT_CRASH_AT_STEP": str(crash_at), "VAD_FAULT_MARKER": str(marker)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_crash_in_the_joint_phase_resumes_there_with_the_fitted_centres(std_store: str, tmp_path: Path) -> None:
    cfg = load_config(StdConfig, None, OVERRIDES)
    steps = _steps_per_epoch(std_store, cfg)
    out, marker = tmp_path / "run", tmp_path / "crashed"
    # pre-train epoch (steps), joint epoch 1 (steps), then die at the first step of joint epoch 2.
    first = _train(std_store, out, marker, crash_at=2 * steps)
    assert first.returncode != 0 and marker.exists(), first.stdout + first.stderr
    latest = read_pointer(str(out), "latest.json")
    assert latest is not None and latest.rstrip("/").endswith("1-joint-epoch0001"), latest
    centres_before = load_checkpoint(latest).model.state_dict()
    second = _train(std_store, out, marker, crash_at=2 * steps)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log
    assert "resuming from checkpoint: phase joint epoch 1" in log, log
    assert "phase 'joint' set-up" not in log, "resumed mid-phase: the centres must not be re-initialised"
    final = load_checkpoint(str(out))
    assert final.train_state["finished"] and final.train_state["phase"] == "joint"
    assert final.uri.rstrip("/").endswith("1-joint-epoch0002"), final.uri
    # Resumed from the saved state: the centres moved on from there rather than being re-fitted from scratch.
    key = next(k for k in centres_before if "centre" in k or "center" in k)
    assert not torch.equal(final.model.state_dict()[key], centres_before[key]) or steps == 0
    assert torch.isfinite(final.model.state_dict()[key]).all()
