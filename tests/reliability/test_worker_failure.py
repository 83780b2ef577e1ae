"""A Ray Train worker process killed mid-epoch: restart from the last checkpoint, or a clear error.

The worker is a real process (``num_workers=1``, half a CPU so Ray Data keeps CPU for the example pipeline on the
2-CPU test cluster) and dies through ``pipelines.faults.maybe_crash`` (``VAD_FAULT_CRASH_AT_STEP`` +
``VAD_FAULT_MARKER``). Local mode is not used: there ``os._exit`` would kill pytest. Local-mode resume after a
crashed *job* is tests/pipelines/test_train.py::test_resume_after_a_crash_continues_from_the_saved_epoch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from pipelines import train as train_module
from pipelines.checkpoint import load_checkpoint, read_pointer
from pipelines.train import TrainRunConfig, train
from vad_models.luss_ae.config import LussAeConfig

FAULT_ENV = ("VAD_FAULT_CRASH_AT_STEP", "VAD_FAULT_MARKER")


@pytest.fixture()
def fault_env_reaches_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward ``VAD_FAULT_*`` from the driver's environment to the Ray Train workers.

    Ray workers keep the environment their cluster started with, so variables set by a test never reach them.
    This wraps the ``RunConfig`` that ``train()`` builds to pass them as ``worker_runtime_env``; a
    ``worker_runtime_env`` that ``train()`` sets itself is left as it is.
    """
    real = train_module.RunConfig

    def run_config(**kwargs: object) -> object:
        env = {k: os.environ[k] for k in FAULT_ENV if k in os.environ}
        kwargs.setdefault("worker_runtime_env", {"env_vars": env})
        return real(**kwargs)

    monkeypatch.setattr(train_module, "RunConfig", run_config)


def _crash_in_second_epoch(monkeypatch: pytest.MonkeyPatch, steps_per_epoch: int, marker: Path) -> None:
    # Step numbers are global: the second batch of epoch 2 comes after the epoch-1 checkpoint was written.
    monkeypatch.setenv("VAD_FAULT_CRASH_AT_STEP", str(steps_per_epoch + 1))
    monkeypatch.setenv("VAD_FAULT_MARKER", str(marker))


def _run(max_failures: int) -> TrainRunConfig:
    return TrainRunConfig(
        num_workers=1, cpus_per_worker=0.5, max_failures=max_failures, val_fraction=0.0, log_every=0, name="fault"
    )


def test_killed_worker_restarts_from_the_last_checkpoint(
    luss_store: str,
    luss_two_epochs: LussAeConfig,
    steps_per_epoch: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault_env_reaches_workers: None,
) -> None:
    marker = tmp_path / "worker-killed"
    _crash_in_second_epoch(monkeypatch, steps_per_epoch, marker)
    out = str(tmp_path / "train")
    result = train("luss_ae", luss_two_epochs, luss_store, out, _run(max_failures=1))
    assert marker.exists(), "the worker was never killed: VAD_FAULT_* did not reach it"
    final = load_checkpoint(result.checkpoint)
    assert final.uri.endswith("epoch0002") and final.train_state["finished"]
    assert final.train_state["step"] == 2 * steps_per_epoch
    # Resumed, not restarted from scratch: the epoch-1 checkpoint predates the crash and was not rewritten.
    first = Path(out) / "checkpoints" / "00-train-epoch0001" / "_SUCCESS"
    assert first.stat().st_mtime_ns < marker.stat().st_mtime_ns
    assert ray.data.range(4).count() == 4  # the shared session cluster still works


def test_killed_worker_without_restarts_fails_clearly_and_keeps_the_last_checkpoint(
    luss_store: str,
    luss_two_epochs: LussAeConfig,
    steps_per_epoch: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault_env_reaches_workers: None,
) -> None:
    marker = tmp_path / "worker-killed"
    _crash_in_second_epoch(monkeypatch, steps_per_epoch, marker)
    out = str(tmp_path / "train")
    with pytest.raises(RuntimeError, match="training failed") as failed:
        train("luss_ae", luss_two_epochs, luss_store, out, _run(max_failures=0))
    assert marker.exists(), "the worker was never killed: VAD_FAULT_* did not reach it"
    message = str(failed.value)
    assert "Last good checkpoint: " + str(Path(out) / "checkpoints" / "00-train-epoch0001") in message
    assert "set max_failures>=1" in message
    intact = read_pointer(out, "latest.json")
    loaded = load_checkpoint(intact)
    assert loaded.train_state["epoch"] == 1 and not loaded.train_state.get("finished")
    assert not (Path(out) / "checkpoints" / "00-train-epoch0002").exists()
    assert ray.data.range(4).count() == 4  # the shared session cluster still works
