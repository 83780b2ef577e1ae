"""Generic batch scoring: score files per video, only-new reruns, S3 output, calibration modes, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import storage
from pipelines.score import ScoreConfig, score
from pipelines.stores import read_manifest

ROOT = Path(__file__).resolve().parents[2]


def _test_videos(store: str) -> dict[str, int]:
    return {r["video_id"]: r["num_frames"] for r in read_manifest(store).to_pylist() if r["split"] == "test"}


def _dataset(store: str) -> str:
    return read_manifest(store).column("dataset")[0].as_py()


@pytest.fixture(scope="module")
def scored(luss_checkpoint: str, luss_store: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("scored") / "out")
    return out, score(luss_checkpoint, luss_store, out, ScoreConfig(split="test"))


def test_every_test_video_gets_one_score_per_frame(scored: tuple[str, dict], luss_store: str) -> None:
    out, summary = scored
    videos = _test_videos(luss_store)
    assert summary["videos_scored"] == len(videos) and not summary["videos_failed"]
    for video_id, num_frames in videos.items():
        table = pq.read_table(Path(out) / "scores" / _dataset(luss_store) / f"{video_id}.parquet")
        assert table.column("frame_idx").to_pylist() == list(range(num_frames))
        score_values = table.column("score").to_numpy()
        assert np.isfinite(score_values).all()
        assert {"vcr_bpe", "ffp_bpe", "prp"} <= set(table.column_names)
        meta = table.schema.metadata
        assert meta[b"method"] == b"luss_ae" and meta[b"calibration"] == b"per-video"
        assert meta[b"checkpoint_id"].decode() == summary["checkpoint_id"]
    assert (Path(out) / "_SUCCESS").exists()
    written = json.loads((Path(out) / "summary.json").read_text())
    assert written["alignment"] == summary["alignment"] and written["videos_scored"] == len(videos)


def test_only_new_rescoring_touches_nothing(scored: tuple[str, dict], luss_checkpoint: str, luss_store: str) -> None:
    out, _ = scored
    files = sorted((Path(out) / "scores").rglob("*.parquet"))
    before = {f: f.stat().st_mtime_ns for f in files}
    summary = score(luss_checkpoint, luss_store, out, ScoreConfig(split="test", only_new=True))
    assert summary["videos_scored"] == 0 and summary["videos_skipped"] == len(files)
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_global_calibration_and_s3_output(luss_checkpoint: str, luss_store: str, s3_bucket: str) -> None:
    out = f"{s3_bucket}/runs/calibrated"
    summary = score(luss_checkpoint, luss_store, out, ScoreConfig(split="test", calibration="global"))
    listed = storage.list_files(storage.join(out, "scores"), suffixes=(".parquet",))
    assert len(listed) == len(_test_videos(luss_store)) == summary["videos_scored"]
    table = storage.read_parquet(listed[0])
    assert table.schema.metadata[b"calibration"] == b"global"
    assert storage.exists(storage.join(out, "_SUCCESS"))


def test_bad_calibration_mode_is_rejected(luss_checkpoint: str, luss_store: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration must be one of"):
        score(luss_checkpoint, luss_store, str(tmp_path), ScoreConfig(calibration="sometimes"))


def test_score_cli_with_evaluation(luss_checkpoint: str, luss_store: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [
        sys.executable, str(ROOT / "jobs" / "score.py"), "--method", "luss_ae", "--checkpoint", luss_checkpoint,
        "--data", luss_store, "--out", str(tmp_path / "cli"), "--evaluate", "--num-cpus", "2", "--report",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "micro AUROC" in done.stdout and (tmp_path / "cli" / "metrics.json").exists()
    # --report without a folder: OUT/report, path printed last, with the checkpoint's own anomaly maps.
    html = tmp_path / "cli" / "report" / "index.html"
    assert done.stdout.strip().splitlines()[-1] == f"[report] {html}"
    page = html.read_text(encoding="utf-8")
    assert "luss_ae model maps" in page and "Micro AUROC" in page and "red overlay: anomaly map" in page
    wrong = subprocess.run([*cmd[:3], "std", *cmd[4:]], env=env, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "holds a luss_ae model" in wrong.stderr
