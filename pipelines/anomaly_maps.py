"""Anomaly maps for review reports: where in a frame the method sees the anomaly.

Two sources, both method-agnostic, chosen by :func:`anomaly_maps_for`:

* **Region maps** (object-level methods, e.g. SSMTL): a scoring run stored every scored region under
  ``OUT/regions/``; a frame's map paints each of its boxes with the box's score (maximum where boxes overlap),
  the pixel-level anomaly map of SSMTL §3.4 before its 3D mean filter. Pixels outside every box take the
  lowest region score of the video, so the colour scale is the video's own.
* **Model maps** (methods implementing :meth:`vad_models.base.Method.anomaly_maps`, e.g. LUSS-AE's prediction
  residual): the checkpoint that produced the scores is re-run on the windows that end at the requested frames.
  Those frames are decoded from the source video and resized with the store's recorded frame spec through the
  ingest's own resize path (:func:`pipelines.decode.resize_frames`), so the model sees the pixels it was scored on
  without reading the store. Only the few frames a report shows are computed (a window of ``frame_spec.window``
  frames each), so the cost is independent of the footage length.

Example:
    >>> maps, source = anomaly_maps_for("outputs/demo/scores", "outputs/demo/store")  # doctest: +SKIP
    >>> source  # doctest: +SKIP
    'luss_ae model maps (Method.anomaly_maps) of checkpoint outputs/demo/train/checkpoints/1-train-epoch0004'
    >>> maps("test_000", 120).shape  # doctest: +SKIP
    (64, 64)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pipelines import storage
from pipelines.decode import DecodeError, resize_frames
from pipelines.evaluate import load_regions
from pipelines.stores import StoreError, read_store_metadata
from pipelines.thumbnails import read_frames
from vad_models.base import Method
from vad_models.ops import paint_boxes

__all__ = ["ModelMaps", "RegionMaps", "anomaly_maps_for", "has_model_maps"]


def has_model_maps(method: Method) -> bool:
    """Whether ``method`` overrides :meth:`Method.anomaly_maps` (the base class has none)."""
    return type(method).anomaly_maps is not Method.anomaly_maps


class RegionMaps:
    """Maps painted from a scoring run's stored regions (boxes in the store's frame pixels, with scores).

    Example:
        >>> maps = RegionMaps("outputs/ssmtl/scores")  # doctest: +SKIP
        >>> maps("test_001", 42)  # None where the frame has no scored region  # doctest: +SKIP
    """

    def __init__(self, scores_uri: str) -> None:
        """Read ``scores_uri/regions/`` (raises ``FileNotFoundError`` if the run stored none)."""
        self.regions, size = load_regions(scores_uri)
        self.height, self.width = size or (0, 0)

    def __call__(self, video_id: str, frame: int) -> np.ndarray | None:
        """The ``[height, width]`` map of ``frame`` of ``video_id``, or ``None`` if no region was scored there."""
        regions = self.regions.get(video_id)
        if regions is None or not self.height:
            return None
        here = regions.frame_idx == int(frame)
        if not here.any():
            return None
        background = float(regions.scores.min())  # painted as offsets from it: 0 where no box
        heat = paint_boxes(regions.frame_idx[here], regions.boxes[here], regions.scores[here] - background,
                           (int(frame), int(frame) + 1), (self.height, self.width), cell=1)[0]
        return heat + np.float32(background)


class ModelMaps:
    """Maps from re-running a checkpoint on the windows that end at the requested frames.

    Args:
        checkpoint: The loaded checkpoint (its method must implement ``anomaly_maps``).
        store_meta: The scored store's ``_store.json`` (its ``frame_spec`` gives size, channels and window).
        sources: ``video_id`` -> source video URI (the store manifest's ``uri``).

    Example:
        >>> maps = ModelMaps(load_checkpoint("outputs/demo/train"), read_store_metadata(store), uris)  # doctest: +SKIP
        >>> maps.prefetch("test_000", [100, 120, 140])  # one decode and one model call  # doctest: +SKIP
        >>> maps("test_000", 120).shape  # doctest: +SKIP
        (64, 64)
    """

    def __init__(self, checkpoint: Any, store_meta: dict[str, Any], sources: dict[str, str]) -> None:
        spec = store_meta.get("frame_spec") or {}
        missing = [k for k in ("height", "width", "channels", "window") if spec.get(k) is None]
        if missing:
            raise ValueError(f"the store's _store.json frame_spec lacks {missing}; cannot rebuild the model's input")
        self.checkpoint = checkpoint
        self.height, self.width = int(spec["height"]), int(spec["width"])
        self.channels, self.window = int(spec["channels"]), int(spec["window"])
        self.sources = sources
        self._cache: dict[tuple[str, int], np.ndarray | None] = {}

    def prefetch(self, video_id: str, frames: Iterable[int]) -> None:
        """Compute the maps of ``frames`` of one video in one decode and one model call (cached)."""
        wanted = sorted({int(f) for f in frames if (video_id, int(f)) not in self._cache})
        if not wanted:
            return
        for f in wanted:
            self._cache[(video_id, f)] = None  # frames without a full window, or an unreadable source
        uri = self.sources.get(video_id)
        usable = [f for f in wanted if f >= self.window - 1]
        if uri is None or not usable:
            return
        needed = sorted({i for f in usable for i in range(f - self.window + 1, f + 1)})
        try:
            decoded = read_frames(uri, needed)
        except (DecodeError, OSError, RuntimeError):
            return  # the report notes missing thumbnails for an unreadable video; a map is optional
        usable = [f for f in usable if all(i in decoded for i in range(f - self.window + 1, f + 1))]
        if not usable:
            return
        rows = {
            "video_id": np.array([video_id] * len(usable), dtype=object),
            "start_frame": np.array([f - self.window + 1 for f in usable], dtype=np.int64),
            "frames": np.stack([
                resize_frames(
                    np.stack([decoded[i] for i in range(f - self.window + 1, f + 1)]),
                    self.height, self.width, self.channels,
                )
                for f in usable
            ]),
        }
        loaded = self.checkpoint
        out = loaded.method.anomaly_maps(loaded.model, rows, loaded.config)
        for frame, heat in zip(np.asarray(out["frame_idx"]).tolist(), out["map"]):
            self._cache[(video_id, int(frame))] = np.asarray(heat, dtype=np.float32)

    def __call__(self, video_id: str, frame: int) -> np.ndarray | None:
        """The map of ``frame`` of ``video_id`` (computed on demand), or ``None`` where there is none."""
        if (video_id, int(frame)) not in self._cache:
            self.prefetch(video_id, [frame])
        return self._cache[(video_id, int(frame))]


def anomaly_maps_for(
    scores_uri: str,
    data_uri: str | None,
    checkpoint_uri: str | None = None,
    summary: dict[str, Any] | None = None,
) -> tuple[RegionMaps | ModelMaps | None, str]:
    """The anomaly maps a report can overlay for a scoring run, and a sentence saying where they come from.

    Region maps when the run stored regions; otherwise model maps when the run's checkpoint (``checkpoint_uri``,
    by default the one in ``summary.json``) belongs to a method with :meth:`Method.anomaly_maps` and the store's
    metadata and manifest are readable; otherwise ``None`` and the reason.

    Args:
        scores_uri: The scoring run's output.
        data_uri: The scored store (frame spec and source videos); ``None`` allows region maps only.
        checkpoint_uri: Override of the checkpoint recorded in ``summary.json``.
        summary: The run's ``summary.json`` when the caller has read it already (``None``: read it here).

    Returns:
        ``(maps or None, description)``.
    """
    if storage.is_dir(storage.join(scores_uri, "regions")):
        maps = RegionMaps(scores_uri)
        return maps, "region maps: each scored region painted with its object score (stored regions/)"
    if summary is None:
        summary_uri = storage.join(scores_uri, "summary.json")
        summary = storage.read_json(summary_uri) if storage.exists(summary_uri) else {}
    checkpoint_uri = checkpoint_uri or summary.get("checkpoint")
    if not checkpoint_uri:
        return None, "no anomaly maps: the run names no checkpoint"
    if not data_uri:
        return None, "no anomaly maps: no data store to read the source videos from"
    from pipelines.checkpoint import CheckpointError, load_checkpoint

    try:
        loaded = load_checkpoint(checkpoint_uri)
    except (CheckpointError, FileNotFoundError, OSError, RuntimeError, KeyError, ValueError) as exc:
        return None, f"no anomaly maps: cannot load checkpoint {checkpoint_uri}: {exc}"
    recorded = summary.get("checkpoint_id")
    if recorded and recorded != loaded.checkpoint_id:
        return None, (f"no anomaly maps: checkpoint {checkpoint_uri} now holds weights {loaded.checkpoint_id}, "
                      f"not the {recorded} that produced these scores")
    if not has_model_maps(loaded.method):
        return None, f"no anomaly maps: {loaded.method.name} has no pixel-level map"
    try:
        meta = read_store_metadata(data_uri)
        manifest = storage.read_parquet(storage.join(data_uri, "manifest.parquet"))
        maps = ModelMaps(loaded, meta, dict(zip(manifest.column("video_id").to_pylist(),
                                                manifest.column("uri").to_pylist())))
    except (StoreError, FileNotFoundError, OSError, RuntimeError, KeyError, ValueError) as exc:
        return None, f"no anomaly maps: cannot read the store {data_uri}: {exc}"
    return maps, f"{loaded.method.name} model maps (Method.anomaly_maps) of checkpoint {loaded.uri}"
