from pathlib import Path

import numpy as np
import pytest
import torch

from vad_models.ssmtl.teachers import RandomTeacher, load_teacher, teacher_features
from vad_models.ssmtl.tubes import crop_tubes, owned_frames


@pytest.mark.parametrize(("video_frames", "segment", "overlap"), [(300, 128, 24), (64, 32, 24), (20, 32, 24),
                                                                  (500, 100, 31), (129, 128, 30)])
def test_every_frame_is_owned_by_exactly_one_segment_that_holds_its_tube(video_frames, segment, overlap) -> None:
    owner = np.zeros(video_frames, int)
    start = 0
    while True:  # the clip store's segment starts
        n = min(segment, video_frames - start)
        lo, hi = owned_frames(start, n, overlap, video_frames)
        owner[lo : hi + 1] += 1
        for t in range(lo, hi + 1):  # the tube's clamped frames lie inside the segment
            half = overlap // 2
            assert start <= max(t - half, 0) and min(t + half, video_frames - 1) <= start + n - 1
        if start + segment >= video_frames:
            break
        start += segment - overlap
    assert (owner == 1).all()


def test_crop_tubes_takes_the_box_from_each_frame_and_clamps_at_the_video_ends() -> None:
    frames = np.zeros((10, 20, 30, 3), np.uint8)
    frames[:] = (np.arange(10, dtype=np.uint8) * 10)[:, None, None, None]  # frame t is filled with 10 t
    frames[:, 5:15, 10:20, 1] = 255  # the box region is green in every frame
    tubes = crop_tubes(frames, start=0, video_frames=10, frame_idx=np.array([1, 8]),
                       boxes=np.array([[10, 5, 20, 15], [0, 0, 30, 20]]), length=5, size=8)
    assert tubes.shape == (2, 5, 8, 8, 3)
    assert tubes[0, :, 0, 0, 0].tolist() == [0, 0, 10, 20, 30]  # frames -1..3: the first frame repeats
    assert (tubes[0, ..., 1] == 255).all()
    assert tubes[1, :, 0, 0, 0].tolist() == [60, 70, 80, 90, 90]  # frames 6..10: the last frame repeats
    with pytest.raises(ValueError, match="overlap must be >= 4"):  # a later segment cannot reach frame 99
        crop_tubes(frames, 100, 200, np.array([101]), np.array([[0, 0, 5, 5]]), length=5)
    with pytest.raises(ValueError, match="odd"):
        crop_tubes(frames, 100, 110, np.array([105]), np.array([[0, 0, 5, 5]]), length=4)


def test_teachers(tmp_path: Path) -> None:
    crops = torch.rand(5, 3, 64, 64)
    random = load_teacher("random", dim=12)
    torch.testing.assert_close(teacher_features(random, crops, batch_size=2), RandomTeacher(12)(crops))  # seeded
    path = tmp_path / "teacher.pt"
    torch.jit.script(RandomTeacher(7, seed=3)).save(str(path))
    scripted = load_teacher(str(path), dim=7)
    assert teacher_features(scripted, crops).shape == (5, 7)
    with pytest.raises(ValueError, match=r"\[N, 1000\]"):
        load_teacher(str(path), dim=1000)
    with pytest.raises(ValueError, match="TorchScript"):
        load_teacher(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="dim"):
        load_teacher("random")
