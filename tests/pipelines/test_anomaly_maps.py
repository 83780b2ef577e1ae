"""Anomaly maps for the review report: LUSS-AE model maps rebuilt from the source video, region maps, fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines import storage
from pipelines.anomaly_maps import ModelMaps, RegionMaps, anomaly_maps_for, has_model_maps
from pipelines.checkpoint import load_checkpoint
from pipelines.cli import report_dir
from pipelines.stores import read_manifest, read_store, read_store_metadata
from pipelines.train import keep_videos
from vad_models.registry import get_method


def _store_rows(store: str, video_id: str) -> dict[str, np.ndarray]:
    """Every clip-store row of one video as a numpy batch (the format scoring actors get)."""
    rows = (
        read_store(store, split="test")
        .map_batches(keep_videos, fn_kwargs={"video_ids": frozenset({video_id}), "keep": True}, batch_format="numpy")
        .take_all()
    )
    assert rows, f"no store rows for {video_id}"
    frames = np.empty(len(rows), dtype=object)
    frames[:] = [np.asarray(r["frames"]) for r in rows]
    return {
        "video_id": np.array([r["video_id"] for r in rows], dtype=object),
        "start_frame": np.array([r["start_frame"] for r in rows], dtype=np.int64),
        "frames": frames,
    }


def test_luss_model_maps_are_the_scored_prediction_residual(luss_checkpoint: str, luss_store: str) -> None:
    loaded = load_checkpoint(luss_checkpoint)
    assert has_model_maps(loaded.method)
    assert not has_model_maps(get_method("std")) and not has_model_maps(get_method("mtvae"))
    manifest = read_manifest(luss_store).to_pylist()
    video = next(r for r in manifest if r["split"] == "test")
    maps = ModelMaps(loaded, read_store_metadata(luss_store), {r["video_id"]: r["uri"] for r in manifest})
    frames = [20, 31, int(video["num_frames"]) - 1]
    maps.prefetch(video["video_id"], frames)

    # The scores of the same windows, computed by the scoring path from the store's own rows.
    scores = loaded.method.task_scores(loaded.model, _store_rows(luss_store, video["video_id"]), loaded.config)
    for frame in frames:
        heat = maps(video["video_id"], frame)
        assert heat is not None and heat.shape == (32, 32) and heat.dtype == np.float32 and (heat >= 0).all()
        # Frames decoded from the source and resized like the ingest give the store's pixels, so the map's mean
        # is exactly that window's ffp_pse score (eq. 9 on the predicted frame).
        scored = scores["ffp_pse"][scores["frame_idx"] == frame]
        np.testing.assert_allclose(float(heat.mean()), scored[0], rtol=1e-4)
    assert maps(video["video_id"], 10) is None  # no full 17-frame window ends at frame 10
    assert maps("no_such_video", 40) is None


def test_region_maps_paint_each_box_with_its_score(tmp_path: Path) -> None:
    table = pa.table({
        "video_id": ["v"] * 3, "frame_idx": pa.array([4, 4, 7], pa.int64()),
        "x1": [2.0, 6.0, 0.0], "y1": [2.0, 4.0, 0.0], "x2": [10.0, 12.0, 4.0], "y2": [8.0, 10.0, 4.0],
        "frame_height": [16.0] * 3, "frame_width": [20.0] * 3, "score": [0.5, 0.9, 0.1],
    })  # fmt: skip
    storage.write_parquet_atomic(str(tmp_path / "regions" / "synth" / "v.parquet"), table)
    maps, source = anomaly_maps_for(str(tmp_path), data_uri=None)
    assert isinstance(maps, RegionMaps) and "region maps" in source
    heat = maps("v", 4)
    assert heat.shape == (16, 20)
    assert heat[3, 3] == pytest.approx(0.5) and heat[9, 11] == pytest.approx(0.9)  # inside one box each
    assert heat[5, 7] == pytest.approx(0.9)  # the overlap keeps the maximum
    assert heat[14, 18] == pytest.approx(0.1)  # background: the video's lowest region score
    assert maps("v", 5) is None and maps("w", 4) is None


def test_maps_are_not_drawn_from_other_weights(luss_checkpoint: str, luss_store: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    storage.write_json_atomic(str(run / "summary.json"), {"checkpoint": luss_checkpoint, "checkpoint_id": "0" * 16})
    maps, source = anomaly_maps_for(str(run), luss_store)
    assert maps is None and "not the 0000000000000000" in source
    (run / "summary.json").write_text(json.dumps({"checkpoint": luss_checkpoint}))
    maps, source = anomaly_maps_for(str(run), None)
    assert maps is None and "no data store" in source
    maps, source = anomaly_maps_for(str(run), luss_store)
    assert isinstance(maps, ModelMaps) and source.startswith("luss_ae model maps")


def test_report_folder_of_the_scoring_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert report_dir(None, "s3://b/out") is None
    assert report_dir("", "outputs/scores/") == "outputs/scores/report"
    assert report_dir("", "file:///srv/scores") == "/srv/scores/report"
    assert report_dir("/tmp/r", "s3://b/out") == "/tmp/r"
    with pytest.raises(SystemExit):
        report_dir("", "s3://b/out")
    assert "give the report a local folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report_dir("s3://b/report", "s3://b/out")
