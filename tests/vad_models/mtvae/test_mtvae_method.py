from dataclasses import replace

import numpy as np
import pytest
import torch

from vad_models.base import TrainContext
from vad_models.mtvae.examples import resample_linear
from vad_models.mtvae.losses import rtfm_loss
from vad_models.mtvae.method import MtVaeMethod

METHOD = MtVaeMethod()
CFG = MtVaeMethod.smoke_config()


def _rows(rng: np.random.Generator, n: int = 20, label: int = 1, vid: str = "a") -> dict[str, np.ndarray]:
    idx = np.arange(n, dtype=np.int64)
    return {
        "video_id": np.full(n, vid, dtype=object),
        "snippet_idx": idx,
        "start_frame": idx * 16,
        "video_label": np.full(n, label, np.int8),
        "features": rng.random((n, CFG.num_crops, CFG.feature_dim), dtype=np.float32),
    }


def _two_videos(rng: np.random.Generator, first: int, second: int) -> dict[str, np.ndarray]:
    """Video "a" (abnormal, ``first`` snippets) then video "b" (normal, ``second`` snippets)."""
    a, b = _rows(rng, first, 1, "a"), _rows(rng, second, 0, "b")
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def test_input_spec_and_phases() -> None:
    spec = METHOD.input_spec(CFG)
    assert (spec.store, spec.frame_spec, spec.alignment, spec.group_by_video) == ("features", "i3d", "snippet16", True)
    assert [p.name for p in METHOD.phases(CFG)] == ["baseline", "mtvae", "host"]
    assert [p.name for p in METHOD.phases(replace(CFG, host_pseudo=False))] == ["baseline", "host"]


def test_optimizers_train_one_part_per_phase_and_vae_lr_decays() -> None:
    model = METHOD.build_model(CFG)
    for phase, part, lr in (("baseline", model.baseline, 1e-3), ("mtvae", model.vae, 1e-4), ("host", model.host, 1e-3)):
        opt = METHOD.configure_optimizer(model, CFG, phase)
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in part.parameters()}
        assert opt.param_groups[0]["lr"] == lr
    opt = METHOD.configure_optimizer(model, CFG, "mtvae")
    scheduler = METHOD.configure_scheduler(opt, CFG, "mtvae")
    opt.step()
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.95)
    assert METHOD.configure_scheduler(opt, CFG, "baseline") is None


def test_resample_linear_interpolates_and_keeps_end_points() -> None:
    x = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    out = resample_linear(x, 9)
    assert out.shape == (9, 3) and np.allclose(out[:, 0], np.arange(9) / 2)
    assert np.allclose(resample_linear(x[:1], 4), 0.0)


def test_make_examples_one_example_per_video_from_shuffled_rows() -> None:
    rng = np.random.default_rng(0)
    rows = _rows(rng, n=20)
    shuffled = {k: v[::-1].copy() for k, v in rows.items()}
    ex = METHOD.make_examples(shuffled, CFG, np.random.default_rng(1))
    assert ex["segments"].shape == (1, CFG.num_crops, CFG.num_segments, CFG.feature_dim)
    seg = ex["segments"][0]
    assert np.allclose(seg[:, 0], rows["features"][0]) and np.allclose(seg[:, -1], rows["features"][-1])
    assert ex["vae_feats"].shape == (1, CFG.max_snippets, CFG.feature_dim)
    assert ex["vae_mask"][0].sum() == CFG.max_snippets == 16  # 20 snippets, at most 16 sampled
    flat = rows["features"].reshape(-1, CFG.feature_dim)
    for feat in ex["vae_feats"][0]:  # each sampled row is one crop of one snippet
        assert np.isclose(np.abs(flat - feat).sum(axis=1), 0).any()
    assert ex["video_label"].tolist() == [1.0] and ex["num_snippets"].tolist() == [20]


def test_make_examples_pads_short_videos_and_checks_inputs() -> None:
    rng = np.random.default_rng(0)
    ex = METHOD.make_examples(_rows(rng, n=3, label=0), CFG, rng)
    assert ex["vae_mask"][0].tolist() == [1.0] * 3 + [0.0] * 13 and not ex["vae_feats"][0, 3:].any()
    with pytest.raises(ValueError, match="video label"):
        METHOD.make_examples(_rows(rng, n=3, label=-1), CFG, rng)
    bad = _rows(rng, n=3)
    bad["features"] = bad["features"][..., :32]
    with pytest.raises(ValueError, match="feature_dim"):
        METHOD.make_examples(bad, CFG, rng)


def test_vae_step_selects_abnormal_snippets_with_the_baseline(examples) -> None:
    rng = np.random.default_rng(0)
    rows = {
        k: np.concatenate([a, b]) for (k, a), b in zip(_rows(rng, 10, 1, "a").items(), _rows(rng, 6, 0, "b").values())
    }
    batch = {k: torch.from_numpy(v) for k, v in examples(METHOD, rows, CFG).items()}
    model = METHOD.build_model(CFG)
    ctx = TrainContext("mtvae", 0, 0)
    last = model.baseline.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(5.0)  # every snippet scores σ(5) > 0.5
    assert float(METHOD.training_loss(model, batch, CFG, ctx)["abnormal_snippets"]) == 10
    with torch.no_grad():
        last.bias.fill_(-5.0)
    parts = METHOD.training_loss(model, batch, CFG, ctx)
    assert float(parts["abnormal_snippets"]) == 0 and float(parts["recon_abnormal"]) == 0
    parts["loss"].backward()  # normal snippets still train the encoder and the normal decoder
    assert model.vae.decoder_normal[0].weight.grad.abs().sum() > 0


def test_rtfm_loss_terms() -> None:
    cfg = replace(CFG, rtfm_k=2, rtfm_margin=10.0)
    feats = torch.zeros(2, 3, 5, 8)
    feats[0, :, 1] = 20.0  # the abnormal video has two high-magnitude snippets
    feats[0, :, 3] = 20.0
    logits = torch.zeros(2, 3, 5)
    parts = rtfm_loss(feats, logits, torch.tensor([1.0, 0.0]), cfg)
    assert float(parts["magnitude"]) == 0  # gap (20·√8) exceeds the margin
    assert float(parts["sparsity"]) == pytest.approx(2.5) and float(parts["smoothness"]) == 0
    parts = rtfm_loss(torch.zeros(2, 3, 5, 8), logits, torch.tensor([1.0, 0.0]), cfg)
    assert float(parts["magnitude"]) == pytest.approx(10.0)


def test_task_scores_per_snippet_in_order_and_mean_over_crops() -> None:
    rng = np.random.default_rng(0)
    rows = {
        k: np.concatenate([a, b]) for (k, a), b in zip(_rows(rng, 6, 1, "a").items(), _rows(rng, 4, 0, "b").values())
    }
    perm = rng.permutation(10)
    model = METHOD.build_model(CFG).eval()
    scores = METHOD.task_scores(model, {k: v[perm] for k, v in rows.items()}, CFG)
    ordered = METHOD.task_scores(model, rows, CFG)
    for key in ("frame_idx", "host_score", "baseline_score"):
        for vid in ("a", "b"):  # the RTFM host sees each video's whole sequence, whatever the row order
            assert np.allclose(scores[key][scores["video_id"] == vid], ordered[key][ordered["video_id"] == vid])
    a = ordered["video_id"] == "a"
    assert ordered["frame_idx"][a].tolist() == [0, 16, 32, 48, 64, 80]
    feats = torch.from_numpy(rows["features"][:6])
    expected = torch.sigmoid(model.baseline(feats)).mean(dim=1).detach().numpy()
    assert np.allclose(ordered["baseline_score"][a], expected)


def test_standardisation_is_fitted_once_at_the_baseline_start_and_used_everywhere(examples) -> None:
    rng = np.random.default_rng(0)
    rows = _two_videos(rng, 7, 5)
    rows["features"] = 50.0 + 0.1 * rows["features"]  # a large common offset, as random-init features have
    cfg = replace(CFG, standardise_features=True)
    ex = examples(METHOD, rows, cfg)
    model = METHOD.build_model(cfg)
    halves = [{k: torch.from_numpy(v[i : i + 1]) for k, v in ex.items()} for i in range(2)]  # two batches
    METHOD.on_phase_start(model, "mtvae", iter(halves), cfg, TrainContext("mtvae", 0, 0))
    assert torch.equal(model.feature_mean, torch.zeros(cfg.feature_dim))  # only the baseline phase fits
    METHOD.on_phase_start(model, "baseline", iter(halves), cfg, TrainContext("baseline", 0, 0))
    flat = ex["segments"].reshape(-1, cfg.feature_dim).astype(np.float64)
    np.testing.assert_allclose(model.feature_mean.numpy(), flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(model.feature_std.numpy(), flat.std(0), rtol=1e-4)
    z = model.standardise(torch.from_numpy(ex["segments"]))
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1.0) < 0.01
    # scoring reads raw store rows and standardises them with the stored statistics
    scores = METHOD.task_scores(model.eval(), rows, cfg)
    feats = torch.from_numpy(rows["features"][rows["video_id"] == "a"])
    with torch.no_grad():
        expected = torch.sigmoid(model.baseline(model.standardise(feats))).mean(dim=1).numpy()
    np.testing.assert_allclose(scores["baseline_score"][scores["video_id"] == "a"], expected, rtol=1e-5)
    # the statistics are part of the checkpoint; old checkpoints without them load as the identity
    again = METHOD.build_model(cfg)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.feature_std, model.feature_std)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("feature_")}
    again.load_state_dict(old)
    assert torch.equal(again.feature_mean, torch.zeros(cfg.feature_dim))
    off = METHOD.build_model(CFG)
    METHOD.on_phase_start(off, "baseline", iter(halves), CFG, TrainContext("baseline", 0, 0))
    assert torch.equal(off.feature_std, torch.ones(CFG.feature_dim))  # standardise_features off: the identity


def test_fuse_spreads_each_snippet_over_16_frames() -> None:
    scores = {"frame_idx": np.array([0, 16, 32]), "host_score": np.array([0.1, 0.9, 0.2]),
              "baseline_score": np.array([0.5, 0.5, 0.0])}  # fmt: skip
    frame_idx, fused = METHOD.fuse(scores, CFG, num_frames=40)
    assert frame_idx.tolist() == list(range(40))  # frames 40..47 lie beyond the video
    assert np.allclose(fused, np.repeat([0.1, 0.9, 0.2], 16)[:40])
    _, mixed = METHOD.fuse(scores, CFG, weights={"host_score": 0.5, "baseline_score": 0.5})
    assert np.allclose(mixed[::16], [0.3, 0.7, 0.1])
    _, calibrated = METHOD.fuse(scores, CFG, calibration={"host_score": (0.1, 0.5)})
    assert np.allclose(calibrated[::16], [0.0, 1.6, 0.2])
    with pytest.raises(ValueError, match="unknown mtvae fusion weights"):
        METHOD.fuse(scores, CFG, weights={"prp": 1.0})


def test_mtvae_loss_decreases_on_synthetic_features(weak_features, train_locally) -> None:
    cfg = replace(CFG, epochs=8, vae_epochs=12, host_epochs=1, batch_size=8, vae_lr=1e-3, host="mlp")
    _, history = train_locally(METHOD, cfg, weak_features.train)
    vae = history["mtvae"]
    assert vae[-1] < 0.6 * vae[0], vae
    assert history["baseline"][-1] < history["baseline"][0]


@pytest.mark.parametrize("host", ["mlp", "rtfm"])
def test_trained_pipeline_finds_anomalous_snippets(weak_features, train_locally, auroc, host: str) -> None:
    cfg = replace(CFG, epochs=12, vae_epochs=8, host_epochs=12, batch_size=8, vae_lr=1e-3, host=host)
    model, _ = train_locally(METHOD, cfg, weak_features.train)
    assert auroc(METHOD, model, cfg, weak_features, "baseline_score") >= 0.9
    assert auroc(METHOD, model, cfg, weak_features, "host_score") >= 0.8
