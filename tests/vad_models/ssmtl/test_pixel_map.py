import numpy as np
import pytest

from vad_models.ssmtl.pixel_map import frame_scores_from_boxes, late_fusion, paint_boxes


def test_paint_boxes_keeps_the_maximum_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 8, 8], [4, 4, 12, 12], [0, 0, 4, 4]], float)
    maps = paint_boxes(np.array([0, 0, 1]), boxes, np.array([0.5, 0.8, 0.3]), (0, 2), grid=(4, 4), cell=4)
    expected0 = np.array([[0.5, 0.5, 0, 0], [0.5, 0.8, 0.8, 0], [0, 0.8, 0.8, 0], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(maps[0], expected0)
    assert maps[1, 0, 0] == pytest.approx(0.3) and maps[1].sum() == pytest.approx(0.3)


def test_frame_scores_hand_made_case() -> None:
    # 24x24 frames, cell 4 -> 6x6 maps. Frame 4: a 1-cell box scoring 0.9; frame 6: a 2x2-cell box scoring 0.6.
    frame_idx = np.array([4, 6])
    boxes = np.array([[8, 8, 12, 12], [8, 8, 16, 16]], float)
    scores = np.array([0.9, 0.6])
    kwargs = {"num_frames": 8, "height": 24, "width": 24, "cell": 4}
    plain = frame_scores_from_boxes(frame_idx, boxes, scores, filter_frames=1, filter_pixels=4, sigma=0.0, **kwargs)
    np.testing.assert_allclose(plain, [0, 0, 0, 0, 0.9, 0, 0.6, 0])  # frame score = map maximum, 0 without objects
    # 3D mean filter of 3 frames x 3x3 cells (12 px): a 27-cell average. Frame 5's window holds the whole small box
    # (0.9) and the whole large one (4 x 0.6); frame 7's window repeats frame 7 at the video end ("nearest").
    smooth = frame_scores_from_boxes(frame_idx, boxes, scores, filter_frames=3, filter_pixels=12, sigma=0.0, **kwargs)
    np.testing.assert_allclose(smooth, np.array([0, 0, 0, 0.9, 0.9, 3.3, 2.4, 2.4]) / 27, atol=1e-7)
    kwargs["num_frames"] = 20  # far from the video ends, the temporal Gaussian only spreads the scores out
    gauss = frame_scores_from_boxes(frame_idx + 6, boxes, scores, filter_frames=1, filter_pixels=4, sigma=1.0, **kwargs)
    assert gauss.sum() == pytest.approx(plain.sum(), rel=1e-6)
    assert gauss.argmax() == 10 and 0 < gauss[10] < 0.9 and gauss[11] > 0 and gauss[0] < 1e-9


def test_frame_scores_chunking_matches_one_pass() -> None:
    rng = np.random.default_rng(0)
    n = 2600  # spans three internal chunks of 1024 frames
    frame_idx = np.sort(rng.integers(0, n, 400))
    xy = rng.uniform(0, 40, (400, 2))
    boxes = np.concatenate([xy, xy + 8], axis=1)
    values = rng.random(400)
    chunked = frame_scores_from_boxes(frame_idx, boxes, values, n, 48, 48, cell=4, filter_frames=5, filter_pixels=8,
                                      sigma=2.0)
    from scipy.ndimage import gaussian_filter1d, uniform_filter

    maps = paint_boxes(frame_idx, boxes, values, (0, n), (12, 12), 4)
    direct = gaussian_filter1d(uniform_filter(maps, size=(5, 2, 2), mode="nearest").max(axis=(1, 2)), 2.0,
                               mode="nearest")
    np.testing.assert_allclose(chunked, direct, rtol=1e-5, atol=1e-6)


def test_frame_scores_errors_and_late_fusion() -> None:
    with pytest.raises(ValueError, match="lie in"):
        frame_scores_from_boxes(np.array([5]), np.zeros((1, 4)), np.ones(1), 5, 8, 8)
    with pytest.raises(ValueError, match="differ in length"):
        frame_scores_from_boxes(np.array([0, 1]), np.zeros((1, 4)), np.ones(1), 5, 8, 8)
    fused = late_fusion(np.array([0.0, 1.0, 2.0]), np.array([10.0, 10.0, 30.0]), weight=0.25)
    np.testing.assert_allclose(fused, [0.0, 0.125, 1.0])
    np.testing.assert_allclose(late_fusion(np.ones(3), np.array([0.0, 1.0, 2.0]), 0.5), [0.0, 0.25, 0.5])
    with pytest.raises(ValueError, match="shape"):
        late_fusion(np.ones(3), np.ones(4))
