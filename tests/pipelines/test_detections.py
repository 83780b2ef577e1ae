from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipelines.clip_store import build_clip_store
from pipelines.config import config_to_dict
from pipelines.decode import iter_frames
from pipelines.detections import (
    DetectVideos,
    build_tubes,
    detect,
    detection_file_uri,
    iter_video_segments,
    read_detections,
)
from pipelines.stores import read_manifest, read_store, read_store_metadata
from vad_models.ssmtl.config import DetectConfig, SsmtlConfig
from vad_models.ssmtl.detect import BackgroundDetector
from vad_models.ssmtl.method import SsmtlMethod

DETECT = DetectConfig(conf_threshold=0.5)
TUBES = SsmtlConfig(variant="shallow_narrow", half_window=1, max_gap=2, crop_size=16, teacher_dim=4, num_classes=1,
                    batch_size=8, detect=DetectConfig(conf_threshold=0.6))


@pytest.fixture(scope="module")
def stores(ray_local: None, tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ssmtl_stores")
    clips, det, tubes = str(root / "clips"), str(root / "det"), str(root / "tubes")
    # One train and one test video; 40-frame segments overlapping by 24 frames (a 25-frame tube).
    build_clip_store("folder", str(tiny_corpus), clips, "ssmtl", size=(64, 64), segment_frames=40, limit=1)
    meta = detect(clips, det, DETECT)
    assert (meta["videos_detected"], meta["videos_failed"], meta["num_classes"]) == (2, 0, 1)
    build_tubes(clips, det, tubes, TUBES, teacher="random")
    return {"clips": clips, "det": det, "tubes": tubes, "rows": read_store(tubes).take_all()}


def test_detections_match_a_direct_run_over_the_decoded_video(stores: dict[str, Any]) -> None:
    for video in read_manifest(stores["clips"]).to_pylist():
        table, num_frames = read_detections(stores["det"], video["dataset"], video["split"], video["video_id"])
        assert num_frames == video["num_frames"] == 64
        frames = np.concatenate([f for _, f in iter_video_segments(stores["clips"], video["dataset"], video["split"],
                                                                    video["video_id"])])
        np.testing.assert_array_equal(frames, np.concatenate(list(iter_frames(video["uri"]))))  # overlaps removed
        detector = BackgroundDetector(DETECT)
        expected = [d.keep(d.conf >= 0.5) for d in detector.update(frames, 0) + detector.flush()]
        assert table.num_rows == sum(len(d.conf) for d in expected) > 0
        np.testing.assert_allclose(np.asarray(table["box"].to_pylist()), np.concatenate([d.boxes for d in expected]))
        assert table["frame_idx"].to_pylist() == [d.frame_idx for d in expected for _ in d.conf]


def test_detection_reruns_skip_finished_videos(stores: dict[str, Any]) -> None:
    video = read_manifest(stores["clips"]).to_pylist()[0]
    path = Path(detection_file_uri(stores["det"], video["dataset"], video["split"], video["video_id"]))
    before = path.stat().st_mtime_ns
    meta = detect(stores["clips"], stores["det"], DETECT)
    assert meta["videos_detected"] == 0 and path.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="overwrite"):
        detect(stores["clips"], stores["det"], DetectConfig(conf_threshold=0.3))


def test_a_video_that_cannot_be_read_is_reported_not_fatal(stores: dict[str, Any], tmp_path: Path) -> None:
    actor = DetectVideos(stores["clips"], str(tmp_path), config_to_dict(DETECT))
    video = read_manifest(stores["clips"]).to_pylist()[0]
    out = actor({"video_id": np.array(["missing", video["video_id"]], dtype=object),
                 "dataset": np.array([video["dataset"]] * 2, dtype=object),
                 "split": np.array([video["split"]] * 2, dtype=object)})
    assert out["status"].tolist() == ["failed", "ok"] and "no segments" in out["error"][0]
    assert out["num_frames"].tolist() == [0, 64] and out["num_detections"][1] > 0


def test_tube_store_holds_one_tube_per_kept_detection(stores: dict[str, Any]) -> None:
    meta = read_store_metadata(stores["tubes"])
    assert meta["store"] == "tubes" and meta["tube"]["frames"] == 5 and meta["teacher"]["dim"] == 4
    rows = stores["rows"]
    expected = []
    for video in read_manifest(stores["clips"]).to_pylist():
        table, _ = read_detections(stores["det"], video["dataset"], video["split"], video["video_id"])
        expected += [(video["video_id"], r["frame_idx"], tuple(np.round(r["box"], 3))) for r in table.to_pylist()
                     if r["conf"] >= 0.6]
    got = [(r["video_id"], r["frame_idx"], tuple(np.round(r["box"], 3))) for r in rows]
    assert sorted(got) == sorted(expected) and len(got) > 0  # every detection once, across segment borders
    row = rows[0]
    assert row["tube"].shape == (5, 16, 16, 3) and row["teacher_features"].shape == (4,)
    assert row["video_frames"] == 64 and (row["height"], row["width"]) == (64, 64)
    video = next(v for v in read_manifest(stores["clips"]).to_pylist() if v["video_id"] == row["video_id"])
    frame = np.concatenate(list(iter_frames(video["uri"])))[row["frame_idx"]]
    x1, y1 = (int(np.floor(v)) for v in row["box"][:2])
    x2, y2 = (int(np.ceil(v)) for v in row["box"][2:])
    np.testing.assert_array_equal(row["tube"][2], cv2.resize(frame[y1:y2, x1:x2], (16, 16)))
    with pytest.raises(ValueError, match="rerun detection"):
        build_tubes(stores["clips"], stores["det"], stores["tubes"] + "_low", SsmtlConfig(
            detect=DetectConfig(conf_threshold=0.4)))


def test_ssmtl_trains_and_scores_on_the_tube_store(stores: dict[str, Any]) -> None:
    method = SsmtlMethod()
    rows = [r for r in stores["rows"] if r["split"] == "test"][:8]
    batch = {k: np.stack([r[k] for r in rows]) if k != "video_id" else np.array([r[k] for r in rows], dtype=object)
             for k in rows[0]}
    examples = method.make_examples(batch, TUBES, np.random.default_rng(0))
    assert examples["distill_target"].shape == (len(batch["tube"]), 5)  # 4 teacher features + 1 class
    model = method.build_model(TUBES)
    scores = method.task_scores(model, batch, TUBES)
    video = str(batch["video_id"][0])
    mine = {k: np.asarray(v)[scores["video_id"] == video] for k, v in scores.items() if k != "video_id"}
    frame_idx, fused = method.fuse(mine, TUBES, num_frames=64)
    assert len(frame_idx) == 64 and np.isfinite(fused).all() and fused.max() > 0


def test_ssmtl_through_train_score_and_region_evaluation(
    stores: dict[str, Any], tiny_corpus: Path, tmp_path: Path
) -> None:
    """The generic trainer and scorer run SSMTL unchanged; its runs store scored regions and RBDC/TBDC follow."""
    from dataclasses import replace

    from pipelines.evaluate import evaluate, load_regions
    from pipelines.score import ScoreConfig, score
    from pipelines.train import TrainRunConfig, train

    cfg = replace(TUBES, epochs=1)
    run = TrainRunConfig(val_fraction=0.0, log_every=0)
    result = train("ssmtl", cfg, stores["tubes"], str(tmp_path / "train"), run)
    summary = score(result.checkpoint, stores["tubes"], str(tmp_path / "scores"), ScoreConfig(split="test"))
    assert summary["videos_scored"] == 1 and not summary["videos_failed"]
    regions, size = load_regions(str(tmp_path / "scores"))
    assert size == (64, 64)
    (video, scored), = regions.items()
    detected = [r for r in stores["rows"] if r["video_id"] == video]
    assert len(scored.frame_idx) == len(detected) and np.isfinite(scored.scores).all()
    assert ((scored.boxes[:, 2] > scored.boxes[:, 0]) & (scored.boxes[:, 3] > scored.boxes[:, 1])).all()
    metrics = evaluate(str(tmp_path / "scores"), stores["clips"], regions_gt=str(tiny_corpus / "labels"))
    assert 0.0 <= metrics["rbdc"] <= 1.0 and 0.0 <= metrics["tbdc"] <= 1.0 and metrics["num_regions"] > 0
    # The review report of the run paints the stored regions over the thumbnails (SSMTL's pixel map, §3.4).
    from pipelines.events import EventConfig
    from pipelines.report import build_report

    events = EventConfig(quantile=0.7, min_duration_s=0.0)  # the 64-frame test video is too short for the defaults
    page = build_report(str(tmp_path / "scores"), tmp_path / "report", data_uri=stores["clips"], events_cfg=events)
    html = page.read_text(encoding="utf-8")
    assert "region maps" in html and "red overlay: anomaly map" in html
