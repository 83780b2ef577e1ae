"""The object store goes away in the middle of a scoring run: bounded retries, a clear error, no partial object.

The test runs its own moto S3 server (the session one is shared) and stops it after exactly one score file was
written; restarted, a rerun with ``only_new`` keeps that file and completes the rest. Storage-level retry counts
and backoff are unit-tested in tests/pipelines/test_storage.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from pipelines import score, storage
from pipelines.stores import read_manifest
from tests.reliability import injection

BUCKET = "outage"
SECRET = "outage-test-secret-0123456789"


class RestartableS3:
    """A moto S3 server on a fixed free port that can be stopped (connections refused) and started again."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server._server.server_close()  # close the listening socket: clients get "connection refused"
            self.server = None

    def stop_when(self, signal: Path, then: Path, timeout_s: float = 600.0) -> None:
        """Wait for ``signal``, stop the server, create ``then`` (always, so workers never wait forever)."""
        try:
            injection._wait_for(str(signal), timeout_s)
            self.stop()
        finally:
            then.write_text("store is down\n")


@pytest.fixture()
def own_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RestartableS3, dict[str, str]]]:
    """This test's own S3 endpoint, set in the driver's environment; the same settings for Ray workers."""
    server = RestartableS3()
    env = {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": "outage-test-key-id",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        storage.RETRIES_ENV: "3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield server, env
    finally:
        server.stop()


def test_store_outage_mid_run_fails_clearly_then_a_rerun_completes(
    luss_checkpoint: str,
    luss_store: str,
    own_s3: tuple[RestartableS3, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, env = own_s3
    token, paused, resume = (str(tmp_path / name) for name in ("token", "paused", "resume"))
    writer = injection.with_env(injection.pause_after_first_call(score._fuse_and_write, token, paused, resume), env)
    monkeypatch.setattr(score, "_fuse_and_write", writer)  # Ray workers do not see this test's S3 settings otherwise
    stopper = threading.Thread(target=server.stop_when, args=(Path(paused), Path(resume)), daemon=True)
    stopper.start()
    out = f"s3://{BUCKET}/run"

    with pytest.raises(storage.StorageError) as failed:
        score.score(luss_checkpoint, luss_store, out, score.ScoreConfig(split="test"))
    stopper.join(timeout=60)
    message = str(failed.value)
    assert f"'{out}/summary.json' failed after 3 attempts" in message, message
    assert SECRET not in message and env["AWS_ACCESS_KEY_ID"] not in message

    server.start()
    videos = [r for r in read_manifest(luss_store).to_pylist() if r["split"] == "test"]
    expected = {score.score_file_uri(out, v["dataset"], v["video_id"]): v["num_frames"] for v in videos}
    visible = storage.list_files(out)
    assert len(visible) == 1 and visible[0] in expected, visible  # the one write before the outage; no summary
    _assert_complete(visible[0], expected[visible[0]])

    summary = score.score(luss_checkpoint, luss_store, out, score.ScoreConfig(split="test", only_new=True))
    assert summary["videos_skipped"] == 1 and summary["videos_scored"] == len(videos) - 1
    assert not summary["videos_failed"]
    for uri, num_frames in expected.items():
        _assert_complete(uri, num_frames)
    assert storage.exists(f"{out}/_SUCCESS") and storage.read_json(f"{out}/summary.json")["videos_skipped"] == 1


def _assert_complete(uri: str, num_frames: int) -> None:
    with storage.local_copy(uri) as path:
        table = pq.read_table(path)
    assert table.column("frame_idx").to_pylist() == list(range(num_frames)), uri
