"""`make demo` end to end at demo scale: the trained LUSS-AE must rank the synthetic anomalies above normal frames.

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

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_reaches_micro_auroc_and_reports_the_anomalies(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, str(ROOT / "jobs" / "demo.py"), "--out", str(out), "--seed", "0", "--num-cpus", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    print(f"demo: micro AUROC {metrics['micro_auroc']:.4f}, macro AUROC {metrics['macro_auroc']:.4f}")
    assert f"micro AUROC (all frames concatenated): {metrics['micro_auroc']:.4f}" in done.stdout
    # Training is seeded end to end (TrainRunConfig.deterministic), so this is one fixed run: measured micro AUROC
    # 0.833 (corpus seed 0; 0.826 and 0.831 with corpus seeds 1 and 2), against the bar of 0.80.
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
