"""The layout every store shares (clips, tubes, features), and how to read it.

::

    STORE/_store.json          metadata; written last, so its presence means the store is complete
    STORE/manifest.parquet     one row per video in the store (MANIFEST_SCHEMA)
    STORE/labels.parquet       frame labels of the test videos that have them (LABELS_SCHEMA)
    STORE/quarantine.parquet   inputs that could not be used, and why (QUARANTINE_SCHEMA)
    STORE/data/dataset=<name>/split=<split>/*.parquet     the rows, hive-partitioned

**Frames encoding (clip stores).** A clip store whose ``_store.json`` says ``"frames_encoding": "raw_uint8"``
stores each segment's ``frames`` as one ``large_binary`` value: the raw ``uint8`` bytes of the ``[S, H, W, C]``
array in C order, ``H, W, C`` from the store's ``frame_spec`` and ``S`` = bytes / (H x W x C). Parquet encodes
that several times faster than Ray's tensor column (``uint8`` values in a list, stored as 32-bit integers).
:func:`read_store` turns it back, without copying the pixels, into the Ray variable-shaped tensor column that
stores written before (no ``frames_encoding``: the tensor column itself) read as, so readers see the same
arrays either way; :func:`decode_frames` does the same for direct pyarrow reads.

Writers call :func:`prepare_store` first (refuse an existing store unless ``overwrite``, which deletes it) and
:func:`write_store_metadata` last. Readers go through :func:`read_store`, which refuses a directory without
``_store.json`` (not a store, or an ingest that did not finish).

Example:
    >>> ds = read_store("s3://bucket/stores/ped2_luss", split="train", columns=["video_id", "frames"])  # doctest: +SKIP
    >>> read_labels("s3://bucket/stores/ped2_luss")["Test001"][:5]  # doctest: +SKIP
    array([0, 0, 0, 0, 0], dtype=uint8)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data.datasource.partitioning import PathPartitionFilter

from pipelines import storage

__all__ = [
    "DATA_DIR",
    "FRAMES_RAW_UINT8",
    "LABELS_SCHEMA",
    "MANIFEST_SCHEMA",
    "QUARANTINE_SCHEMA",
    "STORE_KINDS",
    "StoreError",
    "StoreExistsError",
    "decode_frames",
    "frames_shape",
    "labels_table",
    "prepare_store",
    "read_labels",
    "read_manifest",
    "read_quarantine",
    "read_store",
    "read_store_metadata",
    "shuffle_partitions",
    "write_labels",
    "write_manifest",
    "write_quarantine",
    "write_store_metadata",
]

STORE_KINDS = ("clips", "tubes", "features")
DATA_DIR = "data"
_META, _MANIFEST, _LABELS, _QUARANTINE = "_store.json", "manifest.parquet", "labels.parquet", "quarantine.parquet"
FRAMES_RAW_UINT8 = "raw_uint8"  # _store.json "frames_encoding": one large_binary value of raw uint8 per segment

MANIFEST_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("dataset", pa.string()),
        ("uri", pa.string()),
        ("split", pa.string()),
        ("video_label", pa.int8()),  # 0 normal, 1 abnormal, -1 unknown
        ("num_frames", pa.int64()),  # decoded frames (not what the container claims)
        ("fps", pa.float64()),  # NaN for frame folders
        ("height", pa.int64()),  # native size of the source
        ("width", pa.int64()),
    ]
)
LABELS_SCHEMA = pa.schema([("video_id", pa.string()), ("frame_labels", pa.list_(pa.uint8()))])
QUARANTINE_SCHEMA = pa.schema(
    [("video_id", pa.string()), ("uri", pa.string()), ("stage", pa.string()), ("error", pa.string())]
)


class StoreError(RuntimeError):
    """A URI is not a usable store (no ``_store.json``, wrong kind, no rows)."""


class StoreExistsError(FileExistsError):
    """The output of a store writer already exists and ``overwrite`` was not requested."""


def prepare_store(uri: str, overwrite: bool = False) -> None:
    """Make ``uri`` ready for a new store: refuse anything already there, or delete it when ``overwrite``.

    Never mixing two stores (or two frame specs) in one place is the point: a rerun must say what it wants.

    Raises:
        StoreExistsError: If ``uri`` holds files and ``overwrite`` is false.

    Example:
        >>> prepare_store("memory://stores/new")
    """
    if not storage.exists(uri):
        return
    if storage.is_dir(uri) and not storage.list_files(uri):
        return
    if not overwrite:
        what = "a store" if storage.exists(storage.join(uri, _META)) else "files (an unfinished store?)"
        raise StoreExistsError(
            f"{uri} already holds {what}; pass --overwrite to delete it and build a new one, or choose another --out"
        )
    storage.delete(uri, recursive=storage.is_dir(uri))


def write_store_metadata(uri: str, meta: Mapping[str, Any]) -> None:
    """Write ``_store.json`` (atomically); call it last, it marks the store complete.

    Raises:
        ValueError: If ``meta["store"]`` is not one of :data:`STORE_KINDS`.

    Example:
        >>> write_store_metadata("memory://stores/m", {"store": "clips", "datasets": ["folder"]})
    """
    if meta.get("store") not in STORE_KINDS:
        raise ValueError(f"store metadata needs 'store' in {STORE_KINDS}, got {meta.get('store')!r}")
    storage.write_json_atomic(storage.join(uri, _META), dict(meta))


def read_store_metadata(uri: str) -> dict[str, Any]:
    """The store's ``_store.json``.

    Raises:
        StoreError: If there is none (not a store, or its writer did not finish).

    Example:
        >>> write_store_metadata("memory://stores/r", {"store": "clips"})
        >>> read_store_metadata("memory://stores/r")["store"]
        'clips'
    """
    try:
        return storage.read_json(storage.join(uri, _META))
    except FileNotFoundError:
        raise StoreError(
            f"{uri} is not a store: it has no {_META} (build one with jobs/ingest.py; a store whose ingest failed "
            "has none either: rerun it with --overwrite)"
        ) from None


def read_store(uri: str, split: str | None = None, columns: list[str] | None = None) -> ray.data.Dataset:
    """The rows of a store as a Ray Dataset, optionally one split and some columns.

    ``dataset`` and ``split`` come back as columns (from the hive partition directories). Tensor columns such
    as ``frames`` come back per row with their stored shape and dtype; a clip store's binary ``frames``
    (``"frames_encoding": "raw_uint8"``) is decoded back to that tensor column inside the read tasks (a fused
    ``map_batches``, no copy of the pixels), so readers cannot tell the two encodings apart.

    Args:
        uri: Store URI (local, ``file://``, ``s3://``).
        split: ``"train"``, ``"test"`` or ``None`` for all.
        columns: Columns to read (``None``: all); partition columns may be named.

    Raises:
        StoreError: If ``uri`` is not a complete store or holds no rows.
        ValueError: If ``split`` is not one of the store's splits.

    Example:
        >>> ds = read_store("stores/demo", split="test", columns=["video_id", "start_frame"])  # doctest: +SKIP
    """
    meta = read_store_metadata(uri)
    data = storage.join(uri, DATA_DIR)
    if not storage.exists(data):
        raise StoreError(f"store {uri} holds no rows (every input was quarantined? see read_quarantine)")
    splits = meta.get("splits")
    if split is not None and splits is not None and split not in splits:
        raise ValueError(f"store {uri} has no split {split!r}; its splits: {splits}")
    fs, path = storage.resolve(data)
    kwargs: dict[str, Any] = {}
    if split is not None:
        kwargs["partition_filter"] = PathPartitionFilter.of(_SplitFilter(split), base_dir=path, filesystem=fs)
    with _parquet_datasource(v2=parquet_reader_v2()):
        ds = ray.data.read_parquet(path, filesystem=fs, columns=columns, **kwargs)
    shape = frames_shape(meta)
    if shape is not None and (columns is None or "frames" in columns):
        ds = ds.map_batches(
            _decode_frames_batch,
            fn_kwargs={"shape": shape},
            batch_format="pyarrow",
            batch_size=None,  # whole blocks: the decode is a few metadata buffers per block
            zero_copy_batch=True,
        )
    return ds


def parquet_reader_v2() -> bool:
    """Whether :func:`read_store` uses Ray Data's V2 Parquet datasource (only when the user asks for it).

    Ray 2.60 reads Parquet through its V2 datasource by default, which starts a pool of ``FooterReader`` actors,
    one new process each, every time a dataset executes, to read the files' footers. A store holds few, large
    files, and training executes its datasets every epoch: on a 2-core machine a one-video validation pass took
    1.2-1.9 s through V2 and 0.12 s through V1, which needs no actors. Ray's own switch,
    ``RAY_DATA_USE_DATASOURCE_V2=1``, selects V2 again.

    Example:
        >>> parquet_reader_v2()  # doctest: +SKIP
        False
    """
    return os.environ.get("RAY_DATA_USE_DATASOURCE_V2", "").strip().lower() in ("1", "true")


@contextmanager
def _parquet_datasource(v2: bool) -> Iterator[None]:
    # read_parquet picks the datasource from the current DataContext when it is called; the plan keeps it.
    ctx = ray.data.DataContext.get_current()
    saved, ctx.use_datasource_v2 = ctx.use_datasource_v2, v2
    try:
        yield
    finally:
        ctx.use_datasource_v2 = saved


def frames_shape(meta: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """``(H, W, C)`` of a store whose ``frames`` are raw ``uint8`` bytes; ``None`` for a tensor column.

    Raises:
        StoreError: If ``meta`` names a frames encoding this version cannot read.

    Example:
        >>> frames_shape({"frames_encoding": "raw_uint8", "frame_spec": {"height": 4, "width": 6, "channels": 1}})
        (4, 6, 1)
        >>> frames_shape({"store": "tubes"}) is None
        True
    """
    encoding = meta.get("frames_encoding")
    if encoding is None:
        return None  # Ray's tensor column (stores written before frames_encoding existed; tube/feature stores)
    if encoding != FRAMES_RAW_UINT8:
        raise StoreError(f"unknown frames_encoding {encoding!r} (this version reads {FRAMES_RAW_UINT8!r})")
    spec = meta["frame_spec"]
    return int(spec["height"]), int(spec["width"]), int(spec["channels"])


def decode_frames(column: pa.Array | pa.ChunkedArray, shape: Sequence[int]) -> pa.Array | pa.ChunkedArray:
    """A binary ``frames`` column (raw ``uint8`` ``[S, H, W, C]`` per value) -> Ray's variable-shaped tensor column.

    Zero-copy: the tensor's ``data`` list reuses the binary column's offsets and bytes; only the per-row shapes
    ``[S, H, W, C]`` are new. ``shape`` is ``(H, W, C)``; ``S`` is each value's length / (H x W x C).

    Raises:
        ValueError: If a value's length is not a whole number of frames, or the column is not binary.

    Example:
        >>> frames = np.arange(2 * 2 * 3 * 1, dtype=np.uint8).reshape(2, 2, 3, 1)
        >>> tensor = decode_frames(pa.array([frames.tobytes()], pa.large_binary()), (2, 3, 1))
        >>> np.array_equal(tensor.to_numpy()[0], frames)
        True
    """
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([decode_frames(c, shape) for c in column.chunks], type=_tensor_type())
    if pa.types.is_binary(column.type):
        column = column.cast(pa.large_binary())  # int32 -> int64 offsets (copies the offsets only)
    if not pa.types.is_large_binary(column.type):
        raise ValueError(f"binary frames column expected, got {column.type}")
    if column.null_count:
        raise ValueError("frames column holds nulls")
    tensor_type = _tensor_type()
    n = len(column)
    if n == 0:
        return pa.ExtensionArray.from_storage(tensor_type, pa.array([], tensor_type.storage_type))
    frame_bytes = int(np.prod(shape))
    _, offsets_buf, data_buf = column.buffers()
    data_buf = data_buf if data_buf is not None else pa.py_buffer(b"")
    offsets = np.frombuffer(offsets_buf, np.int64, count=n + 1, offset=column.offset * 8)
    lengths = np.diff(offsets)
    num_frames, rest = np.divmod(lengths, frame_bytes)
    if rest.any():
        bad = int(lengths[np.flatnonzero(rest)[0]])
        raise ValueError(f"a frames value of {bad} bytes is not a whole number of {tuple(shape)} uint8 frames")
    if tensor_type.storage_type.field("data").type != pa.large_list(pa.uint8()):  # another Ray layout: copy
        from ray.data.extensions import ArrowVariableShapedTensorArray

        flat = np.frombuffer(data_buf, np.uint8)
        return ArrowVariableShapedTensorArray.from_numpy(
            [flat[a:b].reshape(-1, *shape) for a, b in zip(offsets[:-1], offsets[1:])]
        )
    values = pa.Array.from_buffers(pa.uint8(), int(offsets[-1]), [None, data_buf])
    data = pa.Array.from_buffers(
        pa.large_list(pa.uint8()), n, [None, offsets_buf], offset=column.offset, children=[values]
    )
    dims = np.empty((n, 1 + len(shape)), np.int64)
    dims[:, 0] = num_frames
    dims[:, 1:] = shape
    shapes = pa.ListArray.from_arrays(
        pa.array(np.arange(0, dims.size + 1, dims.shape[1], dtype=np.int32)), pa.array(dims.reshape(-1))
    )
    storage_array = pa.StructArray.from_arrays([data, shapes], fields=list(tensor_type.storage_type))
    return pa.ExtensionArray.from_storage(tensor_type, storage_array)


def _tensor_type() -> pa.ExtensionType:
    from ray.data.extensions import ArrowVariableShapedTensorType

    return ArrowVariableShapedTensorType(pa.uint8(), 4)


def _decode_frames_batch(batch: pa.Table, shape: tuple[int, int, int]) -> pa.Table:
    """Ray ``map_batches`` UDF of :func:`read_store`: binary ``frames`` -> the tensor column (zero-copy)."""
    index = batch.schema.get_field_index("frames")
    if index < 0 or isinstance(batch.schema.field(index).type, pa.ExtensionType):
        return batch
    return batch.set_column(index, "frames", decode_frames(batch.column(index), shape))


class _SplitFilter:
    """Hive partition filter keeping one split (a picklable class, not a closure)."""

    def __init__(self, split: str) -> None:
        self.split = split

    def __call__(self, partition: dict[str, str]) -> bool:
        return partition.get("split") == self.split


def write_manifest(uri: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``manifest.parquet`` from dicts with the :data:`MANIFEST_SCHEMA` fields.

    Example:
        >>> write_manifest("memory://stores/w", [{"video_id": "v", "dataset": "folder", "uri": "v.mp4",
        ...     "split": "test", "video_label": 1, "num_frames": 64, "fps": 25.0, "height": 64, "width": 64}])
    """
    table = pa.Table.from_pylist([{k: r[k] for k in MANIFEST_SCHEMA.names} for r in rows], schema=MANIFEST_SCHEMA)
    storage.write_parquet_atomic(storage.join(uri, _MANIFEST), table)


def read_manifest(uri: str) -> pa.Table:
    """The store's ``manifest.parquet``: one row per video in the store.

    Example:
        >>> write_manifest("memory://stores/rm", [{"video_id": "v", "dataset": "folder", "uri": "v.mp4",
        ...     "split": "test", "video_label": 1, "num_frames": 64, "fps": 25.0, "height": 64, "width": 64}])
        >>> read_manifest("memory://stores/rm").column("num_frames").to_pylist()
        [64]
    """
    try:
        return storage.read_parquet(storage.join(uri, _MANIFEST))
    except FileNotFoundError:
        raise StoreError(f"{uri} has no {_MANIFEST} (not a store, or its ingest did not finish)") from None


def labels_table(labels: Mapping[str, np.ndarray]) -> pa.Table:
    """Frame labels as a :data:`LABELS_SCHEMA` table, sorted by video id.

    Example:
        >>> labels_table({"v": np.array([0, 1], np.uint8)}).num_rows
        1
    """
    ids = sorted(labels)
    values = [np.asarray(labels[v], dtype=np.uint8) for v in ids]
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
    flat = np.concatenate(values) if values else np.zeros(0, np.uint8)
    column = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.uint8()))
    return pa.table({"video_id": pa.array(ids, pa.string()), "frame_labels": column}, schema=LABELS_SCHEMA)


def write_labels(uri: str, labels: Mapping[str, np.ndarray]) -> None:
    """Write ``labels.parquet`` (``video_id -> uint8 per frame``).

    Example:
        >>> write_labels("memory://stores/w", {"v": np.array([0, 1, 1], np.uint8)})
    """
    storage.write_parquet_atomic(storage.join(uri, _LABELS), labels_table(labels))


def read_labels(uri: str) -> dict[str, np.ndarray]:
    """``video_id -> uint8 frame labels`` from the store's ``labels.parquet`` (empty when it has none).

    Example:
        >>> write_labels("memory://stores/rl", {"v": np.array([0, 1, 1], np.uint8)})
        >>> read_labels("memory://stores/rl")["v"].tolist()
        [0, 1, 1]
    """
    labels_uri = storage.join(uri, _LABELS)
    if not storage.exists(labels_uri):
        return {}
    table = storage.read_parquet(labels_uri)
    column = table.column("frame_labels").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.uint8)
    offsets = column.offsets.to_numpy()
    ids = table.column("video_id").to_pylist()
    return {vid: flat[offsets[i] : offsets[i + 1]].copy() for i, vid in enumerate(ids)}


def write_quarantine(uri: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``quarantine.parquet`` (``video_id, uri, stage, error``); always written, possibly empty.

    Example:
        >>> write_quarantine("memory://stores/w", [{"video_id": "bad", "uri": "bad.mp4", "stage": "decode",
        ...     "error": "moov atom not found"}])
    """
    table = pa.Table.from_pylist([{k: str(r[k]) for k in QUARANTINE_SCHEMA.names} for r in rows], QUARANTINE_SCHEMA)
    storage.write_parquet_atomic(storage.join(uri, _QUARANTINE), table)


def read_quarantine(uri: str) -> pa.Table:
    """The store's ``quarantine.parquet``, or an empty table with its schema.

    Example:
        >>> read_quarantine("memory://stores/none").num_rows
        0
    """
    q_uri = storage.join(uri, _QUARANTINE)
    if not storage.exists(q_uri):
        return QUARANTINE_SCHEMA.empty_table()
    return storage.read_parquet(q_uri)


def shuffle_partitions(num_videos: int, cap: int = 64) -> int:
    """Partitions of a group-by-video shuffle: one per video up to ``cap``.

    Ray Data's default (200) costs seconds of aggregator start-up for a handful of videos and buys nothing
    beyond the number of groups.

    Example:
        >>> shuffle_partitions(3), shuffle_partitions(1000)
        (3, 64)
    """
    return max(1, min(int(num_videos), cap))
