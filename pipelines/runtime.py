"""Connecting to Ray the same way from a laptop, a CI runner and a cluster.

``RAY_ADDRESS`` (set by ``ray job submit`` and on cluster nodes) targets an existing cluster; without it an
embedded local Ray starts with the requested CPUs.

Example:
    >>> from pipelines.runtime import init_ray
    >>> init_ray(num_cpus=2)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

__all__ = ["init_ray", "require_gpus", "reuse_freed_memory", "reuse_freed_memory_env",
           "reuse_freed_memory_remote_args", "local_ray_without_dashboard", "ray_train_settings"]


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


# Ray Train's controller polls its workers every 2 s by default, and a run's start, each report and its end wait
# for a poll: 4 of the 21 s that a one-epoch, one-worker run took on 2 cores. A poll is one small RPC per worker.
TRAIN_POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_INTERVAL_S = 0.5
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
_CLEANER_CALLBACK = "PlacementGroupCleanerCallback"


def local_ray_without_dashboard() -> bool:
    """True when the connected Ray is one node without a dashboard, such as :func:`init_ray`'s embedded Ray.

    Two of the helper actors Ray Train starts for every run, each one more Python process, do nothing useful there:
    the placement-group cleaner asks the state API (served by the dashboard) whether the controller still lives,
    gets no answer and logs "Failed to query Ray Train Controller actor state" every second; the preemption
    watcher waits for other nodes to be drained, and there are none. Clusters that ``ray job submit`` reaches
    always run the dashboard, so they keep both.

    Example:
        >>> local_ray_without_dashboard()  # doctest: +SKIP
        True
    """
    if sum(1 for node in ray.nodes() if node.get("Alive")) != 1:
        return False
    try:
        from ray.util.state import list_nodes

        list_nodes(limit=1, timeout=5)
    except Exception:  # ServerUnavailable without a dashboard (0.1 s), or an older Ray without the state API
        return True
    return False


@contextmanager
def ray_train_settings(trainer: Any) -> Iterator[None]:
    """Run ``trainer.fit()`` inside this block: Ray Train's controller polls faster, and a local Ray starts less.

    * ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` = :data:`TRAIN_POLL_INTERVAL_S` (Ray Train hands the driver's value to
      the controller it starts in ``fit()``).
    * On a one-node Ray without a dashboard (:func:`local_ray_without_dashboard`) the preemption watcher is off
      (``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0``) and the placement-group cleaner is left out of the trainer's
      callbacks: two processes less to start per run (a one-epoch, one-worker run on 2 cores: 18.0 -> 15.7 s,
      mean of 8) and no warning every second.

    Variables the user set win; the others are removed again when the block ends. Local mode (``num_workers=0``)
    starts no controller, so nothing changes there.

    Example:
        >>> with ray_train_settings(trainer):  # doctest: +SKIP
        ...     result = trainer.fit()
    """
    settings = {TRAIN_POLL_INTERVAL_ENV: f"{TRAIN_POLL_INTERVAL_S:g}"}
    scaling = getattr(trainer, "scaling_config", None)
    if getattr(scaling, "num_workers", 0) and local_ray_without_dashboard():
        settings[PREEMPTION_WATCHER_ENV] = "0"
        _leave_out_callback(trainer, _CLEANER_CALLBACK)
    added = [name for name in settings if name not in os.environ]
    os.environ.update({name: settings[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _leave_out_callback(trainer: Any, class_name: str) -> None:
    """Drop Ray Train's default callback ``class_name`` from ``trainer.fit()`` (a no-op where Ray lacks the hook)."""
    create = getattr(trainer, "_create_default_callbacks", None)
    if create is None:  # Ray Train V1, or a Ray that builds its callbacks elsewhere: keep its defaults
        return
    trainer._create_default_callbacks = lambda: [cb for cb in create() if type(cb).__name__ != class_name]


# mallopt(3) parameters from <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 1 << 30
_malloc_tuned: bool | None = None


def reuse_freed_memory() -> bool:
    """Let this process reuse the memory of freed tensors instead of returning it to the kernel after every step.

    glibc's malloc serves each block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps
    it on ``free``, so every CPU training or scoring step faults its activations in again and the kernel zeroes
    them: on the demo's LUSS-AE 40% of the CPU time went to the kernel and training ran at half speed. With mmap
    off and a 1 GiB trim threshold, freed blocks stay in the heap for the next step; peak RSS stays the peak
    working set. Called once per process by the training loop and the scoring and feature-extraction actors.
    Set ``VAD_REUSE_FREED_MEMORY=0`` to keep glibc's defaults.

    Returns:
        True when the allocator was tuned (now or by an earlier call); False off glibc or when switched off.

    Example:
        >>> reuse_freed_memory() in (True, False)
        True
    """
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if _reuse_wanted():
            try:
                libc = ctypes.CDLL(None)
                if hasattr(libc, "gnu_get_libc_version"):  # musl has mallopt too, without these knobs' meaning
                    _malloc_tuned = bool(
                        libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
                    )
            except (OSError, AttributeError):  # no C library to talk to: glibc's defaults stay
                pass
    return _malloc_tuned


def _reuse_wanted() -> bool:
    """Linux, and not switched off with ``VAD_REUSE_FREED_MEMORY=0``."""
    return os.environ.get("VAD_REUSE_FREED_MEMORY", "1") != "0" and sys.platform.startswith("linux")


def reuse_freed_memory_env() -> dict[str, str]:
    """Environment variables that make a new process reuse freed memory in every thread, not only the main one.

    :func:`reuse_freed_memory` tunes the main heap of a running process; threads that already allocate from their
    own arenas (a Ray Data actor runs its UDF in one) still map and unmap blocks larger than an arena's 64 MiB
    heaps. Set at process start, these put every thread on the main heap with the same settings. Empty when
    ``VAD_REUSE_FREED_MEMORY=0``; meant for the ``runtime_env`` of actors and Train workers.

    Example:
        >>> sorted(reuse_freed_memory_env())  # doctest: +SKIP
        ['MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_']
    """
    if not _reuse_wanted():
        return {}
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD_BYTES)}


def reuse_freed_memory_remote_args() -> dict[str, Any]:
    """Ray remote arguments (``runtime_env``) that start an actor's processes with :func:`reuse_freed_memory_env`.

    Example:
        >>> ds.map_batches(Scorer, compute=..., **reuse_freed_memory_remote_args())  # doctest: +SKIP
    """
    env = reuse_freed_memory_env()
    return {"runtime_env": {"env_vars": env}} if env else {}


def require_gpus(count: int, what: str, *, wait_s: float = 600.0, poll_s: float = 5.0) -> None:
    """Make sure the Ray cluster has ``count`` GPUs before GPU work starts; a clear error otherwise.

    A cluster joined through ``RAY_ADDRESS`` may add GPU nodes (KubeRay or ``ray up`` GPU groups scale from zero):
    its autoscaler is asked for them and this waits up to ``wait_s``. An embedded local Ray (started without
    ``RAY_ADDRESS``, see :func:`init_ray`) never grows, so on a CPU-only machine this fails at once.

    Args:
        count: GPUs needed (one per worker or actor).
        what: The work, for the message (``"score"``, ``"train"``, ``"extract"``).
        wait_s: How long to wait for an autoscaling cluster.
        poll_s: Seconds between checks while waiting.

    Raises:
        RuntimeError: naming the GPUs asked for and found.

    Example:
        >>> require_gpus(1, "score")  # doctest: +SKIP
        RuntimeError: --use-gpu asks for 1 GPU(s) but the Ray cluster has no GPU; drop --use-gpu to score on CPUs ...
    """
    init_ray()

    def available() -> float:
        return float(ray.cluster_resources().get("GPU", 0))

    if available() >= count:
        return
    if os.environ.get("RAY_ADDRESS"):
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[{"GPU": 1}] * count)
        except Exception:  # a fixed cluster without an autoscaler: nothing to wait for
            wait_s = 0.0
    else:
        wait_s = 0.0
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        if available() >= count:
            return
    found = available()
    raise RuntimeError(
        f"--use-gpu asks for {count} GPU(s) but the Ray cluster has {f'{found:g}' if found else 'no GPU'}; "
        f"drop --use-gpu to {what} on CPUs, or connect to a cluster with GPU nodes (RAY_ADDRESS)"
    )
