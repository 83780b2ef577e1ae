import numpy as np
import pytest
import torch

from vad_models.i3d.config import I3DConfig
from vad_models.i3d.transforms import crop_boxes, preprocess, segment_snippets, ten_crop


def _coordinate_frames(height: int = 256, width: int = 340, frames: int = 2) -> torch.Tensor:
    """(1, T, H, W, 2) int frames whose pixels hold their own (row, col)."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    frame = torch.stack([rows, cols], dim=-1)
    return frame.expand(1, frames, height, width, 2)


def test_field_ten_crop_order_and_coordinates() -> None:
    crops = ten_crop(_coordinate_frames(), 224, "field")  # (1, 10, T, 224, 224, 2)
    assert crops.shape == (1, 10, 2, 224, 224, 2)
    first = crops[0, :, 0, 0, 0].tolist()  # (row, col) of each crop's top-left pixel
    last = crops[0, :, 0, -1, -1].tolist()
    # TL, TR, centre, BL, BR on the frame
    assert first[:5] == [[0, 0], [0, 116], [16, 58], [32, 0], [32, 116]]
    assert last[2] == [239, 281]  # centre crop = rows 16:240, cols 58:282
    # the same five on the horizontally flipped frame: column c of the flip is column 339 - c
    assert first[5:] == [[0, 339], [0, 223], [16, 281], [32, 339], [32, 223]]
    assert last[7] == [239, 58]


def test_torchvision_order_puts_the_centre_fifth() -> None:
    names = [b.name for b in crop_boxes(256, 340, 224, "torchvision")]
    assert names == ["tl", "tr", "bl", "br", "center", "tl_flip", "tr_flip", "bl_flip", "br_flip", "center_flip"]
    crops = ten_crop(_coordinate_frames(), 224, "torchvision")
    assert crops[0, 4, 0, 0, 0].tolist() == [16, 58] and crops[0, 2, 0, 0, 0].tolist() == [32, 0]


def test_preprocess_normalises_and_lays_out_crops_per_snippet() -> None:
    cfg = I3DConfig(height=40, width=56, crop_size=32)
    clips = torch.zeros(2, 16, 40, 56, 3, dtype=torch.uint8)
    clips[1] = 255
    x = preprocess(clips, cfg)
    assert x.shape == (20, 3, 16, 32, 32) and x.dtype == torch.float32
    assert x[:10].eq(-1).all() and x[10:].eq(1).all()  # x·2/255 − 1, snippet n's crops are rows 10n..10n+9
    kinetics = preprocess(clips, I3DConfig(height=40, width=56, crop_size=32, normalisation="kinetics"))
    assert torch.allclose(kinetics[0], torch.tensor(-114.75 / 57.375))


def test_preprocess_refuses_frames_of_another_size() -> None:
    with pytest.raises(ValueError, match="pinned to 256x340"):
        preprocess(torch.zeros(1, 16, 240, 320, 3, dtype=torch.uint8), I3DConfig())


def test_segment_snippets_are_non_overlapping_and_drop_the_tail() -> None:
    frames = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    snippets, starts = segment_snippets(frames, start_frame=128)
    assert snippets.shape == (2, 16, 1, 1, 1) and starts.tolist() == [128, 144]
    assert snippets[1, 0, 0, 0, 0] == 16
    with pytest.raises(ValueError, match="multiple of 16"):
        segment_snippets(frames, start_frame=8)


def test_config_rejects_unknown_conventions() -> None:
    with pytest.raises(ValueError, match="crop_order"):
        I3DConfig(crop_order="random")
    with pytest.raises(ValueError, match="normalisation"):
        I3DConfig(normalisation="imagenet")
    assert I3DConfig().feature_dim == 2048
