"""Run training and scoring on a real three-node Ray cluster started on this machine (used by test_multinode.py).

Usage: python tests/cluster/multinode_scenario.py STORE OUT  -> prints one JSON line with where things ran.
It runs in its own process because the test session already holds an embedded single-node Ray.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402


def _scoring_actor_nodes() -> list[str]:
    """Node of every scoring actor the run started (Ray's state API keeps finished actors for a while).

    An actor that got no batch (tiny data: the first one can finish everything) was still placed, and the
    placement is what the multi-node claim is about.
    """
    from ray.util.state import list_actors

    actors = list_actors(detail=True, limit=10_000, raise_on_missing_output=False)
    return sorted(a.node_id for a in actors if "TaskScorer" in (a.class_name or ""))


def main(store: str, out: str) -> None:
    from pipelines.config import load_config
    from pipelines.score import ScoreConfig, score
    from pipelines.train import TrainRunConfig, train
    from tests.helpers import TINY_LUSS_OVERRIDES
    from vad_models.luss_ae.config import LussAeConfig

    node = {"object_store_memory": 150 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **node})
    workers = [cluster.add_node(num_cpus=2, **node) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        cfg = load_config(LussAeConfig, None, TINY_LUSS_OVERRIDES)
        run = TrainRunConfig(num_workers=2, placement_strategy="SPREAD", val_fraction=0.0, log_every=0)
        result = train("luss_ae", cfg, store, f"{out}/train", run)
        summary = score(result.checkpoint, store, f"{out}/scores", ScoreConfig(
            split="test", concurrency=2, batch_size=1, cpus_per_actor=2.0))  # 2 CPUs each: one actor per worker node
        print(json.dumps({
            "head": cluster.head_node.node_id,
            "workers": [w.node_id for w in workers],
            "train_nodes": result.metrics["worker_nodes"],
            "scoring_nodes": summary["scoring_nodes"],
            "scoring_actor_nodes": _scoring_actor_nodes(),
            "videos_scored": summary["videos_scored"],
        }))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
