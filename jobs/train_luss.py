"""Train LUSS-AE (seeds 000/001) with Ray Train.

Usage:
    python jobs/train_luss.py --data STORE --out URI [--config configs/luss_ae/ped2.yaml] [--num-workers N]
        [--use-gpu] [key=value ...]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/train_luss.py --data ... --out ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import run_train_job  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_train_job("luss_ae", sys.argv[1:]))
