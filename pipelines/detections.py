"""Detection store and object-tube store for object-centric methods (SSMTL, Georgescu et al. CVPR 2021, §3.1).

Two Ray stages:

1. :func:`detect` - clip store -> **detection store**. A background model needs a video's frames in order, so
   this stage runs *per video*: a Ray Data actor pool receives video ids and streams each video's segments
   straight from the clip store's Parquet files (one row group in memory at a time, overlapping frames
   skipped), feeding a streaming :class:`~vad_models.ssmtl.detect.Detector`. Each video's detections are
   written atomically to their own file, so a rerun skips finished videos.
2. :func:`build_tubes` - clip store + detection store -> **tube store**. Clip-store segments overlap by at
   least a tube's length, so every tube is cropped from one segment (:func:`vad_models.ssmtl.tubes.owned_frames`
   assigns each detection frame to exactly one segment): a plain ``map_batches``, no join.

Detection store layout (``DET``)::

    DET/_store.json            {"store": "detections", "clips", "detector" (DetectConfig), "num_classes", ...}
    DET/manifest.parquet       copied from the clip store
    DET/quarantine.parquet     videos whose detection failed (video_id, uri, stage, error)
    DET/data/dataset=<d>/split=<s>/<video_id>.parquet
        video_id, frame_idx (int64), box (float32 [4] x1,y1,x2,y2 px), conf (float32), class_id (int64),
        class_probs (list<float32>, C per row); schema metadata "num_frames" = frames decoded

Tube store layout: the common store layout (``store: "tubes"``), rows ``video_id, dataset, split, frame_idx,
video_frames, height, width, box [4], conf, class_id, class_probs [C], tube uint8 [L, S, S, 3]`` and
``teacher_features [D]`` when built with a teacher.

Example:
    >>> from vad_models.ssmtl.config import DetectConfig, SsmtlConfig
    >>> detect("out/clips", "out/detections", DetectConfig(conf_threshold=0.5))  # doctest: +SKIP
    >>> cfg = SsmtlConfig(tasks=("arrow", "irregularity", "middle"))
    >>> build_tubes("out/clips", "out/detections", "out/tubes", cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
import ray.data  # also registers Ray's tensor extension types, needed to read frames with pyarrow
import torch

from pipelines import storage
from pipelines.clip_store import read_clip_store
from pipelines.config import config_from_dict, config_to_dict
from pipelines.stores import (
    decode_frames,
    frames_shape,
    prepare_store,
    read_manifest,
    read_quarantine,
    read_store_metadata,
    write_quarantine,
    write_store_metadata,
)
from vad_models.ssmtl.config import DetectConfig, SsmtlConfig
from vad_models.ssmtl.detect import FrameDetections, build_detector
from vad_models.ssmtl.teachers import load_teacher, teacher_features
from vad_models.ssmtl.tubes import crop_tubes, owned_frames

__all__ = [
    "DETECTION_SCHEMA",
    "BuildTubes",
    "DetectVideos",
    "build_tubes",
    "detect",
    "detection_file_uri",
    "iter_video_segments",
    "read_detections",
]

log = logging.getLogger(__name__)

DETECTION_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("frame_idx", pa.int64()),
        ("box", pa.list_(pa.float32(), 4)),
        ("conf", pa.float32()),
        ("class_id", pa.int64()),
        ("class_probs", pa.list_(pa.float32())),
    ]
)


def detection_file_uri(det: str, dataset: str, split: str, video_id: str) -> str:
    """Where one video's detections live (ids cannot escape ``det``)."""
    return storage.safe_join(det, "data", f"dataset={dataset}", f"split={split}", f"{video_id}.parquet")


def read_detections(det: str, dataset: str, split: str, video_id: str) -> tuple[pa.Table, int]:
    """One video's detections and its frame count.

    Raises:
        FileNotFoundError: naming the video when the detection store has no file for it.
    """
    uri = detection_file_uri(det, dataset, split, video_id)
    if not storage.exists(uri):
        raise FileNotFoundError(f"no detections for video {video_id!r} ({dataset}/{split}) in {det}: "
                                "run jobs/detect.py")
    table = storage.read_parquet(uri)
    num_frames = int((table.schema.metadata or {}).get(b"num_frames", b"-1"))
    return table, num_frames


# ------------------------------------------------------------------------------------------ reading clip stores


def _tensor_rows(column: pa.ChunkedArray | pa.Array, shape: Sequence[int] | None = None) -> list[np.ndarray]:
    """Per-row numpy arrays of a Ray tensor column (fixed- or variable-shaped) read with pyarrow.

    A clip store's binary ``frames`` column (``"frames_encoding": "raw_uint8"``) is decoded first, given its
    frame ``shape`` ``(H, W, C)`` (:func:`pipelines.stores.frames_shape`).
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if shape is not None and (pa.types.is_large_binary(array.type) or pa.types.is_binary(array.type)):
        array = decode_frames(array, shape)
    if not hasattr(array, "to_numpy") or not isinstance(array.type, pa.ExtensionType):
        raise ValueError(f"frames column has type {array.type}, expected a Ray tensor extension type")
    values = array.to_numpy(zero_copy_only=False)
    return [np.asarray(v) for v in values]


def _segment_index(clips: str, dataset: str, split: str) -> dict[str, list[tuple[int, str, int]]]:
    """video_id -> [(start_frame, file uri, row group)] of one partition, reading only two small columns."""
    index: dict[str, list[tuple[int, str, int]]] = {}
    folder = storage.join(clips, "data", f"dataset={dataset}", f"split={split}")
    for uri in storage.list_files(folder, suffixes=(".parquet",)):
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            for rg in range(parquet.num_row_groups):
                cols = parquet.read_row_group(rg, columns=["video_id", "start_frame"])
                for vid, start in zip(cols["video_id"].to_pylist(), cols["start_frame"].to_pylist()):
                    index.setdefault(vid, []).append((int(start), uri, rg))
    return index


def iter_video_segments(
    clips: str, dataset: str, split: str, video_id: str, index: dict[str, list[tuple[int, str, int]]] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_frame, frames)`` of one video's *new* frames in order (segment overlaps removed).

    Memory holds one row group of the clip store at a time (the one the current segment lives in).

    Args:
        clips: Clip store URI.
        dataset: Dataset partition of the video.
        split: Split partition of the video.
        video_id: The video.
        index: A :func:`_segment_index` of the partition, reused across videos (built when ``None``).
    """
    index = index if index is not None else _segment_index(clips, dataset, split)
    entries = sorted(set(index.get(video_id, [])))
    if not entries:
        raise KeyError(f"video {video_id!r} has no segments in {clips} (dataset={dataset}, split={split})")
    cached: tuple[tuple[str, int], pa.Table] | None = None
    shape: tuple[int, int, int] | None = None
    next_frame = 0
    for start, uri, rg in entries:
        if cached is None or cached[0] != (uri, rg):
            fs, path = storage.resolve(uri)
            with fs.open_input_file(path) as handle:
                table = pq.ParquetFile(handle).read_row_group(rg, columns=["video_id", "start_frame", "frames"])
            cached = ((uri, rg), table)
        table = cached[1]
        rows = [i for i, (v, s) in enumerate(zip(table["video_id"].to_pylist(), table["start_frame"].to_pylist()))
                if v == video_id and s == start]
        column = table["frames"].take(rows[:1])
        if shape is None and not isinstance(column.type, pa.ExtensionType):  # binary frames: their (H, W, C)
            shape = frames_shape(read_store_metadata(clips))
        frames = _tensor_rows(column, shape)[0]
        if start > next_frame:
            raise ValueError(f"video {video_id!r}: frames {next_frame}..{start - 1} are missing from the clip store")
        fresh = frames[next_frame - start :]
        if len(fresh):
            yield next_frame, fresh
            next_frame += len(fresh)


# ----------------------------------------------------------------------------------------------- detection stage


def _detections_table(video_id: str, found: list[FrameDetections], num_frames: int, threshold: float) -> pa.Table:
    parts = [d.keep(d.conf >= threshold) for d in found]
    parts = [d for d in parts if len(d.conf)]
    counts = [len(d.conf) for d in parts]
    boxes = np.concatenate([d.boxes for d in parts]) if parts else np.zeros((0, 4), np.float32)
    probs = [row.tolist() for d in parts for row in d.class_probs]
    table = pa.table(
        {
            "video_id": pa.array([video_id] * sum(counts), pa.string()),
            "frame_idx": pa.array(np.repeat([d.frame_idx for d in parts], counts).astype(np.int64)),
            "box": pa.FixedSizeListArray.from_arrays(pa.array(boxes.reshape(-1).astype(np.float32)), 4),
            "conf": pa.array(np.concatenate([d.conf for d in parts]) if parts else np.zeros(0, np.float32)),
            "class_id": pa.array(np.concatenate([d.class_id for d in parts]) if parts else np.zeros(0, np.int64)),
            "class_probs": pa.array(probs, pa.list_(pa.float32())),
        },
        schema=DETECTION_SCHEMA,
    )
    return table.replace_schema_metadata({"num_frames": str(num_frames)})


class DetectVideos:
    """Ray Data actor: detect objects in whole videos, one detection file per video.

    Required columns: ``video_id``, ``dataset``, ``split`` (one row per video).
    Added columns: ``num_frames``, ``num_detections``, ``num_classes``, ``status`` (``ok``/``failed``), ``error``.
    """

    def __init__(self, clips: str, out: str, detect_cfg: dict[str, Any]) -> None:
        self.clips, self.out = clips, out
        self.cfg = config_from_dict(DetectConfig, detect_cfg)
        self.detector = build_detector(self.cfg)  # loaded once per actor (TorchScript weights, kernels)
        self._indexes: dict[tuple[str, str], dict[str, list[tuple[int, str, int]]]] = {}

    def _detect_video(self, dataset: str, split: str, video_id: str) -> tuple[int, int]:
        key = (dataset, split)
        if key not in self._indexes:
            self._indexes[key] = _segment_index(self.clips, dataset, split)
        self.detector.reset()
        found: list[FrameDetections] = []
        num_frames = 0
        for start, frames in iter_video_segments(self.clips, dataset, split, video_id, self._indexes[key]):
            found += self.detector.update(frames, start)
            num_frames = start + len(frames)
        found += self.detector.flush()
        table = _detections_table(video_id, found, num_frames, self.cfg.conf_threshold)
        storage.write_parquet_atomic(detection_file_uri(self.out, dataset, split, video_id), table)
        return num_frames, table.num_rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list[Any]] = {k: [] for k in ("video_id", "num_frames", "num_detections", "num_classes",
                                                      "status", "error")}
        for vid, dataset, split in zip(batch["video_id"], batch["dataset"], batch["split"]):
            status, error, frames, count = "ok", "", 0, 0
            try:
                frames, count = self._detect_video(str(dataset), str(split), str(vid))
            except Exception as exc:  # one bad video must not stop the run; it is quarantined
                status, error = "failed", storage.redact(f"{type(exc).__name__}: {exc}")
            for key, value in zip(rows, (str(vid), frames, count, int(self.detector.num_classes), status, error)):
                rows[key].append(value)
        return {k: np.asarray(v, dtype=object if k in ("video_id", "status", "error") else np.int64)
                for k, v in rows.items()}


def _copy_sidecars(clips: str, out: str, names: tuple[str, ...]) -> None:
    for name in names:
        source = storage.join(clips, name)
        if storage.exists(source):
            storage.write_bytes_atomic(storage.join(out, name), storage.read_bytes(source))


def detect(
    clips: str,
    out: str,
    cfg: DetectConfig | None = None,
    *,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the detector over every video of a clip store into a detection store (resumable).

    Args:
        clips: Clip store URI (RGB frames, e.g. frame spec ``ssmtl``).
        out: Detection store URI.
        cfg: Detector settings (default: the offline background detector at confidence 0.8).
        concurrency: Detection actors (each handles whole videos).
        num_gpus: GPUs per actor (for a TorchScript detector).
        overwrite: Redo videos that already have a detection file.

    Returns:
        The metadata written to ``OUT/_store.json`` (with per-run counts).

    Raises:
        ValueError: the input is not an RGB clip store, or the store was detected with other settings.
    """
    cfg = cfg or DetectConfig()
    meta = read_store_metadata(clips)
    if meta.get("store") != "clips" or int(meta.get("frame_spec", {}).get("channels", 3)) != 3:
        raise ValueError(f"{clips} must be an RGB clip store (store 'clips', 3 channels), got {meta.get('store')!r}")
    previous = storage.join(out, "_store.json")
    if storage.exists(previous) and not overwrite:
        old = storage.read_json(previous).get("detector")
        if old != config_to_dict(cfg):
            raise ValueError(f"{out} was detected with {old}; pass overwrite=True to redo it with "
                             f"{config_to_dict(cfg)}")
    manifest = read_manifest(clips).to_pylist()
    todo = [
        {"video_id": r["video_id"], "dataset": r["dataset"], "split": r["split"]}
        for r in manifest
        if overwrite or not storage.exists(detection_file_uri(out, r["dataset"], r["split"], r["video_id"]))
    ]
    log.info("detecting objects in %d of %d videos with %s", len(todo), len(manifest), cfg.detector)
    results: list[dict[str, Any]] = []
    if todo:
        results = (
            ray.data.from_items(todo)
            .map_batches(
                DetectVideos,
                fn_constructor_kwargs={"clips": clips, "out": out, "detect_cfg": config_to_dict(cfg)},
                batch_size=1,
                batch_format="numpy",
                concurrency=concurrency,
                num_gpus=num_gpus or None,
            )
            .take_all()
        )
    failed = [r for r in results if r["status"] != "ok"]
    uris = {r["video_id"]: r.get("uri", "") for r in manifest}
    # this run's failures only: videos that failed before and now succeeded leave the quarantine
    write_quarantine(out, [{"video_id": r["video_id"], "uri": uris.get(r["video_id"], ""), "stage": "detect",
                            "error": r["error"]} for r in failed])
    _copy_sidecars(clips, out, ("manifest.parquet",))
    num_classes = max([int(r["num_classes"]) for r in results if r["status"] == "ok"], default=0)
    if storage.exists(previous):
        num_classes = num_classes or int(storage.read_json(previous).get("num_classes", 0))
    out_meta = {
        "store": "detections",
        "clips": clips,
        "spec_name": meta.get("spec_name"),
        "frame_spec": meta.get("frame_spec"),
        "datasets": meta.get("datasets", []),
        "splits": meta.get("splits", []),
        "detector": config_to_dict(cfg),
        "num_classes": num_classes,
        "created": datetime.now(timezone.utc).isoformat(),
        "videos_detected": len(results) - len(failed),
        "videos_failed": len(failed),
        "detections": int(sum(int(r["num_detections"]) for r in results)),
    }
    storage.write_json_atomic(previous, out_meta)
    return out_meta


# ---------------------------------------------------------------------------------------------------- tube stage


class BuildTubes:
    """Ray Data actor: clip-store segments -> object tubes of the detections each segment owns.

    Required columns: ``video_id, dataset, split, start_frame, frames`` (clip-store rows).
    Added columns: the tube-store row (see the module docstring); the frames are dropped.
    """

    def __init__(
        self,
        detections: str,
        overlap: int,
        cfg: dict[str, Any],
        num_classes: int,
        teacher: str | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self.detections, self.overlap, self.num_classes, self.skip = detections, overlap, num_classes, skip
        self.cfg = config_from_dict(SsmtlConfig, cfg)
        self.teacher = None
        if teacher is not None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            self.teacher = load_teacher(teacher, dim=self.cfg.teacher_dim, device=device)
        self._video: tuple[tuple[str, str, str], pa.Table, int] | None = None

    def _video_detections(self, dataset: str, split: str, video_id: str) -> tuple[pa.Table, int]:
        key = (dataset, split, video_id)
        if self._video is None or self._video[0] != key:  # segments of one video arrive together, mostly
            table, num_frames = read_detections(self.detections, dataset, split, video_id)
            table = table.filter(pc.greater_equal(table["conf"], self.cfg.detect.conf_threshold))
            self._video = (key, table, num_frames)
        return self._video[1], self._video[2]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [self._segment(batch, i) for i in range(len(batch["video_id"]))]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _segment(self, batch: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        vid, dataset, split = str(batch["video_id"][i]), str(batch["dataset"][i]), str(batch["split"][i])
        frames, start = np.asarray(batch["frames"][i]), int(batch["start_frame"][i])
        if vid in self.skip:  # detection failed (quarantined): no tubes
            table, video_frames = DETECTION_SCHEMA.empty_table(), start + len(frames)
        else:
            table, video_frames = self._video_detections(dataset, split, vid)
        video_frames = max(video_frames, start + len(frames))
        lo, hi = owned_frames(start, len(frames), self.overlap, video_frames)
        frame_idx = table["frame_idx"].to_numpy()
        take = np.flatnonzero((frame_idx >= lo) & (frame_idx <= hi))
        rows = table.take(pa.array(take, pa.int64()))
        n, cfg = len(take), self.cfg
        boxes = np.asarray(rows["box"].to_pylist(), np.float32).reshape(n, 4)
        probs = np.asarray(rows["class_probs"].to_pylist(), np.float32).reshape(n, self.num_classes)
        tubes = crop_tubes(frames, start, video_frames, frame_idx[take], boxes, cfg.tube_frames, cfg.crop_size)
        out = {
            "video_id": np.asarray([vid] * n, dtype=object),
            "dataset": np.asarray([dataset] * n, dtype=object),
            "split": np.asarray([split] * n, dtype=object),
            "frame_idx": frame_idx[take].astype(np.int64),
            "video_frames": np.full(n, video_frames, np.int64),
            "height": np.full(n, frames.shape[1], np.int64),
            "width": np.full(n, frames.shape[2], np.int64),
            "box": boxes,
            "conf": rows["conf"].to_numpy().astype(np.float32),
            "class_id": rows["class_id"].to_numpy().astype(np.int64),
            "class_probs": probs,
            "tube": tubes,
        }
        if self.teacher is not None:  # eq. 4 target: teacher features of the middle crop
            middle = torch.from_numpy(tubes[:, cfg.tube_frames // 2]).permute(0, 3, 1, 2).float().div(255.0)
            feats = teacher_features(self.teacher, middle).numpy() if n else np.zeros((0, cfg.teacher_dim))
            out["teacher_features"] = feats.astype(np.float32)
        return out


def build_tubes(
    clips: str,
    detections: str,
    out: str,
    cfg: SsmtlConfig | None = None,
    *,
    teacher: str | None = None,
    split: str | None = None,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Crop object tubes for every stored detection into a tube store.

    Args:
        clips: Clip store URI the detections were made on.
        detections: Detection store URI.
        out: Tube store URI.
        cfg: Tube length (``tube_frames``), crop size, confidence threshold, teacher size.
        teacher: Classifier-teacher TorchScript path (or ``"random"`` in tests) for the distillation target;
            ``None`` stores no teacher features (train without ``distill`` then).
        split: Only this split (``None``: all).
        concurrency: Tube-building actors.
        num_gpus: GPUs per actor (for the teacher).
        overwrite: Replace an existing tube store.

    Returns:
        The metadata written to ``OUT/_store.json``.

    Raises:
        ValueError: mismatched stores, a clip-store overlap shorter than a tube, a detection threshold above
            ``cfg.detect.conf_threshold``, videos without detections, or no tube at all.
        StoreExistsError: ``out`` exists and ``overwrite`` is false.
    """
    cfg = cfg or SsmtlConfig()
    clip_meta, det_meta = read_store_metadata(clips), storage.read_json(storage.join(detections, "_store.json"))
    if det_meta.get("store") != "detections":
        raise ValueError(f"{detections} is not a detection store (run jobs/detect.py first)")
    if det_meta.get("frame_spec") != clip_meta.get("frame_spec"):
        raise ValueError(f"{detections} was detected on frames {det_meta.get('frame_spec')}, but {clips} holds "
                         f"{clip_meta.get('frame_spec')}: boxes would not match; detect on this clip store")
    if det_meta["detector"]["conf_threshold"] > cfg.detect.conf_threshold:
        raise ValueError(f"detections were kept at confidence >= {det_meta['detector']['conf_threshold']}, above "
                         f"detect.conf_threshold={cfg.detect.conf_threshold}: rerun detection with the lower threshold")
    spec = clip_meta.get("frame_spec", {})
    window, overlap = int(spec.get("window", 0)), spec.get("overlap")
    overlap = window - 1 if overlap is None else int(overlap)
    if overlap < cfg.tube_frames - 1:
        raise ValueError(f"tubes of {cfg.tube_frames} frames need clip segments overlapping by >= "
                         f"{cfg.tube_frames - 1} frames, {clips} overlaps by {overlap}: ingest with --spec ssmtl")
    if "distill" in cfg.tasks and cfg.teacher_dim and teacher is None:
        log.warning("no teacher given: the tube store has no teacher_features, so train with 'distill' removed "
                    "from tasks (or teacher_dim=0)")
    det_quarantine = read_quarantine(detections).to_pylist()
    skip = frozenset(r["video_id"] for r in det_quarantine)
    manifest = [r for r in read_manifest(clips).to_pylist() if split is None or r["split"] == split]
    missing = [r["video_id"] for r in manifest if r["video_id"] not in skip
               and not storage.exists(detection_file_uri(detections, r["dataset"], r["split"], r["video_id"]))]
    if missing:
        raise ValueError(f"{len(missing)} videos have no detections yet (e.g. {missing[:3]}): run jobs/detect.py")
    prepare_store(out, overwrite)
    tubes = read_clip_store(clips, split=split).map_batches(
        BuildTubes,
        fn_constructor_kwargs={"detections": detections, "overlap": overlap, "cfg": config_to_dict(cfg),
                               "num_classes": int(det_meta["num_classes"]), "teacher": teacher, "skip": skip},
        batch_size=1,
        batch_format="numpy",
        concurrency=concurrency,
        num_gpus=num_gpus or None,
    )
    fs, path = storage.resolve(storage.join(out, "data"))
    tubes.write_parquet(path, filesystem=fs, partition_cols=["dataset", "split"])
    if not storage.exists(storage.join(out, "data")) or not storage.list_files(storage.join(out, "data")):
        raise ValueError(f"no tubes were built: {detections} holds no detection with confidence >= "
                         f"{cfg.detect.conf_threshold}" + (f" in split {split!r}" if split else ""))
    _copy_sidecars(clips, out, ("manifest.parquet", "labels.parquet"))
    write_quarantine(out, read_quarantine(clips).to_pylist() + det_quarantine)
    meta = {
        **{k: clip_meta[k] for k in ("spec_name", "frame_spec", "datasets") if k in clip_meta},
        "splits": [split] if split else clip_meta.get("splits", []),
        "store": "tubes",
        "clips": clips,
        "detections": detections,
        "detector": det_meta["detector"],
        "num_classes": det_meta.get("num_classes"),
        "tube": {"frames": cfg.tube_frames, "crop_size": cfg.crop_size, "conf_threshold": cfg.detect.conf_threshold,
                 "centre_index": cfg.tube_frames // 2, "out_of_video": "clamped to the first/last frame"},
        "teacher": None if teacher is None else {"path": teacher, "dim": cfg.teacher_dim},
        "config": config_to_dict(cfg),
    }
    write_store_metadata(out, meta)
    return meta
