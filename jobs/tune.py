"""Sweep loss weights (λ, Ray Tune trials that train) or score-fusion weights (α, on stored task scores).

Usage:
    python jobs/tune.py --method luss_ae --sweep loss --data STORE --out URI [--grid configs/luss_ae/sweep.yaml]
        [--config configs/luss_ae/ped2.yaml] [--trials-concurrency N] [--num-workers 1] [--use-gpu]
        [--selection validation|test] [--val-fraction 0.5] [--name NAME] [key=value ...]
    python jobs/tune.py --method luss_ae --sweep score --scores SCORING_RUN --data STORE --out URI
        [--grid configs/luss_ae/sweep.yaml] [--selection validation|test] [--val-fraction 0.5]

Outputs under --out: results.parquet, results.md, best_config.yaml (and best_weights.yaml for score sweeps, for
jobs/score.py --weights-config), heatmaps/*.png and summary.json. See docs/tuning.md for the protocol: choosing
weights on the test labels (--selection test, as the papers' ablations do) overstates results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import fail  # noqa: E402

if TYPE_CHECKING:
    from pipelines.tune import SweepResult, SweepSpec


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``jobs/tune.py``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, help="registered method (luss_ae, std, ssmtl, mtvae)")
    parser.add_argument("--sweep", required=True, choices=["loss", "score"], help="what to sweep")
    parser.add_argument("--data", required=True, help="store URI: training data (loss) and frame labels (both)")
    parser.add_argument("--out", required=True, help="output URI (local path or s3://)")
    parser.add_argument("--grid", default=None, help="sweep file (default: configs/<method>/sweep.yaml)")
    parser.add_argument("--scores", default=None, help="score sweeps: OUT of a finished jobs/score.py run")
    parser.add_argument("--selection", default="validation", choices=["validation", "test"],
                        help="videos that choose the weights (test = the papers' optimistic protocol)")
    parser.add_argument("--val-fraction", type=float, default=0.5, help="fraction of labelled videos that choose")
    parser.add_argument("--objective", default=None, choices=["micro_auroc", "macro_auroc"],
                        help="metric to maximise (default: the sweep file's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the selection split")
    loss = parser.add_argument_group("loss sweeps")
    loss.add_argument("--config", default=None, help="base method config YAML every trial starts from")
    loss.add_argument("--name", default=None, help="stable experiment name (default: <method>-loss)")
    loss.add_argument("--trials-concurrency", type=int, default=1, help="trials at once (capped to fit)")
    loss.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per trial (>= 1)")
    loss.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per Ray Train worker")
    loss.add_argument("--cpus-per-trial", type=float, default=0.0, help="CPUs reserved by each trial's driver")
    loss.add_argument("--use-gpu", action="store_true", help="one GPU per Ray Train worker")
    loss.add_argument("--max-failures", type=int, default=0, help="Tune retries of a failed trial")
    loss.add_argument("--train-val-fraction", type=float, default=0.1,
                      help="training videos held out per trial (validation loss, calibration)")
    loss.add_argument("--calibration", default="per-video", choices=["per-video", "global"],
                      help="scoring calibration of each trial")
    loss.add_argument("--no-resume", action="store_true", help="refuse to restore an existing experiment")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    parser.add_argument("overrides", nargs="*", help="loss sweeps: key=value overrides of the base config")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from pipelines.config import ConfigError
    from pipelines.tune import default_sweep_path, load_sweep_spec

    grid_path = args.grid or str(default_sweep_path(args.method))
    try:
        spec = load_sweep_spec(grid_path)
    except ConfigError as exc:
        fail(str(exc))
    if spec.method != args.method:
        fail(f"{grid_path} is a sweep file for {spec.method!r}, not {args.method!r}")
    if args.sweep == "score":
        return _score(args, spec, grid_path)
    return _loss(args, spec, grid_path)


def _score(args: argparse.Namespace, spec: SweepSpec, grid_path: str) -> int:
    from pipelines import storage
    from pipelines.tune_score import score_sweep

    if spec.score is None:
        fail(f"{grid_path} has no 'score' section")
    if not args.scores:
        fail("--sweep score needs --scores (the OUT of a finished jobs/score.py run)")
    if args.overrides or args.config:
        fail("--config and key=value overrides apply to loss sweeps; a score sweep uses the scoring run's config")
    summary_uri = storage.join(args.scores, "summary.json")
    if storage.exists(summary_uri) and storage.read_json(summary_uri).get("method") != args.method:
        fail(f"--scores {args.scores} was scored by {storage.read_json(summary_uri).get('method')}, not {args.method}")
    try:
        result = score_sweep(
            args.scores, args.data, args.out, spec.score, selection=args.selection,
            val_fraction=args.val_fraction, seed=args.seed, objective=args.objective,
        )  # fmt: skip
    except (ValueError, KeyError, RuntimeError) as exc:
        fail(str(exc), code=1)
    _print(result, args.out)
    return 0


def _loss(args: argparse.Namespace, spec: SweepSpec, grid_path: str) -> int:
    from pipelines.cli import load_method_config
    from pipelines.config import ConfigError
    from pipelines.runtime import init_ray
    from pipelines.train import TrainRunConfig
    from pipelines.tune_loss import LossSweepConfig, loss_sweep

    if spec.loss is None:
        fail(f"{grid_path} has no 'loss' section")
    if args.scores:
        fail("--scores belongs to score sweeps")
    try:
        base = load_method_config(args.method, args.config, args.overrides)
        cfg = LossSweepConfig(
            name=args.name or f"{args.method}-loss",
            trials_concurrency=args.trials_concurrency,
            train=TrainRunConfig(
                num_workers=args.num_workers, use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
                val_fraction=args.train_val_fraction, seed=args.seed, log_every=0,
            ),
            cpus_per_trial=args.cpus_per_trial,
            max_failures=args.max_failures,
            selection=args.selection,
            val_fraction=args.val_fraction,
            seed=args.seed,
            calibration=args.calibration,
            resume=not args.no_resume,
        )  # fmt: skip
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    init_ray(args.num_cpus)
    try:
        result = loss_sweep(args.method, base, args.data, args.out, spec.loss, cfg, objective=args.objective)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc), code=1)
    _print(result, args.out)
    if not result.complete:
        print("[tune] some trials did not finish: rerun the same command to resume the sweep", flush=True)
        return 1
    return 0


def _print(result: SweepResult, out: str) -> None:
    summary = result.summary
    objective = summary["objective"]
    if result.best:
        bookkeeping = {"micro_auroc", "macro_auroc", "checkpoint", "val_loss", "trial_id", "status", "point"}
        point = {k: v for k, v in result.best.items() if k not in bookkeeping}
        print(f"[tune] best {objective} {result.best[objective]:.4f} on the selection videos at {point}", flush=True)
    if result.heldout:
        print(
            f"[tune] held-out videos ({len(summary['heldout_videos'])}): micro AUROC "
            f"{_fmt(result.heldout['micro_auroc'])}, macro AUROC {_fmt(result.heldout['macro_auroc'])}",
            flush=True,
        )
    if summary["selection"] == "test":
        print("[tune] warning: chosen on the test labels; these AUROCs are optimistic (docs/tuning.md)", flush=True)
    print(f"[tune] results: {out}/results.md  best config: {out}/best_config.yaml", flush=True)


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
