"""Ray Data task and actor failures: retried or replaced, and the outputs complete with nothing written twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import clip_store, score
from pipelines.clip_store import build_clip_store, read_clip_store, segment_starts
from pipelines.decode import iter_frames
from pipelines.stores import read_manifest, read_quarantine
from tests.reliability import injection
from vad_models.base import FrameSpec

SPEC = FrameSpec(32, 32, 1, window=5, segment_frames=16)  # 64-frame videos -> 5 overlapping segments each


def _check_store(out: str) -> None:
    """Every manifest video is stored exactly once: the expected segments, no duplicate, frames as decoded."""
    assert not (Path(out) / "_staging").exists(), "staged files were left behind"
    rows = read_clip_store(out).select_columns(["video_id", "start_frame", "frames"]).take_all()
    keys = [(r["video_id"], int(r["start_frame"])) for r in rows]
    assert len(keys) == len(set(keys)), f"duplicated segments: {sorted(keys)}"
    segments = {key: r["frames"] for key, r in zip(keys, rows)}
    for video in read_manifest(out).to_pylist():
        starts = sorted(s for v, s in segments if v == video["video_id"])
        assert starts == segment_starts(video["num_frames"], SPEC), video["video_id"]
        expected = np.concatenate(list(iter_frames(video["uri"], SPEC.height, SPEC.width, SPEC.channels)))
        assert len(expected) == video["num_frames"]
        for start in starts:
            stored = segments[(video["video_id"], start)]
            np.testing.assert_array_equal(stored, expected[start : start + len(stored)])


def test_decode_task_killed_mid_video_is_retried_without_duplicates(
    ray_local: None, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decode task dies after staging one segment; Ray reruns it and the store holds each segment once."""
    marker = tmp_path / "decode-killed"
    wrapper = injection.exit_after_first_segment(clip_store.stage_video, "test_000", str(marker))
    monkeypatch.setattr(clip_store, "stage_video", wrapper)
    out = str(tmp_path / "store")
    summary = build_clip_store("folder", str(tiny_corpus), out, SPEC, limit=1)
    assert marker.exists(), "the fault did not fire: the wrapper was not used"
    assert (summary.videos_ok, summary.videos_quarantined) == (2, 0)
    _check_store(out)


def test_transient_storage_error_while_decoding_is_retried_not_quarantined(
    ray_local: None, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object-store outage is not a property of the input: the task is retried and the good video is stored.

    Quarantining it instead would silently drop good videos whenever S3 throttles a large ingest.
    """
    marker = tmp_path / "storage-down"
    wrapper = injection.storage_outage_once(clip_store.stage_video, "test_000", str(marker))
    monkeypatch.setattr(clip_store, "stage_video", wrapper)
    out = str(tmp_path / "store")
    summary = build_clip_store("folder", str(tiny_corpus), out, SPEC, limit=1)
    assert marker.exists(), "the fault did not fire: the wrapper was not used"
    quarantined = read_quarantine(out).to_pylist()
    assert not quarantined, f"a transient StorageError quarantined a good video instead of being retried: {quarantined}"
    assert summary.videos_ok == 2
    _check_store(out)


def test_scoring_actor_killed_is_replaced_and_every_video_scored_once(
    luss_checkpoint: str, luss_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scoring actor's process dies on its first batch; Ray restarts it, retries the batch, all videos finish."""
    marker = tmp_path / "actor-killed"
    monkeypatch.setattr(score, "TaskScorer", injection.crash_on_first_batch(str(marker)))
    out = str(tmp_path / "scores")
    summary = score.score(luss_checkpoint, luss_store, out, score.ScoreConfig(split="test"))
    assert marker.exists(), "the fault did not fire: the actor class was not used"
    videos = [r for r in read_manifest(luss_store).to_pylist() if r["split"] == "test"]
    assert summary["videos_scored"] == len(videos) and not summary["videos_failed"]
    assert not summary["videos_without_windows"]
    files = sorted(Path(out, "scores").rglob("*.parquet"))
    assert len(files) == len(videos), files  # one file per video, no stray temporaries
    for video in videos:
        table = pq.read_table(score.score_file_uri(out, video["dataset"], video["video_id"]))
        assert table.column("frame_idx").to_pylist() == list(range(video["num_frames"]))
        assert np.isfinite(table.column("score").to_numpy()).all()
    assert (Path(out) / "_SUCCESS").exists()
