"""`make demo` end to end at demo scale: the trained model must rank the synthetic anomalies above normal frames.

LUSS-AE is what `make demo` trains; STD runs through the same job with its synthetic config (issue #6's
demo-scale acceptance run).

The demo runs as `make demo` runs it: `jobs/demo.py` in a fresh process with its own embedded Ray. Run inside the
test process instead, after some hundred other tests, the same seeded run measured 0.70 instead of 0.83: process
state left behind by earlier tests changes the training run, and a user's `make demo` never inherits it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.stores import read_labels
from tests.helpers import load_job

ROOT = Path(__file__).resolve().parents[1]


def run_demo_job(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``jobs/demo.py --out OUT --seed 0 --num-cpus 2 ARGS`` in a fresh process; returns it and its metrics."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, str(ROOT / "jobs" / "demo.py"), "--out", str(out), "--seed", "0", "--num-cpus", "2", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    print(f"demo {args}: micro AUROC {metrics['micro_auroc']:.4f}, macro AUROC {metrics['macro_auroc']:.4f}")
    assert f"micro AUROC (all frames concatenated): {metrics['micro_auroc']:.4f}" in done.stdout
    return done, metrics


@pytest.mark.slow
def test_demo_reaches_micro_auroc_and_reports_the_anomalies(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done, metrics = run_demo_job(out)
    # Training is seeded end to end (TrainRunConfig.deterministic), so this is one fixed run: measured micro AUROC
    # 0.825 twice (corpus seed 0; 0.813 with corpus seed 1), against the bar of 0.80. configs/demo.yaml
    # lists other training seeds.
    assert metrics["micro_auroc"] >= 0.80
    report = out / "report" / "index.html"
    assert done.stdout.rstrip().endswith(f"report:     {report}")  # the demo ends by printing the report's path
    page = report.read_text(encoding="utf-8")
    assert "luss_ae model maps" in page and "red overlay: anomaly map" in page  # LUSS-AE residual on the thumbnails
    events = pq.read_table(out / "scores" / "events.parquet").to_pylist()
    assert events, "the scoring run should have found anomalous events"
    labels = read_labels(str(out / "store"))
    top = sorted(events, key=lambda e: -e["peak_score"])[:5]
    hits = [bool(np.any(labels[e["video_id"]][e["start_frame"] : e["end_frame"] + 1])) for e in top]
    assert len(top) >= 2 and sum(hits) >= 0.6 * len(top), f"the top events should cover labelled anomalies: {top}"


@pytest.mark.slow
def test_std_demo_reaches_micro_auroc(tmp_path: Path) -> None:
    """STD (issue #6) at demo scale with the shipped configs/std/synthetic.yaml: the same job, corpus and seed."""
    out = tmp_path / "std_demo"
    done, metrics = run_demo_job(out, "--config", str(ROOT / "configs" / "std" / "synthetic.yaml"))
    assert "training std at 64x64" in done.stdout
    # One fixed, seeded run: measured micro AUROC 0.855 through this job (corpus seed 0), against the bar of
    # 0.80. The config's comment gives other corpus seeds and why seed 1 falls short.
    assert metrics["micro_auroc"] >= 0.80
    summary = json.loads((out / "scores" / "summary.json").read_text())
    assert summary["method"] == "std" and summary["videos_scored"] == 6 and not summary["videos_failed"]


def test_demo_runs_clip_store_methods_and_refuses_the_others(capsys: pytest.CaptureFixture) -> None:
    demo = load_job("demo")
    assert demo.demo_method(str(ROOT / "configs" / "demo.yaml")) == "luss_ae"
    assert demo.demo_method(str(ROOT / "configs" / "std" / "synthetic.yaml")) == "std"
    with pytest.raises(ValueError, match="ssmtl reads a 'tubes' store"):
        demo.demo_method(str(ROOT / "configs" / "ssmtl" / "synthetic.yaml"))
    # The job refuses before starting Ray, with exit code 2 and the reason.
    assert demo.main(["--config", str(ROOT / "configs" / "mtvae" / "synthetic.yaml"), "--out", "unused"]) == 2
    assert "mtvae reads a 'features' store" in capsys.readouterr().err
