from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from vad_models.base import TrainContext, get_frame_spec
from vad_models.ops import gradient_loss
from vad_models.registry import get_method
from vad_models.std.clustering import centre_distances, cluster_distance, sample_points, soft_assignment
from vad_models.std.config import StdConfig
from vad_models.std.losses import is_centre_turn
from vad_models.std.method import StdMethod
from vad_models.std.model import StdModel, StdOutput

METHOD = StdMethod()
CFG = StdMethod.smoke_config()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _clips(n: int, cfg: StdConfig = CFG, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, cfg.clip_length, cfg.height, cfg.width, 3), dtype=np.uint8))


def _ctx(phase: str, step: int = 0) -> TrainContext:
    return TrainContext(phase=phase, epoch=0, step=step)


def _initialised_model(cfg: StdConfig = CFG) -> StdModel:
    model = StdModel(cfg)
    METHOD.on_phase_start(model, "joint", [{"clip": _clips(4, cfg, seed=1)}], cfg, _ctx("joint"))
    return model


def test_registration_input_spec_and_phases() -> None:
    assert isinstance(get_method("std"), StdMethod)
    spec = METHOD.input_spec(CFG)
    assert (spec.store, spec.frame_spec, spec.alignment) == ("clips", "std", "last")
    frame_spec = get_frame_spec("std")
    assert (frame_spec.height, frame_spec.width, frame_spec.channels, frame_spec.window) == (256, 256, 3, 5)
    assert frame_spec.segment_frames == 128
    cfg = StdConfig(pretrain_epochs=50, epochs=100)
    assert [(p.name, p.epochs) for p in METHOD.phases(cfg)] == [("pretrain", 50), ("joint", 100)]


def test_make_examples_windows_every_segment() -> None:
    rows = METHOD.smoke_rows(np.random.default_rng(0))
    assert rows["frames"].dtype == object  # variable-length segments
    clips = METHOD.make_examples(rows, CFG, np.random.default_rng(0))["clip"]
    # segments of 8, 7 and 6 frames give 4 + 3 + 2 windows of 5 frames
    assert clips.shape == (9, 5, 32, 32, 3) and clips.dtype == np.uint8
    np.testing.assert_array_equal(clips[0], rows["frames"][0][0:5])
    np.testing.assert_array_equal(clips[5], rows["frames"][1][1:6])
    strided = StdConfig(**{**CFG.__dict__, "train_stride": 2})
    assert len(METHOD.make_examples(rows, strided, np.random.default_rng(0))["clip"]) == 2 + 2 + 1
    empty = {k: v[:0] for k, v in rows.items()}
    assert METHOD.make_examples(empty, CFG, np.random.default_rng(0))["clip"].shape == (0, 5, 32, 32, 3)


def test_make_examples_rejects_frames_of_another_size() -> None:
    rows = METHOD.smoke_rows(np.random.default_rng(0), StdConfig(**{**CFG.__dict__, "height": 64}))
    with pytest.raises(ValueError, match=r"\[n, 32, 32, 3\].*height/width"):
        METHOD.make_examples(rows, CFG, np.random.default_rng(0))


def test_soft_assignment_rows_sum_to_one_and_cluster_distance_is_eq_10() -> None:
    r = torch.rand(2, 6, 3, 3)
    centres = torch.rand(4, 6)
    d = centre_distances(r, centres)
    assign = soft_assignment(d, alpha=25.0)
    torch.testing.assert_close(assign.sum(1), torch.ones(2, 3, 3))
    # eq. 10 at one position, written out
    point = r[1, :, 2, 0]
    dist = (point[None] - centres).norm(dim=1)
    expected = (torch.exp(-25.0 * dist) / torch.exp(-25.0 * dist).sum() * dist.square()).sum()
    torch.testing.assert_close(cluster_distance(r, centres, 25.0)[1, 2, 0], expected)
    torch.testing.assert_close(d[1, :, 2, 0], dist)


def test_kmeans_initialisation_runs_sklearn_on_pretrained_representations() -> None:
    model = StdModel(CFG).train()
    batches = [{"clip": _clips(2, seed=s)} for s in range(3)]
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    METHOD.on_phase_start(model, "joint", iter(batches[: CFG.kmeans_init_batches]), CFG, _ctx("joint"))
    assert bool(model.centres_initialised) and model.training
    for key, value in bn_before.items():  # initialisation does not touch BatchNorm statistics
        torch.testing.assert_close(model.state_dict()[key], value)

    generator = torch.Generator().manual_seed(CFG.seed)
    points = []
    with torch.no_grad():
        model.eval()
        for batch in batches[: CFG.kmeans_init_batches]:
            x = batch["clip"].permute(0, 4, 1, 2, 3).float() / 255
            points.append(sample_points(model.representation(x[:, :, :-1]), CFG.kmeans_points_per_clip, generator))
    expected = KMeans(CFG.num_clusters, init="k-means++", n_init=CFG.kmeans_n_init, random_state=CFG.seed)
    expected = expected.fit(torch.cat(points).numpy().astype(np.float64)).cluster_centers_
    np.testing.assert_allclose(model.centres.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_kmeans_initialisation_reads_at_most_the_configured_batches() -> None:
    cfg = StdConfig(**{**CFG.__dict__, "kmeans_init_batches": 2})

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        yield {"clip": _clips(2, seed=0)}
        yield {"clip": _clips(2, seed=1)}
        raise AssertionError("read a third batch")

    METHOD.on_phase_start(StdModel(cfg), "joint", batches(), cfg, _ctx("joint"))
    METHOD.on_phase_start(StdModel(cfg), "pretrain", batches(), cfg, _ctx("pretrain"))  # no-op, reads nothing
    with pytest.raises(ValueError, match="at least num_clusters"):
        METHOD.on_phase_start(StdModel(cfg), "joint", [], cfg, _ctx("joint"))


def test_pretrain_loss_is_eq_3_plus_eq_6() -> None:
    model = StdModel(CFG).train()
    clip = _clips(2)
    parts = METHOD.training_loss(model, {"clip": clip}, CFG, _ctx("pretrain"))
    assert set(parts) == {"loss", "spatial", "motion", "motion_l2", "motion_gradient"}
    x = clip.permute(0, 4, 1, 2, 3).float() / 255
    out = model(x[:, :, :4])  # train mode: BatchNorm uses batch statistics, so the same output again
    target = x[:, :, 4] - x[:, :, 0]
    spatial = F.mse_loss(out.recon_first, x[:, :, 0])
    motion = F.mse_loss(out.diff, target) + gradient_loss(out.diff, target)
    torch.testing.assert_close(parts["spatial"], spatial)
    torch.testing.assert_close(parts["motion"], motion)
    torch.testing.assert_close(parts["loss"], spatial + motion)
    parts["loss"].backward()
    assert model.centres.grad is None  # no cluster term before the K-means initialisation
    assert all(p.grad is not None for p in model.autoencoder_parameters())


def _snapshot(model: StdModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: StdModel) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_joint_alternation_moves_only_the_group_on_turn() -> None:
    model = _initialised_model().train()
    optimizer = METHOD.configure_optimizer(model, CFG, "joint")
    assert [g["lr"] for g in optimizer.param_groups] == [CFG.lr, CFG.centre_lr]
    params = {n for n, _ in model.named_parameters()}
    for step in range(4):
        before = _snapshot(model)
        optimizer.zero_grad(set_to_none=True)  # what the generic trainer does every step
        parts = METHOD.training_loss(model, {"clip": _clips(2, seed=step)}, CFG, _ctx("joint", step))
        parts["loss"].backward()
        optimizer.step()
        changed = _changed(before, model)
        if is_centre_turn(step, CFG):  # eq. 11: centres only; autoencoders frozen, BatchNorm statistics too
            assert changed == {"centres"}, step
        else:  # eq. 12: autoencoders (and BatchNorm statistics), centres frozen
            assert "centres" not in changed
            assert len(changed & params) > len(params) // 2


def test_both_turns_report_eq_12() -> None:
    model = _initialised_model().eval()
    batch = {"clip": _clips(2)}
    with torch.no_grad():
        ae_turn = METHOD.training_loss(model, batch, CFG, _ctx("joint", 0))
        centre_turn = METHOD.training_loss(model, batch, CFG, _ctx("joint", 1))
    for key in ae_turn:
        torch.testing.assert_close(ae_turn[key], centre_turn[key])
    total = ae_turn["spatial"] + ae_turn["motion"] + CFG.lambda_r * ae_turn["cluster"]
    torch.testing.assert_close(ae_turn["loss"], total)
    assert float(ae_turn["cluster"]) > 0


def test_turn_schedule_and_misuse_errors() -> None:
    cfg = StdConfig(ae_steps_per_turn=2, centre_steps_per_turn=1)
    assert [is_centre_turn(s, cfg) for s in range(6)] == [False, False, True, False, False, True]
    with pytest.raises(RuntimeError, match="on_phase_start"):
        METHOD.training_loss(StdModel(CFG), {"clip": _clips(2)}, CFG, _ctx("joint"))
    with pytest.raises(ValueError, match="phases"):
        METHOD.training_loss(StdModel(CFG), {"clip": _clips(2)}, CFG, _ctx("finetune"))
    with pytest.raises(ValueError, match="uint8"):
        METHOD.training_loss(StdModel(CFG), {"clip": _clips(2).float()}, CFG, _ctx("pretrain"))
    with pytest.raises(TypeError, match="StdModel"):
        METHOD.configure_optimizer(torch.nn.Linear(2, 2), CFG, "joint")


def test_scheduler_decays_only_the_autoencoder_lr() -> None:
    cfg = StdConfig(**{**CFG.__dict__, "lr_decay_epoch": 2, "lr_decay_factor": 0.1})
    model = StdModel(cfg)
    assert METHOD.configure_scheduler(METHOD.configure_optimizer(model, cfg, "pretrain"), cfg, "pretrain") is None
    optimizer = METHOD.configure_optimizer(model, cfg, "joint")
    scheduler = METHOD.configure_scheduler(optimizer, cfg, "joint")
    lrs = []
    for _ in range(3):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(lrs, [[1e-4, 1e-5], [1e-4, 1e-5], [1e-5, 1e-5]])


class _PredictsBlack(StdModel):
    """Predicts an all-black last frame, so the error is non-zero only where the *target* frame is not black."""

    def forward(self, frames: torch.Tensor) -> StdOutput:
        n, _, _, h, w = frames.shape
        black = frames.new_zeros(n, 3, h, w)
        return StdOutput(black, black, black, frames.new_zeros(n, self.centres.shape[1], h // 8, w // 8))


def test_frame_idx_is_the_predicted_last_frame() -> None:
    frames = np.zeros((12, 32, 32, 3), np.uint8)
    frames[7] = 255  # the only non-black frame
    rows = {
        "video_id": np.array(["v", "v"], dtype=object),
        "start_frame": np.array([0, 4]),
        "frames": np.array([frames[0:8], frames[4:12]]),  # two segments overlapping by T - 1 = 4 frames
    }
    model = _PredictsBlack(CFG)
    model.set_centres(torch.ones(CFG.num_clusters, CFG.representation_channels))
    scores = METHOD.task_scores(model, rows, CFG)
    np.testing.assert_array_equal(scores["frame_idx"], np.arange(4, 12))  # start + 4, each frame once
    error = scores["pred_error"]
    assert scores["frame_idx"][np.argmax(error)] == 7
    assert error[np.argmax(error)] == pytest.approx(np.sqrt(3.0))  # white vs black: sqrt(3) per pixel
    assert np.count_nonzero(error) == 1
    # eq. 13's denominator is the product of the two frame-level parts; with a spatially constant D_u (every
    # position of r is 0, every centre 1) the pixel-level product equals it
    np.testing.assert_allclose(scores["cluster_distance"], CFG.representation_channels, rtol=1e-6)
    np.testing.assert_allclose(scores["std_score"], scores["pred_error"] * scores["cluster_distance"], rtol=1e-6)
    np.testing.assert_allclose(scores["pixel_score"], scores["std_score"], rtol=1e-6)


def test_task_scores_columns_and_batching() -> None:
    rows = METHOD.smoke_rows(np.random.default_rng(0))
    model = _initialised_model().train()
    scores = METHOD.task_scores(model, rows, CFG)
    assert model.training  # mode restored
    assert list(scores["video_id"]) == ["smoke-0"] * 7 + ["smoke-1"] * 2
    assert scores["frame_idx"].tolist() == [4, 5, 6, 7, 8, 9, 10, 4, 5]
    assert scores["frame_idx"].dtype == np.int64
    for column in METHOD.score_columns(CFG):
        assert scores[column].shape == (9,) and np.isfinite(scores[column]).all() and (scores[column] > 0).all()
    one_by_one = METHOD.task_scores(model, rows, StdConfig(**{**CFG.__dict__, "score_batch_size": 1}))
    for column in METHOD.score_columns(CFG):
        np.testing.assert_allclose(one_by_one[column], scores[column], rtol=1e-5)


def test_task_scores_without_centres_fall_back_to_the_prediction_error() -> None:
    rows = METHOD.smoke_rows(np.random.default_rng(0))
    with pytest.warns(RuntimeWarning, match="not initialised"):
        scores = METHOD.task_scores(StdModel(CFG), rows, CFG)
    np.testing.assert_allclose(scores["cluster_distance"], 1.0)
    np.testing.assert_allclose(scores["std_score"], scores["pred_error"])
    np.testing.assert_allclose(scores["pixel_score"], scores["pred_error"])


def test_fuse_is_the_complement_of_the_min_max_regularity() -> None:
    scores = {"frame_idx": np.array([4, 5, 6, 7]), "std_score": np.array([1.0, 4.0, 2.0, 0.5])}
    frames, anomaly = METHOD.fuse(scores, CFG)
    regularity = 1.0 / scores["std_score"]  # eq. 13
    normalised = (regularity - regularity.min()) / (regularity.max() - regularity.min())  # eq. 14
    np.testing.assert_array_equal(frames, [4, 5, 6, 7])
    np.testing.assert_allclose(anomaly, 1.0 - normalised)
    assert anomaly.argmax() == 1 and anomaly.argmin() == 3  # largest error -> most anomalous


def test_fuse_weights_duplicates_calibration_and_errors() -> None:
    scores = {
        "frame_idx": np.array([4, 5, 5, 6]),
        "pred_error": np.array([1.0, 2.0, 8.0, 3.0]),
        "cluster_distance": np.array([2.0, 1.0, 1.0, 0.5]),
    }
    frames, by_parts = METHOD.fuse(scores, CFG, weights={"pred_error": 1.0, "cluster_distance": 1.0})
    product = {**scores, "std_score": scores["pred_error"] * scores["cluster_distance"]}
    np.testing.assert_array_equal(frames, [4, 5, 6])  # frame 5's two windows merge (geometric mean: 4)
    np.testing.assert_allclose(by_parts, METHOD.fuse(product, CFG)[1])
    np.testing.assert_allclose(by_parts, [0.4, 1.0, 0.0])  # denominators 2, 4, 1.5: s = 1/2, 1/4, 2/3

    calibration = {"std_score": (2.0, 10.0)}
    _, calibrated = METHOD.fuse(product, CFG, calibration=calibration)
    np.testing.assert_allclose(calibrated, np.log([2.0 / 2.0, 4.0 / 2.0, 1.5 / 2.0]))

    _, constant = METHOD.fuse({"frame_idx": np.arange(3), "std_score": np.ones(3)}, CFG)
    np.testing.assert_array_equal(constant, 0.0)
    with pytest.raises(ValueError, match="fusion weights"):
        METHOD.fuse(product, CFG, weights={"prp": 1.0})
    with pytest.raises(ValueError, match="calibration lacks"):
        METHOD.fuse(product, CFG, calibration={"pred_error": (1.0, 1.0)})


def test_smoke_run_pretrain_kmeans_joint_score_fuse() -> None:
    rows = METHOD.smoke_rows(np.random.default_rng(0))
    examples = METHOD.make_examples(rows, CFG, np.random.default_rng(0))
    batches = [{"clip": torch.from_numpy(examples["clip"][i : i + 2])} for i in range(0, 8, 2)]
    model = METHOD.build_model(CFG).train()
    step = 0
    for phase in METHOD.phases(CFG):
        ctx = _ctx(phase.name, step)
        METHOD.on_phase_start(model, phase.name, iter(batches), CFG, ctx)
        optimizer = METHOD.configure_optimizer(model, CFG, phase.name)
        for batch in batches:
            ctx.step = step
            optimizer.zero_grad(set_to_none=True)
            parts = METHOD.training_loss(model, batch, CFG, ctx)
            assert torch.isfinite(parts["loss"])
            parts["loss"].backward()
            optimizer.step()
            step += 1
    scores = METHOD.task_scores(model.eval(), rows, CFG)
    for video in ("smoke-0", "smoke-1"):
        mask = scores["video_id"] == video
        frames, fused = METHOD.fuse({k: v[mask] for k, v in scores.items()}, CFG)
        assert (np.diff(frames) > 0).all() and np.isfinite(fused).all()
        assert fused.min() == 0.0 and fused.max() == pytest.approx(1.0)
