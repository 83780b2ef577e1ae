"""Train std with Ray Train (same flags as jobs/train_luss.py; see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import run_train_job  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_train_job("std", sys.argv[1:]))
