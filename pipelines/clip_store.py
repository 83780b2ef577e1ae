"""Clip store: a dataset's videos decoded into overlapping frame segments, as hive-partitioned Parquet.

Pipeline (Ray Data; one block per video, so one task decodes one video on one core):

1. **Manifest** (driver): the dataset adapter lists the videos and their labels.
2. **Validation pass** (``map``): :func:`validate_video` probes each input and decodes every frame through the
   same path the write pass uses, counting them. Inputs that fail go to quarantine with stage ``probe`` or
   ``decode``.
3. **Checks** (driver): videos shorter than one window (stage ``length``) and videos whose frame labels do not
   fit the decoded frame count (stage ``labels``) are quarantined too; labels are never truncated or padded.
4. **Write pass** (``flat_map``): :func:`decode_segments` streams each remaining video as segments of S frames
   overlapping by ``FrameSpec.effective_overlap`` (``window - 1`` by default) into
   ``STORE/data/dataset=<name>/split=<split>/``.
5. ``manifest.parquet``, ``labels.parquet``, ``quarantine.parquet``, and ``_store.json`` **last**.

**No partial videos.** A video reaches the write pass only after a full decode succeeded, so a corrupt,
truncated or unreadable input leaves no segment behind. Decoding is streamed in both passes, so memory stays
bounded by one segment plus one decode chunk whatever the video length; the price is decoding every video twice.
If a video that validated fails in the write pass anyway (e.g. the file changed underneath), the task raises,
the job fails and no ``_store.json`` is written: readers refuse the store and a rerun needs ``--overwrite``.

Example:
    >>> summary = build_clip_store("folder", "data/corpus", "stores/demo", "luss_ae", size=(64, 64))  # doctest: +SKIP
    >>> print(summary.line())  # doctest: +SKIP
    [ingest] stores/demo: 5 videos ok, 0 quarantined, 320 frames in 5 segments
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import ray

from pipelines import storage
from pipelines.datasets import SPLITS, DatasetAdapter, LabelMismatchError, VideoEntry, get_dataset
from pipelines.decode import count_frames, decoder_info, iter_segments, probe
from pipelines.sources import limit_per_split, manifest_sha256
from pipelines.stores import (
    DATA_DIR,
    StoreError,
    prepare_store,
    read_store,
    read_store_metadata,
    write_labels,
    write_manifest,
    write_quarantine,
    write_store_metadata,
)
from vad_models.base import FrameSpec, get_frame_spec

__all__ = [
    "IngestSummary",
    "build_clip_store",
    "decode_segments",
    "effective_spec",
    "read_clip_store",
    "segment_starts",
    "validate_video",
]

_MAX_BLOCKS = 10_000  # one block (= one decode task) per video, up to this many
_MAP_RETRIES = 3  # task-level retries of StorageError, on top of pipelines.storage's per-request retries


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


def validate_video(row: dict[str, Any], spec: FrameSpec) -> dict[str, Any]:
    """Ray ``map`` stage: probe one input and decode all of it, counting frames.

    Required columns: ``video_id``, ``uri``.
    Added columns: ``ok`` (bool), ``stage`` and ``error`` (why it failed, else ``""``), ``num_frames``
    (decoded), ``fps``, ``height``, ``width`` (native).
    """
    out = dict(row, ok=False, stage="", error="", num_frames=0, fps=float("nan"), height=0, width=0)
    try:
        info = probe(row["uri"])
    except storage.StorageError:
        raise  # the object store failed, not the input: the task is retried (see _retry_storage_errors)
    except Exception as exc:  # any failure to open is a property of the input: quarantine, never crash the job
        return dict(out, stage="probe", error=_describe(exc))
    out.update(fps=info.fps, height=info.height, width=info.width)
    try:
        num_frames = count_frames(row["uri"], spec)
    except storage.StorageError:
        raise
    except Exception as exc:
        return dict(out, stage="decode", error=_describe(exc))
    return dict(out, ok=True, num_frames=num_frames)


def decode_segments(row: dict[str, Any], spec: FrameSpec) -> Iterator[dict[str, Any]]:
    """Ray ``flat_map`` stage: one validated video -> its segment rows, streamed.

    Required columns: ``video_id``, ``dataset``, ``split``, ``uri``, ``fps``, ``num_frames`` (validated count).
    Output columns: ``video_id, dataset, split, start_frame, num_frames, fps, frames`` (uint8 ``[n, H, W, C]``).

    Raises:
        RuntimeError: If the video decodes differently from its validation pass (fails the job on purpose, so
            that no store with a partial video is ever committed).
    """
    decoded = 0
    try:
        for start, frames in iter_segments(row["uri"], spec):
            decoded = start + len(frames)
            yield {
                "video_id": row["video_id"],
                "dataset": row["dataset"],
                "split": row["split"],
                "start_frame": np.int64(start),
                "num_frames": np.int64(len(frames)),
                "fps": np.float64(row["fps"]),
                "frames": frames,
            }
    except storage.StorageError:
        raise
    except Exception as exc:
        raise RuntimeError(f"{row['uri']} failed in the write pass after validating: {_describe(exc)}") from exc
    if decoded != row["num_frames"]:
        raise RuntimeError(
            f"{row['uri']} decoded to {decoded} frames in the write pass but {row['num_frames']} when validated"
        )


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

    Returns:
        The run's :class:`IngestSummary` (``all_failed`` when no input made it).

    Raises:
        StoreExistsError: If ``out`` exists and ``overwrite`` is false.
        DatasetLayoutError: If the dataset tree is missing pieces (the message shows the expected tree).

    Example:
        >>> build_clip_store("ped2", "data/UCSDped2", "s3://bucket/ped2_luss", "luss_ae")  # doctest: +SKIP
    """
    spec_name = spec if isinstance(spec, str) else "custom"
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
    rows = [{"video_id": e.video_id, "dataset": dataset, "split": e.split, "uri": e.uri} for e in entries]
    print(f"[ingest] {dataset}: validating {len(rows)} videos (full decode, {spec_name} frames)", flush=True)
    checked = _run_validation(rows, frame_spec)
    good, quarantine, labels = _check_videos(entries, checked, frame_spec)

    if good:
        print(f"[ingest] writing segments of {len(good)} videos to {out} ({len(quarantine)} quarantined)", flush=True)
        fs, path = storage.resolve(storage.join(out, DATA_DIR))
        ds = _retry_storage_errors(ray.data.from_items(good, override_num_blocks=min(len(good), _MAX_BLOCKS)))
        ds = ds.flat_map(decode_segments, fn_kwargs={"spec": frame_spec})
        ds.write_parquet(path, filesystem=fs, partition_cols=["dataset", "split"])

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
    write_store_metadata(out, _store_metadata(spec_name, frame_spec, dataset, good, source, summary))
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


def _run_validation(rows: list[dict[str, Any]], spec: FrameSpec) -> list[dict[str, Any]]:
    ds = _retry_storage_errors(ray.data.from_items(rows, override_num_blocks=min(len(rows), _MAX_BLOCKS)))
    return ds.map(validate_video, fn_kwargs={"spec": spec}).take_all()


def _check_videos(
    entries: Sequence[VideoEntry], checked: list[dict[str, Any]], spec: FrameSpec
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, np.ndarray]]:
    """Split validated rows into store rows, quarantine rows and frame labels (driver side, manifest order)."""
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

