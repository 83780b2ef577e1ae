"""Clip store: a dataset's videos decoded into overlapping frame segments, as hive-partitioned Parquet.

Pipeline (one pass; Ray Data, one block per video, so one task decodes one video on one core):

1. **Manifest** (driver): the dataset adapter lists the videos and their labels.
2. **Decode and stage** (``map``): :func:`stage_video` opens each input once
   (:class:`~pipelines.decode.FrameSource`: the probe), decodes it once and streams its segments of S frames,
   overlapping by ``FrameSpec.effective_overlap`` (``window - 1`` by default), into Parquet part files under
   ``STORE/_staging/`` (one row group per segment). It returns a small status row: frames decoded, or the stage
   that failed. Inputs that cannot be opened are quarantined with stage ``probe``, inputs that fail part-way with
   stage ``decode``; their staged files are deleted.
3. **Checks** (driver): videos shorter than one window (stage ``length``) and videos whose frame labels do not
   fit the decoded frame count (stage ``labels``) are quarantined too; labels are never truncated or padded.
4. **Commit** (driver): the part files of the videos that passed are moved to
   ``STORE/data/dataset=<name>/split=<split>/`` (a rename on local disks, a server-side copy + delete on S3,
   which has no rename); then ``STORE/_staging/`` is deleted with whatever the rejected videos left there.
5. ``manifest.parquet``, ``labels.parquet``, ``quarantine.parquet``, and ``_store.json`` **last**.

**No partial videos.** Nothing reaches ``STORE/data/`` before its video decoded completely and passed the
checks, so a corrupt, truncated or unreadable input leaves no segment behind. Readers never look at
``STORE/_staging/`` (it is outside ``data/``, and its name starts with ``_``, which Ray Data skips). Decoding is
streamed, so a task's memory stays bounded by one segment plus one decode chunk whatever the video length, and
each video is downloaded and decoded exactly once. A task that dies part-way is rerun by Ray Data and rewrites
the same staged names. If the job fails (a store outage outlasting the retries, a killed driver), no
``_store.json`` is written: readers refuse the store and a rerun needs ``--overwrite``.

**Parquet layout.** One video per part file (a new part every :data:`_PART_BYTES` of frames), one row group per
segment. ``frames`` is one ``large_binary`` value per segment: the raw ``uint8`` bytes of its ``[S, H, W, C]``
array in C order (``"frames_encoding": "raw_uint8"`` in ``_store.json``; ``H, W, C`` are the frame spec's, ``S``
is the value's length / (H x W x C), also the row's ``num_frames``), zstd level 1 (``compression`` picks another
codec: :func:`parquet_compression`), no dictionary, no statistics.
Ray's tensor column (``uint8`` values in a Parquet list, which Parquet stores as 32-bit integers) cost about as
much to encode as decoding a small source, even with ``BYTE_STREAM_SPLIT``. :func:`pipelines.stores.read_store`
(so :func:`read_clip_store`) decodes the binary column back to that tensor column without copying, so readers
see the same arrays as from stores written before (tensor column, no ``frames_encoding``), which still read.

Example:
    >>> summary = build_clip_store("folder", "data/corpus", "stores/demo", "luss_ae", size=(64, 64))  # doctest: +SKIP
    >>> print(summary.line())  # doctest: +SKIP
    [ingest] stores/demo: 5 videos ok, 0 quarantined, 320 frames in 5 segments
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipelines import storage
from pipelines.datasets import SPLITS, DatasetAdapter, LabelMismatchError, VideoEntry, get_dataset
from pipelines.decode import FrameSource, decoder_info
from pipelines.runtime import reuse_freed_memory
from pipelines.sources import limit_per_split, manifest_sha256
from pipelines.stores import (
    DATA_DIR,
    FRAMES_RAW_UINT8,
    StoreError,
    prepare_store,
    read_store,
    read_store_metadata,
    write_labels,
    write_manifest,
    write_quarantine,
    write_store_metadata,
)
from vad_models.frame_spec import FrameSpec, get_frame_spec

__all__ = [
    "DEFAULT_COMPRESSION",
    "IngestSummary",
    "build_clip_store",
    "effective_spec",
    "parquet_compression",
    "read_clip_store",
    "segment_starts",
    "stage_video",
]

_MAX_BLOCKS = 10_000  # one block (= one decode task) per video, up to this many
_MAP_RETRIES = 3  # task-level retries of StorageError, on top of pipelines.storage's per-request retries
_STAGING_DIR = "_staging"  # STORE/_staging/<video index>_<part>.parquet until committed
_PART_BYTES = 1 << 30  # start a new part file after this many bytes of frames (S3 copies one object up to 5 GiB)
_COMMIT_THREADS = 16  # concurrent moves when committing (S3 copies are server-side, seconds each)

# Row layout of a part file (partition columns dataset/split live in the directory names).
_SEGMENT_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("start_frame", pa.int64()),
        ("num_frames", pa.int64()),
        ("fps", pa.float64()),
        ("frames", pa.large_binary()),  # raw uint8 [num_frames, H, W, C], C order (FRAMES_RAW_UINT8)
    ]
)
_PARQUET_OPTIONS: dict[str, Any] = {
    "use_dictionary": ["video_id"],
    "write_statistics": ["video_id", "start_frame", "num_frames", "fps"],
}
DEFAULT_COMPRESSION = "zstd:1"
# Codec -> allowed levels (None: the codec takes none). Per 256x256 gray frame on one core, written then read:
# zstd:1 0.124 ms, 19 KB; zstd:-7 0.105 ms, 29 KB; lz4 0.140 ms, 39 KB; none 0.080 ms, 76 KB (bench corpus).
_CODECS: dict[str, range | None] = {"zstd": range(-7, 23), "lz4": None, "none": None}


def parquet_compression(text: str) -> dict[str, Any]:
    """Parse a clip store's ``--compression`` (``zstd[:LEVEL]``, ``lz4`` or ``none``) into pyarrow options.

    ``zstd:1`` (the default) keeps stores small; a negative zstd level or ``none`` trades store size for write
    speed, which is what bounds ingest on few cores (docs/performance.md, Ingest). Readers need no option:
    Parquet records the codec in every column chunk.

    Raises:
        ValueError: For an unknown codec or a level out of range.

    Example:
        >>> parquet_compression("zstd:-3")
        {'compression': 'zstd', 'compression_level': -3}
        >>> parquet_compression("none")
        {'compression': 'none'}
    """
    codec, _, level = text.strip().lower().partition(":")
    if codec not in _CODECS:
        raise ValueError(f"unknown compression {text!r}: use zstd[:LEVEL] (-7..22), lz4 or none")
    levels = _CODECS[codec]
    if levels is None:
        if level:
            raise ValueError(f"compression {codec} takes no level, got {text!r}")
        return {"compression": codec}
    try:
        value = int(level) if level else 1
    except ValueError:
        raise ValueError(f"compression level must be an integer, got {text!r}") from None
    if value not in levels:
        raise ValueError(f"zstd level must be in {levels.start}..{levels.stop - 1}, got {value}")
    return {"compression": codec, "compression_level": value}


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest run produced.

    Attributes:
        out: Store URI.
        videos_ok: Videos in the store.
        videos_quarantined: Inputs that went to quarantine.
        frames: Distinct frames stored (sum of the videos' decoded frame counts).
        segments: Rows written.
        quarantine: The quarantine rows (``video_id, uri, stage, error``).
    """

    out: str
    videos_ok: int
    videos_quarantined: int
    frames: int
    segments: int
    quarantine: list[dict[str, str]] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        """True when there were inputs and none of them made it into the store."""
        return self.videos_ok == 0 and self.videos_quarantined > 0

    def line(self) -> str:
        """One-line summary for logs."""
        return (
            f"[ingest] {self.out}: {self.videos_ok} videos ok, {self.videos_quarantined} quarantined, "
            f"{self.frames} frames in {self.segments} segments"
        )


def effective_spec(
    spec: FrameSpec, size: tuple[int, int] | None = None, segment_frames: int | None = None
) -> FrameSpec:
    """``spec`` with the size and segment length of this ingest (recorded in ``_store.json``).

    Example:
        >>> effective_spec(FrameSpec(256, 256, 1, window=17), size=(64, 64)).height
        64
    """
    changes: dict[str, int] = {}
    if size is not None:
        changes["height"], changes["width"] = int(size[0]), int(size[1])
    if segment_frames is not None:
        changes["segment_frames"] = int(segment_frames)
    return dataclasses.replace(spec, **changes) if changes else spec


def segment_starts(num_frames: int, spec: FrameSpec) -> list[int]:
    """Start frames of the segments :func:`~pipelines.decode.iter_segments` yields for ``num_frames`` frames.

    Example:
        >>> segment_starts(300, FrameSpec(64, 64, 1, window=17, segment_frames=128))
        [0, 112, 224]
    """
    if num_frames <= 0:
        return []
    starts = [0]
    # A further segment exists while frames remain past the end of the previous (full) one.
    while starts[-1] + spec.segment_frames < num_frames:
        starts.append(starts[-1] + spec.segment_frames - spec.effective_overlap)
    return starts


def stage_video(row: dict[str, Any], spec: FrameSpec, compression: str = DEFAULT_COMPRESSION) -> dict[str, Any]:
    """Ray ``map`` stage: decode one input once, streaming its segments into staged Parquet part files.

    Required columns: ``video_id``, ``uri``, ``staging`` (URI prefix of this video's part files).
    Added columns: ``ok`` (bool), ``stage`` and ``error`` (why it failed, else ``""``), ``num_frames``
    (decoded), ``fps``, ``height``, ``width`` (native), ``parts`` (part files written: ``_part_uri(staging, i)``
    for ``i < parts``; 0 when it failed, its staged files then deleted).

    Raises:
        StorageError: If the object store fails (reading the input or writing the parts): not a property of the
            input, so the task is retried (see :func:`_retry_storage_errors`) and the job fails if it persists.
    """
    out = dict(row, ok=False, stage="", error="", num_frames=0, fps=float("nan"), height=0, width=0, parts=0)
    reuse_freed_memory()  # decoded chunks (39 MB at 480p, 199 MB at 1080p) would be mapped and faulted in anew
    try:
        source = FrameSource(row["uri"])
    except storage.StorageError:
        raise
    except Exception as exc:  # any failure to open is a property of the input: quarantine, never crash the job
        return dict(out, stage="probe", error=_describe(exc))
    with source:
        info = source.info
        out.update(fps=info.fps, height=info.height, width=info.width)
        writer = _PartWriter(row["staging"], row["video_id"], info.fps, parquet_compression(compression))
        num_frames = 0
        try:
            for start, frames in _decoding(source.segments(spec)):
                writer.write(start, frames)
                num_frames = start + len(frames)
            parts = writer.close()
        except _DecodeFailed as failed:
            writer.discard()
            return dict(out, stage="decode", error=_describe(failed.cause))
        except BaseException:
            writer.discard()
            raise
    return dict(out, ok=True, num_frames=num_frames, parts=parts)


def build_clip_store(
    dataset: str | DatasetAdapter,
    root: str,
    out: str,
    spec: str | FrameSpec,
    *,
    size: tuple[int, int] | None = None,
    segment_frames: int | None = None,
    splits: Sequence[str] = SPLITS,
    limit: int | None = None,
    overwrite: bool = False,
    dataset_options: Mapping[str, Any] | None = None,
    compression: str = DEFAULT_COMPRESSION,
) -> IngestSummary:
    """Ingest one dataset into a clip store at ``out`` (see the module docstring for the stages).

    Args:
        dataset: Adapter name (``folder``, ``ped2``, ``avenue``, ``shanghaitech``, ``shanghaitech_weak``,
            ``ucf_crime``) or an adapter instance (e.g. an explicit list of archive videos); its ``name`` is
            the ``dataset`` partition.
        root: Dataset root URI.
        out: Store URI (local or ``s3://``).
        spec: Registered frame spec name (``luss_ae``, ``std``, ``ssmtl``, ``i3d``) or a :class:`FrameSpec`.
        size: ``(height, width)`` overriding the spec's frame size.
        segment_frames: Overrides the spec's segment length S.
        splits: Splits to ingest.
        limit: At most this many videos per split (smoke runs).
        overwrite: Delete an existing store at ``out`` first (otherwise an existing store is refused).
        dataset_options: Adapter options (e.g. ``train_list`` for ``shanghaitech_weak``).
        compression: Parquet codec of the frames (:func:`parquet_compression`; recorded in ``_store.json``).

    Returns:
        The run's :class:`IngestSummary` (``all_failed`` when no input made it).

    Raises:
        StoreExistsError: If ``out`` exists and ``overwrite`` is false.
        DatasetLayoutError: If the dataset tree is missing pieces (the message shows the expected tree).

    Example:
        >>> build_clip_store("ped2", "data/UCSDped2", "s3://bucket/ped2_luss", "luss_ae")  # doctest: +SKIP
    """
    spec_name = spec if isinstance(spec, str) else "custom"
    codec = parquet_compression(compression)  # a bad value fails before anything is decoded
    frame_spec = effective_spec(get_frame_spec(spec) if isinstance(spec, str) else spec, size, segment_frames)
    if isinstance(dataset, DatasetAdapter):
        if dataset_options:
            raise ValueError("dataset_options configure adapters given by name, not an adapter instance")
        adapter, dataset = dataset, dataset.name
    else:
        adapter = get_dataset(dataset, **dict(dataset_options or {}))
    entries = limit_per_split(adapter.entries(root, splits), limit)
    if not entries:
        raise ValueError(f"{dataset} dataset at {root} has no videos in splits {list(splits)}")
    prepare_store(out, overwrite)

    by_id = {e.video_id: e for e in entries}
    if len(by_id) != len(entries):
        raise ValueError(f"{dataset} at {root}: video ids are not unique across splits")
    staging = storage.join(out, _STAGING_DIR)
    rows = [
        {
            "video_id": e.video_id,
            "dataset": dataset,
            "split": e.split,
            "uri": e.uri,
            "staging": _staging_prefix(staging, i),
        }
        for i, e in enumerate(entries)
    ]
    print(f"[ingest] {dataset}: decoding {len(rows)} videos ({spec_name} frames) into {out}", flush=True)
    staged = _run_staging(rows, frame_spec, compression)
    good, quarantine, labels = _check_videos(entries, staged, frame_spec)
    _commit(out, good)
    if storage.exists(staging):  # rejected videos' parts, and anything a killed attempt left behind
        storage.delete(staging, recursive=True)

    write_manifest(out, [dict(r, video_label=by_id[r["video_id"]].video_label) for r in good])
    write_labels(out, labels)
    write_quarantine(out, quarantine)
    summary = IngestSummary(
        out=out,
        videos_ok=len(good),
        videos_quarantined=len(quarantine),
        frames=sum(r["num_frames"] for r in good),
        segments=sum(len(segment_starts(r["num_frames"], frame_spec)) for r in good),
        quarantine=quarantine,
    )
    source = {
        "dataset": dataset,
        "root": root,
        "options": {k: str(v) for k, v in (dataset_options or {}).items()},
        "splits": list(splits),
        "limit": limit,
        "num_videos": len(entries),
        "manifest_sha256": manifest_sha256(entries, dataset),
    }
    write_store_metadata(out, _store_metadata(spec_name, frame_spec, dataset, good, source, summary, codec))
    return summary


def read_clip_store(uri: str, split: str | None = None) -> ray.data.Dataset:
    """The segment rows of a clip store (``read_store`` plus a check that it is one).

    Raises:
        StoreError: If ``uri`` is not a complete clip store.

    Example:
        >>> from pipelines.windows import segment_windows
        >>> row = read_clip_store("stores/demo", split="test").take(1)[0]  # doctest: +SKIP
        >>> windows, starts = segment_windows(row["frames"], row["start_frame"], window=17)  # doctest: +SKIP
    """
    kind = read_store_metadata(uri).get("store")
    if kind != "clips":
        raise StoreError(f"{uri} is a {kind!r} store, not a clip store")
    return read_store(uri, split=split)


# ----------------------------------------------------------------------------------------------------------------
# Internals


def _run_staging(
    rows: list[dict[str, Any]], spec: FrameSpec, compression: str = DEFAULT_COMPRESSION
) -> list[dict[str, Any]]:
    ds = _retry_storage_errors(ray.data.from_items(rows, override_num_blocks=min(len(rows), _MAX_BLOCKS)))
    # One small row per video in, one status row out: nothing downstream for Ray Data's per-operator reservation
    # to protect, and it kept decode tasks from using every CPU. The 36-video benchmark view on 2 CPUs ran one
    # task at a time for 72 % of the build with it, 9 % without (6.1-6.6 s -> 5.1 s).
    ds.context.op_resource_reservation_enabled = False
    return ds.map(stage_video, fn_kwargs={"spec": spec, "compression": compression}).take_all()


class _DecodeFailed(Exception):
    """A decode error of the input (not of the store), carried out of the write loop."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _decoding(segments: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
    """``segments``, with any decoding error (but a storage outage) raised as :class:`_DecodeFailed`."""
    while True:
        try:
            item = next(segments)
        except StopIteration:
            return
        except storage.StorageError:
            raise
        except Exception as exc:
            raise _DecodeFailed(exc) from exc
        yield item


def _staging_prefix(staging: str, index: int) -> str:
    return storage.join(staging, f"{index:06d}")


def _part_uri(prefix: str, part: int) -> str:
    return f"{prefix}_{part:03d}.parquet"


class _PartWriter:
    """One video's segments -> Parquet part files ``<prefix>_<part>.parquet`` (one row group per segment).

    A new part starts after :data:`_PART_BYTES` of frames. Memory holds one segment (plus the encoder's page
    buffers); S3 output streams upload in parts as they fill. Store errors raise ``StorageError``.
    """

    def __init__(self, prefix: str, video_id: str, fps: float, codec: Mapping[str, Any]) -> None:
        self.prefix, self.video_id, self.fps = prefix, video_id, float(fps)
        self._options = {**_PARQUET_OPTIONS, **codec}
        self.parts = 0
        self._writer: pq.ParquetWriter | None = None
        self._bytes = 0

    def write(self, start: int, frames: np.ndarray) -> None:
        if self._writer is None or self._bytes >= _PART_BYTES:
            self._next_part()
        table = pa.Table.from_arrays(
            [
                pa.array([self.video_id], pa.string()),
                pa.array([start], pa.int64()),
                pa.array([len(frames)], pa.int64()),
                pa.array([self.fps], pa.float64()),
                _binary_value(frames),
            ],
            schema=_SEGMENT_SCHEMA,
        )
        writer = self._writer
        self._io("write", lambda: writer.write_table(table))
        self._bytes += frames.nbytes

    def close(self) -> int:
        """Finish the last part; returns the number of parts written."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._io("write", writer.close)
        return self.parts

    def discard(self) -> None:
        """Best effort: close and delete every part written (the driver deletes all of staging anyway)."""
        with contextlib.suppress(Exception):  # an error is being handled already
            self.close()
        for part in range(self.parts):
            with contextlib.suppress(Exception):
                storage.delete(_part_uri(self.prefix, part))
        self.parts = 0

    def _next_part(self) -> None:
        self.close()
        uri = _part_uri(self.prefix, self.parts)
        storage.makedirs(uri.rsplit("/", 1)[0])  # local folders; a no-op on S3
        fs, path = storage.resolve(uri)
        self._writer = self._io(
            "open", lambda: pq.ParquetWriter(path, _SEGMENT_SCHEMA, filesystem=fs, **self._options)
        )
        self.parts += 1
        self._bytes = 0

    def _io(self, op: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except OSError as exc:  # the store failed, not the input: retried as a task, then the job fails
            uri = _part_uri(self.prefix, max(self.parts - 1, 0))
            raise storage.StorageError(
                f"{op} {uri!r} failed: {type(exc).__name__}: {storage.redact(str(exc))}"
            ) from None


def _binary_value(frames: np.ndarray) -> pa.Array:
    """A one-row ``large_binary`` array over the bytes of ``frames`` (uint8, C order; no copy when contiguous)."""
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    flat = np.ascontiguousarray(frames).reshape(-1)
    offsets = pa.py_buffer(np.array([0, flat.size], np.int64))
    return pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(flat)])


def _commit(out: str, good: list[dict[str, Any]]) -> None:
    """Move the staged parts of the videos that passed every check into their hive partitions."""
    moves = []
    for video in good:
        folder = storage.join(out, DATA_DIR, f"dataset={video['dataset']}", f"split={video['split']}")
        for part in range(video["parts"]):
            src = _part_uri(video["staging"], part)
            moves.append((src, storage.join(folder, src.rsplit("/", 1)[-1])))
    if not moves:
        return
    with ThreadPoolExecutor(max_workers=min(_COMMIT_THREADS, len(moves))) as pool:
        list(pool.map(lambda move: storage.move(*move), moves))


def _check_videos(
    entries: Sequence[VideoEntry], checked: list[dict[str, Any]], spec: FrameSpec
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, np.ndarray]]:
    """Split staged rows into store rows, quarantine rows and frame labels (driver side, manifest order)."""
    results = {row["video_id"]: row for row in checked}
    good, quarantine, labels = [], [], {}
    for entry in entries:
        row = results[entry.video_id]
        num_frames = int(row["num_frames"])
        stage, error = str(row["stage"]), str(row["error"])
        if row["ok"] and num_frames < spec.window:
            stage, error = "length", f"{num_frames} frames, shorter than one window of {spec.window} frames"
        elif row["ok"] and entry.labels is not None:
            try:
                labels[entry.video_id] = entry.labels.materialize(num_frames)
            except LabelMismatchError as exc:
                stage, error = "labels", str(exc)
        if stage:
            quarantine.append({"video_id": entry.video_id, "uri": entry.uri, "stage": stage, "error": error})
            continue
        good.append(
            {
                "video_id": entry.video_id,
                "dataset": str(row["dataset"]),
                "split": entry.split,
                "uri": entry.uri,
                "num_frames": num_frames,
                "fps": float(row["fps"]),
                "height": int(row["height"]),
                "width": int(row["width"]),
                "staging": str(row["staging"]),
                "parts": int(row["parts"]),
            }
        )
    return good, quarantine, labels


def _store_metadata(
    spec_name: str,
    spec: FrameSpec,
    dataset: str,
    good: list[dict[str, Any]],
    source: dict[str, Any],
    summary: IngestSummary,
    codec: Mapping[str, Any],
) -> dict[str, Any]:
    """The clip store's ``_store.json``: what was decoded, how, from what, and when."""
    return {
        "store": "clips",
        "spec_name": spec_name,
        "frame_spec": dict(dataclasses.asdict(spec), effective_overlap=spec.effective_overlap),
        "segment_frames": spec.segment_frames,
        "overlap": spec.effective_overlap,
        "datasets": [dataset],
        "splits": sorted({r["split"] for r in good}, key=SPLITS.index),
        "decoder": decoder_info(),
        "frames_encoding": FRAMES_RAW_UINT8,
        "parquet": {
            "row_group": "one segment",
            "compression": " level ".join(str(v) for v in codec.values()),  # e.g. "zstd level 1", "none"
            "frames": "large_binary, one value per segment, plain, no dictionary, no statistics",
        },
        "package_version": _package_version(),
        "source": source,
        "counts": {
            "videos": summary.videos_ok,
            "quarantined": summary.videos_quarantined,
            "frames": summary.frames,
            "segments": summary.segments,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _retry_storage_errors(ds: ray.data.Dataset) -> ray.data.Dataset:
    """Let Ray Data rerun a map task whose UDF raised ``StorageError`` (an outage longer than storage's retries)."""
    ds.context.retried_map_errors = ["StorageError"]
    ds.context.max_map_retries = _MAP_RETRIES
    return ds


def _describe(exc: BaseException) -> str:
    return storage.redact(f"{type(exc).__name__}: {exc}")


def _package_version() -> str:
    try:
        return importlib.metadata.version("vad-ray")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout without installing
        return "unknown"
