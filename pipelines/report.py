"""Offline HTML review report of a scoring run: summary, metrics, sortable events, thumbnails, score curves.

The report is a folder that opens in any browser without a network (no CDN, fonts or external scripts)::

    OUT_DIR/index.html        run summary, metrics (micro and macro AUROC named; event recall and false alarms
                              per hour), threshold, a sortable table of every event, a card per top event
    OUT_DIR/events.csv        the events shown
    OUT_DIR/img/event_NNN.png thumbnail strip around each top event's peak (optional red anomaly-map overlay)
    OUT_DIR/img/curve_NNN.png score curve per video: threshold, detected events, labelled anomalies shaded

Events come from ``SCORES/events.parquet`` (written by every scoring run) or are recomputed when an
:class:`~pipelines.events.EventConfig` is given. Frames are read from the source videos named by the store
manifest (``data_uri``, by default the store recorded in ``summary.json``); labels, when that store has them,
give the metrics and the shading. Anything missing (no store, an unreadable video) becomes a note on the page,
never a failed report.

Example:
    >>> path = build_report("outputs/demo/scores", "outputs/demo/report", top=10)  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'index.html'
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines import storage
from pipelines.anomaly_maps import anomaly_maps_for
from pipelines.evaluate import AUROC_DEFINITIONS, align_to_frames, frame_metrics, load_labels
from pipelines.events import EventConfig, ScoredVideo, event_metrics, events_for, read_scored_videos
from pipelines.plots import anomalous_runs
from pipelines.report_html import CurveView, EventView, ReportPage, render_page
from pipelines.thumbnails import make_strip, overlay_heatmap, read_frames, strip_indices, write_png

__all__ = ["AnomalyMaps", "build_report", "render_event_curve"]

AnomalyMaps = Mapping[tuple[str, int], np.ndarray] | Callable[[str, int], "np.ndarray | None"]
"""Heat maps ``[h, w]`` by ``(video_id, frame_idx)``: a mapping, or a callable returning ``None`` where it has none."""

_SUMMARY_KEYS = (
    "method", "checkpoint_id", "checkpoint", "calibration", "alignment", "weights", "data", "split",
    "videos_total", "videos_scored", "videos_skipped", "duration_s", "finished",
)


def render_event_curve(
    video: ScoredVideo, threshold: float, events: list[tuple[int, int]], labels: np.ndarray | None = None
) -> bytes:
    """PNG of one video's scores over time with the threshold, detected events and labelled anomalies.

    Args:
        video: The video's scores and fps.
        threshold: Drawn as a dashed line (skipped if not finite).
        events: Detected ``(start_frame, end_frame)`` intervals, inclusive (orange).
        labels: Optional 0/1 per frame (red).
    """
    seconds = video.frame_idx / video.fps
    fig = Figure(figsize=(8, 2.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for start, stop in anomalous_runs(labels) if labels is not None else []:
        ax.axvspan(start / video.fps, stop / video.fps, color="tab:red", alpha=0.18, lw=0)
    for start, end in events:
        ax.axvspan(start / video.fps, (end + 1) / video.fps, color="tab:orange", alpha=0.35, lw=0)
    ax.plot(seconds, video.score, color="tab:blue", lw=1.0)
    if np.isfinite(threshold):
        ax.axhline(threshold, color="0.3", ls="--", lw=0.8)
    ax.set_xlim(0, max(float(seconds[-1]) + 1 / video.fps, 1 / video.fps) if len(seconds) else 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def build_report(
    scores_uri: str,
    out_dir: str | Path,
    data_uri: str | None = None,
    top: int = 20,
    *,
    anomaly_maps: AnomalyMaps | str | None = "auto",
    events_cfg: EventConfig | None = None,
    max_curves: int = 50,
    strip_frames: int = 5,
) -> Path:
    """Write the review report of a scoring run into the local folder ``out_dir``.

    Args:
        scores_uri: The scoring run's output (``scores/``, ``summary.json``, ``events.parquet``); any URI.
        out_dir: Local folder for ``index.html``, ``events.csv`` and ``img/`` (created; earlier images replaced).
        data_uri: Store with ``manifest.parquet`` (source videos) and optionally labels; default: the store
            recorded in ``summary.json``.
        top: Events (by peak score) that get a card with a thumbnail strip.
        anomaly_maps: Heat maps ``[h, w]`` by ``(video_id, frame_idx)`` (a mapping, or a callable with an
            optional ``prefetch(video_id, frames)``), blended as translucent red over the thumbnails; ``"auto"``
            (default) takes the run's own (:func:`pipelines.anomaly_maps.anomaly_maps_for`: stored regions, or
            the checkpoint's method maps), ``None`` shows plain frames.
        events_cfg: Recompute events with these settings instead of reading ``events.parquet``.
        max_curves: Most score-curve figures (videos with top events first, then by peak score).
        strip_frames: Thumbnails per event.

    Returns:
        Path of ``index.html``.

    Raises:
        FileNotFoundError: If ``scores_uri`` holds no ``scores/`` folder.
    """
    out = Path(out_dir)
    img = out / "img"
    img.mkdir(parents=True, exist_ok=True)
    for stale in [*img.glob("event_*.png"), *img.glob("curve_*.png")]:
        stale.unlink()
    notes: list[str] = []
    summary = _read_summary(scores_uri, notes)
    videos = read_scored_videos(scores_uri, (events_cfg or EventConfig()).default_fps)
    events = _load_events(scores_uri, videos, events_cfg)
    data_uri = data_uri or summary.get("data")
    manifest, labels = _store_tables(data_uri, notes)
    if isinstance(anomaly_maps, str):
        if anomaly_maps != "auto":
            raise ValueError(f"anomaly_maps must be a mapping, a callable, None or 'auto', got {anomaly_maps!r}")
        anomaly_maps, source = anomaly_maps_for(scores_uri, data_uri, summary=summary)
        notes.append(f"Anomaly maps: {source}.")
    metrics = _metric_rows(videos, events, labels, notes)
    views = _strips(_event_views(events, videos, top), manifest, out, anomaly_maps, strip_frames)
    curves = _curves(videos, views, events, labels, out, max_curves, notes)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(events, sink)
    storage.write_bytes_atomic(str(out / "events.csv"), sink.getvalue())
    run = [("scores", scores_uri), *((k, str(summary[k])) for k in _SUMMARY_KEYS if k in summary)]
    page = ReportPage(
        title=f"Anomaly review: {summary.get('method', 'scoring run')}",
        summary=[*run, ("videos failed", str(len(summary.get("videos_failed") or [])))],
        notes=notes,
        threshold=_threshold_rows(events),
        metrics=metrics,
        events=views,
        curves=curves,
        events_csv="events.csv",
        generated=f"generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
    )
    html_path = out / "index.html"
    storage.write_text_atomic(str(html_path), render_page(page))
    return html_path


def _read_summary(scores_uri: str, notes: list[str]) -> dict[str, Any]:
    uri = storage.join(scores_uri, "summary.json")
    if not storage.exists(uri):
        notes.append("No summary.json: the scoring run has not finished, so this report may be partial.")
        return {}
    summary = storage.read_json(uri)
    for failure in summary.get("videos_failed") or []:
        notes.append(f"video {failure.get('video_id')} failed to score: {failure.get('error')}")
    return summary


def _load_events(scores_uri: str, videos: list[ScoredVideo], cfg: EventConfig | None) -> pa.Table:
    events_uri = storage.join(scores_uri, "events.parquet")
    if cfg is None and storage.exists(events_uri):
        return storage.read_parquet(events_uri)
    return events_for(videos, cfg)


def _store_tables(data_uri: str | None, notes: list[str]) -> tuple[dict[tuple[str, str], dict], dict[str, np.ndarray]]:
    """Manifest rows by ``(dataset, video_id)`` and the store's frame labels; empty, with a note why, if absent."""
    if not data_uri:
        notes.append("No data store given: no thumbnails and no metrics (pass --data STORE).")
        return {}, {}
    try:
        manifest_uri = storage.join(data_uri, "manifest.parquet")
        rows = storage.read_parquet(manifest_uri).to_pylist() if storage.exists(manifest_uri) else []
        has_labels = storage.exists(storage.join(data_uri, "labels.parquet"))
    except (OSError, RuntimeError) as exc:  # StorageError is a RuntimeError
        notes.append(f"cannot read the data store {data_uri}: {exc}")
        return {}, {}
    if not rows:
        notes.append(f"{data_uri} has no manifest.parquet: no thumbnails.")
    manifest = {(str(r.get("dataset") or ""), str(r["video_id"])): r for r in rows}
    return manifest, load_labels(data_uri) if has_labels else {}


def _metric_rows(
    videos: list[ScoredVideo], events: pa.Table, labels: dict[str, np.ndarray], notes: list[str]
) -> list[tuple[str, str, str]]:
    """Frame metrics (micro and macro AUROC named and defined) and event metrics over the labelled videos."""
    scored = {v.video_id: v for v in videos if v.video_id in labels}
    if not scored:
        return []
    labels = {k: labels[k] for k in scored}
    rows: list[tuple[str, str, str]] = []
    aligned = {k: align_to_frames(v.frame_idx, v.score.astype(np.float64), len(labels[k])) for k, v in scored.items()}
    try:
        frame = frame_metrics(aligned, labels)
    except ValueError as exc:
        notes.append(f"frame metrics unavailable: {exc}")
    else:
        definitions = frame.get("auroc_definitions") or AUROC_DEFINITIONS
        rows.append(("Micro AUROC", _fmt(frame["micro_auroc"]), definitions["micro_auroc"]))
        rows.append(("Macro AUROC", _fmt(frame["macro_auroc"]), definitions["macro_auroc"]))
        rows.append(("PR-AUC", _fmt(frame["pr_auc"]), "average precision over all frames pooled"))
        rows.append(("EER", _fmt(frame["eer"]), "equal error rate over all frames pooled"))
    ev = event_metrics(events, labels, {k: v.fps for k, v in scored.items()})
    recall = f"{_fmt(ev['event_recall'], '.3f')} ({ev['num_gt_detected']} of {ev['num_gt_events']} intervals)"
    alarms = f"{_fmt(ev['false_alarms_per_hour'], '.3g')} ({ev['num_false_alarms']} in {ev['hours']:.3g} h)"
    rows.append(("Event recall", recall, "labelled anomalous intervals overlapped by at least one detected event"))
    rows.append(("False alarms per hour", alarms, "detected events overlapping no labelled interval, per hour"))
    rows.append(("Labelled videos", str(len(scored)), "scored videos with frame labels (the metrics use only these)"))
    return rows


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def _threshold_rows(events: pa.Table) -> list[tuple[str, str]]:
    meta = {k.decode(): v.decode() for k, v in (events.schema.metadata or {}).items()}
    cfg = json.loads(meta.get("config", "{}"))
    rows = [("threshold", meta.get("threshold", "?")), ("source", meta.get("threshold_source", "?"))]
    if cfg.get("hysteresis"):
        rows.append(("event continues while score >=", meta.get("exit_threshold", "?")))
    return rows + [(k, str(cfg[k])) for k in ("merge_gap_s", "min_duration_s") if k in cfg]


def _event_views(events: pa.Table, videos: list[ScoredVideo], top: int) -> list[EventView]:
    """Events ranked by peak score; the first ``top`` are detailed."""
    fps = {(v.dataset, v.video_id): v.fps for v in videos}
    ranked = sorted(events.to_pylist(), key=lambda e: -e["peak_score"])
    views = []
    for k, e in enumerate(ranked):
        peak_time = e["peak_frame"] / fps.get((e["dataset"], e["video_id"]), np.nan)
        views.append(EventView(rank=k + 1, peak_time=peak_time, detailed=k < top, **e))
    return views


def _heat_map(maps: AnomalyMaps | None, video_id: str, frame: int) -> np.ndarray | None:
    if maps is None:
        return None
    return maps(video_id, frame) if callable(maps) else maps.get((video_id, frame))


def _strips(
    views: list[EventView], manifest: dict[tuple[str, str], dict], out: Path, maps: AnomalyMaps | None, count: int
) -> list[EventView]:
    """Give every detailed event a thumbnail strip (or the reason it has none), decoding each video once."""
    by_video: dict[tuple[str, str], list[EventView]] = {}
    for view in views:
        if view.detailed:
            by_video.setdefault((view.dataset, view.video_id), []).append(view)
    done: dict[int, EventView] = {}
    for (dataset, video_id), group in by_video.items():
        row = manifest.get((dataset, video_id)) or manifest.get(("", video_id))
        if row is None:
            note = "no thumbnails: the store manifest does not list this video"
            done.update((v.rank, replace(v, note=note)) for v in group)
            continue
        total = int(row.get("num_frames") or 0) or max(v.end_frame for v in group) + 1
        wanted = {v.rank: strip_indices(v.start_frame, v.end_frame, v.peak_frame, total, count) for v in group}
        needed = sorted({i for idx in wanted.values() for i in idx})
        try:
            frames = read_frames(str(row["uri"]), needed)
        except (OSError, RuntimeError) as exc:  # DecodeError and StorageError are RuntimeErrors
            done.update((v.rank, replace(v, note=f"no thumbnails: {exc}")) for v in group)
            continue
        if hasattr(maps, "prefetch"):  # e.g. model maps: one decode and one model call per video
            maps.prefetch(video_id, needed)
        for v in group:
            present = [i for i in wanted[v.rank] if i in frames]
            if not present:
                done[v.rank] = replace(v, note=f"no thumbnails: {row['uri']} has no frame {wanted[v.rank]}")
                continue
            heats = [_heat_map(maps, v.video_id, i) for i in present]
            shown = [frames[i] if h is None else overlay_heatmap(frames[i], h) for i, h in zip(present, heats)]
            highlight = present.index(v.peak_frame) if v.peak_frame in present else None
            name = f"img/event_{v.rank:03d}.png"
            write_png(out / name, make_strip(shown, highlight=highlight))
            note = "red overlay: anomaly map" if any(h is not None for h in heats) else ""
            done[v.rank] = replace(v, strip=name, strip_frames=tuple(present), note=note)
    return [done.get(v.rank, v) for v in views]


def _curves(
    videos: list[ScoredVideo],
    views: list[EventView],
    events: pa.Table,
    labels: dict[str, np.ndarray],
    out: Path,
    max_curves: int,
    notes: list[str],
) -> list[CurveView]:
    """Score-curve figures: videos with top events first (in rank order), then by peak score."""
    spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
    first_rank: dict[tuple[str, str], int] = {}
    for view in views:
        key = (view.dataset, view.video_id)
        spans.setdefault(key, []).append((view.start_frame, view.end_frame))
        if view.detailed:
            first_rank.setdefault(key, view.rank)

    def priority(video: ScoredVideo) -> tuple[float, float]:
        finite = video.score[np.isfinite(video.score)]
        peak = float(finite.max()) if finite.size else -np.inf
        return first_rank.get((video.dataset, video.video_id), np.inf), -peak

    chosen = sorted(videos, key=priority)[:max_curves]
    if len(videos) > len(chosen):
        notes.append(f"Score curves of {len(chosen)} of {len(videos)} videos are shown (max_curves={max_curves}).")
    threshold = float((events.schema.metadata or {}).get(b"threshold", b"nan"))
    curves = []
    for k, video in enumerate(chosen, start=1):
        key = (video.dataset, video.video_id)
        name = f"img/curve_{k:03d}.png"
        (out / name).write_bytes(render_event_curve(video, threshold, spans.get(key, []), labels.get(video.video_id)))
        caption = f"{len(spans.get(key, []))} event(s), {len(video.score) / video.fps:.1f} s at {video.fps:g} fps"
        curves.append(CurveView(video.video_id, video.dataset, name, caption))
    return curves
