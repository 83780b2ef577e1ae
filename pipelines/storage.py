"""One way to address every store: local paths, ``file://``, ``s3://`` and ``memory://`` URIs.

:func:`resolve` turns a URI into a ``pyarrow.fs`` filesystem and a path that pyarrow and Ray Data accept
(``ray.data.read_parquet(path, filesystem=fs)``); the helpers below use the same resolution and add what the
pipelines rely on:

* **Atomic writes.** Local files are written under a hidden temporary name in the target directory, fsynced and
  renamed over the target; ``memory://`` uses the same temp-name-then-move; S3 uses one PUT (an object store
  never exposes a partial object). Readers therefore see the old content or the new one, never half a file.
* **Bounded retries.** Transient S3 failures (connection refused, timeouts, throttling, 5xx) are retried
  ``$VAD_STORAGE_RETRIES`` times in all (default 3) with jittered exponential backoff, then raise
  :class:`StorageError`, whose message names the operation and the URI and never a credential.
  A missing file raises :class:`FileNotFoundError` at once.

S3 settings come from the standard environment variables, read at every call (cached per distinct value):
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (e.g. MinIO or moto; ``http://`` selects plain HTTP),
``AWS_REGION`` or ``AWS_DEFAULT_REGION``, and ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` (unset: the AWS SDK's default chain of config files and instance metadata).
The filesystems returned are picklable, so Ray ships them to workers with their settings.

Example:
    >>> write_text_atomic("memory://doc/hello.txt", "hi")
    >>> read_text("memory://doc/hello.txt"), list_files("memory://doc")
    ('hi', ['memory://doc/hello.txt'])
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import json
import logging
import os
import posixpath
import random
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.memory import MemoryFileSystem

__all__ = [
    "RETRIES_ENV",
    "FileMeta",
    "StorageError",
    "delete",
    "exists",
    "file_info",
    "is_dir",
    "join",
    "list_files",
    "local_copy",
    "makedirs",
    "move",
    "read_bytes",
    "read_json",
    "read_parquet",
    "read_text",
    "redact",
    "resolve",
    "safe_join",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

RETRIES_ENV = "VAD_STORAGE_RETRIES"
_DEFAULT_ATTEMPTS = 3
_BASE_DELAY_S = 0.2
_MAX_DELAY_S = 5.0
_CONNECT_TIMEOUT_S = 5.0
_REQUEST_TIMEOUT_S = 60.0
_CREDENTIAL_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
_LOCAL_SCHEMES = ("", "file")

# Failures worth retrying: AWS SDK network/throttling/5xx errors (as pyarrow words them) and socket errors.
_TRANSIENT = re.compile(
    r"NETWORK_CONNECTION|SLOW_DOWN|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|THROTTL|REQUEST_TIMEOUT|"
    r"HTTP status (?:500|502|503|504)|curlCode: (?:6|7|28|35|52|55|56)\b|timed out|"
    r"Connection reset|Connection refused|Broken pipe|Temporary failure",
    re.IGNORECASE,
)

T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage operation failed for good.

    Raised when transient errors persist after the bounded retries, or when the backend refuses an operation for
    a reason other than a missing file. The message names the operation and the URI and went through
    :func:`redact`.
    """


@dataclass(frozen=True)
class FileMeta:
    """What the backend says about one file.

    Attributes:
        uri: The URI asked about.
        size: Size in bytes.
        mtime: Last modification time (POSIX seconds), or ``None`` when the backend does not keep one.
        etag: The object's ETag (S3), or ``None`` where the backend has none (local files, memory).
    """

    uri: str
    size: int
    mtime: float | None
    etag: str | None


class _Location(NamedTuple):
    scheme: str  # "" (local path), "file", "s3" or "memory"
    fs: pafs.FileSystem
    path: str


# ----------------------------------------------------------------------------------------------------------------
# Resolution


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path for ``uri``, ready for pyarrow and Ray Data.

    The S3 filesystem retries transient errors inside the AWS SDK (``$VAD_STORAGE_RETRIES`` attempts), which
    covers readers and writers that call it directly (Ray Data tasks); the helpers of this module add their own
    retries around whole operations.

    Args:
        uri: ``/abs/path``, ``relative/path``, ``file:///abs/path``, ``s3://bucket/key`` or ``memory://path``.

    Returns:
        ``(filesystem, path)``: a picklable ``pyarrow.fs.FileSystem`` and the path in it (absolute for local files,
        ``bucket/key`` for S3, ``/path`` for memory). ``memory://`` content lives in the current process only,
        so Ray workers cannot see it.

    Raises:
        ValueError: If ``uri`` is empty, malformed or uses an unsupported scheme.

    Example:
        >>> fs, path = resolve("s3://bucket/store/data")  # doctest: +SKIP
        >>> ray.data.read_parquet(path, filesystem=fs)  # doctest: +SKIP
    """
    loc = _locate(uri, sdk_attempts=_attempts())
    return loc.fs, loc.path


def _locate(uri: str, sdk_attempts: int = 1) -> _Location:
    """Parse ``uri``; S3 filesystems get ``sdk_attempts`` SDK-level attempts (1 where we retry ourselves)."""
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"Expected a non-empty URI string, got {uri!r}")
    if "\x00" in uri:
        raise ValueError(f"URI contains a NUL byte: {uri!r}")
    if "://" not in uri:
        return _Location("", pafs.LocalFileSystem(), os.path.abspath(uri))
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        # file:///abs/path (empty host) or file://localhost/abs/path; URIs are taken literally (no %-decoding).
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest.startswith("/"):
            raise ValueError(f"file:// URIs must name an absolute local path (file:///path), got {uri!r}")
        return _Location("file", pafs.LocalFileSystem(), os.path.normpath(rest))
    if scheme == "s3":
        path = rest.strip("/")
        if not path or path.startswith("/"):
            raise ValueError(f"s3:// URIs need a bucket (s3://bucket/key), got {uri!r}")
        return _Location("s3", _s3_filesystem(_s3_settings(), sdk_attempts), path)
    if scheme == "memory":
        return _Location("memory", _memory_filesystem(), "/" + rest.strip("/"))
    raise ValueError(
        f"Unsupported URI scheme {scheme + '://'!r} in {uri!r}; use a local path, file://, s3:// or memory://"
    )


def _s3_settings() -> tuple[str | None, ...]:
    env = os.environ.get
    return (
        env("AWS_ACCESS_KEY_ID") or None,
        env("AWS_SECRET_ACCESS_KEY") or None,
        env("AWS_SESSION_TOKEN") or None,
        env("AWS_REGION") or env("AWS_DEFAULT_REGION") or None,
        env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL") or None,
    )


@functools.lru_cache(maxsize=8)
def _s3_filesystem(settings: tuple[str | None, ...], sdk_attempts: int) -> pafs.S3FileSystem:
    """One S3 filesystem per distinct environment, so changed variables take effect at the next call."""
    access_key, secret_key, session_token, region, endpoint = settings
    scheme, endpoint_override = None, endpoint
    if endpoint and "://" in endpoint:
        scheme, endpoint_override = endpoint.split("://", 1)
        endpoint_override = endpoint_override.rstrip("/")
    return pafs.S3FileSystem(
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        region=region,
        scheme=scheme,
        endpoint_override=endpoint_override,
        connect_timeout=_CONNECT_TIMEOUT_S,
        request_timeout=_REQUEST_TIMEOUT_S,
        # Delayed open lets small objects go up in a single PutObject (no multipart upload).
        allow_delayed_open=True,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=sdk_attempts),
    )


@functools.lru_cache(maxsize=1)
def _memory_filesystem() -> pafs.PyFileSystem:
    # fsspec's MemoryFileSystem keeps one store per process, shared by every instance (and unpickled copies).
    return pafs.PyFileSystem(pafs.FSSpecHandler(MemoryFileSystem()))


# pyarrow finalizes its S3 subsystem at exit; drop our cached clients first (atexit runs in reverse order).
atexit.register(_s3_filesystem.cache_clear)


# ----------------------------------------------------------------------------------------------------------------
# Retries and redaction


def redact(text: str) -> str:
    """Replace every credential value from the environment found in ``text`` by ``***``.

    The values of ``AWS_SECRET_ACCESS_KEY``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SESSION_TOKEN`` are replaced
    (longest first, so a value contained in another cannot leave a fragment behind).

    Args:
        text: Any message, e.g. an exception text about to be logged.

    Returns:
        ``text`` without the credential values.

    Example:
        >>> os.environ["AWS_SECRET_ACCESS_KEY"] = "s3cr3t"  # doctest: +SKIP
        >>> redact("signature for s3cr3t failed")  # doctest: +SKIP
        'signature for *** failed'
    """
    secrets = sorted({v for v in (os.environ.get(k) for k in _CREDENTIAL_VARS) if v}, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _attempts() -> int:
    raw = os.environ.get(RETRIES_ENV, "").strip()
    if not raw:
        return _DEFAULT_ATTEMPTS
    try:
        attempts = int(raw)
    except ValueError:
        attempts = 0
    if attempts < 1:
        raise ValueError(f"{RETRIES_ENV} must be an integer >= 1 (total attempts), got {raw!r}")
    return attempts


def _backoff(attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, with jitter to spread Ray workers."""
    return min(_MAX_DELAY_S, _BASE_DELAY_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _sleep(seconds: float) -> None:  # a seam for tests
    time.sleep(seconds)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (ConnectionError, TimeoutError)) or bool(_TRANSIENT.search(str(exc)))


def _call(op: str, uri: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` with bounded retries on transient errors, normalising the exceptions it raises."""
    attempts = _attempts()
    last: OSError | None = None
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except FileNotFoundError as exc:
            raise FileNotFoundError(errno.ENOENT, f"{op}: no such file or directory", uri) from exc
        except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError):
            raise
        except OSError as exc:
            if not _is_transient(exc):
                raise StorageError(f"{op} {uri!r} failed: {type(exc).__name__}: {redact(str(exc))}") from None
            last = exc
            if attempt < attempts:
                delay = _backoff(attempt)
                logger.warning(
                    "%s %r failed (attempt %d/%d), retrying in %.2f s: %s",
                    op,
                    uri,
                    attempt,
                    attempts,
                    delay,
                    redact(str(exc)),
                )
                _sleep(delay)
    # Chaining is dropped on purpose: the cause's text is not redacted.
    raise StorageError(
        f"{op} {uri!r} failed after {attempts} attempts: {type(last).__name__}: {redact(str(last))}"
    ) from None


# ----------------------------------------------------------------------------------------------------------------
# Paths


def join(uri: str, *parts: str) -> str:
    """Append path parts to a URI with ``/`` separators, keeping its scheme.

    Slashes around each part are dropped and empty parts skipped; nothing is validated (see :func:`safe_join`
    for names that come from data).

    Args:
        uri: Base URI or path.
        *parts: Relative parts; may contain ``/``.

    Returns:
        The joined URI.

    Example:
        >>> join("s3://bucket/store", "data", "dataset=ped2/")
        's3://bucket/store/data/dataset=ped2'
    """
    if not uri:
        raise ValueError("join needs a non-empty base URI")
    pieces = [p.strip("/") for p in parts if p.strip("/")]
    if not pieces:
        return uri
    return (uri if uri.endswith("/") else uri + "/") + "/".join(pieces)


def safe_join(root: str, *parts: str) -> str:
    """Like :func:`join`, for names taken from data (video ids, dataset names): the result stays under ``root``.

    Args:
        root: Base URI or path.
        *parts: Relative names; ``/`` inside a part makes subdirectories.

    Returns:
        The joined URI, with ``.`` components and repeated slashes removed.

    Raises:
        ValueError: If a part is empty (or only ``.`` and ``/``), absolute (leading ``/`` or ``scheme://``),
            contains a NUL byte, or has a ``..`` component.

    Example:
        >>> safe_join("s3://bucket/scores", "ped2", "Test001.parquet")
        's3://bucket/scores/ped2/Test001.parquet'
        >>> safe_join("/out", "../etc")
        Traceback (most recent call last):
        ValueError: Path part '../etc' escapes the root '/out' ('..' is not allowed)
    """
    if not parts:
        raise ValueError("safe_join needs at least one part")
    cleaned = []
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"Path parts must be str, got {type(part).__name__}: {part!r}")
        if "\x00" in part:
            raise ValueError(f"Path part {part!r} contains a NUL byte")
        if part.startswith("/") or "://" in part:
            raise ValueError(f"Path part {part!r} is absolute; expected a name relative to {root!r}")
        components = [c for c in part.split("/") if c not in ("", ".")]
        if ".." in components:
            raise ValueError(f"Path part {part!r} escapes the root {root!r} ('..' is not allowed)")
        if not components:
            raise ValueError(f"Path part {part!r} is empty; expected a name under {root!r}")
        cleaned.append("/".join(components))
    return join(root, *cleaned)


# ----------------------------------------------------------------------------------------------------------------
# Queries


def exists(uri: str) -> bool:
    """Whether a file or directory (on S3: any object under the prefix) exists at ``uri``.

    Example:
        >>> exists("memory://nowhere/at/all")
        False
    """
    loc = _locate(uri)
    return _call("exists", uri, lambda: loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound)


def is_dir(uri: str) -> bool:
    """Whether ``uri`` is a directory (on S3: a bucket or a prefix with objects under it).

    Example:
        >>> write_text_atomic("memory://isdir/a.txt", "x")
        >>> is_dir("memory://isdir"), is_dir("memory://isdir/a.txt")
        (True, False)
    """
    loc = _locate(uri)
    return _call("is_dir", uri, lambda: loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory)


def list_files(uri: str, suffixes: tuple[str, ...] | None = None, recursive: bool = True) -> list[str]:
    """Files under a directory, as sorted full URIs in the form of ``uri`` (same scheme, relative stays relative).

    Hidden entries (a name starting with ``.``, such as the temporary files of atomic writes) are skipped.
    A ``uri`` naming a file lists just that file.

    Args:
        uri: Directory (or file) to list.
        suffixes: Keep only names ending with one of these (case-insensitive), e.g. ``(".mp4", ".avi")``.
        recursive: Descend into subdirectories.

    Returns:
        Sorted URIs of the matching files.

    Raises:
        FileNotFoundError: If nothing exists at ``uri``.

    Example:
        >>> write_bytes_atomic("memory://ls/b/clip.MP4", b"")
        >>> write_bytes_atomic("memory://ls/a.txt", b"")
        >>> list_files("memory://ls", suffixes=(".mp4",))
        ['memory://ls/b/clip.MP4']
    """
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    wanted = tuple(s.lower() for s in suffixes) if suffixes is not None else None
    loc = _locate(uri)

    def listing() -> list[pafs.FileInfo] | None:
        info = loc.fs.get_file_info(loc.path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(loc.path)
        if info.type == pafs.FileType.File:
            return None
        return loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=recursive))

    infos = _call("list_files", uri, listing)
    if infos is None:  # uri names a file
        return [uri] if wanted is None or uri.lower().endswith(wanted) else []
    prefix = loc.path.rstrip("/") + "/"
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.startswith(prefix):
            continue
        rel = info.path[len(prefix) :]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if wanted is None or info.base_name.lower().endswith(wanted):
            out.append(join(uri, rel))
    return sorted(out)


def file_info(uri: str) -> FileMeta:
    """Size, modification time and (S3) ETag of one file.

    Raises:
        FileNotFoundError: If ``uri`` does not exist.
        IsADirectoryError: If ``uri`` is a directory.

    Example:
        >>> write_bytes_atomic("memory://info/x.bin", b"abc")
        >>> file_info("memory://info/x.bin").size
        3
    """
    loc = _locate(uri)

    def query() -> FileMeta:
        info = loc.fs.get_file_info(loc.path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(loc.path)
        if info.type == pafs.FileType.Directory:
            raise IsADirectoryError(errno.EISDIR, "file_info: is a directory", uri)
        etag = None
        if loc.scheme == "s3":
            # Opening an S3 file issues one HEAD request, whose response carries the ETag.
            with loc.fs.open_input_file(loc.path) as handle:
                raw = handle.metadata().get("ETag")
            etag = raw.decode().strip('"') if raw else None
        mtime = info.mtime.timestamp() if info.mtime is not None else None
        return FileMeta(uri=uri, size=int(info.size), mtime=mtime, etag=etag)

    return _call("file_info", uri, query)


# ----------------------------------------------------------------------------------------------------------------
# Changes


def makedirs(uri: str) -> None:
    """Create a directory and its parents; a no-op where it exists and on S3 (prefixes need no creation).

    Example:
        >>> makedirs("memory://made/a/b")
        >>> is_dir("memory://made/a/b")
        True
    """
    loc = _locate(uri)
    if loc.scheme == "s3":
        return
    _call("makedirs", uri, lambda: loc.fs.create_dir(loc.path, recursive=True))


def delete(uri: str, recursive: bool = False) -> None:
    """Delete a file, or a directory and everything under it when ``recursive``.

    Args:
        uri: What to delete.
        recursive: Required to delete a directory.

    Raises:
        FileNotFoundError: If nothing exists at ``uri``.
        IsADirectoryError: If ``uri`` is a directory and ``recursive`` is false.
        ValueError: If ``uri`` is a filesystem root or an S3 bucket.

    Example:
        >>> write_text_atomic("memory://del/a.txt", "x")
        >>> delete("memory://del", recursive=True)
        >>> exists("memory://del/a.txt")
        False
    """
    loc = _locate(uri)
    if loc.path in ("/", "") or (loc.scheme == "s3" and "/" not in loc.path):
        raise ValueError(f"Refusing to delete a filesystem root or bucket: {uri!r}")

    def remove() -> None:
        info = loc.fs.get_file_info(loc.path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(loc.path)
        if info.type == pafs.FileType.Directory:
            if not recursive:
                raise IsADirectoryError(errno.EISDIR, "delete: is a directory (pass recursive=True)", uri)
            loc.fs.delete_dir(loc.path)
        else:
            loc.fs.delete_file(loc.path)

    _call("delete", uri, remove)


def move(src: str, dst: str) -> None:
    """Move one file to ``dst`` (replacing a file there), creating ``dst``'s parent directories.

    Local files and ``memory://``: a rename (atomic within one local filesystem). S3 has no rename: a server-side
    copy (one ``CopyObject``, so objects up to 5 GiB) then a delete of ``src``; ``dst`` appears whole, and a
    failure between the two leaves both.

    Raises:
        FileNotFoundError: If ``src`` does not exist.
        ValueError: If ``src`` and ``dst`` are on different filesystems.

    Example:
        >>> write_text_atomic("memory://mv/a.txt", "x")
        >>> move("memory://mv/a.txt", "memory://mv/sub/b.txt")
        >>> list_files("memory://mv")
        ['memory://mv/sub/b.txt']
    """
    source, target = _locate(src), _locate(dst)
    local = source.scheme in _LOCAL_SCHEMES
    if local != (target.scheme in _LOCAL_SCHEMES) or (not local and source.scheme != target.scheme):
        raise ValueError(f"move works within one filesystem, not from {src!r} to {dst!r}")

    def run() -> None:
        if source.fs.get_file_info(source.path).type != pafs.FileType.File:
            raise FileNotFoundError(source.path)
        if target.scheme != "s3":
            target.fs.create_dir(posixpath.dirname(target.path), recursive=True)
        source.fs.move(source.path, target.path)

    _call("move", src, run)


# ----------------------------------------------------------------------------------------------------------------
# Reading and writing whole objects


def read_bytes(uri: str) -> bytes:
    """The whole content of a file.

    Example:
        >>> write_bytes_atomic("memory://rb/x.bin", b"abc")
        >>> read_bytes("memory://rb/x.bin")
        b'abc'
    """
    loc = _locate(uri)

    def read() -> bytes:
        with loc.fs.open_input_stream(loc.path) as handle:
            return handle.read()

    return _call("read", uri, read)


def read_text(uri: str) -> str:
    """The content of a UTF-8 text file.

    Example:
        >>> write_text_atomic("memory://rt/x.txt", "héllo")
        >>> read_text("memory://rt/x.txt")
        'héllo'
    """
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    """The parsed content of a JSON file.

    Example:
        >>> write_json_atomic("memory://rj/x.json", {"a": [1, 2]})
        >>> read_json("memory://rj/x.json")
        {'a': [1, 2]}
    """
    return json.loads(read_bytes(uri))


def write_bytes_atomic(uri: str, data: bytes | bytearray | memoryview | pa.Buffer) -> None:
    """Replace the file at ``uri`` with ``data`` so that readers never see a partial file.

    Parent directories are created as needed. Local files: a hidden temporary file in the same directory is
    written, fsynced and renamed over the target (the temporary file is removed on failure). ``memory://``:
    temporary name, then move. S3: one PUT (pyarrow switches to a multipart upload above ~10 MiB, which S3 also
    exposes only once complete).

    Example:
        >>> write_bytes_atomic("memory://wb/x.bin", b"v1")
        >>> write_bytes_atomic("memory://wb/x.bin", b"v2")
        >>> read_bytes("memory://wb/x.bin"), list_files("memory://wb")
        (b'v2', ['memory://wb/x.bin'])
    """
    if not isinstance(data, (bytes, bytearray, memoryview, pa.Buffer)):
        raise TypeError(f"write_bytes_atomic expects bytes, got {type(data).__name__}")
    loc = _locate(uri)
    if loc.path in ("", "/") or (loc.scheme == "s3" and "/" not in loc.path):
        raise ValueError(f"Cannot write a file at {uri!r}: it names a directory or bucket")
    if loc.scheme in _LOCAL_SCHEMES:
        _call("write", uri, lambda: _write_local(loc.path, data))
    elif loc.scheme == "s3":
        _call("write", uri, lambda: _write_stream(loc.fs, loc.path, data))
    else:
        _call("write", uri, lambda: _write_then_move(loc.fs, loc.path, data))


def _temp_name(path: str) -> str:
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _write_local(path: str, data: bytes | bytearray | memoryview | pa.Buffer) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as handle:  # "x": never clobber; default mode honours the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_stream(fs: pafs.FileSystem, path: str, data: bytes | bytearray | memoryview | pa.Buffer) -> None:
    with fs.open_output_stream(path) as handle:
        handle.write(data)


def _write_then_move(fs: pafs.FileSystem, path: str, data: bytes | bytearray | memoryview | pa.Buffer) -> None:
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = _temp_name(path)
    try:
        _write_stream(fs, tmp, data)
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


def write_text_atomic(uri: str, text: str) -> None:
    """Atomically replace ``uri`` with ``text`` encoded as UTF-8 (see :func:`write_bytes_atomic`).

    Example:
        >>> write_text_atomic("memory://wt/x.txt", "hello")
    """
    write_bytes_atomic(uri, text.encode("utf-8"))


def write_json_atomic(uri: str, obj: Any) -> None:
    """Atomically replace ``uri`` with ``obj`` as indented JSON (see :func:`write_bytes_atomic`).

    Example:
        >>> write_json_atomic("memory://wj/meta.json", {"store": "clips"})
    """
    write_bytes_atomic(uri, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def read_parquet(uri: str) -> pa.Table:
    """Read a Parquet file (or a directory of Parquet files) into one table.

    Example:
        >>> write_parquet_atomic("memory://pq/t.parquet", pa.table({"a": [1, 2]}))
        >>> read_parquet("memory://pq/t.parquet").column("a").to_pylist()
        [1, 2]
    """
    loc = _locate(uri)
    return _call("read_parquet", uri, lambda: pq.read_table(loc.path, filesystem=loc.fs))


def write_parquet_atomic(uri: str, table: pa.Table) -> None:
    """Atomically replace ``uri`` with ``table`` as one Parquet file (serialised in memory, then one write).

    Example:
        >>> write_parquet_atomic("memory://pq/u.parquet", pa.table({"a": [1]}))
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"write_parquet_atomic expects a pyarrow.Table, got {type(table).__name__}")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(uri, sink.getvalue())


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path with the content of ``uri`` (file or directory), for libraries that need one (decord, torch).

    Local files are used in place (nothing is copied). Remote and in-memory content is downloaded into a
    temporary directory, keeping the base name (and so the extension), and removed on exit.

    Args:
        uri: File or directory.

    Yields:
        A local path.

    Raises:
        FileNotFoundError: If nothing exists at ``uri``.

    Example:
        >>> write_bytes_atomic("memory://lc/clip.bin", b"abc")
        >>> with local_copy("memory://lc/clip.bin") as path:
        ...     open(path, "rb").read()
        b'abc'
    """
    loc = _locate(uri)
    if loc.scheme in _LOCAL_SCHEMES:
        if not os.path.exists(loc.path):
            raise FileNotFoundError(errno.ENOENT, "local_copy: no such file or directory", uri)
        yield loc.path
        return
    with tempfile.TemporaryDirectory(prefix="vad-storage-") as tmp:
        dest = os.path.join(tmp, posixpath.basename(loc.path.rstrip("/")) or "root")

        _call("local_copy", uri, lambda: _download(loc.fs, loc.path, dest))
        yield dest


def _download(fs: pafs.FileSystem, path: str, dest: str) -> None:
    """Copy a file, or a directory tree, from ``fs`` to the local path ``dest``."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(path)
    if info.type == pafs.FileType.File:
        sources = [(path, dest)]
    else:
        prefix = path.rstrip("/") + "/"
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        sources = [(i.path, os.path.join(dest, i.path[len(prefix) :])) for i in found if i.type == pafs.FileType.File]
        os.makedirs(dest, exist_ok=True)
    for source, target in sources:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with fs.open_input_stream(source) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
