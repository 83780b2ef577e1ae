"""Dataset adapters: validate a user's dataset tree and list its videos and labels (nothing is downloaded).

Example:
    >>> from pipelines.datasets import get_dataset
    >>> entries = get_dataset("ped2").entries("data/UCSDped2", splits=("test",))  # doctest: +SKIP
"""

from pipelines.datasets.base import (
    SPLITS,
    DatasetAdapter,
    DatasetLayoutError,
    FrameLabels,
    LabelMismatchError,
    VideoEntry,
)
from pipelines.datasets.registry import available_datasets, get_dataset

__all__ = [
    "SPLITS",
    "DatasetAdapter",
    "DatasetLayoutError",
    "FrameLabels",
    "LabelMismatchError",
    "VideoEntry",
    "available_datasets",
    "get_dataset",
]
