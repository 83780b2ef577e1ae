"""Evaluation: alignment conventions, micro vs macro AUROC (against direct sklearn calls), EER, loaders, plots, CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pipelines import storage
from pipelines.evaluate import (
    align_to_frames,
    equal_error_rate,
    evaluate,
    frame_metrics,
    load_labels,
    load_scores,
    padded_video_auroc,
    snippet_to_frames,
    window_to_frame,
)
from pipelines.plots import anomalous_runs, render_roc, render_score_curve
from tests.helpers import load_job

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_score_store(out: str, scores: dict[str, np.ndarray], shuffle: bool = True) -> None:
    rng = np.random.default_rng(0)
    for vid, values in scores.items():
        order = rng.permutation(len(values)) if shuffle else np.arange(len(values))
        table = pa.table(
            {
                "video_id": [vid] * len(values),
                "frame_idx": pa.array(order, pa.int64()),
                "score": pa.array(np.asarray(values, np.float64)[order]),
                "vcr_bpe": pa.array(np.zeros(len(values))),
            }
        )
        storage.write_parquet_atomic(storage.join(out, "scores", "synthetic", f"{vid}.parquet"), table)


# ------------------------------------------------------------------------------------------------ alignment
def test_window_conventions() -> None:
    starts = np.array([0, 1, 5])
    assert window_to_frame(starts, 16, "center").tolist() == [8, 9, 13]
    assert window_to_frame(starts, 17, "last").tolist() == [16, 17, 21]
    assert window_to_frame(starts, 16, "first").tolist() == [0, 1, 5]
    with pytest.raises(ValueError, match="unknown alignment convention 'middle'"):
        window_to_frame(starts, 16, "middle")


def test_center_convention_reproduces_memae_label_slicing() -> None:
    # MemAE scores 16-frame windows and compares them with labels[8:-7]: the centre convention puts each window
    # score on exactly those frames, and the 8 + 7 edge frames take the nearest window's score.
    num_frames, window = 40, 16
    starts = np.arange(num_frames - window + 1)
    window_scores = np.random.default_rng(1).random(starts.size)
    frames = align_to_frames(window_to_frame(starts, window, "center"), window_scores, num_frames)
    assert np.array_equal(frames[8:-7], window_scores)
    assert np.all(frames[:8] == window_scores[0]) and np.all(frames[-7:] == window_scores[-1])


def test_align_to_frames_fills_by_nearest_and_rejects_bad_indices() -> None:
    out = align_to_frames(np.array([6, 2]), np.array([3.0, 1.0]), 9)
    assert out.tolist() == [1, 1, 1, 1, 1, 3, 3, 3, 3]  # frame 4 is a tie and takes the earlier score
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        align_to_frames(np.array([0, 5]), np.array([1.0, 2.0]), 5)
    with pytest.raises(ValueError, match="duplicate frame indices"):
        align_to_frames(np.array([1, 1]), np.array([1.0, 2.0]), 5)
    with pytest.raises(ValueError, match="no scored frames"):
        align_to_frames(np.array([], np.int64), np.array([]), 5)


def test_snippet_to_frames_repeats_and_pads_the_tail() -> None:
    assert snippet_to_frames(np.array([1.0, 2.0]), 16, 32).tolist() == [1.0] * 16 + [2.0] * 16
    tail = snippet_to_frames(np.array([1.0, 2.0]), 16, 40)  # RTFM drops the last 8 frames; they get snippet 2
    assert tail.shape == (40,) and np.all(tail[16:] == 2.0)
    assert snippet_to_frames(np.array([1.0, 2.0]), 16, 20).tolist() == [1.0] * 16 + [2.0] * 4
    with pytest.raises(ValueError, match="cannot cover 100 frames"):
        snippet_to_frames(np.array([1.0, 2.0]), 16, 100)


# -------------------------------------------------------------------------------------------------- metrics
def test_micro_and_macro_differ_and_match_direct_sklearn() -> None:
    labels = {"a": np.array([0, 0, 1, 1], np.uint8), "b": np.array([0, 0, 1, 1], np.uint8)}
    scores = {"a": np.array([0.1, 0.2, 0.3, 0.4]), "b": np.array([0.5, 0.6, 0.7, 0.8])}
    m = frame_metrics(scores, labels)
    y = np.concatenate([labels["a"], labels["b"]])
    s = np.concatenate([scores["a"], scores["b"]])
    assert m["micro_auroc"] == pytest.approx(roc_auc_score(y, s)) == pytest.approx(0.75)
    direct_macro = np.mean(
        [roc_auc_score(np.r_[0, labels[v], 1], np.r_[scores[v].min(), scores[v], scores[v].max()]) for v in "ab"]
    )
    assert m["macro_auroc"] == pytest.approx(direct_macro) == pytest.approx(1.0)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s))
    assert (m["num_videos"], m["num_frames"], m["num_anomalous_frames"]) == (2, 8, 4)
    assert set(m["auroc_definitions"]) >= {"micro_auroc", "macro_auroc"}
    assert "concatenated" in m["auroc_definitions"]["micro_auroc"]
    assert "padded" in m["auroc_definitions"]["macro_auroc"]


def test_macro_pad_rule_for_single_class_videos() -> None:
    all_abnormal, all_normal = np.array([1, 1, 1], np.uint8), np.array([0, 0, 0], np.uint8)
    assert padded_video_auroc(all_abnormal, np.array([0.2, 0.5, 0.9])) == pytest.approx(0.875)
    assert padded_video_auroc(all_normal, np.array([0.3, 0.3, 0.6])) == pytest.approx(0.875)
    # For per-video min-max scaled scores the pad equals UBnormal's literal (label 0, score 0) + (label 1, score 1).
    raw = np.array([3.0, 7.0, 5.0, 9.0])
    y = np.array([0, 1, 0, 1])
    scaled = (raw - raw.min()) / (raw.max() - raw.min())
    ubnormal = roc_auc_score(np.r_[0, y, 1], np.r_[0.0, scaled, 1.0])
    assert padded_video_auroc(y, scaled) == pytest.approx(ubnormal)
    assert padded_video_auroc(y, 10 * raw + 3) == pytest.approx(ubnormal)  # invariant to rescaling
    scores = {"n": np.array([0.3, 0.3, 0.6]), "x": np.array([0.1, 0.9])}
    m = frame_metrics(scores, {"n": all_normal, "x": np.array([0, 1])})
    assert m["single_class_videos"] == ["n"]
    assert m["macro_auroc"] == pytest.approx((0.875 + 1.0) / 2)


def test_undefined_metrics_are_none_when_no_frame_is_anomalous() -> None:
    m = frame_metrics({"n": np.array([0.1, 0.5])}, {"n": np.array([0, 0], np.uint8)})
    assert m["micro_auroc"] is None and m["pr_auc"] is None and m["eer"] is None
    assert m["macro_auroc"] == pytest.approx(padded_video_auroc(np.array([0, 0]), np.array([0.1, 0.5])))


def test_equal_error_rate_hand_made() -> None:
    # One negative above 0.6 and one positive below it: FPR = FNR = 1/4 at threshold 0.6.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9])
    assert equal_error_rate(labels, scores) == pytest.approx((0.25, 0.6))
    # No ROC point has FPR = FNR: (FPR, FNR) goes (0, 0.5) -> (1, 0.5), crossing at 0.5 halfway.
    eer, _ = equal_error_rate(np.array([0, 1, 1]), np.array([0.5, 0.9, 0.2]))
    assert eer == pytest.approx(0.5)
    assert equal_error_rate(np.array([0, 1]), np.array([0.0, 1.0]))[0] == 0.0


def test_mismatched_lengths_and_missing_scores_name_the_video() -> None:
    labels = {"a": np.zeros(4, np.uint8), "b": np.array([0, 1, 1, 0], np.uint8)}
    with pytest.raises(ValueError, match=r"video 'b': 3 scores but 4 frame labels"):
        frame_metrics({"a": np.zeros(4), "b": np.zeros(3)}, labels)
    with pytest.raises(ValueError, match=r"no scores for 1 labelled video\(s\): b"):
        frame_metrics({"a": np.zeros(4)}, labels)
    with pytest.raises(ValueError, match="non-finite"):
        frame_metrics({"a": np.zeros(4), "b": np.array([0.0, np.nan, 1.0, 0.0])}, labels)


# -------------------------------------------------------------------------------------------------- loading
def test_load_scores_sorts_frames_and_checks_density() -> None:
    root = "memory://eval-load-scores"
    _write_score_store(root, {"v1": np.arange(6) / 10.0, "v2": np.array([0.3, 0.1])})
    scores = load_scores(root)
    assert sorted(scores) == ["v1", "v2"] and scores["v1"].tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert load_scores(storage.join(root, "scores"))["v2"].tolist() == [0.3, 0.1]
    sparse = pa.table({"video_id": ["s", "s"], "frame_idx": [0, 2], "score": [0.1, 0.2]})
    storage.write_parquet_atomic("memory://eval-sparse/scores/d/s.parquet", sparse)
    with pytest.raises(ValueError, match=r"'s'.*frame_idx must be exactly 0..1"):
        load_scores("memory://eval-sparse")
    with pytest.raises(ValueError, match="lacks column"):
        storage.write_parquet_atomic("memory://eval-cols/x.parquet", pa.table({"video_id": ["x"]}))
        load_scores("memory://eval-cols")


def test_load_labels_from_store_folder_corpus_and_error(tiny_corpus: Path) -> None:
    store = "memory://eval-store"
    table = pa.table({"video_id": ["a", "b"], "frame_labels": pa.array([[0, 1, 1], [0, 0]], pa.list_(pa.uint8()))})
    storage.write_parquet_atomic(storage.join(store, "labels.parquet"), table)
    labels = load_labels(store)
    assert labels["a"].tolist() == [0, 1, 1] and labels["a"].dtype == np.uint8
    corpus = load_labels(str(tiny_corpus))
    assert sorted(corpus) == ["test_000", "test_001", "test_002"]
    assert np.array_equal(corpus["test_001"], np.load(tiny_corpus / "labels" / "test_001.npy"))
    assert sorted(load_labels(str(tiny_corpus / "labels"))) == sorted(corpus)
    with pytest.raises(ValueError, match="no frame labels"):
        load_labels(str(tiny_corpus / "train"))
    masks = io.BytesIO()
    np.save(masks, np.zeros((4, 8, 8), np.uint8))  # pixel masks are not frame labels
    storage.write_bytes_atomic("memory://eval-masks/labels/m.npy", masks.getvalue())
    with pytest.raises(ValueError, match=r"'m' must be a 1-D array of 0/1, got shape \(4, 8, 8\)"):
        load_labels("memory://eval-masks")


# ----------------------------------------------------------------------------------------- plots and driver
def test_plots_are_valid_pngs() -> None:
    labels = np.r_[np.zeros(30), np.ones(20), np.zeros(10)].astype(np.uint8)
    assert anomalous_runs(labels) == [(30, 50)]
    curve = render_score_curve(np.random.default_rng(0).random(60), labels, title="v")
    roc = render_roc(np.random.default_rng(1).random(60) + labels, labels)
    for png in (curve, roc):
        assert png[:8] == PNG_SIGNATURE and len(png) > 5_000
    with pytest.raises(ValueError, match="both normal and anomalous"):
        render_roc(np.zeros(3), np.zeros(3))


def test_evaluate_writes_metrics_and_plots(tiny_corpus: Path, tmp_path: Path) -> None:
    labels = load_labels(str(tiny_corpus))
    rng = np.random.default_rng(0)
    scores = {vid: y + rng.normal(0, 0.6, y.size) for vid, y in labels.items()}
    _write_score_store(str(tmp_path / "run"), {**scores, "train_000": np.zeros(64)})
    out = tmp_path / "eval"
    metrics = evaluate(str(tmp_path / "run"), str(tiny_corpus), out_uri=str(out))
    y = np.concatenate([labels[v] for v in sorted(labels)])
    s = np.concatenate([scores[v] for v in sorted(labels)])
    assert metrics["micro_auroc"] == pytest.approx(roc_auc_score(y, s))
    assert metrics["unlabelled_videos"] == 1 and metrics["num_videos"] == 3
    assert json.loads((out / "metrics.json").read_text())["macro_auroc"] == pytest.approx(metrics["macro_auroc"])
    for name in ("test_000.png", "test_001.png", "test_002.png", "roc.png"):
        data = (out / "plots" / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5_000
    metrics_only = evaluate(str(tmp_path / "run"), str(tiny_corpus), out_uri="memory://eval-out", plots=False)
    assert metrics_only["micro_auroc"] == metrics["micro_auroc"]
    assert storage.list_files("memory://eval-out") == ["memory://eval-out/metrics.json"]


def test_cli_smoke_and_length_error(tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    labels = load_labels(str(tiny_corpus))
    _write_score_store(str(tmp_path / "good"), {v: y.astype(float) for v, y in labels.items()})
    script = str(REPO / "jobs" / "evaluate.py")
    ok = subprocess.run(
        [sys.executable, script, "--scores", str(tmp_path / "good"), "--labels", str(tiny_corpus), "--no-plots",
         "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    headline = json.loads(ok.stdout.splitlines()[0])
    assert headline["micro_auroc"] == 1.0 and headline["num_videos"] == 3
    assert "macro_auroc:" in ok.stdout and (tmp_path / "eval" / "metrics.json").exists()
    # The error path runs in-process (same main(), no second interpreter start-up).
    _write_score_store(str(tmp_path / "bad"), {v: np.zeros(y.size - (v == "test_001")) for v, y in labels.items()})
    job = load_job("evaluate")
    assert job.main(["--scores", str(tmp_path / "bad"), "--labels", str(tiny_corpus)]) == 2
    assert "error: video 'test_001': 63 scores but 64 frame labels" in capsys.readouterr().err
