"""Batch-score a store with a trained checkpoint; per-video scores go to OUT/scores/<dataset>/<video>.parquet.

Usage:
    python jobs/score.py --method luss_ae --checkpoint URI --data STORE_URI --out URI [--only-new] [--use-gpu]
        [--batch-size N] [--concurrency N] [--split test|train|all] [--calibration per-video|global]
        [--weights-config best.yaml] [--evaluate] [--report [DIR]]

--report writes the offline review report (events, thumbnails with the method's anomaly maps, score curves) to
DIR, by default OUT/report when OUT is local.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import add_report_argument, fail, report_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default=None, help="method name; checked against the checkpoint")
    parser.add_argument("--checkpoint", required=True, help="checkpoint dir or training output dir")
    parser.add_argument("--data", required=True, help="store URI")
    parser.add_argument("--out", required=True, help="output URI (local path or s3://)")
    parser.add_argument("--only-new", action="store_true", help="skip videos already scored by this checkpoint")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per scoring actor")
    parser.add_argument("--batch-size", type=int, default=2, help="store rows (segments) per actor call")
    parser.add_argument("--concurrency", type=int, default=1, help="scoring actors")
    parser.add_argument("--split", default="test", help="store split to score, or 'all'")
    parser.add_argument("--calibration", default="per-video", choices=["per-video", "global"])
    parser.add_argument(
        "--weights-config", default=None,
        help="YAML with a 'weights' mapping and optional fusion 'config' fields (best_weights.yaml of jobs/tune.py)",
    )
    parser.add_argument("--evaluate", action="store_true", help="also compute AUROC against the store's labels")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    add_report_argument(parser)
    args = parser.parse_args(argv)
    report = report_dir(args.report, args.out)

    from pipelines.checkpoint import CheckpointError, load_checkpoint
    from pipelines.runtime import init_ray
    from pipelines.score import ScoreConfig, score

    weights, fusion = None, None
    if args.weights_config:
        import yaml

        with open(args.weights_config) as handle:
            document = yaml.safe_load(handle) or {}
        weights, fusion = document.get("weights"), document.get("config")
        if not isinstance(weights, dict):
            fail(f"{args.weights_config} has no 'weights' mapping")
        if fusion is not None and not isinstance(fusion, dict):
            fail(f"{args.weights_config}: 'config' must be a mapping of method-config fields")
    try:
        loaded = load_checkpoint(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as exc:
        fail(str(exc))
    if args.method and args.method != loaded.method.name:
        fail(f"--method {args.method} but the checkpoint holds a {loaded.method.name} model")
    init_ray(args.num_cpus)
    cfg = ScoreConfig(
        split=None if args.split == "all" else args.split,
        only_new=args.only_new,
        use_gpu=args.use_gpu,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        calibration=args.calibration,
        weights=weights,
        fusion_config=fusion,
    )
    try:
        summary = score(args.checkpoint, args.data, args.out, cfg)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc), code=1)
    if args.evaluate:
        from pipelines.evaluate import evaluate

        metrics = evaluate(args.out, args.data, out_uri=args.out)
        print(f"[score] micro AUROC {metrics['micro_auroc']:.4f}  macro AUROC {metrics['macro_auroc']:.4f}")
    if report is not None:
        from pipelines.report import build_report

        print(f"[report] {build_report(args.out, report, data_uri=args.data)}", flush=True)
    return 0 if not summary["videos_failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
