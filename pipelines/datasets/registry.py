"""Explicit registry of dataset adapters: name -> class, imported lazily.

Example:
    >>> from pipelines.datasets.registry import available_datasets
    >>> available_datasets()
    ['avenue', 'folder', 'ped2', 'shanghaitech', 'shanghaitech_weak', 'ucf_crime']
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pipelines.datasets.base import DatasetAdapter

__all__ = ["available_datasets", "get_dataset"]

# name -> "module:ClassName"; a new layout is one module plus one line here.
_ADAPTERS: dict[str, str] = {
    "folder": "pipelines.datasets.folder:FolderDataset",
    "ped2": "pipelines.datasets.ped2:Ped2Dataset",
    "avenue": "pipelines.datasets.avenue:AvenueDataset",
    "shanghaitech": "pipelines.datasets.shanghaitech:ShanghaiTechDataset",
    "shanghaitech_weak": "pipelines.datasets.shanghaitech:ShanghaiTechWeakDataset",
    "ucf_crime": "pipelines.datasets.ucf_crime:UcfCrimeDataset",
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return sorted(_ADAPTERS)


def get_dataset(name: str, **options: Any) -> DatasetAdapter:
    """The adapter registered as ``name``, built with its ``options`` (e.g. split list files).

    Raises:
        KeyError: naming the known datasets when ``name`` is not one of them.
        TypeError: If an option is not accepted by the adapter (the message lists the accepted ones).

    Example:
        >>> get_dataset("ucf_crime", annotations="Temporal_Anomaly_Annotation_for_Testing_Videos.txt").name
        'ucf_crime'
    """
    try:
        target = _ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(available_datasets())}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"dataset {name!r} does not take options {unknown}; it accepts: {accepted or 'none'}")
    return cls(**options)
