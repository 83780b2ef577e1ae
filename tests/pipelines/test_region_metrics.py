import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.region_metrics import (
    GroundTruthRegions,
    ScoredRegions,
    box_iou,
    load_boxes_json,
    load_ground_truth,
    load_track_file,
    region_track_metrics,
)

A, B, FAR = [0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]


def _gt(frames, boxes, tracks) -> GroundTruthRegions:
    return GroundTruthRegions(np.asarray(frames), np.asarray(boxes, float), np.asarray(tracks))


def _pred(frames, boxes, scores) -> ScoredRegions:
    return ScoredRegions(np.asarray(frames), np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float))


def test_hand_made_tracks() -> None:
    # Video "a" (10 frames): track 1 = box A in frames 0-4, track 2 = box B in frames 5-9.
    gt = {"a": _gt(range(10), [A] * 5 + [B] * 5, [1] * 5 + [2] * 5)}
    pred = {
        "a": _pred([0, 1, 2, 3, 4, 5, 0, 1], [A] * 5 + [B, FAR, FAR], [0.9] * 5 + [0.4, 0.8, 0.3]),
        "b": _pred([3], [FAR], [0.95]),  # a normal video (10 frames) with one false alarm
    }
    m = region_track_metrics(gt, pred, num_frames={"a": 10, "b": 10})
    # thresholds 0.95, 0.9, 0.8, 0.4, 0.3 -> false positives per frame 1/20, 1/20, 2/20, 2/20, 3/20
    np.testing.assert_allclose(m.thresholds, [0.95, 0.9, 0.8, 0.4, 0.3])
    np.testing.assert_allclose(m.fp_per_frame, [0.05, 0.05, 0.1, 0.1, 0.15])
    np.testing.assert_allclose(m.region_rate, [0, 0.5, 0.5, 0.6, 0.6])  # 5 of 10 regions, then 6
    np.testing.assert_allclose(m.track_rate, [0, 0.5, 0.5, 1.0, 1.0])  # track 2 needs 1 of its 5 regions (10%)
    # RBDC: 0.05 * 0.5 + 0.05 * 0.6 + (1 - 0.15) * 0.6 = 0.565; TBDC: 0.05 * 0.5 + 0.05 * 1 + 0.85 * 1 = 0.925
    assert m.rbdc == pytest.approx(0.565) and m.tbdc == pytest.approx(0.925)
    assert (m.num_regions, m.num_tracks, m.num_frames) == (10, 2, 20)
    # alpha = 0.5: track 2 (1 of 5 regions found) is no longer detected
    assert region_track_metrics(gt, pred, {"a": 10, "b": 10}, track_fraction=0.5).tbdc == pytest.approx(0.475)


def test_iou_threshold_and_false_positive_axis() -> None:
    gt = {"v": _gt([0], [A], [1])}
    shifted = [8, 0, 18, 10]  # IoU with A = 2/18 = 0.11
    assert region_track_metrics(gt, {"v": _pred([0], [shifted], [1.0])}, 2).rbdc == pytest.approx(1.0)
    strict = region_track_metrics(gt, {"v": _pred([0], [shifted], [1.0])}, 2, iou_threshold=0.2)
    assert strict.rbdc == 0.0 and strict.fp_per_frame.tolist() == [0.5]  # now a false positive, never a hit
    # Detecting the region costs 2 false positives per frame first: beyond the [0, 1] axis, RBDC = 0.
    flood = _pred([0, 0, 1, 1, 0], [FAR, FAR, FAR, FAR, A], [0.9, 0.9, 0.9, 0.9, 0.5])
    assert region_track_metrics(gt, {"v": flood}, 2).rbdc == 0.0
    # Half a false positive per frame, then the hit: area = 0.5 (flat at 1 from 0.5 to 1).
    assert region_track_metrics(gt, {"v": _pred([1, 0], [FAR, A], [0.9, 0.8])}, 2).rbdc == pytest.approx(0.5)
    # The same box in another frame does not count.
    assert region_track_metrics(gt, {"v": _pred([1], [A], [0.9])}, 2).rbdc == 0.0
    with pytest.raises(ValueError, match="num_frames lacks"):
        region_track_metrics(gt, {"w": _pred([0], [A], [1.0])}, {"v": 2})
    with pytest.raises(ValueError, match="no anomalous region"):
        region_track_metrics({}, {"v": _pred([0], [A], [1.0])}, 2)


def test_box_iou() -> None:
    iou = box_iou(np.array([A, B]), np.array([A, [5, 0, 15, 10], FAR]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])


def test_loaders(tmp_path: Path) -> None:
    doc = {"video_id": "test_000", "width": 64, "height": 32, "frames": {
        "3": [{"box": [0, 0, 8, 8], "track_id": 7, "kind": "cart"}],
        "4": [{"box": [2, 0, 10, 8], "track_id": 7, "kind": "cart"},
              {"box": [0, 0, 4, 4], "track_id": 9, "kind": "fast"}],
    }}
    (tmp_path / "test_000.boxes.json").write_text(json.dumps(doc))
    gt = load_boxes_json(str(tmp_path / "test_000.boxes.json"), size=(64, 128))  # clip store at twice the size
    assert gt.frame_idx.tolist() == [3, 4, 4] and gt.track_id.tolist() == ["7", "7", "9"]
    np.testing.assert_allclose(gt.boxes[1], [4, 0, 20, 16])
    (tmp_path / "01_0014.txt").write_text("0,154,4,142,119,249\n0 155 6 145 129 254\n\n1,155,0,0,10,10\n")
    tracks = load_track_file(str(tmp_path / "01_0014.txt"), scale=(0.5, 0.5))
    assert tracks.frame_idx.tolist() == [154, 155, 155] and tracks.track_id.tolist() == ["0", "0", "1"]
    np.testing.assert_allclose(tracks.boxes[0], [2, 71, 59.5, 124.5])
    everything = load_ground_truth(str(tmp_path))
    assert sorted(everything) == ["01_0014", "test_000"] and len(everything["test_000"].frame_idx) == 3
    (tmp_path / "bad.txt").write_text("0,1,2,3\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        load_track_file(str(tmp_path / "bad.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.boxes.json"):
        load_ground_truth(str(tmp_path / "empty"))
