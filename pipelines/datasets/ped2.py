"""UCSD Ped2: grayscale ``.tif`` frame folders; test labels as 1-based frame ranges in a MATLAB ``.m`` file.

``Test/UCSDped2.m`` has one line per test video, in order::

    TestVideoFile{end+1}.gt_frame = [61:180];

Ranges are 1-based and inclusive (MATLAB); several ranges may be listed (``[1:10, 50:60]``). They become
0-based inclusive :class:`~pipelines.datasets.base.FrameLabels` intervals, expanded to the decoded frame count
by the clip store. ``Test00N_gt`` folders (pixel masks) are not videos and are skipped.

Example:
    >>> entries = Ped2Dataset().entries("data/UCSDped2", splits=("test",))  # doctest: +SKIP
    >>> entries[0].video_id, entries[0].labels.intervals  # doctest: +SKIP
    ('Test001', ((60, 179),))
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipelines import storage
from pipelines.datasets.base import SPLITS, DatasetAdapter, FrameLabels, VideoEntry, check_splits
from pipelines.sources import list_videos

__all__ = ["Ped2Dataset", "parse_gt_frames"]

_GT_LINE = re.compile(r"\.gt_frame\s*=\s*\[([^\]]*)\]")
_RANGE = re.compile(r"(\d+)\s*:\s*(\d+)|(\d+)")


def parse_gt_frames(text: str, source: str = "") -> list[tuple[tuple[int, int], ...]]:
    r"""Anomalous ranges of every test video in a UCSD ``.m`` label file, 0-based inclusive.

    Example:
        >>> parse_gt_frames("TestVideoFile{end+1}.gt_frame = [61:180];\nTestVideoFile{end+1}.gt_frame = [1:10, 20];")
        [((60, 179),), ((0, 9), (19, 19))]
    """
    videos = []
    for match in _GT_LINE.finditer(text):
        ranges = []
        for a, b, single in _RANGE.findall(match.group(1)):
            first, last = (int(a), int(b)) if a else (int(single), int(single))
            if first < 1 or last < first:
                raise ValueError(f"bad frame range {match.group(1)!r} in {source} (1-based, first <= last)")
            ranges.append((first - 1, last - 1))
        videos.append(tuple(ranges))
    return videos


class Ped2Dataset(DatasetAdapter):
    """UCSD Ped2 (``UCSDped2/{Train,Test}``); ``root`` may be ``UCSDped2`` itself or its parent."""

    name = "ped2"
    expected_tree = """\
    UCSDped2/
      Train/Train001/001.tif ... Train016/     16 training frame folders (normal)
      Test/Test001/001.tif ... Test012/        12 test frame folders
      Test/Test001_gt/ ...                     pixel masks (optional, not used here)
      Test/UCSDped2.m                          TestVideoFile{end+1}.gt_frame = [61:180]; (one line per test video)
"""

    def entries(self, root: str, splits: Sequence[str] = SPLITS) -> list[VideoEntry]:
        splits = check_splits(splits)
        base = storage.join(root, "UCSDped2") if storage.exists(storage.join(root, "UCSDped2")) else root
        out: list[VideoEntry] = []
        for split in splits:
            folder = "Train" if split == "train" else "Test"
            videos = [(v, u) for v, u in list_videos(self.require(base, folder)) if not v.endswith("_gt")]
            if not videos:
                raise self.layout_error(root, f"no frame folders in {folder}/")
            if split == "train":
                out += [VideoEntry(v, u, "train", 0) for v, u in videos]
                continue
            label_uri = self.require(base, "Test", "UCSDped2.m")
            ranges = parse_gt_frames(storage.read_text(label_uri), label_uri)
            if len(ranges) != len(videos):
                raise self.layout_error(
                    root, f"{label_uri} lists {len(ranges)} test videos but Test/ holds {len(videos)} frame folders"
                )
            for (video_id, uri), video_ranges in zip(videos, ranges):
                labels = FrameLabels.from_intervals(video_ranges, source=f"{label_uri} ({video_id})")
                out.append(VideoEntry(video_id, uri, "test", int(labels.any_anomalous), labels))
        return out
