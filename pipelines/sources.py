"""Source manifests: finding the videos in a directory and describing a list of them as one table.

A *source manifest* is the list of :class:`~pipelines.datasets.base.VideoEntry` an adapter returns. Helpers
here list video files and frame folders, read split list files, cap a manifest for smoke runs, and fingerprint
it (``source_manifest_sha256`` in every store's ``_store.json``, so two stores can be told apart by input).

Example:
    >>> from pipelines.datasets import get_dataset
    >>> entries = get_dataset("folder").entries("data/corpus")  # doctest: +SKIP
    >>> manifest_table(entries, "folder").column_names  # doctest: +SKIP
    ['video_id', 'dataset', 'uri', 'split', 'video_label']
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence

import pyarrow as pa

from pipelines import storage
from pipelines.datasets.base import VideoEntry
from pipelines.decode import IMAGE_EXTENSIONS, is_video_file, natural_key

__all__ = [
    "SOURCE_SCHEMA",
    "limit_per_split",
    "list_videos",
    "manifest_sha256",
    "manifest_table",
    "read_id_list",
    "video_stem",
]

SOURCE_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("dataset", pa.string()),
        ("uri", pa.string()),
        ("split", pa.string()),
        ("video_label", pa.int8()),
    ]
)


def video_stem(name: str) -> str:
    """A file name without directory and extension (``a/b/Clip 01.mp4`` -> ``Clip 01``).

    Example:
        >>> video_stem("Abuse/Abuse001_x264.mp4")
        'Abuse001_x264'
    """
    base = posixpath.basename(name.rstrip("/"))
    stem, ext = posixpath.splitext(base)
    return stem if ext else base


def list_videos(dir_uri: str) -> list[tuple[str, str]]:
    """Videos directly inside ``dir_uri``: video files, and subfolders holding frame images.

    Args:
        dir_uri: Directory to scan (local or ``s3://``).

    Returns:
        ``(video_id, uri)`` pairs in natural order of ``video_id``: the file stem for a video file, the folder
        name for a frame folder (whose ``uri`` is the folder).

    Raises:
        FileNotFoundError: If ``dir_uri`` does not exist.
        ValueError: If two entries share a video id (e.g. ``a.mp4`` and ``a.avi``).

    Example:
        >>> list_videos("data/corpus/train")  # doctest: +SKIP
        [('train_000', 'data/corpus/train/train_000.mp4'), ('train_001', 'data/corpus/train/train_001')]
    """
    prefix = dir_uri if dir_uri.endswith("/") else dir_uri + "/"
    found: dict[str, str] = {}

    def add(video_id: str, uri: str) -> None:
        if found.get(video_id, uri) != uri:
            raise ValueError(f"two inputs in {dir_uri} share the video id {video_id!r}: {found[video_id]} and {uri}")
        found[video_id] = uri

    for uri in storage.list_files(dir_uri, recursive=True):
        parts = uri[len(prefix) :].split("/")
        if len(parts) == 1 and is_video_file(parts[0]):
            add(video_stem(parts[0]), uri)
        elif len(parts) == 2 and parts[1].lower().endswith(IMAGE_EXTENSIONS):
            add(parts[0], storage.join(dir_uri, parts[0]))
    return sorted(found.items(), key=lambda item: natural_key(item[0]))


def read_id_list(uri: str) -> list[str]:
    r"""Video ids from a split list file: one entry per line, blank lines and ``#`` comments skipped.

    An entry may be a bare id or a path to a video or feature file: the id is its base name without extension
    and without a trailing ``_i3d`` (RTFM-style feature lists name ``<video>_i3d.npy``).

    Example:
        >>> storage.write_text_atomic("memory://lists/sh_train.txt", "/feats/01_0014_i3d.npy\n01_001\n")
        >>> read_id_list("memory://lists/sh_train.txt")
        ['01_0014', '01_001']
    """
    ids = []
    for line in storage.read_text(uri).splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        stem = video_stem(entry.split()[0])
        ids.append(stem[: -len("_i3d")] if stem.endswith("_i3d") else stem)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"split list {uri} names some videos twice: {dup[:10]}")
    return ids


def limit_per_split(entries: Sequence[VideoEntry], limit: int | None) -> list[VideoEntry]:
    """At most ``limit`` entries of each split, keeping the order (``None``: all).

    Example:
        >>> e = [VideoEntry(f"v{i}", f"v{i}.mp4", s, 0) for s in ("train", "test") for i in range(3)]
        >>> [x.video_id for x in limit_per_split(e, 1)]
        ['v0', 'v0']
    """
    if limit is None:
        return list(entries)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    taken: dict[str, int] = {}
    out = []
    for entry in entries:
        if taken.get(entry.split, 0) < limit:
            taken[entry.split] = taken.get(entry.split, 0) + 1
            out.append(entry)
    return out


def manifest_table(entries: Sequence[VideoEntry], dataset: str) -> pa.Table:
    """The source manifest as a table with :data:`SOURCE_SCHEMA`.

    Example:
        >>> manifest_table([VideoEntry("v0", "v0.mp4", "test", 1)], "folder").num_rows
        1
    """
    return pa.table(
        {
            "video_id": [e.video_id for e in entries],
            "dataset": [dataset] * len(entries),
            "uri": [e.uri for e in entries],
            "split": [e.split for e in entries],
            "video_label": [e.video_label for e in entries],
        },
        schema=SOURCE_SCHEMA,
    )


def manifest_sha256(entries: Sequence[VideoEntry], dataset: str) -> str:
    """Fingerprint of a source manifest: ids, URIs, splits, video labels and frame labels.

    Example:
        >>> len(manifest_sha256([VideoEntry("v0", "v0.mp4", "test", 1)], "folder"))
        64
    """
    digest = hashlib.sha256(dataset.encode())
    for e in sorted(entries, key=lambda x: (x.split, x.video_id)):
        labels = None
        if e.labels is not None:
            labels = (
                hashlib.sha256(e.labels.values.tobytes()).hexdigest()
                if e.labels.values is not None
                else [list(i) for i in e.labels.intervals]
            )
        record = [e.video_id, e.uri, e.split, e.video_label, labels]
        digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()
