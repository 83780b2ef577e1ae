"""Adapter building blocks: frame labels, video entries, split lists, the registry."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import storage
from pipelines.datasets import (
    DatasetLayoutError,
    FrameLabels,
    LabelMismatchError,
    VideoEntry,
    available_datasets,
    get_dataset,
)
from pipelines.sources import limit_per_split, list_videos, manifest_sha256, manifest_table, read_id_list


def test_frame_labels_values_and_intervals() -> None:
    values = FrameLabels(values=np.array([0, 1, 1, 0]), source="x.npy")
    assert values.any_anomalous and values.materialize(4).dtype == np.uint8
    with pytest.raises(LabelMismatchError, match="4 frame labels .*x.npy.* decodes to 5 frames"):
        values.materialize(5)
    intervals = FrameLabels.from_intervals([(1, 2), (4, 4)], source="ann.txt")
    assert intervals.materialize(6).tolist() == [0, 1, 1, 0, 1, 0]
    with pytest.raises(LabelMismatchError, match="ends past the last frame"):
        intervals.materialize(4)
    normal = FrameLabels.from_intervals(())
    assert not normal.any_anomalous and normal.materialize(3).tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"values": np.zeros((2, 2))}, "must be 1-D"),
        ({"values": np.array([0, 2])}, "must be 0/1"),
        ({"intervals": ((3, 1),)}, "bad anomalous interval"),
        ({}, "exactly one of"),
    ],
)
def test_frame_labels_reject_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrameLabels(**kwargs)


def test_video_entry_validation() -> None:
    with pytest.raises(ValueError, match="plain name"):
        VideoEntry("a/b", "x.mp4", "test", 0)
    with pytest.raises(ValueError, match="split"):
        VideoEntry("a", "x.mp4", "val", 0)
    with pytest.raises(ValueError, match="video_label"):
        VideoEntry("a", "x.mp4", "test", 2)


def test_registry_lists_and_builds_adapters() -> None:
    assert available_datasets() == ["avenue", "folder", "ped2", "shanghaitech", "shanghaitech_weak", "ucf_crime"]
    assert get_dataset("shanghaitech_weak", train_list="a.txt").lists["train"] == "a.txt"
    with pytest.raises(KeyError, match="known datasets: avenue"):
        get_dataset("kinetics")
    with pytest.raises(TypeError, match="accepts: \\['train_list', 'test_list'\\]"):
        get_dataset("shanghaitech_weak", train="a.txt")


def test_list_videos_finds_files_and_frame_folders(tmp_path) -> None:
    (tmp_path / "v10.mp4").write_bytes(b"")
    (tmp_path / "v2.AVI").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "seq 1").mkdir()
    (tmp_path / "seq 1" / "1.jpg").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    assert [v for v, _ in list_videos(str(tmp_path))] == ["seq 1", "v2", "v10"]
    assert dict(list_videos(str(tmp_path)))["seq 1"] == str(tmp_path / "seq 1")
    (tmp_path / "v2.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="share the video id 'v2'"):
        list_videos(str(tmp_path))


def test_id_lists_manifest_helpers() -> None:
    storage.write_text_atomic("memory://base-test/list.txt", "# weak split\n/x/01_0014_i3d.npy\n\n01_001.avi\n")
    assert read_id_list("memory://base-test/list.txt") == ["01_0014", "01_001"]
    storage.write_text_atomic("memory://base-test/dup.txt", "a\na.mp4\n")
    with pytest.raises(ValueError, match="twice"):
        read_id_list("memory://base-test/dup.txt")
    entries = [VideoEntry(f"{s}{i}", f"{s}{i}.mp4", s, 0) for s in ("train", "test") for i in range(3)]
    assert [e.video_id for e in limit_per_split(entries, 2)] == ["train0", "train1", "test0", "test1"]
    table = manifest_table(entries, "folder")
    assert table.num_rows == 6 and set(table.column("dataset").to_pylist()) == {"folder"}
    changed = entries[:-1] + [VideoEntry("test2", "test2.mp4", "test", 1)]
    assert manifest_sha256(entries, "folder") != manifest_sha256(changed, "folder")
    assert manifest_sha256(entries, "folder") == manifest_sha256(list(reversed(entries)), "folder")


def test_layout_error_is_a_file_not_found_error() -> None:
    assert issubclass(DatasetLayoutError, FileNotFoundError)
