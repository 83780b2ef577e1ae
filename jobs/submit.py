"""Submit a command to a Ray cluster as a Ray job and wait for it; the exit code says how it ended (cron, CI).

Usage:
    python jobs/submit.py --address http://127.0.0.1:8265 [--working-dir .] [--runtime-env-json '{...}']
        [--no-wait] [--timeout S] [--entrypoint-num-gpus N] [--submission-id ID] [--logs stream|end|none]
        -- python jobs/train_luss.py --data STORE --out URI ...

Everything after ``--`` is the job's command. Exit codes: 0 the job SUCCEEDED, 1 it FAILED or was STOPPED (a job
still running at --timeout is stopped), 2 bad options or the cluster could not be reached.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.submit import LOG_MODES, SubmitOptions, run_submission  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, usage="%(prog)s [options] -- CMD..."
    )
    default_address = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    parser.add_argument(
        "--address", default=default_address, help="dashboard URL (default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)"
    )
    parser.add_argument("--working-dir", default=None, help="directory uploaded as the job's working directory")
    parser.add_argument("--runtime-env-json", default=None, help="Ray runtime environment as a JSON object")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and exit right after submission")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait before stopping the job")
    parser.add_argument("--entrypoint-num-gpus", type=float, default=None, help="GPUs reserved for the job driver")
    parser.add_argument("--submission-id", default=None, help="fixed job id (Ray refuses duplicates)")
    parser.add_argument("--logs", default="stream", choices=LOG_MODES, help="follow, print at the end, or skip the log")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between status requests")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])  # options only: the job's own flags never reach this parser
    if not argv[split + 1 :]:
        parser.error("no entrypoint: put the job's command after '--', e.g. -- python jobs/train_luss.py ...")
    if not args.address:
        parser.error("--address is required (or set RAY_API_SERVER_ADDRESS), e.g. http://127.0.0.1:8265")
    options = SubmitOptions(
        address=args.address,
        entrypoint=tuple(argv[split + 1 :]),
        working_dir=args.working_dir,
        runtime_env_json=args.runtime_env_json,
        entrypoint_num_gpus=args.entrypoint_num_gpus,
        submission_id=args.submission_id,
        wait=not args.no_wait,
        timeout_s=args.timeout,
        poll_interval_s=args.poll_interval,
        logs=args.logs,
    )
    return run_submission(options)


if __name__ == "__main__":
    raise SystemExit(main())
