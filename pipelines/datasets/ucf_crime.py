"""UCF-Crime: 1,900 ``.mp4`` videos; 1,610 train with video-level labels, 290 test with temporal annotations.

Splits come from the dataset's own files (seed 004 Table 2: train 800 normal + 810 abnormal, test 150 + 140):
``Anomaly_Train.txt`` lists the train videos (``Abuse/Abuse001_x264.mp4``), and
``Temporal_Anomaly_Annotation_for_Testing_Videos.txt`` the test videos, one line each::

    Arrest039_x264.mp4  Arrest  7215  7425  -1  -1

with up to two anomalous intervals (``-1 -1`` = none). Intervals are read as the evaluation scripts that ship
with RTFM-style code do (``gt[start:end] = 1``): 0-based frames ``start .. end-1``. Normal videos are the ones
named ``Normal_Videos*`` (train) or annotated ``Normal`` with no interval (test). Videos are found anywhere under
the root by file name, so the archive's part folders need no rearranging.

Example:
    >>> entries = UcfCrimeDataset().entries("data/UCF_Crimes", splits=("test",))  # doctest: +SKIP
    >>> entries[0].video_id, entries[0].labels.intervals  # doctest: +SKIP
    ('Abuse028_x264', ((165, 239),))
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines import storage
from pipelines.datasets.base import SPLITS, DatasetAdapter, FrameLabels, VideoEntry, check_splits
from pipelines.decode import VIDEO_EXTENSIONS
from pipelines.sources import read_id_list, video_stem

__all__ = ["UcfCrimeDataset", "parse_temporal_annotations"]

ANNOTATION_FILE = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
TRAIN_LIST = "Anomaly_Train.txt"
_SPLITS_DIR = "Anomaly_Detection_splits"


def parse_temporal_annotations(text: str, source: str = "") -> dict[str, tuple[tuple[int, int], ...]]:
    r"""``video_id -> anomalous intervals`` (0-based, inclusive) from UCF-Crime's temporal annotation file.

    Example:
        >>> parse_temporal_annotations("Arrest039_x264.mp4  Arrest  7215  7425  -1  -1\n")
        {'Arrest039_x264': ((7215, 7424),)}
    """
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4 or len(fields) % 2:
            raise ValueError(f"{source}:{number}: expected 'name class start end [start end]', got {line!r}")
        try:
            bounds = [int(v) for v in fields[2:]]
        except ValueError:
            raise ValueError(f"{source}:{number}: frame numbers must be integers, got {line!r}") from None
        intervals = []
        for start, end in zip(bounds[0::2], bounds[1::2]):
            if start == -1 and end == -1:
                continue
            if start < 0 or end <= start:
                raise ValueError(f"{source}:{number}: bad interval {start} {end} in {line!r}")
            intervals.append((start, end - 1))
        out[video_stem(fields[0])] = tuple(intervals)
    return out


class UcfCrimeDataset(DatasetAdapter):
    """UCF-Crime with its official splits.

    Args:
        train_list: ``Anomaly_Train.txt`` (default: ``ROOT/Anomaly_Train.txt`` or
            ``ROOT/Anomaly_Detection_splits/Anomaly_Train.txt``).
        test_list: Optional list restricting the test split (default: every annotated video).
        annotations: The temporal annotation file (default: ``ROOT/{ANNOTATION_FILE}`` or in
            ``Anomaly_Detection_splits/``).
    """

    name = "ucf_crime"
    expected_tree = f"""\
    UCF_Crimes/
      **/Abuse001_x264.mp4 ... **/Normal_Videos_003_x264.mp4     videos at any depth, found by file name
      {_SPLITS_DIR}/{TRAIN_LIST}             1,610 lines like Abuse/Abuse001_x264.mp4
      {ANNOTATION_FILE}     290 lines like Arrest039_x264.mp4  Arrest  7215  7425  -1  -1
"""

    def __init__(self, train_list: str | None = None, test_list: str | None = None, annotations: str | None = None):
        self.train_list, self.test_list, self.annotations = train_list, test_list, annotations

    def entries(self, root: str, splits: Sequence[str] = SPLITS) -> list[VideoEntry]:
        splits = check_splits(splits)
        videos = self._index(root)
        out: list[VideoEntry] = []
        if "train" in splits:
            list_uri = self._find(root, self.train_list, TRAIN_LIST)
            for line in _list_entries(list_uri):
                video_id = video_stem(line)
                uri = self._locate(root, videos, video_id, line)
                out.append(VideoEntry(video_id, uri, "train", 0 if video_id.startswith("Normal") else 1))
        if "test" in splits:
            ann_uri = self._find(root, self.annotations, ANNOTATION_FILE)
            annotated = parse_temporal_annotations(storage.read_text(ann_uri), ann_uri)
            ids = read_id_list(self.test_list) if self.test_list else list(annotated)
            for video_id in ids:
                if video_id not in annotated:
                    raise self.layout_error(root, f"test video {video_id!r} has no line in {ann_uri}")
                labels = FrameLabels.from_intervals(annotated[video_id], source=f"{ann_uri} ({video_id})")
                uri = self._locate(root, videos, video_id, video_id)
                out.append(VideoEntry(video_id, uri, "test", int(labels.any_anomalous), labels))
        return out

    def _find(self, root: str, given: str | None, name: str) -> str:
        candidates = [given] if given else [storage.join(root, name), storage.join(root, _SPLITS_DIR, name)]
        for uri in candidates:
            if storage.exists(uri):
                return uri
        raise self.layout_error(root, f"missing {name} (looked at {', '.join(candidates)})")

    def _index(self, root: str) -> dict[str, list[str]]:
        if not storage.exists(root):
            raise self.layout_error(root, "the root directory does not exist")
        index: dict[str, list[str]] = {}
        for uri in storage.list_files(root, suffixes=VIDEO_EXTENSIONS, recursive=True):
            index.setdefault(video_stem(uri), []).append(uri)
        if not index:
            raise self.layout_error(root, "no videos found")
        return index

    def _locate(self, root: str, videos: dict[str, list[str]], video_id: str, entry: str) -> str:
        found = videos.get(video_id, [])
        exact = [u for u in found if u.endswith("/" + entry.strip("/"))]
        if len(exact) == 1 or len(found) == 1:
            return (exact or found)[0]
        if not found:
            raise self.layout_error(root, f"video {entry!r} not found under the root")
        raise self.layout_error(root, f"video {entry!r} is ambiguous: {found[:3]}")


def _list_entries(uri: str) -> list[str]:
    """Non-empty lines of a list file (``Abuse/Abuse001_x264.mp4``)."""
    return [line.strip() for line in storage.read_text(uri).splitlines() if line.strip()]
