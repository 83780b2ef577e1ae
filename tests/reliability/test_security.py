"""Untrusted files cannot run code, names from data cannot escape the output root, credentials never leak.

* Checkpoints, optimizer state, I3D weights and label arrays are read without unpickling code: a file whose
  unpickling would create a marker file is refused with a clear error and the marker never appears (and the same
  file *does* create it when unpickled unsafely, so the payload is real).
* Video ids and dataset names from a store's manifest become file names only through ``safe_join``.
* Fake AWS credentials set for real CLI runs against S3 (moto) appear in no output, log or metadata.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines import storage
from pipelines.checkpoint import CheckpointError, load_checkpoint, read_pointer, resolve_checkpoint_dir
from pipelines.config import config_from_dict
from pipelines.datasets import VideoEntry, get_dataset
from pipelines.datasets.base import load_npy
from pipelines.feature_store import ExtractOptions, build_backbone_state
from pipelines.score import ScoreConfig, score, score_file_uri
from pipelines.sources import read_id_list
from pipelines.stores import read_manifest, write_manifest
from pipelines.train import TrainRunConfig, train
from vad_models.i3d.config import I3DConfig
from vad_models.luss_ae.config import LussAeConfig

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _malicious_torch_file(marker: Path) -> bytes:
    """A torch file that looks like a state dict but carries :class:`Payload`; checks the payload really fires."""
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "extra": Payload(marker)}, buffer)
    data = buffer.getvalue()
    torch.load(io.BytesIO(data), weights_only=False)  # what an unsafe loader would do
    assert marker.exists(), "the payload does not fire: the refusal tests below would prove nothing"
    marker.unlink()
    return data


@pytest.fixture()
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "unpickling ran the attacker's code"


def _copy_checkpoint(luss_checkpoint: str, dest: Path) -> Path:
    shutil.copytree(resolve_checkpoint_dir(luss_checkpoint), dest)
    return dest


def test_checkpoint_with_a_pickled_payload_is_refused(luss_checkpoint: str, tmp_path: Path, marker: Path) -> None:
    checkpoint = _copy_checkpoint(luss_checkpoint, tmp_path / "ckpt")
    (checkpoint / "model.pt").write_bytes(_malicious_torch_file(marker))
    with pytest.raises(CheckpointError, match=r"refusing to load .*model\.pt.*weights_only=True"):
        load_checkpoint(str(checkpoint))


def test_resuming_from_a_planted_optimizer_state_is_refused(
    luss_checkpoint: str, luss_store: str, tmp_path: Path, marker: Path
) -> None:
    """A training output directory whose latest checkpoint holds a malicious ``optimizer.pt`` (local mode)."""
    out = tmp_path / "train"
    rel = Path(read_pointer(luss_checkpoint, "latest.json")).relative_to(luss_checkpoint)
    checkpoint = _copy_checkpoint(luss_checkpoint, out / rel)
    (checkpoint / "optimizer.pt").write_bytes(_malicious_torch_file(marker))
    (out / "latest.json").write_text(json.dumps({"checkpoint": str(rel)}))
    cfg = config_from_dict(LussAeConfig, json.loads((checkpoint / "config.json").read_text())["method_config"])
    with pytest.raises(RuntimeError, match=r"training failed: refusing to load optimizer\.pt"):
        train("luss_ae", cfg, luss_store, str(out), TrainRunConfig(val_fraction=0.0, log_every=0))


def test_i3d_weights_with_a_pickled_payload_are_refused(tmp_path: Path, marker: Path) -> None:
    weights = tmp_path / "i3d.pt"
    weights.write_bytes(_malicious_torch_file(marker))
    cfg = I3DConfig(height=40, width=56, crop_size=32, base_channels=4)
    with pytest.raises(ValueError, match=r"refusing to load .*i3d\.pt.*weights_only=True"):
        build_backbone_state(cfg, ExtractOptions(weights=str(weights)))


def test_pickled_label_array_is_refused(tmp_path: Path, marker: Path) -> None:
    root = tmp_path / "corpus"
    (root / "test").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "test" / "v.mp4").write_bytes(b"")
    with open(root / "labels" / "v.npy", "wb") as handle:  # an object array: .npy stores it as a pickle
        np.save(handle, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot read label array .*v\.npy"):
        load_npy(str(root / "labels" / "v.npy"))
    with pytest.raises(ValueError, match=r"v\.npy"):  # ingest stops at listing, before decoding anything
        get_dataset("folder").entries(str(root), ["test"])
    pickle.loads(pickle.dumps(Payload(marker)))  # sanity: the payload fires when unpickled
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize(
    ("dataset", "video_id", "reason"),
    [
        ("folder", "../../../etc/cron.d/job", "escapes the root"),
        ("folder", "a/../../b", "escapes the root"),
        ("../..", "v", "escapes the root"),
        ("folder", "/etc/passwd", "is absolute"),
        ("s3://other-bucket", "v", "is absolute"),
        ("folder", "v\x00.mp4", "NUL byte"),
    ],
)
def test_score_file_names_cannot_leave_the_output_root(dataset: str, video_id: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        score_file_uri("s3://bucket/run", dataset, video_id)


def test_manifest_names_are_plain_names() -> None:
    for video_id in ("../x", "..", ".", "a/b", ""):
        with pytest.raises(ValueError, match="invalid video id"):
            VideoEntry(video_id, "x.mp4", "test", 0)
    lists = "memory://security/lists/train.txt"
    storage.write_text_atomic(lists, "../../../outside/evil_i3d.npy\n/abs/path/Clip01.mp4 1\n")
    assert read_id_list(lists) == ["evil", "Clip01"]  # list entries only ever name videos by base name


def test_crafted_manifest_cannot_make_scoring_write_outside_out(
    luss_checkpoint: str, luss_store: str, tmp_path: Path
) -> None:
    """A store whose manifest and rows name ``../`` ids and datasets: those videos fail, the rest is scored."""
    crafted, out = tmp_path / "crafted", tmp_path / "run" / "out"
    shutil.copytree(luss_store, crafted)
    manifest = read_manifest(str(crafted)).to_pylist()
    tests = sorted(r["video_id"] for r in manifest if r["split"] == "test")
    escaping_id, escaping_dataset, clean = "../../../../escaped_id", "../../../../escaped_dataset", tests[2]
    rename = {tests[0]: escaping_id}
    for row in manifest:
        if row["video_id"] == tests[1]:
            row["dataset"] = escaping_dataset
        row["video_id"] = rename.get(row["video_id"], row["video_id"])
    write_manifest(str(crafted), manifest)
    for part in (crafted / "data").rglob("*.parquet"):
        table = pq.read_table(part)
        ids = [rename.get(v, v) for v in table.column("video_id").to_pylist()]
        column = table.schema.get_field_index("video_id")
        pq.write_table(table.set_column(column, "video_id", pa.array(ids, pa.string())), part)

    summary = score(luss_checkpoint, str(crafted), str(out), ScoreConfig(split="test"))
    failed = {f["video_id"]: f["error"] for f in summary["videos_failed"]}
    assert set(failed) == {escaping_id, tests[1]} and all("escapes the root" in e for e in failed.values()), failed
    assert summary["videos_scored"] == 1 and (out / "scores" / "folder" / f"{clean}.parquet").exists()
    # The escaping names would land in tmp_path (the id) and in its parent (the dataset name).
    assert not [*tmp_path.rglob("escaped*"), *tmp_path.parent.glob("escaped*")], "a name escaped the output root"
    written = [p.relative_to(out / "scores") for p in (out / "scores").rglob("*") if p.is_file()]
    assert written == [Path("folder", f"{clean}.parquet")]


# ---------------------------------------------------------------------------------------------------------------
# Credentials

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIALEAKCHECK7QX2ZZ",
    "AWS_SECRET_ACCESS_KEY": "leak/Check+Secret/9f8e7d6c5b4a3921",
    "AWS_SESSION_TOKEN": "LeakCheckSessionToken0123456789abcdefXYZ",
}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=600, cwd=REPO, check=False
    )


def _object_texts(prefix: str) -> dict[str, str]:
    """Every object under ``prefix`` as text: JSON and markers verbatim, Parquet decoded (values and metadata)."""
    texts = {}
    for uri in storage.list_files(prefix):
        data = storage.read_bytes(uri)
        text = data.decode("utf-8", "replace")  # raw bytes catch uncompressed leaks in any file
        if uri.endswith(".parquet"):
            table = pq.read_table(pa.BufferReader(data))
            columns = [c for c in table.column_names if c != "frames"]
            text += json.dumps(table.select(columns).to_pylist(), default=str)
            text += repr(table.schema.metadata)
        texts[uri] = text
    return texts


def test_credentials_never_appear_in_outputs_or_logs(
    moto_server: str, s3_bucket: str, tiny_corpus: Path, luss_checkpoint: str
) -> None:
    for rel in ("train/train_000.mp4", "test/test_000.mp4", "labels/test_000.npy"):
        storage.write_bytes_atomic(f"{s3_bucket}/corpus/{rel}", (tiny_corpus / rel).read_bytes())
    storage.write_text_atomic(f"{s3_bucket}/corpus/test/broken.mp4", "not a video\n" * 40)
    ray_tmp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(FAKE_CREDENTIALS, AWS_ENDPOINT_URL=moto_server, RAY_TMPDIR=ray_tmp)
    store, scores = f"{s3_bucket}/store", f"{s3_bucket}/scores"
    ingest = ["jobs/ingest.py", "--dataset", "folder", "--root", f"{s3_bucket}/corpus", "--out", store]
    ingest += ["--spec", "luss_ae", "--size", "32x32", "--segment-frames", "48", "--num-cpus", "2"]
    runs = {
        "ingest": _cli(ingest, env),
        "ingest again": _cli(ingest, env),  # refused: the store exists (an S3 listing with the credentials)
        "score": _cli(
            ["jobs/score.py", "--checkpoint", luss_checkpoint, "--data", store, "--out", scores]
            + ["--split", "all", "--num-cpus", "2"],
            env,
        ),
        "score missing checkpoint": _cli(
            ["jobs/score.py", "--checkpoint", f"{s3_bucket}/nowhere", "--data", store, "--out", scores], env
        ),
    }
    try:
        assert runs["ingest"].returncode == 0, runs["ingest"].stderr[-3000:]
        assert "1 quarantined" in runs["ingest"].stdout
        assert runs["ingest again"].returncode == 1 and "--overwrite" in runs["ingest again"].stderr
        assert runs["score"].returncode == 0, runs["score"].stderr[-3000:]
        missing = runs["score missing checkpoint"]
        assert missing.returncode == 2 and "no checkpoint at" in missing.stderr
        texts = {f"{name} {out}": getattr(run, out) for name, run in runs.items() for out in ("stdout", "stderr")}
        texts.update(_object_texts(store))
        texts.update(_object_texts(scores))
        suffixes = (".log", ".out", ".err", ".txt", ".json")
        logs = [p for p in Path(ray_tmp).rglob("*") if p.is_file() and p.suffix in suffixes]
        assert logs, "the CLI runs left no Ray logs to scan"
        texts.update({str(p): p.read_text(errors="replace") for p in logs})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert any(k.endswith("summary.json") for k in texts) and any(k.endswith("quarantine.parquet") for k in texts)
    assert "broken" in texts[f"{store}/quarantine.parquet"]
    leaks = sorted(f"{where}: {name}" for where, text in texts.items() for name, value in FAKE_CREDENTIALS.items()
                   if value in text)  # fmt: skip
    assert not leaks, leaks
