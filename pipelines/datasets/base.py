"""What every dataset adapter returns: video entries with their labels, and the errors adapters raise.

An adapter validates the tree a user brings (nothing is downloaded) and lists its videos as
:class:`VideoEntry` rows, the *source manifest*. Frame labels stay in the dataset's native meaning until the
clip store knows how many frames each video really decodes to; :meth:`FrameLabels.materialize` then produces
one uint8 label per frame or reports a length mismatch.

Example:
    >>> labels = FrameLabels.from_intervals([(2, 4)])
    >>> labels.materialize(6).tolist()
    [0, 0, 1, 1, 1, 0]
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipelines import storage

__all__ = [
    "SPLITS",
    "DatasetAdapter",
    "DatasetLayoutError",
    "FrameLabels",
    "LabelMismatchError",
    "VideoEntry",
    "check_splits",
    "load_npy",
]

SPLITS = ("train", "test")


class DatasetLayoutError(FileNotFoundError):
    """A dataset tree lacks something the adapter needs; the message shows the expected tree."""


class LabelMismatchError(ValueError):
    """Frame labels do not fit the decoded video (wrong length, interval past the last frame)."""


@dataclass(frozen=True, eq=False)
class FrameLabels:
    """Per-frame ground truth of one video, in one of two native forms.

    Attributes:
        values: One 0/1 label per frame (``.npy`` arrays, Avenue masks), or ``None``.
        intervals: Anomalous frame ranges ``(first, last)``, 0-based and inclusive, to expand to the decoded
            frame count (Ped2's ``.m`` file, UCF-Crime's annotation file); ``()`` means an all-normal video.
        source: Where the labels come from (named in error messages).
    """

    values: np.ndarray | None = None
    intervals: tuple[tuple[int, int], ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if (self.values is None) == (self.intervals is None):
            raise ValueError("FrameLabels needs exactly one of values or intervals")
        if self.values is not None:
            values = np.asarray(self.values)
            if values.ndim != 1:
                raise ValueError(f"frame labels {self.source} must be 1-D, got shape {values.shape}")
            if values.size and not np.isin(values, (0, 1)).all():
                raise ValueError(f"frame labels {self.source} must be 0/1, got values {np.unique(values)[:10]}")
            object.__setattr__(self, "values", values.astype(np.uint8))
        else:
            for first, last in self.intervals:
                if first < 0 or last < first:
                    raise ValueError(f"bad anomalous interval ({first}, {last}) in {self.source}")

    @classmethod
    def from_intervals(cls, intervals: Iterable[tuple[int, int]], source: str = "") -> FrameLabels:
        """Labels from 0-based inclusive ``(first, last)`` anomalous ranges."""
        return cls(intervals=tuple((int(a), int(b)) for a, b in intervals), source=source)

    @property
    def any_anomalous(self) -> bool:
        """Whether at least one frame is labelled anomalous."""
        return bool(self.values.any()) if self.values is not None else bool(self.intervals)

    def materialize(self, num_frames: int) -> np.ndarray:
        """One uint8 label per decoded frame.

        Raises:
            LabelMismatchError: If ``values`` has another length than ``num_frames`` or an interval ends past
                the last frame (truncating or padding labels would silently shift the ground truth).
        """
        if self.values is not None:
            if len(self.values) != num_frames:
                raise LabelMismatchError(
                    f"{len(self.values)} frame labels ({self.source}) for a video that decodes to {num_frames} frames"
                )
            return self.values
        out = np.zeros(num_frames, dtype=np.uint8)
        for first, last in self.intervals:
            if last >= num_frames:
                raise LabelMismatchError(
                    f"anomalous interval {first}-{last} ({self.source}) ends past the last frame of a video that "
                    f"decodes to {num_frames} frames"
                )
            out[first : last + 1] = 1
        return out


@dataclass(frozen=True)
class VideoEntry:
    """One input video of a dataset.

    Attributes:
        video_id: Unique within the dataset (across splits); used as a file name by the score store.
        uri: Video file or frame folder.
        split: ``"train"`` or ``"test"``.
        video_label: 0 normal, 1 abnormal, -1 unknown.
        labels: Frame labels (test videos that have them), else ``None``.
    """

    video_id: str
    uri: str
    split: str
    video_label: int
    labels: FrameLabels | None = None

    def __post_init__(self) -> None:
        if not self.video_id or "/" in self.video_id or self.video_id in (".", ".."):
            raise ValueError(f"invalid video id {self.video_id!r} for {self.uri} (must be a plain name)")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.video_label not in (-1, 0, 1):
            raise ValueError(f"video_label must be -1, 0 or 1, got {self.video_label!r}")


class DatasetAdapter(ABC):
    """Lists the videos and labels of one dataset layout.

    Subclasses set ``name`` and ``expected_tree`` (shown in every layout error) and implement
    :meth:`entries`. Options (e.g. split list files) are constructor keyword arguments.
    """

    name: ClassVar[str]
    expected_tree: ClassVar[str]

    @abstractmethod
    def entries(self, root: str, splits: Sequence[str] = SPLITS) -> list[VideoEntry]:
        """All videos of ``splits`` under ``root``, sorted by split then natural video order.

        Raises:
            DatasetLayoutError: If a required directory, list or label file is missing.
        """

    def layout_error(self, root: str, problem: str) -> DatasetLayoutError:
        """A :class:`DatasetLayoutError` naming the problem and showing the expected tree under ``root``."""
        return DatasetLayoutError(f"{self.name} dataset at {root}: {problem}.\nExpected layout:\n{self.expected_tree}")

    def require(self, root: str, *parts: str) -> str:
        """``root/parts`` if it exists, else a layout error naming it."""
        uri = storage.join(root, *parts)
        if not storage.exists(uri):
            raise self.layout_error(root, f"missing {'/'.join(parts)}")
        return uri


def check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    """Validate requested split names (``train``, ``test``)."""
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {list(splits)}")
    return tuple(dict.fromkeys(splits))


def load_npy(uri: str) -> np.ndarray:
    """A ``.npy`` array from any storage URI (no pickles).

    Example:
        >>> load_npy("data/labels/test_000.npy")  # doctest: +SKIP
        array([0, 0, 1, ...], dtype=uint8)
    """
    try:
        return np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"cannot read label array {uri}: {exc}") from None
