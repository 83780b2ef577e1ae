"""Benchmark: 1,000 α points from stored task scores vs re-scoring the store once.

Builds (or reuses) a LUSS-AE checkpoint and scoring run on a synthetic corpus, then times:

- ``rescore_s``: one :func:`pipelines.score.score` of the test videos (a fresh output: every video re-scored);
- ``sweep_s``: :func:`pipelines.tune_score.score_sweep` over ``--points`` α triples (vectorised, all outputs written);
- ``vectorised_s`` / ``per_point_s``: the evaluation alone (fused scores + micro AUROC of every point),
  vectorised vs calling ``fuse`` once per point and video (what a method whose fusion is not linear costs).

Writes ``bench/results/alpha_sweep.json`` and prints the ratio ``rescore_s / sweep_s``: how many whole α sweeps
cost as much as a single re-scoring (a sweep by re-scoring would need one per point).

Usage:
    python bench/alpha_sweep.py [--preset tiny|demo] [--points 1000] [--work DIR] [--num-cpus 2]
        [--store STORE --checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.tune import ScoreGrid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _prepare(work: Path, preset: str) -> tuple[str, str]:
    """A clip store and a 1-epoch LUSS-AE checkpoint (tiny layers, 32x32) on the synthetic ``preset``."""
    from pipelines.clip_store import build_clip_store
    from pipelines.config import load_config
    from pipelines.synthetic import synthesize
    from pipelines.train import TrainRunConfig, train
    from vad_models.luss_ae.config import LussAeConfig

    corpus, store, run = work / "corpus", str(work / "store"), str(work / "train")
    synthesize(corpus, preset=preset, seed=0, overwrite=True)
    build_clip_store("folder", str(corpus), store, "luss_ae", size=(32, 32), segment_frames=48, overwrite=True)
    overrides = ["height=32", "width=32", "encoder_channels=[16,16,32,32]", "prp_hidden=[32,16]", "epochs=1",
                 "batch_size=8", "train_stride=4"]  # fmt: skip
    cfg = load_config(LussAeConfig, None, overrides)
    result = train("luss_ae", cfg, store, run, TrainRunConfig(num_workers=0, val_fraction=0.5, log_every=0))
    return store, result.checkpoint


def _grid(points: int) -> ScoreGrid:
    """α triples on a regular grid in (0, 1] with ``round(points ** (1/3))`` values per weight."""
    from pipelines.tune import ScoreGrid

    side = max(2, round(points ** (1 / 3)))
    values = tuple(round((i + 1) / side, 6) for i in range(side))
    return ScoreGrid({"vcr": "alpha_vcr", "ffp": "alpha_ffp", "prp": "alpha_prp"}, values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="synthetic corpus preset when no --store is given")
    parser.add_argument("--points", type=int, default=1000, help="α points (rounded to a cube: 10 values -> 1000)")
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--store", default=None, help="existing clip store (with --checkpoint)")
    parser.add_argument("--checkpoint", default=None, help="existing LUSS-AE checkpoint or training output")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "alpha_sweep.json"))
    args = parser.parse_args(argv)
    if bool(args.store) != bool(args.checkpoint):
        parser.error("--store and --checkpoint go together")

    import numpy as np

    from pipelines.evaluate import load_labels
    from pipelines.runtime import init_ray
    from pipelines.score import ScoreConfig, score
    from pipelines.tune_score import auroc_columns, fused_scores, load_scoring_run, score_sweep

    init_ray(args.num_cpus)
    with tempfile.TemporaryDirectory(prefix="alpha_bench_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        store, checkpoint = (args.store, args.checkpoint) if args.store else _prepare(work, args.preset)
        score(checkpoint, store, str(work / "scores"), ScoreConfig(split="test"))  # the stored run (and warm-up)

        started = time.perf_counter()
        score(checkpoint, store, str(work / "rescored"), ScoreConfig(split="test"))
        rescore_s = time.perf_counter() - started

        grid = _grid(args.points)
        started = time.perf_counter()
        result = score_sweep(str(work / "scores"), store, str(work / "sweep"), grid, selection="test")
        sweep_s = time.perf_counter() - started

        # The evaluation core alone (no loading, no outputs): vectorised vs one fuse call per point and video.
        run = load_scoring_run(str(work / "scores"))
        labels = load_labels(store)
        videos = sorted(labels)
        names, weights = list(grid.weights), grid.weight_matrix()
        y = np.concatenate([labels[v] for v in videos])
        timings = {}
        for linear in (True, False):
            started = time.perf_counter()
            fused = np.concatenate([fused_scores(run, run.config, names, weights, v, linear=linear) for v in videos])
            auroc_columns(fused, y)
            timings[linear] = time.perf_counter() - started

    frames = int(sum(len(labels[v]) for v in videos))
    report = {
        "benchmark": "alpha_sweep",
        "points": int(result.table.num_rows),
        "videos": len(videos),
        "frames": frames,
        "preset": None if args.store else args.preset,
        "rescore_s": round(rescore_s, 3),
        "sweep_s": round(sweep_s, 3),
        "vectorised_s": round(timings[True], 4),
        "per_point_s": round(timings[False], 4),
        "ratio_rescore_over_sweep": round(rescore_s / sweep_s, 2),
        "speedup_vectorised_over_per_point": round(timings[False] / max(timings[True], 1e-9), 2),
        "rescoring_per_point_estimate_s": round(rescore_s * int(result.table.num_rows), 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "note": "CPU only; wall-clock on a possibly shared machine",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{report['points']} α points from stored scores: {sweep_s:.2f} s with all outputs (evaluation core "
        f"{timings[True]:.3f} s vectorised, {timings[False]:.3f} s with one fuse call per point); "
        f"one re-scoring of {len(videos)} videos ({frames} frames): {rescore_s:.2f} s; "
        f"ratio re-score / sweep = {report['ratio_rescore_over_sweep']}; written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
