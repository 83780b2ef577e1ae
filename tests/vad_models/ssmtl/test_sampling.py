import numpy as np
import pytest

from vad_models.ssmtl.sampling import (
    arrow_samples,
    central_window,
    intermittent_offsets,
    irregularity_samples,
    middle_box_samples,
    split_train_val,
    stack_tubes,
    temporal_split_mask,
)


def _tubes(batch: int, length: int) -> np.ndarray:
    """Tubes whose every pixel holds the frame's position in the tube, so samples reveal which frames they took."""
    return np.broadcast_to(np.arange(length, dtype=np.uint8)[None, :, None, None, None], (batch, length, 4, 4, 3))


def test_arrow_samples_reverse_exactly_the_backward_ones() -> None:
    windows = central_window(_tubes(200, 25), half_window=3)
    assert windows[0, :, 0, 0, 0].tolist() == list(range(9, 16))
    clips, labels = arrow_samples(windows, np.random.default_rng(0), prob=0.5)
    assert set(labels.tolist()) == {0, 1} and 0.35 < labels.mean() < 0.65
    order = clips[:, :, 0, 0, 0]
    assert (order[labels == 0] == np.arange(9, 16)).all()
    assert (order[labels == 1] == np.arange(15, 8, -1)).all()


def test_intermittent_offsets_keep_the_middle_and_use_gaps_of_1_to_4() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(500):
        offsets = intermittent_offsets(rng, half_window=3, max_gap=4)
        gaps = np.diff(offsets)
        assert len(offsets) == 7 and offsets[3] == 0
        assert gaps.min() >= 1 and gaps.max() <= 4 and gaps.max() > 1  # never a consecutive sequence
        seen |= set(gaps.tolist())
    assert seen == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="max_gap"):
        intermittent_offsets(rng, 3, 1)


def test_irregularity_samples_labels_match_the_frames_taken() -> None:
    tubes = _tubes(300, 25)
    clips, labels = irregularity_samples(tubes, half_window=3, max_gap=4, rng=np.random.default_rng(1), prob=0.5)
    assert clips.shape == (300, 7, 4, 4, 3) and 0.35 < labels.mean() < 0.65
    frames = clips[:, :, 0, 0, 0].astype(int)
    assert (frames[:, 3] == 12).all()  # the middle frame is always the detection frame
    gaps = np.diff(frames, axis=1)
    assert (gaps[labels == 0] == 1).all()
    assert (gaps[labels == 1].max(axis=1) > 1).all() and gaps.min() >= 1 and gaps.max() <= 4
    with pytest.raises(ValueError, match=">= 25 frames"):
        irregularity_samples(_tubes(2, 7), 3, 4, np.random.default_rng(0))


def test_middle_box_samples_drop_the_middle_frame() -> None:
    windows = central_window(_tubes(2, 7), half_window=3)
    inputs, targets = middle_box_samples(windows)
    assert inputs[0, :, 0, 0, 0].tolist() == [0, 1, 2, 4, 5, 6]
    assert targets.shape == (2, 4, 4, 3) and (targets == 3).all()


def test_stack_tubes_accepts_object_columns_and_rejects_bad_shapes() -> None:
    column = np.empty(2, dtype=object)
    column[0], column[1] = np.zeros((5, 4, 4, 3), np.uint8), np.ones((5, 4, 4, 3), np.uint8)
    assert stack_tubes(column).shape == (2, 5, 4, 4, 3)
    with pytest.raises(ValueError, match=r"\[B, L, H, W, 3\]"):
        stack_tubes(np.zeros((2, 5, 4, 4), np.uint8))


def test_splits() -> None:
    mask = temporal_split_mask(np.arange(100), np.full(100, 100), 0.85)
    assert mask.sum() == 85 and mask[:85].all()
    ids = [f"video_{i:03d}" for i in range(40)]
    train, val = split_train_val(ids, frac=0.85, seed=3)
    assert len(val) == 6 and not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert split_train_val(list(reversed(ids)), 0.85, 3) == (train, val)  # a pure function of ids and seed
    assert split_train_val(ids, 0.85, 4) != (train, val)
    assert split_train_val(["only"], 0.85, 0) == (["only"], [])
