"""`make demo` end to end at demo scale: the trained LUSS-AE must rank the synthetic anomalies above normal frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.stores import read_labels

ROOT = Path(__file__).resolve().parents[1]


def _demo_module():  # noqa: ANN202 - the jobs/ scripts are not a package
    spec = importlib.util.spec_from_file_location("demo_job", ROOT / "jobs" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_reaches_micro_auroc_and_reports_the_anomalies(ray_local: None, tmp_path: Path) -> None:
    result = _demo_module().run_demo(str(tmp_path / "demo"), str(ROOT / "configs" / "demo.yaml"), seed=0)
    metrics = result["metrics"]
    print(f"demo: micro AUROC {metrics['micro_auroc']:.4f}, macro AUROC {metrics['macro_auroc']:.4f}")
    # Training is seeded end to end (TrainRunConfig.deterministic), so this is one fixed run: measured micro AUROC
    # 0.833 (corpus seed 0; 0.826 and 0.831 with corpus seeds 1 and 2), against the bar of 0.80.
    assert metrics["micro_auroc"] >= 0.80
    report = Path(result["report"])
    assert report.name == "index.html" and report.exists()
    page = report.read_text(encoding="utf-8")
    assert "luss_ae model maps" in page and "red overlay: anomaly map" in page  # LUSS-AE residual on the thumbnails
    events = pq.read_table(Path(result["scores"]) / "events.parquet").to_pylist()
    assert events, "the scoring run should have found anomalous events"
    labels = read_labels(str(tmp_path / "demo" / "store"))
    top = sorted(events, key=lambda e: -e["peak_score"])[:5]
    hits = [bool(np.any(labels[e["video_id"]][e["start_frame"] : e["end_frame"] + 1])) for e in top]
    assert len(top) >= 2 and sum(hits) >= 0.6 * len(top), f"the top events should cover labelled anomalies: {top}"
