"""pipelines.storage: URI resolution, atomic writes, listing, retries and redaction on local, memory and moto S3."""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from pipelines import storage
from pipelines.storage import StorageError


def _mem(name: str) -> str:
    """A fresh memory:// root per test (fsspec's memory store is process-wide)."""
    return f"memory://t-{name}-{uuid.uuid4().hex[:8]}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# Resolution and paths


def test_resolve_local_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for uri, expected in [
        (str(tmp_path / "a.txt"), str(tmp_path / "a.txt")),
        ("rel/a.txt", str(tmp_path / "rel" / "a.txt")),
        (f"file://{tmp_path}/a.txt", str(tmp_path / "a.txt")),
        (f"file://localhost{tmp_path}/a.txt", str(tmp_path / "a.txt")),
    ]:
        fs, path = storage.resolve(uri)
        assert isinstance(fs, pafs.LocalFileSystem), uri
        assert path == expected, uri


def test_resolve_memory_and_errors() -> None:
    fs, path = storage.resolve("memory://a/b")
    assert isinstance(fs, pafs.PyFileSystem)
    assert path == "/a/b"
    assert storage.resolve("memory://")[1] == "/"
    for bad, match in [
        ("", "non-empty"),
        ("gs://bucket/x", "Unsupported URI scheme 'gs://'"),
        ("s3://", "need a bucket"),
        ("file://relative/x", "absolute local path"),
        ("a\x00b", "NUL"),
    ]:
        with pytest.raises(ValueError, match=match):
            storage.resolve(bad)


def test_resolve_s3_reads_environment_at_call_time(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fs, path = storage.resolve("s3://bucket/some/key.parquet")
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == "bucket/some/key.parquet"
    assert fs.region == "us-east-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert storage.resolve("s3://bucket/x")[0].region == "eu-west-3"


def test_filesystems_are_picklable(s3_bucket: str) -> None:
    storage.write_text_atomic(f"{s3_bucket}/p.txt", "pickled")
    fs, path = storage.resolve(f"{s3_bucket}/p.txt")
    clone = pickle.loads(pickle.dumps(fs))  # what Ray does when it ships the filesystem to a worker
    with clone.open_input_stream(path) as f:
        assert f.read() == b"pickled"
    mem = _mem("pickle")
    storage.write_text_atomic(f"{mem}/x.txt", "m")
    mfs, mpath = storage.resolve(f"{mem}/x.txt")
    with pickle.loads(pickle.dumps(mfs)).open_input_stream(mpath) as f:
        assert f.read() == b"m"


def test_join() -> None:
    assert storage.join("s3://b/root", "a", "b.txt") == "s3://b/root/a/b.txt"
    assert storage.join("s3://b/root/", "/a/", "", "b") == "s3://b/root/a/b"
    assert storage.join("memory://", "x") == "memory://x"
    assert storage.join("rel", "x/y") == "rel/x/y"
    assert storage.join("/abs") == "/abs"


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("ped2", "Test001.parquet"), "s3://b/out/ped2/Test001.parquet"),
        (("a/./b", "c..d"), "s3://b/out/a/b/c..d"),
        (("a//b/",), "s3://b/out/a/b"),
    ],
)
def test_safe_join_accepts(parts: tuple[str, ...], expected: str) -> None:
    assert storage.safe_join("s3://b/out", *parts) == expected


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        (("/etc/passwd",), "absolute"),
        (("s3://other/x",), "absolute"),
        (("..",), "escapes"),
        (("a/../../b",), "escapes"),
        (("ok", "../x"), "escapes"),
        (("",), "empty"),
        (("./",), "empty"),
        (("a\x00b",), "NUL"),
        ((), "at least one"),
    ],
)
def test_safe_join_rejects(parts: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        storage.safe_join("/out", *parts)


def test_redact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "KEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "KEYID-and-more-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok123")
    text = "id=KEYID secret=KEYID-and-more-secret token=tok123 other=fine"
    assert storage.redact(text) == "id=*** secret=*** token=*** other=fine"
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    assert storage.redact("tok123") == "tok123"


# ---------------------------------------------------------------------------------------------------------------
# Local files


def test_local_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "deep" / "dir" / "meta.json"
    storage.write_json_atomic(str(target), {"v": 1})  # parents are created
    assert storage.read_json(str(target)) == {"v": 1}

    seen = []
    real_replace = os.replace

    def observing_replace(src: str, dst: str) -> None:
        # Just before the rename: the old content is still in place, the new one sits in a hidden sibling.
        seen.append((Path(dst).read_text(), Path(src).parent == target.parent, Path(src).name.startswith(".")))
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", observing_replace)
    storage.write_json_atomic(str(target), {"v": 2})
    assert seen == [('{\n  "v": 1\n}\n', True, True)]
    assert storage.read_json(str(target)) == {"v": 2}
    assert sorted(os.listdir(target.parent)) == ["meta.json"]


def test_local_failed_write_keeps_old_content_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.txt"
    storage.write_text_atomic(str(target), "old")

    def failing_replace(src: str, dst: str) -> None:
        raise PermissionError(13, "denied", dst)

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        storage.write_text_atomic(str(target), "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_local_list_query_delete_and_local_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "corpus"
    for name in ("train/a.mp4", "train/b.AVI", "test/c.mp4", "notes.txt", ".hidden/d.mp4", "train/.e.mp4"):
        storage.write_bytes_atomic(str(root / name), b"x" * 3)
    assert storage.list_files(str(root), suffixes=(".mp4", ".avi")) == [
        str(root / "test/c.mp4"), str(root / "train/a.mp4"), str(root / "train/b.AVI"),
    ]  # fmt: skip
    assert storage.list_files(str(root), recursive=False) == [str(root / "notes.txt")]
    assert storage.list_files(f"file://{root}/train", suffixes=".mp4") == [f"file://{root}/train/a.mp4"]
    assert storage.list_files(str(root / "notes.txt")) == [str(root / "notes.txt")]
    monkeypatch.chdir(tmp_path)
    assert storage.list_files("corpus/test") == ["corpus/test/c.mp4"]  # relative in, relative out

    assert storage.exists(str(root / "notes.txt")) and storage.is_dir(str(root / "train"))
    assert not storage.exists(str(root / "nope")) and not storage.is_dir(str(root / "notes.txt"))
    meta = storage.file_info(str(root / "notes.txt"))
    assert (meta.size, meta.etag) == (3, None) and meta.mtime is not None and meta.mtime > 0

    with storage.local_copy(f"file://{root}/notes.txt") as path:
        assert path == str(root / "notes.txt")  # local files are used in place

    with pytest.raises(IsADirectoryError):
        storage.delete(str(root / "train"))
    storage.delete(str(root / "train"), recursive=True)
    storage.delete(str(root / "notes.txt"))
    assert not storage.exists(str(root / "train")) and not storage.exists(str(root / "notes.txt"))
    with pytest.raises(FileNotFoundError, match="notes.txt"):
        storage.delete(str(root / "notes.txt"))
    with pytest.raises(ValueError, match="root"):
        storage.delete("/", recursive=True)
    storage.makedirs(str(root / "made" / "deep"))
    assert storage.is_dir(str(root / "made" / "deep"))


def test_missing_files_raise_file_not_found_naming_the_uri(tmp_path: Path) -> None:
    mem = _mem("missing")
    for uri in (str(tmp_path / "missing.json"), f"{mem}/missing.json"):
        with pytest.raises(FileNotFoundError, match="missing.json"):
            storage.read_json(uri)
        with pytest.raises(FileNotFoundError):
            storage.file_info(uri)
        with pytest.raises(FileNotFoundError):
            storage.list_files(uri)
        with pytest.raises(FileNotFoundError), storage.local_copy(uri):
            pass


# ---------------------------------------------------------------------------------------------------------------
# memory://


def test_memory_round_trip() -> None:
    root = _mem("rt")
    storage.write_text_atomic(f"{root}/a/x.txt", "v1")
    storage.write_text_atomic(f"{root}/a/x.txt", "v2")
    storage.write_parquet_atomic(f"{root}/t.parquet", pa.table({"a": [1, 2, 3]}))
    assert storage.read_text(f"{root}/a/x.txt") == "v2"
    assert storage.list_files(root) == [f"{root}/a/x.txt", f"{root}/t.parquet"]  # no temp files left behind
    assert storage.read_parquet(f"{root}/t.parquet").column("a").to_pylist() == [1, 2, 3]
    assert storage.file_info(f"{root}/a/x.txt").size == 2
    with pytest.raises(IsADirectoryError):
        storage.file_info(f"{root}/a")
    with storage.local_copy(f"{root}/a") as path:
        assert Path(path, "x.txt").read_text() == "v2"
    assert not os.path.exists(path)
    storage.delete(root, recursive=True)
    assert not storage.exists(root)


def test_write_rejects_bad_inputs() -> None:
    with pytest.raises(TypeError, match="bytes"):
        storage.write_bytes_atomic(_mem("bad") + "/x", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pyarrow.Table"):
        storage.write_parquet_atomic(_mem("bad") + "/x.parquet", {"a": [1]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bucket"):
        storage.write_bytes_atomic("s3://bucket", b"x")


# ---------------------------------------------------------------------------------------------------------------
# S3 on a real moto server


def test_s3_objects(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/store/_store.json"
    storage.write_json_atomic(uri, {"store": "clips"})
    storage.write_json_atomic(uri, {"store": "clips", "v": 2})
    assert storage.read_json(uri) == {"store": "clips", "v": 2}
    data = storage.read_bytes(uri)
    meta = storage.file_info(uri)
    assert meta.size == len(data) and meta.mtime is not None
    assert meta.etag == hashlib.md5(data).hexdigest()  # a single PUT (a multipart ETag ends in "-<parts>")

    storage.makedirs(f"{s3_bucket}/store/data")  # no-op on object stores
    storage.write_parquet_atomic(f"{s3_bucket}/store/data/part-0.parquet", pa.table({"x": [1.5, 2.5]}))
    storage.write_bytes_atomic(f"{s3_bucket}/store/data/sub/blob.bin", b"\x00\x01")
    assert storage.list_files(f"{s3_bucket}/store") == [
        f"{s3_bucket}/store/_store.json",
        f"{s3_bucket}/store/data/part-0.parquet",
        f"{s3_bucket}/store/data/sub/blob.bin",
    ]
    assert storage.list_files(f"{s3_bucket}/store", suffixes=(".parquet",)) == [
        f"{s3_bucket}/store/data/part-0.parquet"
    ]
    assert storage.read_parquet(f"{s3_bucket}/store/data/part-0.parquet").column("x").to_pylist() == [1.5, 2.5]
    assert storage.exists(uri) and storage.is_dir(f"{s3_bucket}/store") and storage.is_dir(s3_bucket)
    assert not storage.exists(f"{s3_bucket}/nope")

    with storage.local_copy(f"{s3_bucket}/store/data/sub/blob.bin") as path:
        assert path.endswith("blob.bin") and Path(path).read_bytes() == b"\x00\x01"
    assert not os.path.exists(path)
    with storage.local_copy(f"{s3_bucket}/store/data") as path:
        assert sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file()) == [
            "part-0.parquet",
            "sub/blob.bin",
        ]

    with pytest.raises(FileNotFoundError, match="nope.json"):
        storage.read_bytes(f"{s3_bucket}/nope.json")
    storage.delete(f"{s3_bucket}/store/data", recursive=True)
    assert storage.list_files(f"{s3_bucket}/store") == [f"{s3_bucket}/store/_store.json"]
    with pytest.raises(ValueError, match="bucket"):
        storage.delete(s3_bucket, recursive=True)


def test_ray_data_parquet_through_resolve(ray_local: None, s3_bucket: str) -> None:
    import ray

    fs, path = storage.resolve(f"{s3_bucket}/rd")
    ray.data.from_items([{"id": i, "name": f"v{i}"} for i in range(6)]).write_parquet(path, filesystem=fs)
    assert storage.list_files(f"{s3_bucket}/rd", suffixes=(".parquet",))
    rows = ray.data.read_parquet(path, filesystem=fs).take_all()
    assert sorted((r["id"], r["name"]) for r in rows) == [(i, f"v{i}") for i in range(6)]


# ---------------------------------------------------------------------------------------------------------------
# Retries


def test_unreachable_endpoint_raises_storage_error_after_bounded_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "fake-secret-do-not-print"
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv(storage.RETRIES_ENV, "3")
    delays: list[float] = []
    monkeypatch.setattr(storage, "_sleep", delays.append)

    with pytest.raises(StorageError) as err:
        storage.read_bytes("s3://bucket/key.bin")
    message = str(err.value)
    assert "read" in message and "s3://bucket/key.bin" in message and "3 attempts" in message
    assert secret not in message and "fake-key-id" not in message
    assert err.value.__cause__ is None  # the unredacted cause is not chained
    assert len(delays) == 2
    assert 0.1 <= delays[0] <= 0.2 and 0.2 <= delays[1] <= 0.4  # exponential backoff with jitter

    delays.clear()
    monkeypatch.setenv(storage.RETRIES_ENV, "1")
    with pytest.raises(StorageError, match="write 's3://bucket/k' failed after 1 attempts"):
        storage.write_bytes_atomic("s3://bucket/k", b"x")
    assert delays == []


def test_retry_redacts_and_stops_on_non_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekr3t")
    monkeypatch.setenv(storage.RETRIES_ENV, "4")
    monkeypatch.setattr(storage, "_sleep", lambda s: None)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(104, "reset by peer while signing with sekr3t")
        return "ok"

    assert storage._call("read", "s3://b/k", flaky) == "ok"
    assert len(calls) == 3

    def always_down() -> None:
        raise TimeoutError("timed out, key sekr3t")

    with pytest.raises(StorageError, match="after 4 attempts") as err:
        storage._call("read", "s3://b/k", always_down)
    assert "sekr3t" not in str(err.value) and "***" in str(err.value)

    calls.clear()

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("bucket/k")

    with pytest.raises(FileNotFoundError, match="s3://b/k"):
        storage._call("read", "s3://b/k", missing)
    assert len(calls) == 1

    def refused() -> None:
        raise OSError("AWS Error ACCESS_DENIED during GetObject operation: sekr3t")

    with pytest.raises(StorageError, match="read 's3://b/k' failed: OSError: .*ACCESS_DENIED.*\\*\\*\\*"):
        storage._call("read", "s3://b/k", refused)


def test_bad_retry_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("0", "many"):
        monkeypatch.setenv(storage.RETRIES_ENV, value)
        with pytest.raises(ValueError, match=storage.RETRIES_ENV):
            storage.exists(_mem("retries"))
