"""I3D ten-crop feature store: clip store (spec ``i3d``) → Ray Data actor pool → Parquet; RTFM ``.npy`` export.

Layout (the common store layout, ``store: "features"``)::

    STORE/_store.json         written last; pins backbone, weights sha256 (or "random-init"), resize,
                              crop size and order, normalisation, snippet length
    STORE/manifest.parquet    copied from the clip store
    STORE/labels.parquet      copied from the clip store (when it has one)
    STORE/quarantine.parquet  the clip store's, plus videos shorter than one snippet
    STORE/data/dataset=<name>/split=<split>/*.parquet
        video_id, snippet_idx, start_frame, video_label (int8), features (float32 [10, F])

Snippets are non-overlapping 16-frame windows starting at multiples of 16; the clip store's segments have no
overlap and a length that is a multiple of 16, so every snippet lies inside one row and the tail of a video that
does not fill a snippet is dropped (REFERENCE.md §2).

Example:
    >>> from pipelines.feature_store import ExtractOptions, extract_features
    >>> from vad_models.i3d.config import I3DConfig
    >>> opts = ExtractOptions(weights="i3d_r50.pt", use_gpu=True)
    >>> meta = extract_features("s3://bucket/clips", "s3://bucket/features", I3DConfig(), opts)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import ray
import torch

from pipelines import storage
from pipelines.clip_store import read_clip_store
from pipelines.runtime import require_gpus, reuse_freed_memory, reuse_freed_memory_remote_args
from pipelines.stores import (
    DATA_DIR,
    prepare_store,
    read_labels,
    read_manifest,
    read_quarantine,
    read_store,
    read_store_metadata,
    write_quarantine,
    write_store_metadata,
)
from vad_models.i3d.config import I3DConfig
from vad_models.i3d.extract import snippet_features
from vad_models.i3d.model import RANDOM_INIT_SCHEME, I3DResNet50, init_random_features
from vad_models.i3d.transforms import segment_snippets
from vad_models.i3d.weights import KEY_LAYOUTS, load_i3d_weights

__all__ = [
    "ExtractOptions",
    "I3DSnippetExtractor",
    "build_backbone_state",
    "export_rtfm",
    "extract_features",
    "rtfm_gt",
]

log = logging.getLogger(__name__)

FEATURE_COLUMNS = ("video_id", "snippet_idx", "start_frame", "video_label", "features")


@dataclass(frozen=True)
class ExtractOptions:
    """How an extraction run executes (what it computes is pinned by :class:`~vad_models.i3d.config.I3DConfig`).

    Attributes:
        weights: Path of the user's I3D state dict (``.pt``/``.pth``/``.npz``); required unless ``random_init``.
        weights_layout: Key names of ``weights``: ``"native"`` or ``"caffe2"`` (converted on load).
        random_init: Use a randomly initialised backbone (tests, pipeline smoke runs; the scheme is
            :func:`~vad_models.i3d.model.init_random_features`); recorded in the metadata.
        seed: Seed of the random initialisation (the driver builds the weights once, so every actor agrees).
        use_gpu: One GPU per actor; fails fast when the cluster has none.
        batch_size: Snippets per forward pass (each is 10 crops; 20 in the field recipe).
        rows_per_batch: Clip-store segments per actor call.
        concurrency: Extractor actors.
        overwrite: Replace an existing feature store at the output URI.
    """

    weights: str | None = None
    weights_layout: str = "native"
    random_init: bool = False
    seed: int = 0
    use_gpu: bool = False
    batch_size: int = 20
    rows_per_batch: int = 2
    concurrency: int = 1
    overwrite: bool = False

    def __post_init__(self) -> None:
        if (self.weights is None) == (not self.random_init):
            raise ValueError("give exactly one of --weights PATH (a user-supplied I3D state dict) or --random-init")
        if self.weights_layout not in KEY_LAYOUTS:
            raise ValueError(f"weights_layout must be one of {KEY_LAYOUTS}, got {self.weights_layout!r}")
        for name in ("batch_size", "rows_per_batch", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"ExtractOptions.{name} must be >= 1, got {getattr(self, name)}")


def build_backbone_state(cfg: I3DConfig, opts: ExtractOptions) -> tuple[dict[str, torch.Tensor], str]:
    """Build the backbone once on the driver: loaded weights or seeded random features.

    Random init is :func:`~vad_models.i3d.model.init_random_features` (orthogonal filters, batch norm at identity),
    deterministic per ``opts.seed``.

    Returns:
        ``(state_dict, weights_record)`` where the record is the weights file's sha256 or ``"random-init"``.
    """
    with torch.random.fork_rng(devices=[]):  # the constructor's init must not touch the caller's RNG
        model = I3DResNet50(cfg.base_channels)
    if opts.random_init:
        record = "random-init"
        init_random_features(model, opts.seed)
    else:
        record = load_i3d_weights(model, str(opts.weights), opts.weights_layout)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, record


class I3DSnippetExtractor:
    """Ray Data actor: clip-store segments → ten-crop I3D features, one output row per 16-frame snippet.

    Required columns: ``video_id``, ``start_frame``, ``frames`` (uint8 ``[n, H, W, 3]`` per row).
    Added columns: ``video_id``, ``snippet_idx``, ``start_frame``, ``video_label`` (int8), ``features``
    (float32 ``[n_snippets, 10, F]``); ``dataset`` and ``split`` are passed through for partitioning.
    """

    def __init__(
        self,
        cfg: I3DConfig,
        state: Any,
        video_labels: dict[str, int],
        batch_size: int,
        use_gpu: bool,
    ) -> None:
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("the I3D extractor actor was given a GPU slot but torch sees no CUDA device")
        reuse_freed_memory()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        if isinstance(state, ray.ObjectRef):
            state = ray.get(state)
        self.model = I3DResNet50(cfg.base_channels)
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()
        self.cfg, self.labels, self.batch_size = cfg, video_labels, batch_size

    def _features(self, snippets: list[np.ndarray]) -> np.ndarray:
        """``[k, T, H, W, 3]`` uint8 snippets → ``[k, 10, F]`` float32 features, ``batch_size`` at a time."""
        return snippet_features(self.model, snippets, self.cfg, self.batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        snippets: list[np.ndarray] = []
        cols: dict[str, list[Any]] = {k: [] for k in ("video_id", "dataset", "split", "snippet_idx", "start_frame")}
        for i, video_id in enumerate(batch["video_id"]):
            frames = np.asarray(batch["frames"][i])
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"video {video_id}: clip-store frames must be [n, H, W, 3], got {frames.shape}")
            views, starts = segment_snippets(frames, int(batch["start_frame"][i]), self.cfg.snippet_frames)
            snippets.extend(views)
            n = len(starts)
            cols["video_id"] += [str(video_id)] * n
            cols["dataset"] += [str(batch["dataset"][i])] * n
            cols["split"] += [str(batch["split"][i])] * n
            cols["start_frame"] += starts.tolist()
            cols["snippet_idx"] += (starts // self.cfg.snippet_frames).tolist()
        return {
            "video_id": np.asarray(cols["video_id"], dtype=object),
            "dataset": np.asarray(cols["dataset"], dtype=object),
            "split": np.asarray(cols["split"], dtype=object),
            "snippet_idx": np.asarray(cols["snippet_idx"], dtype=np.int64),
            "start_frame": np.asarray(cols["start_frame"], dtype=np.int64),
            "video_label": np.asarray([self.labels.get(v, -1) for v in cols["video_id"]], dtype=np.int8),
            "features": self._features(snippets),
        }


def _check_clip_store(data: str, meta: dict[str, Any], cfg: I3DConfig) -> dict[str, Any]:
    """The clip store must hold what the pinned extractor expects; returns its frame spec."""
    if meta.get("store") != "clips":
        raise ValueError(f"{data} is a {meta.get('store')!r} store; I3D extraction reads a clip store (--spec i3d)")
    spec = dict(meta.get("frame_spec") or {})
    size = (spec.get("height"), spec.get("width"))
    if size != (cfg.height, cfg.width) or spec.get("channels") != 3:
        raise ValueError(
            f"clip store {data} holds {size[0]}x{size[1]}x{spec.get('channels')} frames but the I3D extractor is "
            f"pinned to {cfg.height}x{cfg.width}x3 (ingest with --spec i3d, or set height/width explicitly)"
        )
    overlap = spec.get("effective_overlap", spec.get("overlap"))
    segment = int(spec.get("segment_frames") or 0)
    if overlap != 0 or segment % cfg.snippet_frames:
        raise ValueError(
            f"clip store {data} has segments of {segment} frames overlapping by {overlap}; I3D snippets need "
            f"overlap 0 and a segment length that is a multiple of {cfg.snippet_frames} (the 'i3d' frame spec)"
        )
    return spec


def _package_version() -> str:
    try:
        return importlib_metadata.version("vad-ray")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _feature_metadata(
    clip_meta: dict[str, Any], spec: dict[str, Any], cfg: I3DConfig, opts: ExtractOptions, record: str
) -> dict[str, Any]:
    mean, std = cfg.norm_mean_std
    return {
        "store": "features",
        "spec_name": "i3d",
        "frame_spec": spec,
        "datasets": clip_meta.get("datasets", []),
        "splits": clip_meta.get("splits", []),
        "package_version": _package_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_store": {k: clip_meta.get(k) for k in ("spec_name", "created", "package_version", "decoder")},
        "columns": list(FEATURE_COLUMNS),
        "extractor": {
            "backbone": "i3d_resnet50",
            "config": asdict(cfg),
            "feature_dim": cfg.feature_dim,
            "num_crops": 10,
            "weights": record,
            "weights_file": None if opts.random_init else str(opts.weights),
            "weights_layout": None if opts.random_init else opts.weights_layout,
            "random_init_seed": opts.seed if opts.random_init else None,
            "random_init_scheme": RANDOM_INIT_SCHEME if opts.random_init else None,
            "snippet_frames": cfg.snippet_frames,
            "snippet_overlap": 0,
            "tail": "dropped",
            "segment_frames": int(spec["segment_frames"]),
            "segment_overlap": 0,
            "resize": {"height": cfg.height, "width": cfg.width, "done_at": "ingest (clip store)"},
            "crop_size": cfg.crop_size,
            "crop_order": list(cfg.crop_names),
            "normalisation": {"name": cfg.normalisation, "mean": mean, "std": std, "formula": "(x - mean) / std"},
        },
    }


def _copy_sidecars(data: str, out: str, short_videos: list[dict[str, Any]]) -> None:
    """Manifest and labels as the clip store has them; its quarantine plus videos too short for one snippet."""
    for name in ("manifest.parquet", "labels.parquet"):
        source = storage.join(data, name)
        if storage.exists(source):
            storage.write_bytes_atomic(storage.join(out, name), storage.read_bytes(source))
    write_quarantine(out, [*read_quarantine(data).to_pylist(), *short_videos])


def extract_features(data: str, out: str, cfg: I3DConfig, opts: ExtractOptions) -> dict[str, Any]:
    """Extract ten-crop I3D snippet features of every video in a clip store into a feature store.

    Args:
        data: Clip store URI built with the ``i3d`` frame spec (256×340 RGB, 128-frame segments, overlap 0).
        out: Feature store URI (local path or ``s3://``).
        cfg: Pinned backbone and preprocessing (``I3DConfig()`` is the published recipe).
        opts: Weights (``opts.weights`` or ``opts.random_init``) and execution settings.

    Returns:
        The metadata written to ``OUT/_store.json``.

    Raises:
        ValueError: wrong store kind or frame spec, or unusable weights.
        StoreExistsError: ``out`` already holds files and ``opts.overwrite`` is false.
        RuntimeError: ``use_gpu`` on a cluster without GPUs.
    """
    clip_meta = read_store_metadata(data)
    spec = _check_clip_store(data, clip_meta, cfg)
    if opts.use_gpu:
        require_gpus(1, "extract")
    state, record = build_backbone_state(cfg, opts)  # bad weights fail before anything at `out` is touched
    prepare_store(out, opts.overwrite)
    manifest = read_manifest(data).to_pylist()
    labels = {r["video_id"]: int(r.get("video_label", -1)) for r in manifest}
    short = [
        {"video_id": r["video_id"], "uri": r.get("uri", ""), "stage": "extract_i3d",
         "error": f"{r['num_frames']} frames: shorter than one {cfg.snippet_frames}-frame snippet"}
        for r in manifest if int(r["num_frames"]) < cfg.snippet_frames
    ]  # fmt: skip
    log.info("extracting I3D features of %d videos (weights %s)", len(manifest), record)
    features = read_clip_store(data).map_batches(
        I3DSnippetExtractor,
        fn_constructor_kwargs={
            "cfg": cfg,
            "state": ray.put(state),
            "video_labels": labels,
            "batch_size": opts.batch_size,
            "use_gpu": opts.use_gpu,
        },
        batch_size=opts.rows_per_batch,
        batch_format="numpy",
        concurrency=opts.concurrency,
        num_gpus=1 if opts.use_gpu else None,
        **reuse_freed_memory_remote_args(),
    )
    fs, path = storage.resolve(storage.join(out, DATA_DIR))
    features.write_parquet(path, filesystem=fs, partition_cols=["dataset", "split"])
    if not storage.exists(storage.join(out, DATA_DIR)) or not storage.list_files(storage.join(out, DATA_DIR)):
        raise ValueError(f"no snippets were extracted from {data}: every video is shorter than one snippet")
    _copy_sidecars(data, out, short)
    meta = _feature_metadata(clip_meta, spec, cfg, opts, record)
    write_store_metadata(out, meta)
    return meta


# --------------------------------------------------------------------------------------------- RTFM export


def rtfm_gt(frame_labels: np.ndarray | None, num_snippets: int, video_label: int, video_id: str = "") -> np.ndarray:
    """Frame-level ground truth of one test video as RTFM evaluates it (``np.repeat(pred, 16)``).

    The result has exactly ``num_snippets · 16`` entries: longer labels are cut (the dropped tail), shorter ones
    are padded with the video's last label (RTFM's ``make_gt``). A normal video without labels is all zeros.

    Example:
        >>> rtfm_gt(np.array([0, 1, 1], np.uint8), 1, 1).tolist() == [0, 1] + [1] * 14
        True
    """
    length = num_snippets * 16
    if frame_labels is None or len(frame_labels) == 0:
        if video_label == 1:
            raise ValueError(f"test video {video_id!r} is abnormal but has no frame labels; RTFM's gt needs them")
        return np.zeros(length, np.uint8)
    labels = np.asarray(frame_labels, np.uint8)[:length]
    if len(labels) < length:
        labels = np.concatenate([labels, np.full(length - len(labels), labels[-1], np.uint8)])
    return labels


def _save_rtfm_video(out: str, key: tuple[str, str, str], snippets: list[tuple[int, np.ndarray]]) -> dict[str, Any]:
    """All snippets of one video → ``OUT/<dataset>/<video>_i3d.npy`` (float32 ``[T, 10, F]``)."""
    dataset, split, video_id = key
    snippets.sort(key=lambda item: item[0])
    idx = [i for i, _ in snippets]
    if idx != list(range(len(idx))):
        raise ValueError(f"video {video_id}: snippets are not contiguous from 0 (got {idx[:8]}...)")
    buffer = io.BytesIO()
    np.save(buffer, np.stack([f for _, f in snippets]).astype(np.float32, copy=False))
    uri = storage.safe_join(out, dataset, f"{video_id}_i3d.npy")
    storage.write_bytes_atomic(uri, buffer.getvalue())
    return {"video_id": video_id, "dataset": dataset, "split": split, "num_snippets": len(idx), "uri": uri}


def _list_entry(uri: str) -> str:
    """RTFM lists hold absolute paths: local URIs become absolute paths, remote ones stay URIs."""
    import os

    if "://" in uri and not uri.startswith("file://"):
        return uri
    return os.path.abspath(uri.removeprefix("file://"))


def export_rtfm(features: str, out: str) -> dict[str, Any]:
    """Write a feature store in the layout RTFM's data loader reads (REFERENCE.md §1.4).

    Per dataset: ``OUT/<dataset>/<video>_i3d.npy`` (float32 ``[T, 10, F]``), ``OUT/<dataset>-i3d-<split>-10crop.list``
    (one absolute path per line, abnormal videos first, each group sorted by id) and, for the test split,
    ``OUT/gt-<dataset>.npy``: frame labels of the test videos in list order, each exactly ``T·16`` long.
    ``OUT/rtfm_export.json`` records, per dataset and split, how many videos and abnormal videos a list holds
    (RTFM's ``dataset.py`` slices the train list at the abnormal count: 63 for ShanghaiTech, 810 for UCF-Crime).

    Returns:
        The summary written to ``OUT/rtfm_export.json``.
    """
    meta = read_store_metadata(features)
    if meta.get("store") != "features":
        raise ValueError(f"{features} is a {meta.get('store')!r} store; the RTFM export reads a feature store")
    manifest = read_manifest(features).to_pylist()
    video_labels = {r["video_id"]: int(r.get("video_label", -1)) for r in manifest}
    snippet_frames = int(meta.get("extractor", {}).get("snippet_frames", 16))
    expected = {(r["dataset"], r["split"], r["video_id"]): int(r["num_frames"]) // snippet_frames for r in manifest}
    frame_labels = read_labels(features)
    # Stream the rows once and write each video as soon as all its snippets arrived: rows of a video are
    # (nearly) contiguous in the store, so only a few videos are held at a time and no shuffle is needed.
    rows = read_store(features, columns=["video_id", "dataset", "split", "snippet_idx", "features"])
    pending: dict[tuple[str, str, str], list[tuple[int, np.ndarray]]] = {}
    written = []
    for batch in rows.iter_batches(batch_format="numpy", batch_size=64):
        for i, video_id in enumerate(batch["video_id"]):
            key = (str(batch["dataset"][i]), str(batch["split"][i]), str(video_id))
            pending.setdefault(key, []).append((int(batch["snippet_idx"][i]), np.asarray(batch["features"][i])))
            if len(pending[key]) == expected.get(key):
                written.append(_save_rtfm_video(out, key, pending.pop(key)))
    written += [_save_rtfm_video(out, key, snippets) for key, snippets in pending.items()]  # raises if incomplete
    summary: dict[str, Any] = {"source": features, "feature_dim": meta.get("extractor", {}).get("feature_dim")}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in written:
        groups.setdefault((str(r["dataset"]), str(r["split"])), []).append(r)
    for (dataset, split), videos in sorted(groups.items()):
        videos.sort(key=lambda r: (video_labels.get(str(r["video_id"]), -1) != 1, str(r["video_id"])))
        list_uri = storage.join(out, f"{dataset}-i3d-{split}-10crop.list")
        storage.write_text_atomic(list_uri, "".join(_list_entry(str(r["uri"])) + "\n" for r in videos))
        entry = {
            "list": list_uri,
            "num_videos": len(videos),
            "num_abnormal": sum(video_labels.get(str(r["video_id"]), -1) == 1 for r in videos),
        }
        if split == "test":
            gt = np.concatenate(
                [
                    rtfm_gt(
                        frame_labels.get(str(r["video_id"])),
                        int(r["num_snippets"]),
                        video_labels.get(str(r["video_id"]), -1),
                        str(r["video_id"]),
                    )
                    for r in videos
                ]
            )
            buffer = io.BytesIO()
            np.save(buffer, gt)
            entry["gt"] = storage.join(out, f"gt-{dataset}.npy")
            entry["gt_frames"] = int(gt.size)
            storage.write_bytes_atomic(entry["gt"], buffer.getvalue())
        summary.setdefault(dataset, {})[split] = entry
    storage.write_json_atomic(storage.join(out, "rtfm_export.json"), summary)
    return summary
