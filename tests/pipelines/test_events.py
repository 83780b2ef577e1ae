"""Events from hand-made score curves: thresholds, hysteresis, merging, minimum duration, fps, metrics, I/O."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from pipelines import storage
from pipelines.events import (
    EVENT_SCHEMA,
    Event,
    EventConfig,
    detect_events,
    event_metrics,
    find_events,
    read_scored_videos,
    threshold_for_false_alarm_rate,
    write_events,
)

PLAIN = EventConfig(merge_gap_s=0.0, min_duration_s=0.0)  # no merging, no minimum: thresholding alone


def spans(events: list[Event]) -> list[tuple[int, int]]:
    return [(e.start_frame, e.end_frame) for e in events]


def curve(length: int, bumps: dict[tuple[int, int], float], base: float = 0.0) -> np.ndarray:
    """``base`` everywhere, ``value`` on each inclusive frame range."""
    out = np.full(length, base)
    for (start, end), value in bumps.items():
        out[start : end + 1] = value
    return out


def write_score_file(root: str, dataset: str, video_id: str, score: np.ndarray, fps: float | None) -> None:
    table = pa.table({
        "video_id": [video_id] * len(score),
        "frame_idx": np.arange(len(score), dtype=np.int64),
        "score": np.asarray(score, np.float64),
    })  # fmt: skip
    meta = {"method": "test", "checkpoint_id": "c0", "calibration": "global", "alignment": "last"}
    table = table.replace_schema_metadata({**meta, **({"fps": str(fps)} if fps is not None else {})})
    storage.write_parquet_atomic(storage.join(root, "scores", dataset, f"{video_id}.parquet"), table)


# ----------------------------------------------------------------------------------------------- thresholding
def test_fixed_threshold_gives_intervals_times_and_peak() -> None:
    score = curve(20, {(3, 6): 2.0, (12, 13): 1.5})
    score[5] = 4.0
    events = detect_events(score, fps=10.0, threshold=1.0, cfg=PLAIN, video_id="v", dataset="d")
    assert spans(events) == [(3, 6), (12, 13)]
    first = events[0]
    assert (first.video_id, first.dataset, first.peak_frame, first.peak_score) == ("v", "d", 5, 4.0)
    assert first.start_time == pytest.approx(0.3) and first.end_time == pytest.approx(0.7)  # end of frame 6
    assert first.mean_score == pytest.approx((2 + 2 + 4 + 2) / 4)
    assert spans(detect_events(score, 10.0, threshold=1.6, cfg=PLAIN)) == [(3, 6)]
    assert detect_events(score, 10.0, threshold=4.5, cfg=PLAIN) == []


def test_threshold_is_inclusive_and_nan_frames_are_never_anomalous() -> None:
    score = np.array([0.0, 1.0, np.nan, 1.0, 0.0])
    assert spans(detect_events(score, 1.0, threshold=1.0, cfg=PLAIN)) == [(1, 1), (3, 3)]


def test_hysteresis_bridges_dips_but_needs_the_high_threshold() -> None:
    score = np.array([0, 3, 3, 1.5, 3, 0, 1.5, 1.5, 0, 0], dtype=float)
    assert spans(detect_events(score, 1.0, 2.0, PLAIN)) == [(1, 2), (4, 4)]
    hyst = EventConfig(hysteresis=1.0, merge_gap_s=0.0, min_duration_s=0.0)  # events continue while >= 1.0
    assert spans(detect_events(score, 1.0, 2.0, hyst)) == [(1, 4)]  # the run 6-7 never reaches 2.0: no event


def test_hysteresis_extends_an_event_over_its_ramp() -> None:
    score = np.array([0, 1.2, 1.5, 3, 1.5, 1.2, 0], dtype=float)
    hyst = EventConfig(hysteresis=1.0, merge_gap_s=0.0, min_duration_s=0.0)
    (event,) = detect_events(score, 1.0, 2.0, hyst)
    assert (event.start_frame, event.end_frame, event.peak_frame) == (1, 5, 3)


def test_close_events_merge_by_gap_in_seconds() -> None:
    score = curve(40, {(5, 9): 2.0, (13, 17): 3.0})  # gap of 3 frames = 0.3 s at 10 fps
    merged = detect_events(score, 10.0, 1.0, EventConfig(merge_gap_s=0.3, min_duration_s=0.0))
    assert spans(merged) == [(5, 17)] and merged[0].peak_frame == 13
    assert merged[0].mean_score == pytest.approx((5 * 2 + 3 * 0 + 5 * 3) / 13)  # the gap counts in the mean
    assert spans(detect_events(score, 10.0, 1.0, EventConfig(merge_gap_s=0.2, min_duration_s=0.0))) == [
        (5, 9),
        (13, 17),
    ]


def test_minimum_duration_is_checked_after_merging() -> None:
    score = curve(40, {(5, 6): 2.0, (9, 10): 2.0, (30, 30): 5.0})
    cfg = EventConfig(merge_gap_s=0.2, min_duration_s=0.5)  # 10 fps: merged 5-10 lasts 0.6 s, frame 30 lasts 0.1 s
    assert spans(detect_events(score, 10.0, 1.0, cfg)) == [(5, 10)]


def test_durations_follow_each_videos_fps() -> None:
    score = curve(30, {(10, 12): 2.0})  # 3 frames
    cfg = EventConfig(merge_gap_s=0.0, min_duration_s=1.0)
    assert detect_events(score, fps=10.0, threshold=1.0, cfg=cfg) == []  # 0.3 s
    (slow,) = detect_events(score, fps=2.0, threshold=1.0, cfg=cfg)  # 1.5 s
    assert (slow.start_time, slow.end_time) == (5.0, 6.5)
    gapped = curve(30, {(2, 4): 2.0, (8, 10): 2.0})  # gap of 3 frames: 1.5 s at 2 fps, 0.3 s at 10 fps
    assert len(detect_events(gapped, 2.0, 1.0, EventConfig(merge_gap_s=1.0, min_duration_s=0))) == 2
    assert len(detect_events(gapped, 10.0, 1.0, EventConfig(merge_gap_s=1.0, min_duration_s=0))) == 1


def test_frame_indices_are_reported_as_given() -> None:
    score = np.array([0.0, 2.0, 2.0, 0.0])
    (event,) = detect_events(score, 5.0, 1.0, PLAIN, frame_idx=np.array([100, 101, 102, 103]))
    assert (event.start_frame, event.end_frame, event.start_time, event.end_time) == (101, 102, 20.2, 20.6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": np.zeros((2, 2))}, "1-D"),
        ({"fps": 0.0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"frame_idx": np.array([0, 2, 1])}, "strictly increasing"),
        ({"frame_idx": np.array([0, 1])}, "shape"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(kwargs: dict, message: str) -> None:
    args = {"score": np.zeros(3), "fps": 10.0, "threshold": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        detect_events(**args, video_id="cam")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="not both"):
        EventConfig(threshold=1.0, alarms_per_hour=2.0)
    with pytest.raises(ValueError, match="quantile"):
        EventConfig(quantile=0.0)
    with pytest.raises(ValueError, match="hysteresis"):
        EventConfig(hysteresis=-1.0)


# -------------------------------------------------------------------------------------- false-alarm threshold
def bumpy_hour(heights: list[float], fps: float = 10.0) -> np.ndarray:
    """One hour of zeros with 1-s bumps of the given heights, a minute apart."""
    n = int(3600 * fps)
    step = int(60 * fps)
    return curve(n, {(step * (k + 1), step * (k + 1) + int(fps) - 1): h for k, h in enumerate(heights)})


def test_false_alarm_threshold_is_the_lowest_meeting_the_target() -> None:
    normal = [bumpy_hour([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])]
    cfg = EventConfig(merge_gap_s=1.0, min_duration_s=0.5)
    threshold = threshold_for_false_alarm_rate(normal, 10.0, alarms_per_hour=3.0, cfg=cfg)
    assert 7.0 < threshold <= 8.0  # bumps 8, 9 and 10 remain
    assert len(detect_events(normal[0], 10.0, threshold, cfg)) == 3
    # at a threshold <= 0 every frame is anomalous and merges into a single "event"; that must not be chosen
    assert len(detect_events(normal[0], 10.0, 0.0, cfg)) == 1


def test_false_alarm_target_scales_with_hours_and_zero_means_above_every_score() -> None:
    cfg = EventConfig(merge_gap_s=1.0, min_duration_s=0.5)
    two_hours = [bumpy_hour([1, 2, 3, 4, 5]), bumpy_hour([6, 7, 8, 9, 10])]
    threshold = threshold_for_false_alarm_rate(two_hours, [10.0, 10.0], alarms_per_hour=2.0, cfg=cfg)
    assert 6.0 < threshold <= 7.0  # 4 events allowed in 2 h: 7, 8, 9, 10
    silent = threshold_for_false_alarm_rate(two_hours, 10.0, alarms_per_hour=0.0, cfg=cfg)
    assert silent > 10.0 and all(detect_events(c, 10.0, silent, cfg) == [] for c in two_hours)
    with pytest.raises(ValueError, match="fps values"):
        threshold_for_false_alarm_rate(two_hours, [10.0], 1.0, cfg)


# ------------------------------------------------------------------------------------------- event metrics
def test_event_recall_and_false_alarms_per_hour() -> None:
    labels = {"a": curve(1000, {(100, 149): 1, (300, 319): 1}).astype(np.uint8), "b": np.zeros(1000, np.uint8)}
    events = [
        Event("a", "d", 140, 160, 14.0, 16.1, 3.0, 150, 2.0),  # hits the first interval
        Event("a", "d", 500, 510, 50.0, 51.1, 3.0, 505, 2.0),  # false alarm
        Event("b", "d", 50, 60, 5.0, 6.1, 3.0, 55, 2.0),  # false alarm
        Event("c", "d", 0, 9, 0.0, 1.0, 3.0, 5, 2.0),  # unlabelled video: ignored
    ]
    m = event_metrics(events, labels, {"a": 10.0, "b": 10.0})
    hours = 2000 / 10 / 3600
    assert m["event_recall"] == 0.5 and (m["num_gt_events"], m["num_gt_detected"]) == (2, 1)
    assert (m["num_events"], m["num_false_alarms"]) == (3, 2)
    assert m["hours"] == pytest.approx(hours) and m["false_alarms_per_hour"] == pytest.approx(2 / hours)
    spanning = event_metrics([Event("a", "d", 149, 300, 0, 0, 0, 200, 0)], labels, {"a": 10.0, "b": 10.0})
    assert spanning["event_recall"] == 1.0 and spanning["num_false_alarms"] == 0  # one event, both intervals
    as_table = pa.Table.from_pylist([e.__dict__ for e in events], schema=EVENT_SCHEMA)
    assert event_metrics(as_table, labels, {"a": 10.0, "b": 10.0}) == m
    with pytest.raises(ValueError, match="no fps"):
        event_metrics(events, labels, {"a": 10.0})


def test_event_recall_is_nan_without_ground_truth() -> None:
    m = event_metrics([], {"a": np.zeros(100, np.uint8)}, {"a": 25.0})
    assert np.isnan(m["event_recall"]) and m["false_alarms_per_hour"] == 0.0


# ---------------------------------------------------------------------------------------------- score stores
def test_write_events_writes_parquet_csv_and_metrics(tmp_path) -> None:
    run = str(tmp_path / "run")
    write_score_file(run, "synth", "cam1", curve(100, {(20, 29): 5.0}), fps=10.0)
    write_score_file(run, "synth", "cam2", curve(50, {(5, 9): 5.0, (40, 44): 6.0}), fps=5.0)
    labels = pa.table({"video_id": ["cam1"], "frame_labels": [curve(100, {(22, 40): 1}).astype(np.uint8).tolist()]})
    store = str(tmp_path / "store")
    storage.write_parquet_atomic(storage.join(store, "labels.parquet"), labels)

    table = write_events(run, run, EventConfig(threshold=1.0), labels_uri=store)
    assert table.schema.names == EVENT_SCHEMA.names
    rows = table.to_pylist()
    assert [(r["video_id"], r["start_frame"], r["end_frame"]) for r in rows] == [
        ("cam1", 20, 29),
        ("cam2", 5, 9),
        ("cam2", 40, 44),
    ]
    assert rows[2]["start_time"] == 8.0 and rows[2]["end_time"] == 9.0  # cam2 is 5 fps
    assert storage.read_parquet(storage.join(run, "events.parquet")).equals(table)
    csv = pacsv.read_csv(storage.join(run, "events.csv"))
    assert csv.column("video_id").to_pylist() == ["cam1", "cam2", "cam2"]
    meta = table.schema.metadata
    assert float(meta[b"threshold"]) == 1.0 and meta[b"threshold_source"] == b"fixed threshold"
    assert json.loads(meta[b"config"])["threshold"] == 1.0
    metrics = storage.read_json(storage.join(run, "event_metrics.json"))
    assert metrics["event_recall"] == 1.0 and metrics["num_false_alarms"] == 0 and metrics["num_videos"] == 1


def test_quantile_and_reference_thresholds(tmp_path) -> None:
    run, normal = str(tmp_path / "run"), str(tmp_path / "normal")
    write_score_file(run, "synth", "cam1", np.linspace(0.0, 1.0, 101), fps=10.0)
    write_score_file(normal, "synth", "quiet", np.linspace(0.0, 0.5, 101), fps=10.0)
    own = find_events(run, EventConfig(quantile=0.9, merge_gap_s=0.0, min_duration_s=0.0))
    assert float(own.schema.metadata[b"threshold"]) == pytest.approx(0.9)
    assert own.column("start_frame").to_pylist() == [90]
    assert b"this run" in own.schema.metadata[b"threshold_source"]
    ref = find_events(run, EventConfig(quantile=1.0, reference_scores=normal, merge_gap_s=0, min_duration_s=0))
    assert float(ref.schema.metadata[b"threshold"]) == pytest.approx(0.5)
    assert ref.column("start_frame").to_pylist() == [50]
    assert normal.encode() in ref.schema.metadata[b"threshold_source"]
    silent = EventConfig(alarms_per_hour=0.0, reference_scores=normal, merge_gap_s=0.0, min_duration_s=0.0)
    by_rate = find_events(run, silent)  # no event at all on the normal video: just above its maximum
    assert float(by_rate.schema.metadata[b"threshold"]) > 0.5 and by_rate.column("start_frame").to_pylist() == [51]


def test_missing_fps_needs_a_default(tmp_path) -> None:
    run = str(tmp_path / "run")
    write_score_file(run, "synth", "cam1", curve(40, {(10, 19): 2.0}), fps=None)
    with pytest.raises(ValueError, match="default_fps"):
        find_events(run, EventConfig(threshold=1.0))
    (video,) = read_scored_videos(run, default_fps=4.0)
    assert video.fps == 4.0 and video.dataset == "synth" and video.score.dtype == np.float32
    assert find_events(run, EventConfig(threshold=1.0, default_fps=4.0)).column("end_time").to_pylist() == [5.0]


def test_an_empty_run_gives_an_empty_table_and_a_missing_one_an_error(tmp_path) -> None:
    storage.makedirs(str(tmp_path / "run" / "scores"))
    table = find_events(str(tmp_path / "run"))
    assert table.num_rows == 0 and table.schema.names == EVENT_SCHEMA.names
    with pytest.raises(FileNotFoundError, match="scores/"):
        find_events(str(tmp_path / "nothing"))


def test_score_stores_are_read_through_storage_uris() -> None:
    run = "memory://events-test/run"
    write_score_file(run, "synth", "cam1", curve(30, {(10, 19): 2.0}), fps=10.0)
    table = write_events(run, run, EventConfig(threshold=1.0))
    assert table.column("start_time").to_pylist() == [1.0]
    assert storage.exists(f"{run}/events.parquet") and storage.exists(f"{run}/events.csv")
