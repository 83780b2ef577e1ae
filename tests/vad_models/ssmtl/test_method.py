import dataclasses

import numpy as np
import pytest
import torch

from pipelines.config import config_from_dict, config_to_dict, load_config
from vad_models.base import TrainContext, get_frame_spec
from vad_models.ssmtl.config import PAPER_BATCH_SIZE, DetectConfig, SsmtlConfig
from vad_models.ssmtl.method import BOX_COLUMNS, SsmtlMethod, object_scores

METHOD = SsmtlMethod()


def _batch(examples: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in examples.items()}


def test_config_defaults_follow_the_paper() -> None:
    cfg = SsmtlConfig()
    assert (cfg.variant, cfg.window, cfg.tube_frames, cfg.crop_size) == ("deep_wide", 7, 25, 64)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.distill_dim) == (30, 1e-3, 64, 1080)
    assert {v: SsmtlConfig(variant=v).batch_size for v in PAPER_BATCH_SIZE} == PAPER_BATCH_SIZE
    assert SsmtlConfig(variant="shallow_narrow", batch_size=8).batch_size == 8
    assert get_frame_spec("ssmtl").window == cfg.tube_frames and get_frame_spec("ssmtl").channels == 3
    assert load_config(SsmtlConfig, "configs/ssmtl/ped2.yaml").lam == 0.5
    assert load_config(SsmtlConfig, "configs/ssmtl/avenue.yaml").detect.conf_threshold == 0.8
    assert config_from_dict(SsmtlConfig, config_to_dict(cfg)) == cfg  # the trainer's round trip
    with pytest.raises(ValueError, match="tasks"):
        SsmtlConfig(tasks=("arrow", "colour"))
    with pytest.raises(ValueError, match="weights"):
        DetectConfig(detector="torchscript")


def test_make_examples_columns_and_shapes() -> None:
    cfg = METHOD.smoke_config()
    rows = METHOD.smoke_rows(np.random.default_rng(0), cfg)
    ex = METHOD.make_examples(rows, cfg, np.random.default_rng(1))
    s, n = cfg.crop_size, len(rows["tube"])
    assert ex["arrow"].shape == ex["irregularity"].shape == (n, cfg.window, s, s, 3)
    assert ex["middle_input"].shape == (n, cfg.window - 1, s, s, 3) and ex["middle_target"].shape == (n, s, s, 3)
    np.testing.assert_array_equal(ex["middle_target"], rows["tube"][:, cfg.tube_frames // 2])
    np.testing.assert_allclose(ex["distill_target"][:, : cfg.teacher_dim], rows["teacher_features"])
    np.testing.assert_allclose(ex["distill_target"][:, cfg.teacher_dim :], rows["class_probs"])
    assert set(np.unique(ex["arrow_label"])) <= {0, 1} and ex["arrow_label"].dtype == np.int64


def test_distillation_is_never_dropped_silently() -> None:
    cfg = METHOD.smoke_config()
    rows = METHOD.smoke_rows(np.random.default_rng(0), cfg)
    del rows["teacher_features"]
    with pytest.raises(ValueError, match="teacher"):
        METHOD.make_examples(rows, cfg, np.random.default_rng(0))
    without = dataclasses.replace(cfg, tasks=("arrow", "irregularity", "middle"))
    ex = METHOD.make_examples(rows, without, np.random.default_rng(0))
    assert "distill_target" not in ex and "distill" not in METHOD.build_model(without).heads
    assert METHOD.score_columns(without) == ["arrow", "irregularity", "middle"]
    probs_only = dataclasses.replace(cfg, teacher_dim=0)  # explicit: distil the detector probabilities only
    assert METHOD.make_examples(rows, probs_only, np.random.default_rng(0))["distill_target"].shape == (6, 3)
    with pytest.raises(ValueError, match="num_classes"):
        METHOD.make_examples(rows, dataclasses.replace(cfg, num_classes=80), np.random.default_rng(0))


def test_training_learns_the_proxy_tasks() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(METHOD.smoke_config(), tasks=("arrow", "middle"))
    rng = np.random.default_rng(0)
    rows = METHOD.smoke_rows(rng, cfg)
    # Tubes of a bright square moving right: the arrow of time is visible.
    tubes = np.zeros_like(rows["tube"])
    for t in range(cfg.tube_frames):
        tubes[:, t, 10:18, 2 + 3 * t : 10 + 3 * t] = 255
    rows["tube"] = tubes
    model = METHOD.build_model(cfg)
    optimizer = METHOD.configure_optimizer(model, cfg, "train")
    losses = []
    for step in range(25):
        batch = _batch(METHOD.make_examples(rows, cfg, rng))
        parts = METHOD.training_loss(model, batch, cfg, TrainContext("train", 0, step))
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        losses.append({k: float(v.detach()) for k, v in parts.items()})
    assert set(losses[0]) == {"loss", "arrow", "middle"}
    assert losses[-1]["middle"] < 0.5 * losses[0]["middle"]
    assert np.mean([x["arrow"] for x in losses[-5:]]) < np.mean([x["arrow"] for x in losses[:5]])


def test_task_scores_and_object_level_fusion() -> None:
    torch.manual_seed(0)
    cfg = METHOD.smoke_config()
    rows = METHOD.smoke_rows(np.random.default_rng(0), cfg)
    model = METHOD.build_model(cfg).train()
    scores = METHOD.task_scores(model, rows, cfg)
    assert model.training  # task_scores restores the mode it found
    for column in ("arrow", "irregularity", "middle", "distill", *BOX_COLUMNS, "frame_height", "frame_width"):
        assert len(scores[column]) == 6 and np.isfinite(scores[column]).all()
    assert ((scores["arrow"] >= 0) & (scores["arrow"] <= 1)).all()
    np.testing.assert_allclose(scores["x1"], rows["box"][:, 0], rtol=1e-6)
    # eq. 6 average; an explicit weight override; calibration
    raw = {t: scores[t] for t in ("arrow", "irregularity", "middle", "distill")}
    np.testing.assert_allclose(object_scores(raw, cfg), np.mean(list(raw.values()), axis=0))
    np.testing.assert_allclose(object_scores(raw, cfg, weights={"arrow": 1, "irregularity": 0, "middle": 0,
                                                                "distill": 0}), raw["arrow"])
    cal = {t: (1.0, 2.0) for t in raw}
    np.testing.assert_allclose(object_scores(raw, cfg, calibration=cal), (object_scores(raw, cfg) - 1.0) / 2.0)
    with pytest.raises(ValueError, match="unknown task weight"):
        object_scores(raw, cfg, weights={"speed": 1.0})


def test_fuse_paints_objects_into_frames() -> None:
    cfg = dataclasses.replace(METHOD.smoke_config(), mean_filter_frames=1, mean_filter_pixels=1, temporal_sigma=0.0)
    one = np.ones(3)
    scores = {
        "frame_idx": np.array([2, 2, 5]),
        "x1": np.array([0.0, 30.0, 0.0]), "y1": np.zeros(3), "x2": np.array([10.0, 40.0, 10.0]), "y2": 10 * one,
        "frame_height": 64 * one, "frame_width": 96 * one,
        "arrow": np.array([0.2, 0.9, 0.4]), "irregularity": np.array([0.2, 0.9, 0.4]),
        "middle": np.array([0.2, 0.9, 0.4]), "distill": np.array([0.2, 0.9, 0.4]),
    }
    frame_idx, fused = METHOD.fuse(scores, cfg, num_frames=8)
    np.testing.assert_array_equal(frame_idx, np.arange(8))
    np.testing.assert_allclose(fused, [0, 0, 0.9, 0, 0, 0.4, 0, 0])  # max over objects; empty frames score 0
    _, empty = METHOD.fuse({"frame_idx": np.zeros(0, np.int64)}, cfg, num_frames=4)
    np.testing.assert_array_equal(empty, np.zeros(4))
    late = METHOD.late_fusion(fused, np.linspace(0, 1, 8), cfg)
    assert late.shape == (8,) and late.max() <= 1.0
    mask = METHOD.validation_mask({"frame_idx": np.array([0, 90]), "video_frames": np.array([100, 100])}, cfg)
    assert mask.tolist() == [False, True]
