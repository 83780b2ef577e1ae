"""Calibrated scoring keeps a quiet video quiet; the papers' per-video rescaling does not (issue: calibrated scores).

Per-video rescaling (LUSS-AE eq. 16, STD eq. 14) stretches every video to the same range, so a video with no
anomaly at all gets frames that look as alarming as a real anomaly. The calibrated mode rescales with statistics
of held-out normal videos and sets the event threshold on them, so normal footage raises no event.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.checkpoint import load_checkpoint
from pipelines.events import EventConfig, ScoredVideo, events_for, threshold_for_false_alarm_rate
from pipelines.score import ScoreConfig, score, scoring_event_config, write_reference_scores
from pipelines.stores import read_manifest
from vad_models.luss_ae.config import LussAeConfig
from vad_models.registry import get_method

FPS = 25.0


def _raw_scores(rng: np.random.Generator, frames: int, bump: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Raw LUSS-AE task scores of one video: noise around the normal level, plus an anomaly bump if given."""
    method = get_method("luss_ae")
    out = {"frame_idx": np.arange(frames, dtype=np.int64)}
    for column in method.score_columns(LussAeConfig()):
        # Smooth noise like a real score curve (neighbouring windows share 15 of 16 frames).
        values = 1.0 + 0.05 * np.convolve(rng.standard_normal(frames + 8), np.ones(9) / 3.0, mode="valid")
        if bump is not None:
            values[bump[0] : bump[1]] += 1.0
        out[column] = values
    return out


def _fused(scores: dict[str, np.ndarray], calibration: dict | None) -> np.ndarray:
    _, fused = get_method("luss_ae").fuse(scores, LussAeConfig(), calibration=calibration)
    return fused


def _video(video_id: str, score: np.ndarray) -> ScoredVideo:
    return ScoredVideo(video_id, "synthetic", np.arange(len(score)), score.astype(np.float32), FPS)


def test_calibration_keeps_normal_videos_quiet_where_per_video_rescaling_alarms() -> None:
    rng = np.random.default_rng(0)
    method = get_method("luss_ae")
    held_out = [_raw_scores(rng, 3000) for _ in range(3)]  # 6 minutes of known-normal video
    calibration = method.fit_calibration([{k: v for k, v in s.items() if k != "frame_idx"} for s in held_out])
    normals = [_raw_scores(rng, 500) for _ in range(20)]  # a quiet day: 20 clips of 20 s, no anomaly
    abnormal = _raw_scores(rng, 500, bump=(200, 260))

    # Per-video rescaling: a normal clip's peak comes close to a real anomaly's, and a quiet day of footage still
    # raises events in nearly every clip (nothing tells it apart from an anomalous day).
    per_video = [_fused(s, None) for s in normals]
    assert np.median([v.max() for v in per_video]) > 0.4 * _fused(abnormal, None).max()
    quiet_day = events_for([_video(f"n{i}", v) for i, v in enumerate(per_video)], scoring_event_config(FPS))
    assert len(set(quiet_day.column("video_id").to_pylist())) >= 15

    # Calibrated: the threshold comes from the held-out normal videos (at most 1 event per hour on them), so
    # normal clips stay quiet (a rare false alarm is what that budget means) and the anomaly is an event.
    reference = [_fused(s, calibration) for s in held_out]
    cfg = scoring_event_config(FPS, reference="the reference scores, given in memory here")
    threshold = threshold_for_false_alarm_rate(reference, FPS, cfg.alarms_per_hour, cfg)
    fixed = EventConfig(threshold=threshold, min_duration_s=cfg.min_duration_s, default_fps=FPS)
    calibrated = [_video(f"n{i}", _fused(s, calibration)) for i, s in enumerate(normals)]
    assert np.median([v.score.max() for v in calibrated]) < 0.2 * _fused(abnormal, calibration).max()
    alarms = events_for(calibrated, fixed)
    assert len(set(alarms.column("video_id").to_pylist())) <= 2, alarms.to_pylist()
    found = events_for([_video("abnormal", _fused(abnormal, calibration))], fixed).to_pylist()
    assert found and found[0]["start_frame"] <= 210 and found[0]["end_frame"] >= 250, found


def test_global_run_sets_its_event_threshold_on_the_held_out_normal_videos(
    luss_checkpoint: str, luss_store: str, tmp_path
) -> None:
    loaded = load_checkpoint(luss_checkpoint)
    assert loaded.calibration_scores is not None and loaded.calibration_scores.num_rows > 0
    held_out = set(loaded.calibration_scores.column("video_id").to_pylist())
    out = str(tmp_path / "global")
    summary = score(luss_checkpoint, luss_store, out, ScoreConfig(split="train", calibration="global"))
    reference = summary["reference_scores"]
    ref_files = storage.list_files(storage.join(reference, "scores"), suffixes=(".parquet",))
    assert {pq.read_table(f).column("video_id")[0].as_py() for f in ref_files} == held_out
    assert "events per hour" in summary["events"].get("threshold_source", ""), summary["events"]
    events = pq.read_table(f"{out}/events.parquet").to_pylist()
    # The held-out normal video scored by this run gets exactly its reference scores: it must stay quiet.
    assert not [e for e in events if e["video_id"] in held_out], events
    dataset = read_manifest(luss_store).column("dataset")[0].as_py()
    for vid in held_out:  # ... because it is scored exactly like its reference copy
        scored = pq.read_table(f"{out}/scores/{dataset}/{vid}.parquet").column("score").to_numpy()
        ref = pq.read_table(f"{reference}/scores/calibration/{vid}.parquet").column("score").to_numpy()
        np.testing.assert_allclose(scored[-len(ref):], ref, rtol=1e-5, atol=1e-6)

    # The same normal footage under the papers' per-video rescaling: stretched to the same range as any anomaly,
    # it raises events although nothing in it is anomalous.
    per_video = score(luss_checkpoint, luss_store, str(tmp_path / "per-video"), ScoreConfig(split="train"))
    assert per_video["events"]["count"] > 0, per_video["events"]

    # The same helper gives the same reference for a second call (deterministic, weights honoured).
    again = write_reference_scores(loaded, str(tmp_path / "again"), {"vcr": 1.0, "ffp": 0.0, "prp": 0.0})
    assert again is not None and storage.list_files(storage.join(again, "scores"), suffixes=(".parquet",))
