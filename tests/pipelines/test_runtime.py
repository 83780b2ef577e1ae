"""GPU requests fail fast on a local CPU-only Ray and wait (boundedly) for an autoscaling cluster's GPUs; freed
tensor memory is reused instead of faulted in again; Ray Train's settings for a local Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.runtime import local_ray_without_dashboard, ray_train_settings, require_gpus
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


_FAULTS_OF_REPEATED_ALLOCATIONS = """
import resource, sys, threading, torch
from pipelines.runtime import reuse_freed_memory
tuned = reuse_freed_memory() if sys.argv[1] == "main" else None

def steps(result):
    for _ in range(10):  # 128 MiB blocks: the heap grows until it holds them (a thread's takes a few steps)
        torch.empty(32 << 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):  # a training step's activations, freed and allocated again
        torch.empty(32 << 20).fill_(1.0)
    result.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

result = []
if sys.argv[1] == "main":
    steps(result)
else:  # like a Ray Data actor's UDF or a Train worker's loop: a thread with its own malloc arena
    thread = threading.Thread(target=steps, args=(result,))
    thread.start()
    thread.join()
print(tuned, result[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_reused_memory_is_not_faulted_in_again_every_step() -> None:
    from pipelines.runtime import reuse_freed_memory_env

    def faults(switch: str, where: str, extra_env: dict[str, str] | None = None) -> tuple[str, int]:
        env = dict(os.environ, VAD_REUSE_FREED_MEMORY=switch, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        env.update(extra_env or {})
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS_OF_REPEATED_ALLOCATIONS, where],
            env=env, capture_output=True, text=True, check=True,
        )
        tuned, count = done.stdout.split()
        return tuned, int(count)

    default_tuned, tuned_faults = faults("1", "main")
    off_tuned, untuned_faults = faults("0", "main")
    assert (default_tuned, off_tuned) == ("True", "False")
    # glibc's defaults map and unmap the 128 MiB block every time: 20 x 32,768 page faults; reuse faults none.
    assert untuned_faults > 20 * 20_000
    assert tuned_faults < untuned_faults / 20
    # A thread allocates from its own arena, whose heaps cannot hold 128 MiB: only the process environment helps.
    _, thread_untuned = faults("0", "thread")
    _, thread_tuned = faults("1", "thread", reuse_freed_memory_env())
    assert thread_untuned > 20 * 20_000 and thread_tuned < thread_untuned / 8  # 0 measured, at most 2 blocks


def test_the_reuse_environment_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.runtime import reuse_freed_memory_env, reuse_freed_memory_remote_args

    monkeypatch.setenv("VAD_REUSE_FREED_MEMORY", "0")
    assert reuse_freed_memory_env() == {} and reuse_freed_memory_remote_args() == {}
    monkeypatch.setenv("VAD_REUSE_FREED_MEMORY", "1")
    if sys.platform.startswith("linux"):
        assert reuse_freed_memory_remote_args() == {"runtime_env": {"env_vars": reuse_freed_memory_env()}}
        assert reuse_freed_memory_env()["MALLOC_MMAP_MAX_"] == "0"


class _Trainer:
    """What ray_train_settings uses of a trainer: its scaling config and the default-callbacks hook."""

    def __init__(self, num_workers: int) -> None:
        self.scaling_config = SimpleNamespace(num_workers=num_workers)

    def _create_default_callbacks(self) -> list:
        return [type("PlacementGroupCleanerCallback", (), {})(), type("DatasetsCallback", (), {})()]


def _callback_names(trainer: _Trainer) -> list[str]:
    return [type(cb).__name__ for cb in trainer._create_default_callbacks()]


def test_the_session_ray_counts_as_local_without_a_dashboard(ray_local: None) -> None:
    assert local_ray_without_dashboard()  # one node, started with include_dashboard=False (tests/conftest.py)


def test_user_settings_win_and_local_mode_is_left_alone(ray_local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")
    trainer = _Trainer(num_workers=1)
    with ray_train_settings(trainer):
        assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"
        assert _callback_names(trainer) == ["DatasetsCallback"]  # the cleaner cannot work without the state API
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"  # not removed: the user set it

    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
    local = _Trainer(num_workers=0)  # local mode starts no controller: nothing to leave out
    with ray_train_settings(local):
        assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ
        assert _callback_names(local) == ["PlacementGroupCleanerCallback", "DatasetsCallback"]


def test_a_cluster_of_several_nodes_keeps_ray_trains_helpers(ray_local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}, {"Alive": False}])
    assert not local_ray_without_dashboard()  # another node may be drained: the preemption watcher has work
    trainer = _Trainer(num_workers=2)
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    with ray_train_settings(trainer):
        assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ
        assert _callback_names(trainer) == ["PlacementGroupCleanerCallback", "DatasetsCallback"]
