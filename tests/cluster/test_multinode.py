"""Training and scoring across the nodes of a real multi-node Ray cluster (head + two worker nodes, one machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).with_name("multinode_scenario.py")


@pytest.mark.slow
def test_training_spreads_over_nodes_and_scoring_runs_on_worker_nodes(luss_store: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, str(SCENARIO), luss_store, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["train_nodes"]) == 2
    assert len(set(result["train_nodes"])) == 2, "SPREAD placement should put the two workers on two nodes"
    # Two 2-CPU actors can only be placed one per worker node: the pool's actors span both worker nodes. (On tiny
    # data one actor may score every batch before the other is ready, so the rows may name only one of them.)
    assert len(result["scoring_actor_nodes"]) == 2, result
    assert set(result["scoring_actor_nodes"]) == set(result["workers"]), result
    assert result["scoring_nodes"] and set(result["scoring_nodes"]) <= set(result["workers"])
    assert result["videos_scored"] == 3
