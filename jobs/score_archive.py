"""Score the new videos of a growing footage archive (scheduled runs; safe to rerun, kill or run twice).

Usage:
    python jobs/score_archive.py --source URI --model CHECKPOINT --out URI [--method NAME] [--since TIMESTAMP]
        [--use-gpu] [--calibration global|per-video] [--concurrency N] [--limit N] [--report [DIR]]

--report writes the offline review report of everything scored in OUT so far (events, thumbnails, anomaly maps,
score curves; this run's videos with thumbnails) to DIR, by default OUT/report when OUT is local.

Exit codes: 0 done (or nothing new, or another run holds the lease), 1 some videos failed to score,
2 bad arguments or an unusable model.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import add_report_argument, fail, report_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="archive URI (local folder or s3://bucket/prefix)")
    parser.add_argument("--model", required=True, help="checkpoint dir or training output dir")
    parser.add_argument("--out", required=True, help="score store URI (scores/, events, runs/, _state/)")
    parser.add_argument("--method", default=None, help="expected method name (checked against the model)")
    parser.add_argument(
        "--since", default=None, help="only objects modified at/after this ISO-8601 time (UTC unless it names a zone)"
    )
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per scoring actor")
    parser.add_argument("--calibration", default="global", choices=["global", "per-video"])
    parser.add_argument("--concurrency", type=int, default=1, help="scoring actors")
    parser.add_argument("--limit", type=int, default=None, help="at most N new videos this run")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    add_report_argument(parser)
    args = parser.parse_args(argv)
    folder = report_dir(args.report, args.out)

    from pipelines.archive import ArchiveConfig, score_archive
    from pipelines.checkpoint import CheckpointError, load_checkpoint
    from pipelines.runtime import init_ray

    try:
        cfg = ArchiveConfig(
            since=args.since, calibration=args.calibration, use_gpu=args.use_gpu,
            concurrency=args.concurrency, limit=args.limit, report_dir=folder,
        )
    except ValueError as exc:  # e.g. a --since that is not an ISO time
        fail(str(exc))
    try:
        loaded = load_checkpoint(args.model)
    except (CheckpointError, FileNotFoundError) as exc:
        fail(str(exc))
    if args.method and args.method != loaded.method.name:
        fail(f"--method {args.method} but the model is a {loaded.method.name} checkpoint")
    init_ray(args.num_cpus)
    try:
        report = score_archive(args.source, args.model, args.out, cfg)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    if report.get("report"):
        print(f"[report] {report['report']}", flush=True)
    return 1 if report.get("failed") else 0


if __name__ == "__main__":
    raise SystemExit(main())
