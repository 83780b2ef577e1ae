"""Store layout helpers and the Ray Data reader (tensor columns through Parquet and back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines import storage
from pipelines.stores import (
    MANIFEST_SCHEMA,
    QUARANTINE_SCHEMA,
    StoreError,
    StoreExistsError,
    prepare_store,
    read_labels,
    read_manifest,
    read_quarantine,
    read_store,
    read_store_metadata,
    write_labels,
    write_manifest,
    write_quarantine,
    write_store_metadata,
)

MANIFEST_ROW = {
    "video_id": "cam 1 é",
    "dataset": "folder",
    "uri": "s3://b/cam 1 é.mp4",
    "split": "test",
    "video_label": 1,
    "num_frames": 40,
    "fps": float("nan"),
    "height": 480,
    "width": 640,
}


def test_prepare_store_refuses_then_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "store"
    prepare_store(str(out))  # nothing there
    out.mkdir()
    prepare_store(str(out))  # an empty directory is fine
    (out / "data").mkdir()
    (out / "data" / "part.parquet").write_bytes(b"x")
    with pytest.raises(StoreExistsError, match="unfinished store(.|\n)*--overwrite"):
        prepare_store(str(out))
    write_store_metadata(str(out), {"store": "clips"})
    with pytest.raises(StoreExistsError, match="already holds a store; pass --overwrite"):
        prepare_store(str(out))
    prepare_store(str(out), overwrite=True)
    assert not out.exists()


def test_metadata_round_trip_and_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a store: it has no _store.json"):
        read_store_metadata(str(tmp_path))
    with pytest.raises(ValueError, match="'store' in"):
        write_store_metadata(str(tmp_path), {"store": "frames"})
    write_store_metadata(str(tmp_path), {"store": "tubes", "frame_spec": {"height": 64}})
    assert read_store_metadata(str(tmp_path)) == {"store": "tubes", "frame_spec": {"height": 64}}


def test_manifest_labels_quarantine_round_trip(tmp_path: Path) -> None:
    uri = str(tmp_path)
    write_manifest(uri, [MANIFEST_ROW])
    table = read_manifest(uri)
    assert table.schema.equals(MANIFEST_SCHEMA)
    row = table.to_pylist()[0]
    assert row["video_id"] == "cam 1 é" and row["num_frames"] == 40 and np.isnan(row["fps"])
    assert read_labels(uri) == {}
    labels = {"b": np.array([1, 0, 1], np.uint8), "a": np.zeros(0, np.uint8), "c": np.ones(5, np.uint8)}
    write_labels(uri, labels)
    back = read_labels(uri)
    assert sorted(back) == ["a", "b", "c"]
    for key, value in labels.items():
        assert back[key].dtype == np.uint8
        np.testing.assert_array_equal(back[key], value)
    assert read_quarantine(uri).schema.equals(QUARANTINE_SCHEMA) and read_quarantine(uri).num_rows == 0
    write_quarantine(uri, [{"video_id": "x", "uri": "x.mp4", "stage": "decode", "error": "moov atom not found"}])
    assert read_quarantine(uri).to_pylist() == [
        {"video_id": "x", "uri": "x.mp4", "stage": "decode", "error": "moov atom not found"}
    ]


def _segment_rows(row: dict) -> list[dict]:
    """Two segments per video; the second one's length depends on the video (variable shapes in a block)."""
    n_last = int(row["n_last"])
    return [
        {
            "video_id": row["video_id"],
            "dataset": "ds",
            "split": row["split"],
            "start_frame": np.int64(start),
            "num_frames": np.int64(n),
            "frames": np.full((n, 6, 5, 1), start, np.uint8),
        }
        for start, n in ((0, 8), (5, n_last))
    ]


def test_read_store_tensor_round_trip_split_and_columns(ray_local: None, tmp_path: Path) -> None:
    import ray

    uri = str(tmp_path / "store")
    items = [
        {"video_id": "same", "split": "train", "n_last": 8},  # every segment 8 frames: a fixed-shape block
        {"video_id": "short", "split": "train", "n_last": 3},
        {"video_id": "t", "split": "test", "n_last": 6},
    ]
    fs, path = storage.resolve(storage.join(uri, "data"))
    ray.data.from_items(items, override_num_blocks=3).flat_map(_segment_rows).write_parquet(
        path, filesystem=fs, partition_cols=["dataset", "split"]
    )
    with pytest.raises(StoreError, match="no _store.json"):
        read_store(uri)
    write_store_metadata(uri, {"store": "clips", "splits": ["train", "test"]})

    train = read_store(uri, split="train").materialize()
    rows = train.take_all()
    assert sorted((r["video_id"], int(r["start_frame"])) for r in rows) == [
        ("same", 0),
        ("same", 5),
        ("short", 0),
        ("short", 5),
    ]
    for r in rows:
        assert r["split"] == "train" and r["dataset"] == "ds"
        assert r["frames"].dtype == np.uint8 and r["frames"].shape == (int(r["num_frames"]), 6, 5, 1)
        assert (r["frames"] == r["start_frame"]).all()
    batch = train.take_batch(4, batch_format="numpy")
    assert {tuple(f.shape) for f in batch["frames"]} == {(8, 6, 5, 1), (3, 6, 5, 1)}

    cols = read_store(uri, split="test", columns=["video_id", "start_frame"]).take_all()
    assert sorted(cols[0]) == ["start_frame", "video_id"] and len(cols) == 2
    with pytest.raises(ValueError, match="no split 'val'"):
        read_store(uri, split="val")


def _write_raw_store(uri: str, items: list[dict], meta: dict) -> None:
    """A clip store written the current way: ``frames`` as one large_binary value of raw uint8 per segment."""
    import pyarrow.parquet as pq

    for item in items:
        rows = _segment_rows(item)
        table = pa.table(
            {
                "video_id": pa.array([r["video_id"] for r in rows], pa.string()),
                "start_frame": pa.array([r["start_frame"] for r in rows], pa.int64()),
                "num_frames": pa.array([r["num_frames"] for r in rows], pa.int64()),
                "frames": pa.array([r["frames"].tobytes() for r in rows], pa.large_binary()),
            }
        )
        folder = Path(uri, "data", "dataset=ds", f"split={item['split']}")
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{item['video_id']}.parquet", row_group_size=1)
    write_store_metadata(uri, meta)


def test_read_store_uses_the_v1_parquet_reader_unless_v2_is_asked_for(
    luss_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V2 starts FooterReader actors at every execution; both readers must give the same rows."""

    def plan(ds: object) -> list[str]:
        return [type(op).__name__ for op in ds._logical_plan.dag.post_order_iter()]

    def rows(ds: object) -> list[tuple]:
        return sorted((r["video_id"], r["split"], int(r["start_frame"]), r["frames"].tobytes()) for r in ds.take_all())

    monkeypatch.delenv("RAY_DATA_USE_DATASOURCE_V2", raising=False)
    v1 = read_store(luss_store, split="train")
    assert plan(v1)[0] == "Read"
    monkeypatch.setenv("RAY_DATA_USE_DATASOURCE_V2", "1")
    v2 = read_store(luss_store, split="train")
    assert plan(v2)[:2] == ["ListFiles", "ReadFiles"]
    assert rows(v1) == rows(v2) and rows(v1)
    import ray

    assert ray.data.DataContext.get_current().use_datasource_v2  # Ray's own default is left as it was


def test_read_store_binary_frames_read_like_the_tensor_column(ray_local: None, tmp_path: Path) -> None:
    """``frames_encoding: raw_uint8`` stores and stores written before it (tensor column) read identically."""
    import ray

    items = [
        {"video_id": "same", "split": "train", "n_last": 8},
        {"video_id": "short", "split": "train", "n_last": 3},
        {"video_id": "t", "split": "test", "n_last": 6},
    ]
    legacy, raw = str(tmp_path / "legacy"), str(tmp_path / "raw")
    fs, path = storage.resolve(storage.join(legacy, "data"))
    ray.data.from_items(items, override_num_blocks=3).flat_map(_segment_rows).write_parquet(
        path, filesystem=fs, partition_cols=["dataset", "split"]
    )
    spec = {"height": 6, "width": 5, "channels": 1}
    write_store_metadata(legacy, {"store": "clips", "splits": ["train", "test"], "frame_spec": spec})
    meta = {"store": "clips", "splits": ["train", "test"], "frame_spec": spec, "frames_encoding": "raw_uint8"}
    _write_raw_store(raw, items, meta)

    def key(row: dict) -> tuple:
        return row["video_id"], int(row["start_frame"])

    for split in ("train", None):
        old = sorted(read_store(legacy, split=split).take_all(), key=key)
        new = sorted(read_store(raw, split=split).take_all(), key=key)
        assert [key(r) for r in new] == [key(r) for r in old] and len(new) == (4 if split else 6)
        for a, b in zip(old, new, strict=True):
            assert sorted(a) == sorted(b)
            assert type(b["frames"]) is type(a["frames"]) is np.ndarray
            assert b["frames"].dtype == a["frames"].dtype == np.uint8 and b["frames"].shape == a["frames"].shape
            np.testing.assert_array_equal(b["frames"], a["frames"])
    old_schema, new_schema = read_store(legacy).schema(), read_store(raw).schema()
    assert new_schema.types[new_schema.names.index("frames")] == old_schema.types[old_schema.names.index("frames")]
    old_batch = read_store(legacy, split="train").take_batch(4, batch_format="numpy")
    new_batch = read_store(raw, split="train").take_batch(4, batch_format="numpy")
    assert type(new_batch["frames"]) is type(old_batch["frames"]) and new_batch["frames"].dtype == object
    assert sorted(tuple(f.shape) for f in new_batch["frames"]) == sorted(tuple(f.shape) for f in old_batch["frames"])

    only = read_store(raw, split="test", columns=["frames"]).take_all()
    assert sorted(f["frames"].shape for f in only) == [(6, 6, 5, 1), (8, 6, 5, 1)]
    cols = read_store(raw, split="test", columns=["video_id", "start_frame"]).take_all()
    assert sorted(cols[0]) == ["start_frame", "video_id"] and len(cols) == 2

    write_store_metadata(raw, dict(meta, frames_encoding="png"))
    with pytest.raises(StoreError, match="unknown frames_encoding 'png'"):
        read_store(raw)


def test_decode_frames_rejects_partial_frames() -> None:
    from pipelines.stores import decode_frames

    with pytest.raises(ValueError, match="not a whole number"):
        decode_frames(pa.array([b"12345"], pa.large_binary()), (2, 2, 1))
    empty = decode_frames(pa.array([], pa.large_binary()), (2, 2, 1))
    assert len(empty) == 0 and isinstance(empty.type, pa.ExtensionType)


def test_read_store_without_rows(tmp_path: Path) -> None:
    write_store_metadata(str(tmp_path), {"store": "clips", "splits": []})
    with pytest.raises(StoreError, match="holds no rows"):
        read_store(str(tmp_path))


def test_labels_table_schema() -> None:
    from pipelines.stores import LABELS_SCHEMA, labels_table

    table = labels_table({"v": np.array([0, 1], np.uint8)})
    assert table.schema.equals(LABELS_SCHEMA) and table.column("frame_labels").type == pa.list_(pa.uint8())
