"""SSMTL end to end on the synthetic corpus with the offline background detector (issue #8, last acceptance item).

synthesize (the session's ``tiny`` corpus, seed 0) -> clip store (spec ``ssmtl``, 64x64) -> detections (background
detector) -> object tubes -> the generic trainer -> the generic scorer -> micro AUROC, all with the shipped
``configs/ssmtl/synthetic.yaml`` (no teacher; distillation of the detector's class probability only).

Measured micro AUROC of this exact chain and config on the tiny preset: corpus seed 0 (this test) 0.939, corpus seeds
1 / 2 / 3 / 4: 0.867 / 0.870 / 0.629 / 0.844 (before batch norm kept 7-frame running statistics only, see
vad_models.ssmtl.model: 0.939 / 0.861 / 0.850 / 0.635 / 0.841, and 0.941 on seed 0 with training seed 1). The tiny
test videos are ~80% anomalous (64 frames each), so a few normal frames decide the AUROC; on seed 3 the objects are
ranked well (mean object score: erratic 0.48, fast 0.39, normal 0.24 +- 0.09) but the 3D mean filter dilutes the
3 px wide fast runner below the normal people of another video.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.clip_store import build_clip_store
from pipelines.config import load_config
from pipelines.detections import build_tubes, detect
from pipelines.evaluate import evaluate
from pipelines.score import ScoreConfig, score
from pipelines.train import TrainRunConfig, train
from vad_models.ssmtl.config import SsmtlConfig

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ssmtl" / "synthetic.yaml"


@pytest.mark.slow
def test_ssmtl_on_the_synthetic_corpus_reaches_micro_auroc(
    ray_local: None, tiny_corpus: Path, tmp_path: Path
) -> None:
    cfg = load_config(SsmtlConfig, str(CONFIG))
    clips, det, tubes = str(tmp_path / "clips"), str(tmp_path / "det"), str(tmp_path / "tubes")
    build_clip_store("folder", str(tiny_corpus), clips, "ssmtl", size=(64, 64))
    meta = detect(clips, det, cfg.detect)
    assert (meta["videos_detected"], meta["videos_failed"]) == (5, 0)
    build_tubes(clips, det, tubes, cfg)  # no teacher: cfg distils the detector's class probability only
    # Seeded end to end (TrainRunConfig.deterministic, seed 0), so this is one fixed run.
    result = train("ssmtl", cfg, tubes, str(tmp_path / "train"), TrainRunConfig(val_fraction=0.0, log_every=0))
    summary = score(result.checkpoint, tubes, str(tmp_path / "scores"), ScoreConfig(split="test", batch_size=256))
    assert summary["videos_scored"] == 3 and not summary["videos_failed"]
    metrics = evaluate(str(tmp_path / "scores"), clips, plots=False)
    print(f"ssmtl synthetic e2e: micro AUROC {metrics['micro_auroc']:.4f}, macro AUROC {metrics['macro_auroc']:.4f}")
    # One fixed run: 0.939 measured (seeds and their values in the module docstring), against the bar of 0.80.
    assert metrics["micro_auroc"] >= 0.80
