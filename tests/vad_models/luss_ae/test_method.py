from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipelines.config import load_config
from vad_models import ops
from vad_models.base import TrainContext, get_frame_spec
from vad_models.luss_ae.config import LussAeConfig
from vad_models.luss_ae.method import LussAeMethod, sample_prp_clips
from vad_models.registry import get_method

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "luss_ae"
H = W = 32


@pytest.fixture(scope="module")
def method() -> LussAeMethod:
    return LussAeMethod()


@pytest.fixture(scope="module")
def cfg() -> LussAeConfig:
    return LussAeConfig(height=H, width=W, batch_size=4, score_batch_size=8)


def _ramp_segment(n: int, offset: int = 0) -> np.ndarray:
    """A segment whose frame k is filled with the value offset + k."""
    return np.broadcast_to((offset + np.arange(n, dtype=np.uint8))[:, None, None, None], (n, H, W, 1)).copy()


def _rows(segments: list[tuple[str, int, np.ndarray]]) -> dict[str, np.ndarray]:
    frames = np.empty(len(segments), dtype=object)
    for i, (_, _, f) in enumerate(segments):
        frames[i] = f
    return {
        "video_id": np.array([v for v, _, _ in segments]),
        "start_frame": np.array([s for _, s, _ in segments], dtype=np.int64),
        "num_frames": np.array([len(f) for _, _, f in segments], dtype=np.int64),
        "frames": frames,
    }


def _model(cfg: LussAeConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return LussAeMethod().build_model(cfg)


# ------------------------------------------------------------------------------------------ registration
def test_registry_frame_spec_and_input_spec(method: LussAeMethod, cfg: LussAeConfig) -> None:
    assert isinstance(get_method("luss_ae"), LussAeMethod)
    spec = get_frame_spec("luss_ae")
    assert (spec.height, spec.width, spec.channels, spec.window, spec.segment_frames) == (256, 256, 1, 17, 128)
    assert spec.effective_overlap == 16
    inp = method.input_spec(cfg)
    assert (inp.store, inp.frame_spec, inp.alignment, inp.group_by_video) == ("clips", "luss_ae", "last", False)
    assert method.score_columns(cfg) == [
        "vcr_mse", "vcr_pse", "vcr_bpe", "ffp_mse", "ffp_pse", "ffp_bpe", "prp",
    ]


def test_paper_defaults() -> None:
    cfg = LussAeConfig()
    assert (cfg.height, cfg.width, cfg.clip_len, cfg.epochs, cfg.batch_size, cfg.lr) == (256, 256, 16, 60, 16, 1e-4)
    assert (cfg.lambda_vcr, cfg.lambda_ffp, cfg.lambda_prp, cfg.prp_prob) == (0.6, 0.4, 1.0, 0.5)
    assert cfg.prp_strides == (2, 3, 4, 5)
    assert (cfg.error, cfg.sigma, cfg.kernel_size, cfg.blur_stride, cfg.robust_percentiles) == (
        "bpe", 1.0, 5, 2, (1.0, 99.0)
    )


@pytest.mark.parametrize(
    "name, alphas",
    [("ped2", (0.1, 0.8, 1.0)), ("avenue", (0.1, 1.0, 0.1)), ("shanghaitech", (0.2, 0.2, 0.9))],
)
def test_dataset_configs_carry_the_paper_alphas(name: str, alphas: tuple[float, float, float]) -> None:
    cfg = _load_yaml(CONFIGS / f"{name}.yaml")
    assert (cfg.alpha_vcr, cfg.alpha_ffp, cfg.alpha_prp) == alphas
    assert (cfg.height, cfg.width, cfg.error) == (256, 256, "bpe")


def test_synthetic_config_loads() -> None:
    cfg = _load_yaml(CONFIGS / "synthetic.yaml")
    assert cfg.height == cfg.width == 64


def _load_yaml(path: Path) -> LussAeConfig:
    assert yaml.safe_load(path.read_text())["method"] == "luss_ae"
    return load_config(LussAeConfig, path)


# ------------------------------------------------------------------------------------------ PRP sampling
def test_prp_clips_are_real_strided_frames_of_the_segment() -> None:
    n = 128
    frames = np.arange(n, dtype=np.uint8)  # frame k has value k
    clips, labels = sample_prp_clips(frames, 4000, 16, 0.5, (2, 3, 4, 5), np.random.default_rng(0))
    assert clips.shape == (4000, 16) and labels.dtype == np.int64
    gaps = np.diff(clips.astype(np.int64), axis=1)
    assert (gaps == gaps[:, :1]).all()  # every clip has a constant temporal gap
    assert (gaps[labels == 0] == 1).all()
    accelerated = gaps[labels == 1, 0]
    assert set(accelerated.tolist()) == {2, 3, 4, 5}
    assert 0.45 < labels.mean() < 0.55
    counts = np.bincount(accelerated, minlength=6)[2:]
    assert counts.min() > 0.8 * counts.mean()  # strides drawn uniformly
    assert clips.min() == 0 and clips.max() == n - 1  # starts cover the whole segment
    starts = clips[:, 0].astype(np.int64)
    assert (starts + 15 * gaps[:, 0] <= n - 1).all()  # never past the segment end, never clamped


def test_prp_only_uses_strides_that_fit() -> None:
    rng = np.random.default_rng(1)
    clips, labels = sample_prp_clips(np.arange(31), 500, 16, 1.0, (2, 3, 4, 5), rng)
    assert labels.all() and (np.diff(clips, axis=1) == 2).all()  # only s=2 fits 31 frames
    clips, labels = sample_prp_clips(np.arange(20), 50, 16, 1.0, (2, 3, 4, 5), rng)
    assert not labels.any() and (np.diff(clips, axis=1) == 1).all()  # none fits: normal rate
    with pytest.raises(ValueError, match="fewer than one clip"):
        sample_prp_clips(np.arange(10), 5, 16, 0.5, (2,), rng)


@pytest.mark.parametrize("prob, expected", [(0.0, 0), (1.0, 1)])
def test_prp_probability_extremes(prob: float, expected: int) -> None:
    _, labels = sample_prp_clips(np.arange(100), 200, 16, prob, (2, 3), np.random.default_rng(0))
    assert (labels == expected).all()


# ------------------------------------------------------------------------------------------ make_examples
def test_make_examples_windows_and_prp(method: LussAeMethod, cfg: LussAeConfig) -> None:
    rows = _rows([("a", 0, _ramp_segment(40)), ("a", 24, _ramp_segment(20, offset=24)), ("b", 0, _ramp_segment(10))])
    ex = method.make_examples(rows, cfg, np.random.default_rng(0))
    assert set(ex) == {"clip", "prp_clip", "prp_label"}
    assert ex["clip"].shape == (24 + 4, 17, H, W) and ex["clip"].dtype == np.uint8
    assert ex["prp_clip"].shape == (28, 16, H, W) and ex["prp_label"].shape == (28,)
    first = ex["clip"][:, :, 0, 0].astype(np.int64)
    np.testing.assert_array_equal(first[:24], np.arange(24)[:, None] + np.arange(17))
    np.testing.assert_array_equal(first[24:], 24 + np.arange(4)[:, None] + np.arange(17))
    prp = ex["prp_clip"][:, :, 0, 0].astype(np.int64)
    gaps = np.diff(prp, axis=1)
    np.testing.assert_array_equal(gaps[:, 0], np.where(ex["prp_label"] == 1, gaps[:, 0], 1))
    assert (gaps[ex["prp_label"] == 1] >= 2).all()
    assert (prp[24:] >= 24).all() and (prp[24:] < 44).all()  # PRP clips stay inside their own segment
    assert not ex["prp_label"][24:].any()  # 20 frames: no accelerated clip fits


def test_make_examples_train_stride_and_dense_batches(method: LussAeMethod, cfg: LussAeConfig) -> None:
    dense = {
        "video_id": np.array(["a", "b"]),
        "start_frame": np.array([0, 0]),
        "frames": np.stack([_ramp_segment(30), _ramp_segment(30)]),  # a regular 5-D batch, not object
    }
    ex = method.make_examples(dense, replace(cfg, train_stride=4), np.random.default_rng(0))
    assert len(ex["clip"]) == 2 * 4  # starts 0, 4, 8, 12 of 14 per segment
    np.testing.assert_array_equal(ex["clip"][:4, 0, 0, 0], [0, 4, 8, 12])


def test_make_examples_of_short_segments_is_empty(method: LussAeMethod, cfg: LussAeConfig) -> None:
    ex = method.make_examples(_rows([("a", 0, _ramp_segment(16))]), cfg, np.random.default_rng(0))
    assert ex["clip"].shape == (0, 17, H, W) and ex["prp_clip"].shape == (0, 16, H, W)
    assert ex["prp_label"].shape == (0,) and ex["prp_label"].dtype == np.int64


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((20, H, W, 3), np.uint8), "grayscale"),
        (np.zeros((20, H, W, 1), np.float32), "grayscale"),
        (np.zeros((20, 64, 64, 1), np.uint8), "config expects 32x32"),
    ],
)
def test_bad_frames_raise(method: LussAeMethod, cfg: LussAeConfig, frames: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        method.make_examples(_rows([("a", 0, frames)]), cfg, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- training
def _batch(method: LussAeMethod, cfg: LussAeConfig, n: int = 4) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    rows = _rows([("a", 0, rng.integers(0, 256, (60, H, W, 1), dtype=np.uint8))])
    ex = method.make_examples(rows, cfg, rng)
    return {k: torch.from_numpy(v[:n].copy()) for k, v in ex.items()}


def test_training_loss_is_eq7(method: LussAeMethod, cfg: LussAeConfig) -> None:
    model = _model(cfg).eval()  # eval: BN uses running stats, so two forward passes agree
    batch = _batch(method, cfg)
    parts = method.training_loss(model, batch, cfg, TrainContext("train", 0, 0))
    assert set(parts) == {"loss", "vcr", "ffp", "prp"}
    x = batch["clip"].float().unsqueeze(1) / 127.5 - 1
    out = model(x[:, :, :16], batch["prp_clip"].float().unsqueeze(1) / 127.5 - 1)
    vcr = (out.recon - x[:, :, :16]).square().mean()
    ffp = (out.pred - x[:, :, 16:]).square().mean()
    prp = -torch.log_softmax(out.logits, 1).gather(1, batch["prp_label"][:, None]).mean()
    torch.testing.assert_close(parts["vcr"], vcr.detach())
    torch.testing.assert_close(parts["ffp"], ffp.detach())
    torch.testing.assert_close(parts["prp"], prp.detach())
    torch.testing.assert_close(parts["loss"], 0.6 * vcr + 0.4 * ffp + 1.0 * prp)


def test_loss_decreases_on_a_fixed_batch(method: LussAeMethod, cfg: LussAeConfig) -> None:
    model = _model(cfg)
    batch = _batch(method, cfg, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(6):
        parts = method.training_loss(model, batch, cfg, TrainContext("train", 0, step))
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["loss"].item())
    assert losses[-1] < 0.6 * losses[0]


def test_training_loss_rejects_bad_batches(method: LussAeMethod, cfg: LussAeConfig) -> None:
    model, batch = _model(cfg), _batch(method, cfg, 2)
    with pytest.raises(KeyError, match="prp_label"):
        method.training_loss(model, {k: v for k, v in batch.items() if k != "prp_label"}, cfg, TrainContext("t", 0, 0))
    with pytest.raises(ValueError, match="17 frames"):
        method.training_loss(model, {**batch, "clip": batch["clip"][:, :16]}, cfg, TrainContext("t", 0, 0))


# ----------------------------------------------------------------------------------------------- scoring
@pytest.fixture(scope="module")
def scored(method: LussAeMethod, cfg: LussAeConfig) -> tuple[torch.nn.Module, dict, dict]:
    rng = np.random.default_rng(3)
    rows = _rows([
        ("a", 0, rng.integers(0, 256, (30, H, W, 1), dtype=np.uint8)),
        ("a", 14, rng.integers(0, 256, (20, H, W, 1), dtype=np.uint8)),
        ("b", 0, rng.integers(0, 256, (12, H, W, 1), dtype=np.uint8)),  # shorter than a window: no score
    ])
    model = _model(cfg)
    return model, rows, method.task_scores(model, rows, cfg)


def test_task_scores_columns_and_alignment(method: LussAeMethod, cfg: LussAeConfig, scored: tuple) -> None:
    model, _, scores = scored
    assert not model.training  # scoring switches BN to running statistics
    assert set(scores) == {"video_id", "frame_idx", *method.score_columns(cfg)}
    assert all(len(v) == 14 + 4 for v in scores.values())
    assert scores["video_id"].tolist() == ["a"] * 18
    # The window starting at s scores frame s + 16, the FFP target ("last" alignment).
    np.testing.assert_array_equal(scores["frame_idx"], np.r_[16 + np.arange(14), 30 + np.arange(4)])
    assert scores["frame_idx"].dtype == np.int64
    for key in method.score_columns(cfg):
        assert scores[key].dtype == np.float64 and np.isfinite(scores[key]).all()
    assert ((scores["prp"] > 0) & (scores["prp"] < 1)).all()


def test_task_scores_match_the_paper_equations(cfg: LussAeConfig, scored: tuple) -> None:
    model, rows, scores = scored
    window = rows["frames"][0][3:20, ..., 0]  # the window starting at frame 3 -> scores frame 19
    x = torch.from_numpy(window).float()[None, None] / 127.5 - 1  # (1,1,17,H,W)
    with torch.inference_mode():
        out = model(x[:, :, :16])
    vcr = ops.image_errors((out.recon - x[:, :, :16]).reshape(16, 1, H, W))
    ffp = ops.image_errors((out.pred - x[:, :, 16:]).reshape(1, 1, H, W))
    i = int(np.flatnonzero(scores["frame_idx"] == 19)[0])
    for err in ("mse", "pse", "bpe"):
        assert scores[f"vcr_{err}"][i] == pytest.approx(float(vcr[err].mean()), rel=1e-4)  # eq. 12
        assert scores[f"ffp_{err}"][i] == pytest.approx(float(ffp[err][0]), rel=1e-4)  # eq. 13
    assert scores["prp"][i] == pytest.approx(float(torch.softmax(out.logits, 1)[0, 1]), rel=1e-4)  # eq. 14


def test_task_scores_do_not_depend_on_batching(method: LussAeMethod, cfg: LussAeConfig, scored: tuple) -> None:
    model, rows, scores = scored
    again = method.task_scores(model, rows, replace(cfg, score_batch_size=5))
    for key in method.score_columns(cfg):
        np.testing.assert_allclose(again[key], scores[key], rtol=1e-4)


def test_task_scores_with_bf16_autocast(method: LussAeMethod, cfg: LussAeConfig, scored: tuple) -> None:
    model, rows, scores = scored
    half = method.task_scores(model, rows, replace(cfg, autocast="bf16"))
    np.testing.assert_array_equal(half["frame_idx"], scores["frame_idx"])
    for key in method.score_columns(cfg):
        assert np.isfinite(half[key]).all()
        np.testing.assert_allclose(half[key], scores[key], rtol=0.1, atol=1e-3)


def test_task_scores_of_an_empty_batch(method: LussAeMethod, cfg: LussAeConfig) -> None:
    scores = method.task_scores(_model(cfg), _rows([("a", 0, _ramp_segment(16))]), cfg)
    assert set(scores) == {"video_id", "frame_idx", *method.score_columns(cfg)}
    assert all(len(v) == 0 for v in scores.values())


# ------------------------------------------------------------------------------------------------ fusion
def _video_scores(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = ["vcr_mse", "vcr_pse", "vcr_bpe", "ffp_mse", "ffp_pse", "ffp_bpe"]
    out = {c: rng.gamma(2.0, 0.01, n) for c in cols}
    out["prp"] = rng.uniform(0, 1, n)
    out["frame_idx"] = 16 + np.arange(n)
    return out


def test_fuse_robust_per_video(method: LussAeMethod, cfg: LussAeConfig) -> None:
    s = _video_scores()
    frames, fused = method.fuse(s, cfg)
    np.testing.assert_array_equal(frames, s["frame_idx"])

    def robust(v: np.ndarray) -> np.ndarray:
        lo, med, hi = np.percentile(v, [1, 50, 99])
        return (v - med) / (hi - lo)

    expected = 0.2 * robust(s["vcr_bpe"]) + 0.2 * robust(s["ffp_bpe"]) + 0.9 * robust(s["prp"])
    np.testing.assert_allclose(fused, expected)


def test_fuse_error_type_weights_and_minmax_prp(method: LussAeMethod, cfg: LussAeConfig) -> None:
    s = _video_scores()
    _, fused = method.fuse(s, replace(cfg, error="mse", prp_rescale="minmax"), weights={"ffp": 0.0})
    prp = (s["prp"] - s["prp"].min()) / (s["prp"].max() - s["prp"].min())
    np.testing.assert_allclose(fused, 0.2 * ops.robust_rescale(s["vcr_mse"]) + 0.9 * prp)
    with pytest.raises(ValueError, match="unknown LUSS-AE fusion weights"):
        method.fuse(s, cfg, weights={"speed": 1.0})


def test_fuse_with_calibration(method: LussAeMethod, cfg: LussAeConfig) -> None:
    s = _video_scores()
    calibration = {"vcr_bpe": (0.01, 0.02), "ffp_bpe": (0.02, 0.5), "prp": (0.1, 0.3), "vcr_mse": (9.0, 9.0)}
    _, fused = method.fuse(s, cfg, calibration=calibration)
    expected = (
        0.2 * (s["vcr_bpe"] - 0.01) / 0.02 + 0.2 * (s["ffp_bpe"] - 0.02) / 0.5 + 0.9 * (s["prp"] - 0.1) / 0.3
    )
    np.testing.assert_allclose(fused, expected)
    # A quiet video stays quiet under calibration, while per-video rescaling stretches its noise.
    quiet = {k: (v if k == "frame_idx" else np.full_like(v, 0.01) + 1e-6 * v) for k, v in s.items()}
    _, calibrated = method.fuse(quiet, cfg, calibration={"vcr_bpe": (0.01, 1), "ffp_bpe": (0.01, 1), "prp": (0, 1)})
    _, per_video = method.fuse(quiet, cfg)
    assert np.ptp(calibrated) < 1e-3 < np.ptp(per_video)
    with pytest.raises(KeyError, match="ffp_bpe"):
        method.fuse(s, cfg, calibration={"vcr_bpe": (0, 1), "prp": (0, 1)})


def test_fuse_averages_duplicate_frames_and_handles_empty(method: LussAeMethod, cfg: LussAeConfig) -> None:
    s = _video_scores(10)
    doubled = {k: np.repeat(v, 2) for k, v in s.items()}
    for k in doubled:
        if k != "frame_idx":
            doubled[k][1::2] = 3 * doubled[k][1::2]  # rows 2 and 3x the original: mean is 2x
    frames, fused = method.fuse(doubled, cfg)
    np.testing.assert_array_equal(frames, s["frame_idx"])
    _, base = method.fuse(s, cfg)
    np.testing.assert_allclose(fused, base)  # robust rescaling is scale-invariant
    empty_frames, empty = method.fuse({k: v[:0] for k, v in s.items()}, cfg)
    assert empty_frames.shape == empty.shape == (0,)
    with pytest.raises(KeyError, match="prp"):
        method.fuse({k: v for k, v in s.items() if k != "prp"}, cfg)


def test_fuse_of_task_scores_end_to_end(method: LussAeMethod, cfg: LussAeConfig, scored: tuple) -> None:
    _, _, scores = scored
    frames, fused = method.fuse({k: v for k, v in scores.items() if k != "video_id"}, cfg)
    np.testing.assert_array_equal(frames, scores["frame_idx"])
    assert np.isfinite(fused).all()
