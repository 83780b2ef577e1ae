"""Sweeps: sweep files, the selection split, vectorised AUROC, α sweeps on stored scores, λ sweeps with Ray Tune."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from ray import tune
from sklearn.metrics import roc_auc_score

from pipelines import storage
from pipelines.config import ConfigError, load_config
from pipelines.evaluate import frame_metrics, load_labels, padded_video_auroc
from pipelines.score import ScoreConfig, fuse_video, fusion_config, score
from pipelines.train import TrainRunConfig
from pipelines.tune import (
    LossGrid,
    ScoreGrid,
    default_sweep_path,
    grid_points,
    load_sweep_spec,
    method_config_with,
    split_selection,
)
from pipelines.tune_loss import LossSweepConfig, loss_sweep, plan_concurrency
from pipelines.tune_score import (
    SCORED_COLUMN,
    StoredRun,
    auroc_columns,
    fused_scores,
    is_linear,
    load_scoring_run,
    padded_auroc_columns,
    score_sweep,
    task_matrix,
)
from tests.helpers import TINY_LUSS_OVERRIDES
from vad_models.luss_ae.config import LussAeConfig
from vad_models.registry import get_method

ROOT = Path(__file__).resolve().parents[2]
LUSS_GRID = load_sweep_spec(default_sweep_path("luss_ae"))


# ----------------------------------------------------------------------------------------------- pure helpers


def test_auroc_columns_equal_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(200, 7)), 1)  # rounding makes many ties
    labels = (rng.random(200) < 0.3).astype(np.uint8)
    expected = [roc_auc_score(labels, scores[:, j]) for j in range(scores.shape[1])]
    np.testing.assert_allclose(auroc_columns(scores, labels), expected, rtol=0, atol=1e-12)
    single = labels[:20] * 0 + 1
    np.testing.assert_allclose(
        padded_auroc_columns(scores[:20], single), [padded_video_auroc(single, scores[:20, j]) for j in range(7)]
    )
    assert np.isnan(auroc_columns(scores[:5], np.zeros(5))).all()


def test_sweep_files_parse_for_every_method() -> None:
    for name in ("luss_ae", "std", "ssmtl", "mtvae"):
        spec = load_sweep_spec(default_sweep_path(name))
        cls = get_method(name).config_class
        base = cls()
        assert spec.method == name and spec.loss is not None and spec.score is not None
        for field in spec.score.weights.values():
            assert field is None or hasattr(base, field)
        for point in grid_points(spec.loss.grid):
            method_config_with(cls, base, point)  # every grid point is a valid config
    assert LUSS_GRID.score.weight_matrix().shape == (11**3 - 1, 3)
    assert LUSS_GRID.score.values[:3] == (0.0, 0.1, 0.2) and LUSS_GRID.score.values[-1] == 1.0


def test_bad_sweep_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "sweep.yaml"
    bad.write_text("method: luss_ae\nscore: {weights: {vcr: alpha_vcr}, values: [0, 1], objective: f1}\n")
    with pytest.raises(ConfigError, match="objective must be one of"):
        load_sweep_spec(bad)
    bad.write_text("method: luss_ae\nloss: {grid: {lambda_ffp: []}}\n")
    with pytest.raises(ConfigError, match="loss.grid.lambda_ffp"):
        load_sweep_spec(bad)
    with pytest.raises(ConfigError, match="unknown config key 'lambda_xyz'"):
        method_config_with(LussAeConfig, LussAeConfig(), {"lambda_xyz": 1.0})


def test_selection_split_is_stratified_deterministic_and_disjoint() -> None:
    labels = {f"a{i}": np.array([0, 1], np.uint8) for i in range(4)}
    labels |= {f"n{i}": np.array([0, 0], np.uint8) for i in range(4)}
    chosen, held_out = split_selection(labels, "validation", 0.5, seed=3)
    assert (chosen, held_out) == split_selection(labels, "validation", 0.5, seed=3)
    assert not set(chosen) & set(held_out) and sorted(chosen + held_out) == sorted(labels)
    assert sum(v.startswith("a") for v in chosen) == 2 and sum(v.startswith("a") for v in held_out) == 2
    assert split_selection(labels, "test") == (sorted(labels), [])
    with pytest.raises(ValueError, match="at least 2 labelled videos"):
        split_selection({"x": np.array([1])}, "validation")


def test_concurrency_leaves_a_cpu_for_ray_data() -> None:
    assert plan_concurrency(2, LossSweepConfig(), {"CPU": 2.0}) == 1
    assert plan_concurrency(3, LossSweepConfig(), {"CPU": 8.0}) == 3
    gpu = LossSweepConfig(train=TrainRunConfig(num_workers=2, use_gpu=True))
    assert plan_concurrency(4, gpu, {"CPU": 32.0, "GPU": 4.0}) == 2
    with pytest.raises(ValueError, match="lower --cpus-per-worker"):
        plan_concurrency(1, LossSweepConfig(), {"CPU": 1.0})
    with pytest.raises(ValueError, match="num_workers >= 1"):
        LossSweepConfig(train=TrainRunConfig(num_workers=0))


def test_a_fusion_that_is_not_linear_is_detected_and_evaluated_per_point() -> None:
    rng = np.random.default_rng(1)
    method = get_method("std")
    cfg = method.config_class()
    rows = {"frame_idx": np.arange(5, 40)} | {c: rng.uniform(0.5, 2.0, 35) for c in method.score_columns(cfg)}
    run = StoredRun("mem", method, cfg, "per-video", None, None, {"v": rows}, {"v": 40})
    names = ["pred_error", "cluster_distance"]
    assert not is_linear(run, cfg, names, {"v": task_matrix(run, cfg, names, "v")})
    weights = np.array([[1.0, 0.0], [0.5, 2.0]])
    expected = [fuse_video(method, cfg, rows, 40, weights=dict(zip(names, w)))["score"] for w in weights]
    np.testing.assert_array_equal(fused_scores(run, cfg, names, weights, "v", linear=False), np.column_stack(expected))


# --------------------------------------------------------------------------------------- α sweeps (stored)


@pytest.fixture(scope="module")
def scoring_run(luss_checkpoint: str, luss_store: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("tune_scores") / "run")
    score(luss_checkpoint, luss_store, out, ScoreConfig(split="test"))
    return out


@pytest.fixture(scope="module")
def alpha_sweep(scoring_run: str, luss_store: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("alpha") / "sweep")
    from jobs.tune import main

    code = main(["--method", "luss_ae", "--sweep", "score", "--scores", scoring_run, "--data", luss_store,
                 "--out", out, "--selection", "validation", "--val-fraction", "0.5"])  # fmt: skip
    assert code == 0
    return out, json.loads((Path(out) / "summary.json").read_text())


def _score_file(run: str, video_id: str) -> Path:
    (found,) = Path(run, "scores").rglob(f"{video_id}.parquet")
    return found


def _stored_rows(scoring_run: str, video_id: str, clip_len: int) -> tuple[dict[str, np.ndarray], int]:
    """What fuse saw when the run was scored: LUSS-AE scores frames clip_len..n-1 (the rest are filled copies)."""
    table = pq.read_table(_score_file(scoring_run, video_id))
    keep = table.column("frame_idx").to_numpy() >= clip_len
    columns = [c for c in table.column_names if c not in ("video_id", "score")]
    return {c: table.column(c).to_numpy()[keep] for c in columns}, table.num_rows


def test_luss_fusion_is_linear_in_its_weights(scoring_run: str) -> None:
    run = load_scoring_run(scoring_run)
    names = ["vcr", "ffp", "prp"]
    rng = np.random.default_rng(2)
    for error in ("mse", "bpe"):
        cfg = method_config_with(LussAeConfig, run.config, {"error": error})
        for video_id in run.rows:
            basis = task_matrix(run, cfg, names, video_id)
            w = rng.uniform(0, 1, 3)
            direct = fuse_video(run.method, cfg, run.rows[video_id], run.num_frames[video_id],
                                weights=dict(zip(names, w)))["score"]  # fmt: skip
            np.testing.assert_allclose(basis @ w, direct, rtol=1e-12, atol=1e-12)
        assert is_linear(run, cfg, names, {v: task_matrix(run, cfg, names, v) for v in run.rows})


def test_alpha_sweep_covers_the_grid_and_equals_direct_refusion(
    alpha_sweep: tuple[str, dict], scoring_run: str, luss_store: str
) -> None:
    out, summary = alpha_sweep
    table = pq.read_table(Path(out) / "results.parquet")
    assert table.num_rows == 3 * (11**3 - 1) == summary["points"]
    points = {(r["error"], r["alpha_vcr"], r["alpha_ffp"], r["alpha_prp"]) for r in table.to_pylist()}
    assert len(points) == table.num_rows and {p[0] for p in points} == {"mse", "pse", "bpe"}
    micro = np.asarray(table.column("micro_auroc").to_pylist(), dtype=float)
    assert np.all(np.diff(micro) <= 0)  # sorted best first
    assert summary["exact"] and summary["inexact_videos"] == [] and all(summary["linear"].values())
    labels = load_labels(luss_store)
    chosen = summary["selection_videos"]
    assert sorted(chosen + summary["heldout_videos"]) == sorted(labels) and summary["heldout_videos"]
    rows = table.to_pylist()
    base = load_scoring_run(scoring_run).config
    for row in [rows[0], rows[17], rows[len(rows) // 2], rows[-1]]:
        cfg = method_config_with(LussAeConfig, base, {"error": row["error"]})
        weights = {"vcr": row["alpha_vcr"], "ffp": row["alpha_ffp"], "prp": row["alpha_prp"]}
        method = get_method("luss_ae")
        fused = {}
        for video_id in chosen:
            stored, frames = _stored_rows(scoring_run, video_id, cfg.clip_len)
            fused[video_id] = fuse_video(method, cfg, stored, frames, weights=weights)["score"]
        direct = frame_metrics(fused, {v: labels[v] for v in chosen})
        assert row["micro_auroc"] == pytest.approx(direct["micro_auroc"], abs=1e-9)
        assert row["macro_auroc"] == pytest.approx(direct["macro_auroc"], abs=1e-9)


def test_alpha_sweep_writes_table_best_configs_and_heatmaps(alpha_sweep: tuple[str, dict]) -> None:
    out, summary = alpha_sweep
    best = summary["best"]
    markdown = (Path(out) / "results.md").read_text()
    assert "selection: **validation**" in markdown and "held-out" in markdown
    assert summary["heldout"]["num_videos"] == len(summary["heldout_videos"])
    cfg = load_config(LussAeConfig, Path(out) / "best_config.yaml")
    assert (cfg.alpha_vcr, cfg.alpha_ffp, cfg.alpha_prp, cfg.error) == (
        best["alpha_vcr"], best["alpha_ffp"], best["alpha_prp"], best["error"],
    )  # fmt: skip
    weights_file = yaml.safe_load((Path(out) / "best_weights.yaml").read_text())
    assert weights_file["weights"] == {"vcr": best["alpha_vcr"], "ffp": best["alpha_ffp"], "prp": best["alpha_prp"]}
    assert weights_file["config"]["error"] == best["error"]
    heatmaps = sorted((Path(out) / "heatmaps").glob("*.png"))
    assert len(heatmaps) == 6  # pairs of (error, alpha_vcr, alpha_ffp, alpha_prp)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in heatmaps)
    assert summary["best_check"]["micro_auroc"] == pytest.approx(best["micro_auroc"], abs=1e-12)


def test_best_weights_round_trip_through_jobs_score(
    alpha_sweep: tuple[str, dict], scoring_run: str, luss_checkpoint: str, luss_store: str, tmp_path: Path
) -> None:
    out, summary = alpha_sweep
    best = summary["best"]
    run = load_scoring_run(scoring_run)
    # jobs/score.py applies the best point's fusion-only config fields (e.g. the error measure) as well.
    document = yaml.safe_load((Path(out) / "best_weights.yaml").read_text())
    config = fusion_config(run.config, document.get("config"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    rescored = tmp_path / "rescored"
    cmd = [
        sys.executable, str(ROOT / "jobs" / "score.py"), "--checkpoint", luss_checkpoint, "--data", luss_store,
        "--out", str(rescored), "--weights-config", str(Path(out) / "best_weights.yaml"), "--num-cpus", "2",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = {"vcr": best["alpha_vcr"], "ffp": best["alpha_ffp"], "prp": best["alpha_prp"]}
    for video_id in run.rows:
        table = pq.read_table(_score_file(str(rescored), video_id))
        assert table.schema.metadata[b"weights"].decode() == repr(weights)
        expected = fused_scores(run, config, list(weights), np.array([list(weights.values())]), video_id, True)
        np.testing.assert_allclose(table.column("score").to_numpy(), expected[:, 0], rtol=1e-12, atol=1e-12)


def test_a_scored_column_marks_the_rows_fuse_saw(scoring_run: str, tmp_path: Path) -> None:
    copy = tmp_path / "flagged"
    for f in Path(scoring_run).rglob("*"):
        if f.is_file():
            target = copy / f.relative_to(scoring_run)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    for f in (copy / "scores").rglob("*.parquet"):
        table = pq.read_table(f)
        if SCORED_COLUMN in table.column_names:  # a writer that already flags them: flag them again ourselves
            table = table.drop_columns([SCORED_COLUMN])
        flags = pa.array(table.column("frame_idx").to_numpy() >= LussAeConfig().clip_len)
        table = table.append_column(SCORED_COLUMN, flags).replace_schema_metadata(table.schema.metadata)
        pq.write_table(table, f)
    flagged, plain = load_scoring_run(str(copy)), load_scoring_run(scoring_run)
    assert all(flagged.exact.values()) and all(plain.exact.values())
    for video_id, rows in flagged.rows.items():
        assert rows["frame_idx"][0] == LussAeConfig().clip_len
        for key, values in rows.items():
            np.testing.assert_array_equal(values, plain.rows[video_id][key])


def test_test_selection_reports_no_heldout_and_warns(scoring_run: str, luss_store: str, tmp_path: Path) -> None:
    grid = ScoreGrid({"vcr": "alpha_vcr", "ffp": "alpha_ffp", "prp": "alpha_prp"}, (0.0, 0.5, 1.0))
    result = score_sweep(scoring_run, luss_store, str(tmp_path / "s"), grid, selection="test", objective="macro_auroc")
    assert result.heldout is None and result.table.num_rows == 26
    assert sorted(result.summary["selection_videos"]) == sorted(load_labels(luss_store))
    assert "optimistic" in (tmp_path / "s" / "results.md").read_text()
    macro = [r["macro_auroc"] for r in result.table.to_pylist()]
    assert macro == sorted(macro, reverse=True)


def test_unfinished_scoring_runs_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a finished scoring run"):
        load_scoring_run(str(tmp_path))


# -------------------------------------------------------------------------------------- λ sweeps (Ray Tune)


class InterruptAfterFirstTrial(tune.Callback):
    """Interrupts the experiment once (as Ctrl+C would: Tune saves its state and stops) after the first trial."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_trial_complete(self, iteration: int, trials: list, trial: object, **info: object) -> None:
        if not os.path.exists(self.marker):  # the callback is restored with the experiment: fire only once
            Path(self.marker).write_text("interrupted\n")
            os.kill(os.getpid(), signal.SIGUSR1)


# Table 2's PRP row pair (without / with the PRP task): two trials keep this Ray Tune test affordable on 2 CPUs,
# where trials run one at a time; the 2-D heat-maps are covered by the score sweep above.
LOSS_GRID = LossGrid({"prp": LUSS_GRID.loss.grid["prp"]}, LUSS_GRID.loss.objective)


@pytest.fixture(scope="module")
def lambda_sweep(luss_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = str(tmp_path_factory.mktemp("lambda") / "sweep")
    base = load_config(LussAeConfig, None, TINY_LUSS_OVERRIDES)
    cfg = LossSweepConfig(
        name="tiny-lambda", trials_concurrency=2, train=TrainRunConfig(num_workers=1, val_fraction=0.5, log_every=0)
    )
    marker = str(Path(out).parent / "interrupted")
    first = loss_sweep("luss_ae", base, luss_store, out, LOSS_GRID, cfg,
                       tune_callbacks=[InterruptAfterFirstTrial(marker)])  # fmt: skip
    finished = {r["point"]: r for r in first.table.to_pylist() if r["status"] == "ok"}
    stamps = {
        point: {p: p.stat().st_mtime_ns for p in Path(row["checkpoint"]).rglob("*") if p.is_file()}
        for point, row in finished.items()
    }
    best_after_first = (Path(out) / "best_config.yaml").exists()
    second = loss_sweep("luss_ae", base, luss_store, out, LOSS_GRID, cfg)
    return {
        "out": out, "first": first, "second": second, "stamps": stamps, "finished": finished,
        "best_after_first": best_after_first,
    }  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_lambda_sweep_resumes_without_rerunning_finished_trials(lambda_sweep: dict) -> None:
    first, second = lambda_sweep["first"], lambda_sweep["second"]
    assert not first.complete and len(lambda_sweep["finished"]) == 1
    assert not lambda_sweep["best_after_first"]  # no "best" is claimed from a partial sweep
    assert second.complete and second.table.num_rows == 2
    rows = {r["point"]: r for r in second.table.to_pylist()}
    for point, stamps in lambda_sweep["stamps"].items():
        assert rows[point]["checkpoint"] == lambda_sweep["finished"][point]["checkpoint"]
        assert rows[point]["micro_auroc"] == lambda_sweep["finished"][point]["micro_auroc"]
        assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the finished trial's checkpoint is untouched


@pytest.mark.slow
def test_lambda_sweep_trains_every_trial_and_writes_results(lambda_sweep: dict, luss_store: str) -> None:
    out, result = Path(lambda_sweep["out"]), lambda_sweep["second"]
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == 2 and {r["status"] for r in table} == {"ok"}
    assert len({r["checkpoint"] for r in table}) == 2 and len({r["trial_id"] for r in table}) == 2
    assert all(0.0 <= r["micro_auroc"] <= 1.0 for r in table)
    best = result.best
    cfg = load_config(LussAeConfig, out / "best_config.yaml")
    expected = method_config_with(LussAeConfig, load_config(LussAeConfig, None, TINY_LUSS_OVERRIDES),
                                  json.loads(best["point"]))  # fmt: skip
    assert cfg == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["heldout"]["num_videos"] == len(summary["heldout_videos"]) >= 1
    assert not list((out / "heatmaps").glob("*.png"))  # one swept dimension: no 2-D slice to draw
    assert "| rank |" in (out / "results.md").read_text()
    assert storage.exists(storage.join(str(out), "tune", "tiny-lambda"))


# ----------------------------------------------------------------------------------------------------- CLI


def test_cli_rejects_bad_combinations_clearly(
    scoring_run: str, luss_store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from jobs.tune import main

    cases = [
        (["--sweep", "loss", "--num-workers", "0"], "num_workers >= 1"),
        (["--sweep", "score"], "needs --scores"),
        (["--sweep", "score", "--scores", scoring_run, "lambda_ffp=1"], "apply to loss sweeps"),
        (["--sweep", "loss", "--grid", str(default_sweep_path("std"))], "sweep file for 'std'"),
        (["--sweep", "loss", "no_such_field=1"], "no_such_field"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exited:
            main(["--method", "luss_ae", "--data", luss_store, "--out", str(tmp_path / "x"), *extra])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err
