"""Shared fixtures: one local Ray for the session, a real moto S3 server, and synthetic corpora.

Everything expensive is session-scoped so the suite stays fast on 2 cores.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_LUSS_OVERRIDES

# Keep Ray quiet and small; never let a test reach the network.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# In-process (local-mode) training shares 2 cores with Ray's worker processes: one torch thread avoids the
# oversubscription that makes small convolutions 10x slower. Ray already gives its workers OMP_NUM_THREADS=1.
torch.set_num_threads(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local(moto_server: str) -> Iterator[None]:
    """One embedded local Ray cluster (2 CPUs) for the whole session.

    Starts after the moto server so Ray's worker processes inherit the AWS variables pointing at it.
    """
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    # Leave shutdown to process exit: tests that start their own cluster call ray.shutdown() themselves.


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3-compatible moto server on 127.0.0.1; yields its endpoint URL.

    Sets the standard AWS environment variables (fake credentials, ``AWS_ENDPOINT_URL``) so that every
    s3:// URI in the code under test reaches this server.
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture()
def s3_bucket(moto_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the moto server; yields ``s3://<bucket>``."""
    import boto3

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    client = boto3.client("s3", endpoint_url=moto_server)
    client.create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` synthetic corpus in the folder format (real mp4 files), generated once."""
    from pipelines.synthetic import synthesize

    out = tmp_path_factory.mktemp("tiny_corpus")
    synthesize(out, preset="tiny", seed=0)
    return out


# A LUSS-AE store and checkpoint shared by every test that needs a trained model (trained once per session).
@pytest.fixture(scope="session")
def luss_store(tiny_corpus: Path, ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny corpus ingested with the luss_ae spec at 32x32 (48-frame segments)."""
    from pipelines.clip_store import build_clip_store

    out = str(tmp_path_factory.mktemp("luss_store") / "store")
    build_clip_store("folder", str(tiny_corpus), out, "luss_ae", size=(32, 32), segment_frames=48)
    return out


@pytest.fixture(scope="session")
def luss_checkpoint(luss_store: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny LUSS-AE trained for one epoch in local mode, with calibration from one held-out video."""
    from pipelines.config import load_config
    from pipelines.train import TrainRunConfig, train
    from vad_models.luss_ae.config import LussAeConfig

    out = str(tmp_path_factory.mktemp("luss_train") / "run")
    cfg = load_config(LussAeConfig, None, TINY_LUSS_OVERRIDES)
    train("luss_ae", cfg, luss_store, out, TrainRunConfig(num_workers=0, val_fraction=0.5, log_every=0))
    return out
