"""The Method contract, checked for every registered method (no skips, no per-method special cases).

Convention every method package follows so this file can test it:

* ``Method.smoke_config()`` (staticmethod or classmethod) returns a tiny instance of ``config_class``
  (e.g. 32x32 or 64x64 frames, a few channels) that builds, trains and scores in about a second on CPU.
* ``Method.smoke_rows(rng, cfg=None)`` (classmethod; ``rng`` a ``numpy.random.Generator``) returns a
  fake batch of store rows in the exact format the method's store yields as a Ray Data numpy batch
  (clip store: ``video_id, dataset, split, start_frame, num_frames, fps, frames`` with ``frames`` an object
  array of ``[n, H, W, C]`` uint8 segments; tube and feature stores: their agreed row columns), matching
  ``smoke_config()``. It must hold enough rows for ``make_examples`` to yield at least one example and for
  ``task_scores`` to yield at least one row. For ``group_by_video`` methods the rows may span several videos;
  this test groups them per ``video_id`` as the training pipeline does.

A method whose package does not import yet fails here; it is never skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import method_smoke_batch, method_smoke_examples, method_smoke_setup
from vad_models.base import InputSpec, TrainContext, get_frame_spec
from vad_models.registry import available_methods

METHODS = available_methods()


def _per_video(scores: dict[str, np.ndarray], columns: list[str]) -> list[dict[str, np.ndarray]]:
    video_ids = np.asarray(scores["video_id"]).astype(str)
    videos = []
    for vid in np.unique(video_ids):
        mask = video_ids == vid
        order = np.argsort(np.asarray(scores["frame_idx"])[mask], kind="stable")
        videos.append({k: np.asarray(scores[k])[mask][order] for k in ["frame_idx", *columns]})
    return videos


@pytest.mark.parametrize("name", METHODS)
def test_method_declares_config_and_inputs(name: str) -> None:
    method, cfg, rows = method_smoke_setup(name)
    assert method.name == name
    assert isinstance(cfg, method.config_class)
    for field in ("epochs", "batch_size", "lr"):
        assert hasattr(cfg, field), f"{name} config lacks {field!r}"
    spec = method.input_spec(cfg)
    assert isinstance(spec, InputSpec) and spec.store in {"clips", "tubes", "features"}
    assert spec.alignment, f"{name} must name its label alignment"
    if spec.store == "clips":
        get_frame_spec(spec.frame_spec)
        assert {"video_id", "start_frame", "frames"} <= set(rows)
    assert "video_id" in rows
    assert method.score_columns(cfg), f"{name} lists no raw score columns"
    phases = method.phases(cfg)
    assert phases and all(p.epochs >= 1 for p in phases), f"{name} phases: {phases}"


@pytest.mark.parametrize("name", METHODS)
def test_make_examples_and_training_loss(name: str) -> None:
    method, cfg, rows = method_smoke_setup(name)
    torch.manual_seed(0)
    model = method.build_model(cfg)
    examples = method_smoke_examples(method, rows, cfg)
    lengths = {k: len(v) for k, v in examples.items()}
    assert examples and len(set(lengths.values())) == 1, f"{name} example columns differ in length: {lengths}"
    assert next(iter(lengths.values())) > 0, f"{name} made no examples from its smoke rows"
    for key, value in examples.items():
        assert isinstance(value, np.ndarray) and value.dtype.kind in "biuf", f"{name} column {key!r} is not numeric"
    batch = method_smoke_batch(examples, cfg)

    model.train()
    for step, phase in enumerate(method.phases(cfg)):
        ctx = TrainContext(phase=phase.name, epoch=0, step=step)
        method.on_phase_start(model, phase.name, [batch], cfg, ctx)
        optimizer = method.configure_optimizer(model, cfg, phase.name)
        scheduler = method.configure_scheduler(optimizer, cfg, phase.name)
        optimizer.zero_grad()
        parts = method.training_loss(model, batch, cfg, ctx)
        assert "loss" in parts, f"{name} phase {phase.name} returned no 'loss'"
        for key, value in parts.items():
            assert torch.is_tensor(value) and value.numel() == 1, f"{name} part {key!r} is not a scalar tensor"
            assert torch.isfinite(value).all(), f"{name} part {key!r} is not finite"
        parts["loss"].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"{name} phase {phase.name}: no gradient"
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("name", METHODS)
def test_task_scores_and_fuse(name: str) -> None:
    method, cfg, rows = method_smoke_setup(name)
    torch.manual_seed(0)
    model = method.build_model(cfg).eval()
    scores = method.task_scores(model, rows, cfg)
    columns = method.score_columns(cfg)
    assert {"video_id", "frame_idx", *columns} <= set(scores), f"{name} task_scores keys: {sorted(scores)}"
    lengths = {k: len(v) for k, v in scores.items()}
    assert len(set(lengths.values())) == 1 and lengths["frame_idx"] > 0, f"{name} score lengths: {lengths}"
    assert np.asarray(scores["frame_idx"]).dtype.kind in "iu"
    for column in columns:
        values = np.asarray(scores[column], dtype=np.float64)
        assert np.isfinite(values).all(), f"{name} score column {column!r} is not finite"

    videos = _per_video(scores, columns)
    calibration = method.fit_calibration([{c: v[c] for c in columns} for v in videos])
    for video in videos:
        num_frames = int(video["frame_idx"].max()) + 1
        for cal in (None, calibration):
            frame_idx, fused = method.fuse(video, cfg, calibration=cal, num_frames=num_frames)
            frame_idx, fused = np.asarray(frame_idx), np.asarray(fused, dtype=np.float64)
            assert frame_idx.ndim == 1 and frame_idx.shape == fused.shape and len(frame_idx) > 0
            assert (np.diff(frame_idx) > 0).all(), f"{name} fuse frame_idx not strictly ascending"
            assert frame_idx.min() >= 0 and frame_idx.max() < num_frames
            assert np.isfinite(fused).all(), f"{name} fused scores are not finite"


@pytest.mark.parametrize("name", METHODS)
def test_anomaly_maps_follow_the_scored_windows(name: str) -> None:
    """A method's pixel maps (optional) cover exactly the windows ``task_scores`` scores, one map each."""
    method, cfg, rows = method_smoke_setup(name)
    model = method.build_model(cfg)
    if method.input_spec(cfg).group_by_video:
        rows = {k: v[rows["video_id"] == rows["video_id"][0]] for k, v in rows.items()}
    maps = method.anomaly_maps(model, rows, cfg)
    if maps is None:
        return  # no pixel-level map (object-level methods show their stored regions instead)
    scores = method.task_scores(model, rows, cfg)
    assert list(maps["frame_idx"]) == list(scores["frame_idx"]) and list(maps["video_id"]) == list(scores["video_id"])
    heat = np.asarray(maps["map"])
    assert heat.dtype == np.float32 and heat.ndim == 3 and len(heat) == len(scores["frame_idx"])
    assert np.isfinite(heat).all()
