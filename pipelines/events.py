"""Frame scores -> anomalous events: threshold, hysteresis, merging, minimum duration, and event-level metrics.

A frame score says how unusual one frame is; a reviewer wants a short list of *intervals* ("video 7, 01:12-01:19,
peak at 01:15"). Per video, :func:`detect_events` applies, in this order:

1. **Hysteresis thresholding** (as for Canny edges): an interval is a maximal run of frames scoring at least
   ``threshold - hysteresis`` that contains at least one frame scoring at least ``threshold``. A noisy score that
   dips just below the threshold does not split an event, and a run that never reaches it is no event.
2. **Merging**: intervals separated by at most ``merge_gap_s`` seconds become one.
3. **Minimum duration**: intervals shorter than ``min_duration_s`` seconds are dropped.

Times come from each video's fps (``start_time = start_frame / fps``, ``end_time = (end_frame + 1) / fps``:
the end of the last anomalous frame). The threshold is fixed, a quantile of reference scores, or the lowest one
whose alarm rate on normal reference videos meets a target (:func:`threshold_for_false_alarm_rate`). Reference
scores are a score store of normal videos (``EventConfig.reference_scores``) or, by default, the run's own
scores: archived footage is mostly normal, so its own high quantiles are a sensible alarm budget.

Output of :func:`write_events`: ``OUT/events.parquet`` and ``OUT/events.csv`` with ``video_id, dataset,
start_frame, end_frame, start_time, end_time, peak_score, peak_frame, mean_score`` (frames inclusive); the
threshold and its source are in the Parquet schema metadata.

Example:
    >>> import numpy as np
    >>> curve = np.array([0, 0, 5, 6, 0, 0, 0, 0, 0, 0], dtype=float)
    >>> events = detect_events(curve, fps=10.0, threshold=4.0, cfg=EventConfig(min_duration_s=0.2))
    >>> [(e.start_frame, e.end_frame, e.peak_frame, e.start_time, e.end_time) for e in events]
    [(2, 3, 3, 0.2, 0.4)]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines import storage

__all__ = [
    "EVENT_SCHEMA",
    "Event",
    "EventConfig",
    "ScoredVideo",
    "detect_events",
    "event_metrics",
    "events_for",
    "events_table",
    "find_events",
    "read_scored_videos",
    "resolve_threshold",
    "threshold_for_false_alarm_rate",
    "write_events",
]

_EPS = 1e-9  # float slack when comparing a duration in seconds with a limit

EVENT_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("dataset", pa.string()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("start_time", pa.float64()),
        ("end_time", pa.float64()),
        ("peak_score", pa.float64()),
        ("peak_frame", pa.int64()),
        ("mean_score", pa.float64()),
    ]
)


@dataclass(frozen=True)
class EventConfig:
    """How frame scores become events.

    The threshold is ``threshold`` if set; else the lowest threshold meeting ``alarms_per_hour`` on the
    reference scores if set; else the ``quantile`` of the reference scores.

    Defaults (top 5% of frames, events of at least 0.2 s, gaps up to 1 s merged) are what per-video scoring runs
    use. A stricter 99th percentile with 0.5 s found no event at all on the demo corpus, where about 45% of test
    frames are anomalous: per-video rescaled scores peak briefly, so the top 1% of frames rarely forms 0.5 s runs.
    Calibrated runs set ``alarms_per_hour`` on known-normal reference videos instead (``pipelines.score``).

    Attributes:
        threshold: Fixed score an event must reach (score units of the run, e.g. calibrated IQR units).
        alarms_per_hour: Target false-alarm rate: the lowest threshold giving at most this many events per hour
            of reference video.
        quantile: Quantile of the pooled reference frame scores used as the threshold otherwise.
        reference_scores: URI of a score store of normal videos (scored with the same checkpoint and
            calibration); ``None`` uses the run's own scores.
        hysteresis: An event continues while the score stays at or above ``threshold - hysteresis``.
        merge_gap_s: Events at most this many seconds apart are merged.
        min_duration_s: Events shorter than this (after merging) are dropped.
        search_steps: Candidate quantiles tried by the false-alarm search.
        default_fps: Frame rate for videos whose score files record none (``None``: such videos are an error).
    """

    threshold: float | None = None
    alarms_per_hour: float | None = None
    quantile: float = 0.95
    reference_scores: str | None = None
    hysteresis: float = 0.0
    merge_gap_s: float = 1.0
    min_duration_s: float = 0.2
    search_steps: int = 200
    default_fps: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and self.alarms_per_hour is not None:
            raise ValueError("set either EventConfig.threshold or EventConfig.alarms_per_hour, not both")
        if self.alarms_per_hour is not None and not self.alarms_per_hour >= 0:
            raise ValueError(f"EventConfig.alarms_per_hour must be >= 0, got {self.alarms_per_hour}")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"EventConfig.quantile must be in (0, 1], got {self.quantile}")
        for name in ("hysteresis", "merge_gap_s", "min_duration_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"EventConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.search_steps < 2:
            raise ValueError(f"EventConfig.search_steps must be >= 2, got {self.search_steps}")
        if self.default_fps is not None and not self.default_fps > 0:
            raise ValueError(f"EventConfig.default_fps must be > 0, got {self.default_fps}")


@dataclass(frozen=True)
class Event:
    """One anomalous interval of one video (frames inclusive, times in seconds)."""

    video_id: str
    dataset: str
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    peak_score: float
    peak_frame: int
    mean_score: float


@dataclass(frozen=True)
class ScoredVideo:
    """The frame scores of one video as read from a score store."""

    video_id: str
    dataset: str
    frame_idx: np.ndarray  # int64, strictly increasing
    score: np.ndarray  # float32, one per frame_idx
    fps: float


def _intervals(score: np.ndarray, frame_idx: np.ndarray, fps: float, high: float, cfg: EventConfig) -> np.ndarray:
    """Steps 1-3 of the module docstring; returns ``[k, 2]`` inclusive (start, end) positions into ``score``."""
    valid = np.isfinite(score)  # NaN never counts as anomalous
    above_low = valid & (score >= high - cfg.hysteresis)
    padded = np.diff(np.concatenate(([0], above_low.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(padded == 1), np.flatnonzero(padded == -1) - 1
    highs = np.concatenate(([0], np.cumsum(valid & (score >= high))))
    keep = highs[ends + 1] - highs[starts] > 0
    starts, ends = starts[keep], ends[keep]
    if len(starts) > 1:
        gap_s = (frame_idx[starts[1:]] - frame_idx[ends[:-1]] - 1) / fps
        opens = np.concatenate(([True], gap_s > cfg.merge_gap_s + _EPS))
        starts, ends = starts[opens], ends[np.concatenate((opens[1:], [True]))]
    duration_s = (frame_idx[ends] - frame_idx[starts] + 1) / fps
    keep = duration_s >= cfg.min_duration_s - _EPS
    return np.stack([starts[keep], ends[keep]], axis=1)


def _check_curve(score: np.ndarray, frame_idx: np.ndarray | None, fps: float, name: str) -> tuple[np.ndarray, ...]:
    score = np.asarray(score, dtype=np.float64)
    if score.ndim != 1:
        raise ValueError(f"{name}: scores must be 1-D, got shape {score.shape}")
    frame_idx = np.arange(len(score), dtype=np.int64) if frame_idx is None else np.asarray(frame_idx, np.int64)
    if frame_idx.shape != score.shape:
        raise ValueError(f"{name}: frame_idx has shape {frame_idx.shape}, scores {score.shape}")
    if len(frame_idx) > 1 and not np.all(np.diff(frame_idx) > 0):
        raise ValueError(f"{name}: frame_idx must be strictly increasing")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"{name}: fps must be a positive number, got {fps}")
    return score, frame_idx


def detect_events(
    score: np.ndarray,
    fps: float,
    threshold: float,
    cfg: EventConfig | None = None,
    *,
    frame_idx: np.ndarray | None = None,
    video_id: str = "",
    dataset: str = "",
) -> list[Event]:
    """Turn one video's frame scores into anomalous intervals (module docstring, steps 1-3).

    Args:
        score: Frame scores, higher = more anomalous; NaN frames are never anomalous.
        fps: Frames per second of the video (converts frames to seconds and back).
        threshold: Score an event must reach.
        cfg: Hysteresis, merge gap and minimum duration (``EventConfig()`` by default).
        frame_idx: Frame index of each score (default ``0..len-1``); strictly increasing.
        video_id: Copied into the events.
        dataset: Copied into the events.

    Returns:
        The events in time order; ``mean_score`` averages every finite score of the (merged) interval.

    Example:
        >>> events = detect_events(np.array([0, 3, 0, 3, 0.0]), 1.0, 2.0, EventConfig(merge_gap_s=1))
        >>> [(e.start_frame, e.end_frame, e.start_time, e.end_time) for e in events]
        [(1, 3, 1.0, 4.0)]
    """
    cfg = cfg or EventConfig()
    score, frame_idx = _check_curve(score, frame_idx, fps, f"video {video_id!r}")
    events = []
    for start, end in _intervals(score, frame_idx, fps, float(threshold), cfg):
        span = np.where(np.isfinite(score[start : end + 1]), score[start : end + 1], -np.inf)
        peak = start + int(np.argmax(span))
        events.append(
            Event(
                video_id=video_id,
                dataset=dataset,
                start_frame=int(frame_idx[start]),
                end_frame=int(frame_idx[end]),
                start_time=float(frame_idx[start] / fps),
                end_time=float((frame_idx[end] + 1) / fps),
                peak_score=float(score[peak]),
                peak_frame=int(frame_idx[peak]),
                mean_score=float(np.mean(span[np.isfinite(span)])),
            )
        )
    return events


def threshold_for_false_alarm_rate(
    normal_scores: Sequence[np.ndarray], fps: float | Sequence[float], alarms_per_hour: float, cfg: EventConfig
) -> float:
    """The lowest threshold whose events on normal videos number at most ``alarms_per_hour`` per hour.

    Candidates are quantiles of the pooled normal scores, denser towards the top (exceedance fractions spaced
    geometrically from 1 down to one frame). The event count is not monotonic in the threshold: near the
    bottom, merging fuses a whole video into one long "event", so the count falls again. The scan therefore
    walks down from the top and stops at the first candidate that exceeds the target: the result is the lowest
    threshold such that it and every candidate above it meet the target. If even the largest normal score
    gives too many events (e.g. a target of 0), the result lies just above it.

    Args:
        normal_scores: Frame-score curves of normal videos (every event on them is a false alarm).
        fps: One frame rate for all curves, or one per curve.
        alarms_per_hour: Target false alarms per hour of normal video.
        cfg: Hysteresis, merge gap, minimum duration and ``search_steps``.

    Returns:
        The threshold.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> t = threshold_for_false_alarm_rate([rng.normal(size=36000)], 10.0, 2.0, EventConfig())
        >>> bool(t > 2.0)
        True
    """
    curves = [np.asarray(s, dtype=np.float64) for s in normal_scores]
    rates = [float(fps)] * len(curves) if np.ndim(fps) == 0 else [float(f) for f in fps]
    if len(rates) != len(curves):
        raise ValueError(f"got {len(curves)} normal score curves but {len(rates)} fps values")
    if not alarms_per_hour >= 0:
        raise ValueError(f"alarms_per_hour must be >= 0, got {alarms_per_hour}")
    checked = [_check_curve(c, None, f, f"normal curve {i}") for i, (c, f) in enumerate(zip(curves, rates))]
    pooled = np.concatenate([c[np.isfinite(c)] for c, _ in checked]) if checked else np.empty(0)
    if pooled.size == 0:
        raise ValueError("threshold_for_false_alarm_rate needs at least one finite normal frame score")
    hours = sum(len(c) / f for c, f in zip(curves, rates)) / 3600.0
    allowed = alarms_per_hour * hours
    exceed = np.geomspace(1.0, 1.0 / pooled.size, cfg.search_steps)
    best = float(np.nextafter(pooled.max(), np.inf))  # no frame reaches it: zero events
    for candidate in np.unique(np.quantile(pooled, 1.0 - exceed).tolist() + [pooled.max()])[::-1]:
        count = sum(len(_intervals(c, idx, f, float(candidate), cfg)) for (c, idx), f in zip(checked, rates))
        if count > allowed:
            break
        best = float(candidate)
    return best


def read_scored_videos(scores_uri: str, default_fps: float | None = None) -> list[ScoredVideo]:
    """Read every ``scores/<dataset>/<video_id>.parquet`` of a score store (frame_idx, score and fps only).

    Scores are kept as float32 (about 430 KB per hour of 30 fps video).

    Args:
        scores_uri: The scoring run's output URI.
        default_fps: Used when a file's metadata records no positive fps.

    Returns:
        One entry per file, sorted by dataset then video id.

    Raises:
        FileNotFoundError: If ``scores_uri`` holds no ``scores/`` folder.
        ValueError: For a file without an fps (and no ``default_fps``) or without ``frame_idx``/``score``.
    """
    root = storage.join(scores_uri, "scores")
    if not storage.is_dir(root):
        raise FileNotFoundError(f"{scores_uri} holds no scores/ folder; is it the output of jobs/score.py?")
    videos = []
    for uri in storage.list_files(root, suffixes=(".parquet",)):
        table = storage.read_parquet(uri)
        missing = {"frame_idx", "score"} - set(table.column_names)
        if missing:
            raise ValueError(f"score file {uri} lacks column(s) {sorted(missing)}")
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        fps = float(meta.get("fps") or "nan")
        if not fps > 0:
            if default_fps is None:
                raise ValueError(f"score file {uri} records no fps; set EventConfig.default_fps")
            fps = default_fps
        parts = uri.rstrip("/").split("/")
        video_id = table.column("video_id")[0].as_py() if "video_id" in table.column_names and len(table) else None
        order = np.argsort(table.column("frame_idx").to_numpy(), kind="stable")
        videos.append(
            ScoredVideo(
                video_id=video_id or parts[-1].removesuffix(".parquet"),
                dataset=parts[-2],
                frame_idx=table.column("frame_idx").to_numpy().astype(np.int64)[order],
                score=table.column("score").to_numpy().astype(np.float32)[order],
                fps=fps,
            )
        )
    return sorted(videos, key=lambda v: (v.dataset, v.video_id))


def resolve_threshold(cfg: EventConfig, videos: Sequence[ScoredVideo]) -> tuple[float, str]:
    """The threshold ``cfg`` asks for and a sentence saying where it came from (shown in reports).

    Args:
        cfg: Event settings.
        videos: The run's own scores (the reference when ``cfg.reference_scores`` is ``None``).

    Returns:
        ``(threshold, source)``.
    """
    if cfg.threshold is not None:
        return float(cfg.threshold), "fixed threshold"
    reference, where = videos, "this run's scores"
    if cfg.reference_scores is not None:
        reference = read_scored_videos(cfg.reference_scores, cfg.default_fps)
        where = f"reference scores {cfg.reference_scores}"
    if not reference:
        raise ValueError(f"no {where} to derive a threshold from; set EventConfig.threshold")
    hours = sum(len(v.score) / v.fps for v in reference) / 3600.0
    if cfg.alarms_per_hour is not None:
        value = threshold_for_false_alarm_rate(
            [v.score for v in reference], [v.fps for v in reference], cfg.alarms_per_hour, cfg
        )
        return value, (
            f"lowest threshold with at most {cfg.alarms_per_hour:g} events per hour on "
            f"{len(reference)} video(s), {hours:.2f} h of {where}"
        )
    pooled = np.concatenate([v.score[np.isfinite(v.score)] for v in reference])
    if pooled.size == 0:
        raise ValueError(f"{where} hold no finite score; set EventConfig.threshold")
    value = float(np.quantile(pooled.astype(np.float64), cfg.quantile))
    return value, f"quantile {cfg.quantile:g} of {pooled.size} frame scores of {where}"


def events_table(events: Sequence[Event], metadata: Mapping[str, str] | None = None) -> pa.Table:
    """Events as a table with :data:`EVENT_SCHEMA` (and optional schema metadata)."""
    columns = {name: [getattr(e, name) for e in events] for name in EVENT_SCHEMA.names}
    table = pa.table(columns, schema=EVENT_SCHEMA)
    return table.replace_schema_metadata(dict(metadata)) if metadata else table


def events_for(videos: Sequence[ScoredVideo], cfg: EventConfig | None = None) -> pa.Table:
    """Resolve the threshold and detect the events of already-read videos (see :func:`find_events`)."""
    cfg = cfg or EventConfig()
    threshold, source = resolve_threshold(cfg, videos) if videos else (float("nan"), "no scored videos")
    events = [
        event
        for v in videos
        for event in detect_events(
            v.score, v.fps, threshold, cfg, frame_idx=v.frame_idx, video_id=v.video_id, dataset=v.dataset
        )
    ]
    meta = {
        "threshold": repr(threshold),
        "exit_threshold": repr(threshold - cfg.hysteresis),
        "threshold_source": source,
        "config": json.dumps(asdict(cfg), sort_keys=True),
        "num_videos": str(len(videos)),
        "hours": repr(sum(len(v.score) / v.fps for v in videos) / 3600.0),
    }
    return events_table(events, meta)


def find_events(scores_uri: str, cfg: EventConfig | None = None) -> pa.Table:
    """Detect the events of every video of a score store (nothing is written).

    Schema metadata: ``threshold``, ``exit_threshold``, ``threshold_source``, ``config`` (JSON),
    ``num_videos`` and ``hours``.

    Example:
        >>> table = find_events("outputs/scores", EventConfig(threshold=2.0))  # doctest: +SKIP
    """
    cfg = cfg or EventConfig()
    return events_for(read_scored_videos(scores_uri, cfg.default_fps), cfg)


def write_events(
    scores_uri: str, out_uri: str, cfg: EventConfig | None = None, *, labels_uri: str | None = None
) -> pa.Table:
    """Detect events in a score store and write ``OUT/events.parquet`` and ``OUT/events.csv`` (atomically).

    Args:
        scores_uri: The scoring run's output (holds ``scores/``).
        out_uri: Where to write; usually the same URI.
        cfg: Event settings (``EventConfig()`` by default).
        labels_uri: Optional store (or folder corpus) with frame labels: also writes ``OUT/event_metrics.json``
            (:func:`event_metrics`).

    Returns:
        The events table (see :func:`find_events`).

    Example:
        >>> write_events("outputs/scores", "outputs/scores", EventConfig(alarms_per_hour=1.0))  # doctest: +SKIP
    """
    table = find_events(scores_uri, cfg)
    storage.write_parquet_atomic(storage.join(out_uri, "events.parquet"), table)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    storage.write_bytes_atomic(storage.join(out_uri, "events.csv"), sink.getvalue())
    if labels_uri is not None:
        from pipelines.evaluate import load_labels

        fps = {v.video_id: v.fps for v in read_scored_videos(scores_uri, (cfg or EventConfig()).default_fps)}
        # The labels cover the whole store; a run may score one split or a few videos of it.
        labels = {k: v for k, v in load_labels(labels_uri).items() if k in fps}
        metrics = event_metrics(table, labels, fps)
        storage.write_json_atomic(storage.join(out_uri, "event_metrics.json"), metrics)
    return table


def _runs(labels: np.ndarray) -> np.ndarray:
    """Inclusive ``[k, 2]`` (start, end) frames of the runs of non-zero labels."""
    padded = np.diff(np.concatenate(([0], (np.asarray(labels) > 0).astype(np.int8), [0])))
    return np.stack([np.flatnonzero(padded == 1), np.flatnonzero(padded == -1) - 1], axis=1)


def event_metrics(
    events: pa.Table | Sequence[Event], labels: Mapping[str, np.ndarray], fps: Mapping[str, float]
) -> dict[str, float | int]:
    """Event recall and false alarms per hour against frame labels.

    Only labelled videos count. A ground-truth interval (a run of anomalous frames) is *detected* if any event
    of its video overlaps it by at least one frame; an event overlapping no ground-truth interval is a false
    alarm. Hours are the labelled frames over each video's fps.

    Args:
        events: Events (a table with :data:`EVENT_SCHEMA` columns, or :class:`Event` objects).
        labels: Video id -> 0/1 per frame.
        fps: Video id -> frames per second, for every labelled video.

    Returns:
        ``event_recall`` (NaN without ground-truth intervals), ``false_alarms_per_hour``, ``num_gt_events``,
        ``num_gt_detected``, ``num_events``, ``num_false_alarms``, ``hours`` and ``num_videos``.

    Example:
        >>> ev = [Event("a", "d", 2, 3, 0.2, 0.4, 1.0, 2, 1.0), Event("a", "d", 8, 9, 0.8, 1.0, 1.0, 8, 1.0)]
        >>> m = event_metrics(ev, {"a": np.array([0, 0, 0, 1, 1, 0, 0, 0, 0, 0])}, {"a": 10.0})
        >>> m["event_recall"], m["num_false_alarms"]
        (1.0, 1)
    """
    rows = events.to_pylist() if isinstance(events, pa.Table) else [asdict(e) for e in events]
    by_video: dict[str, list[tuple[int, int]]] = {}
    for row in rows:
        by_video.setdefault(row["video_id"], []).append((row["start_frame"], row["end_frame"]))
    missing = sorted(set(labels) - set(fps))
    if missing:
        raise ValueError(f"no fps for labelled video(s) {missing[:5]}")
    gt_total = gt_hit = n_events = false_alarms = 0
    seconds = 0.0
    for video_id, frame_labels in labels.items():
        gt = _runs(frame_labels)
        detected = np.asarray(by_video.get(video_id, []), dtype=np.int64).reshape(-1, 2)
        # overlap[i, j]: event i shares a frame with ground-truth interval j
        overlap = (detected[:, :1] <= gt[:, 1]) & (gt[:, 0] <= detected[:, 1:])
        gt_total += len(gt)
        gt_hit += int(overlap.any(axis=0).sum())
        n_events += len(detected)
        false_alarms += int((~overlap.any(axis=1)).sum())
        seconds += len(frame_labels) / float(fps[video_id])
    hours = seconds / 3600.0
    return {
        "event_recall": gt_hit / gt_total if gt_total else float("nan"),
        "false_alarms_per_hour": false_alarms / hours if hours > 0 else float("nan"),
        "num_gt_events": gt_total,
        "num_gt_detected": gt_hit,
        "num_events": n_events,
        "num_false_alarms": false_alarms,
        "hours": hours,
        "num_videos": len(labels),
    }
