"""GPU requests fail fast on a local CPU-only Ray and wait (boundedly) for an autoscaling cluster's GPUs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipelines.runtime import require_gpus
from pipelines.score import ScoreConfig, score
from pipelines.train import TrainRunConfig, train


@pytest.fixture()
def embedded_ray(ray_local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's local Ray as a user's embedded one: no RAY_ADDRESS, no GPU."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_scoring_with_use_gpu_on_a_cpu_only_local_ray_fails_at_once(
    embedded_ray: None, luss_checkpoint: str, luss_store: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    message = r"asks for 1 GPU\(s\) but the Ray cluster has no GPU; drop --use-gpu to score"
    with pytest.raises(RuntimeError, match=message):
        score(luss_checkpoint, luss_store, str(tmp_path / "gpu"), ScoreConfig(use_gpu=True))
    assert time.monotonic() - started < 30
    assert not (tmp_path / "gpu").exists()


def test_training_with_use_gpu_on_a_cpu_only_local_ray_fails_at_once(
    embedded_ray: None, luss_store: str, tmp_path: Path
) -> None:
    from pipelines.config import load_config
    from tests.helpers import TINY_LUSS_OVERRIDES
    from vad_models.luss_ae.config import LussAeConfig

    cfg = load_config(LussAeConfig, None, TINY_LUSS_OVERRIDES)
    with pytest.raises(RuntimeError, match="drop --use-gpu to train on CPUs"):
        train("luss_ae", cfg, luss_store, str(tmp_path / "gpu"), TrainRunConfig(num_workers=2, use_gpu=True))


def test_a_joined_cluster_is_given_time_to_scale_up_then_a_clear_error(
    ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # as under `ray job submit`: the cluster may have an autoscaler
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"asks for 2 GPU\(s\)"):
        require_gpus(2, "score", wait_s=0.6, poll_s=0.1)
    assert 0.5 <= time.monotonic() - started < 30
