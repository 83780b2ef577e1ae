"""Non-finite losses stop training with an error naming phase, epoch and step, and no garbage checkpoint.

The NaN-at-step-0 case is tests/pipelines/test_train.py::test_non_finite_loss_stops_with_the_step_and_no_checkpoint;
here the loss turns infinite after checkpoints exist (LUSS-AE mid-run, and STD / MT-VAE in their second phase), so
the last good checkpoint must be the one left behind. Local mode: the poisoned loss is patched in this process.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch

from pipelines import storage
from pipelines.checkpoint import load_checkpoint, read_pointer
from pipelines.stores import DATA_DIR, write_manifest, write_store_metadata
from pipelines.train import TrainRunConfig, train
from vad_models.base import get_frame_spec
from vad_models.luss_ae.config import LussAeConfig
from vad_models.luss_ae.method import LussAeMethod
from vad_models.registry import get_method

RUN = TrainRunConfig(val_fraction=0.0, log_every=0)


def _poison(monkeypatch: pytest.MonkeyPatch, method_class: type, when: Any) -> None:
    """Make ``method_class.training_loss`` return ``+inf`` whenever ``when(ctx)`` holds."""
    original = method_class.training_loss

    def poisoned(self, model, batch, cfg, ctx):  # noqa: ANN001, ANN202
        parts = original(self, model, batch, cfg, ctx)
        if when(ctx):
            parts["loss"] = parts["loss"] + float("inf")
        return parts

    monkeypatch.setattr(method_class, "training_loss", poisoned)


def _assert_intact(out: str, name: str) -> dict[str, Any]:
    """``latest.json`` names checkpoint ``name``, which loads with finite weights and is not marked finished."""
    latest = read_pointer(out, "latest.json")
    assert latest is not None and latest.endswith(name), latest
    loaded = load_checkpoint(latest)
    assert not loaded.train_state.get("finished")
    for tensor in loaded.model.state_dict().values():
        assert torch.isfinite(tensor.float()).all()
    return loaded.train_state


def test_inf_loss_mid_run_names_the_step_and_keeps_the_last_good_checkpoint(
    luss_store: str,
    luss_two_epochs: LussAeConfig,
    steps_per_epoch: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    step = steps_per_epoch + 1  # the second batch of epoch 2 (0-based epoch 1)
    _poison(monkeypatch, LussAeMethod, lambda ctx: ctx.step >= step)
    out = str(tmp_path / "inf")
    with pytest.raises(RuntimeError, match=rf"non-finite loss at phase 'train' epoch 1 step {step} \(") as failed:
        train("luss_ae", luss_two_epochs, luss_store, out, RUN)
    assert "loss=inf" in str(failed.value) and "Last good checkpoint" in str(failed.value)
    state = _assert_intact(out, "00-train-epoch0001")
    assert state["step"] == steps_per_epoch
    assert not (Path(out) / "checkpoints" / "00-train-epoch0002").exists()
    assert not (Path(out) / "best.json").exists()  # best.json would point at a finished model


def _smoke_store(out: str, method_name: str) -> Any:
    """A store holding ``Method.smoke_rows`` (two training videos) with the metadata ``train()`` checks."""
    method = get_method(method_name)
    cfg = type(method).smoke_config()
    rows = type(method).smoke_rows(np.random.default_rng(0), cfg)
    spec = method.input_spec(cfg)
    count = len(rows["video_id"])
    items = [{key: rows[key][i] for key in rows} for i in range(count)]
    fs, path = storage.resolve(storage.join(out, DATA_DIR))
    ray.data.from_items(items).write_parquet(path, filesystem=fs, partition_cols=["dataset", "split"])
    frame_spec = get_frame_spec(spec.frame_spec)
    height, width = getattr(cfg, "height", frame_spec.height), getattr(cfg, "width", frame_spec.width)
    manifest = []
    for video_id in dict.fromkeys(str(v) for v in rows["video_id"]):
        mine = [i for i in range(count) if rows["video_id"][i] == video_id]
        if "frames" in rows:
            num_frames = max(int(rows["start_frame"][i]) + len(rows["frames"][i]) for i in mine)
        else:
            num_frames = 16 * len(mine)
        label = int(rows["video_label"][mine[0]]) if "video_label" in rows else 0
        manifest.append(
            {"video_id": video_id, "dataset": "smoke", "uri": f"{video_id}.mp4", "split": "train", "video_label": label,
             "num_frames": num_frames, "fps": 25.0, "height": height, "width": width}
        )  # fmt: skip
    write_manifest(out, manifest)
    meta_spec = {"height": height, "width": width, "channels": frame_spec.channels, "window": frame_spec.window}
    write_store_metadata(
        out, {"store": spec.store, "spec_name": spec.frame_spec, "frame_spec": meta_spec, "splits": ["train"]}
    )
    return method, cfg


@pytest.mark.parametrize("method_name", ["std", "mtvae"])
def test_inf_loss_in_a_later_phase_keeps_the_previous_phase_checkpoint(
    method_name: str, ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two videos: a handful of shuffle partitions instead of Ray's default 200 keeps MT-VAE's group-by cheap.
    monkeypatch.setattr(ray.data.DataContext.get_current(), "default_hash_shuffle_parallelism", 2)
    data, out = str(tmp_path / "store"), str(tmp_path / "train")
    method, cfg = _smoke_store(data, method_name)
    phases = method.phases(cfg)
    second = phases[1].name  # STD: joint (after pre-training); MT-VAE: the phase after the baseline
    _poison(monkeypatch, type(method), lambda ctx: ctx.phase == second)
    with pytest.raises(RuntimeError, match=rf"non-finite loss at phase '{second}' epoch 0 step \d+") as failed:
        train(method_name, cfg, data, out, RUN)
    state = _assert_intact(out, f"00-{phases[0].name}-epoch{phases[0].epochs:04d}")
    step = int(re.search(r"step (\d+)", str(failed.value)).group(1))
    assert step == state["step"]  # the very first step of the failing phase, right after that checkpoint
    assert state["phase_index"] == 1
    assert not list((Path(out) / "checkpoints").glob("01-*"))  # nothing of the failing phase was saved
