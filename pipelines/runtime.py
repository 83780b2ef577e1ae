"""Connecting to Ray the same way from a laptop, a CI runner and a cluster.

``RAY_ADDRESS`` (set by ``ray job submit`` and on cluster nodes) targets an existing cluster; without it an
embedded local Ray starts with the requested CPUs.

Example:
    >>> from pipelines.runtime import init_ray
    >>> init_ray(num_cpus=2)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import sys

import ray

__all__ = ["init_ray"]


def init_ray(num_cpus: int | None = None, *, quiet: bool = True) -> None:
    """Start or join Ray once per process.

    Args:
        num_cpus: CPUs of an embedded local cluster (ignored when joining an existing one).
        quiet: Hide Ray's own INFO logs in the console (progress bars and our summaries stay).
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict = {"include_dashboard": False} if not os.environ.get("RAY_ADDRESS") else {}
    if num_cpus is not None and not os.environ.get("RAY_ADDRESS"):
        kwargs["num_cpus"] = num_cpus
    if quiet:
        kwargs["logging_level"] = "WARNING"
    ray.init(**kwargs)
    if quiet and not sys.stderr.isatty():
        # Without a terminal Ray Data logs a progress table every few seconds; our own summaries say enough.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.train").setLevel(logging.WARNING)
