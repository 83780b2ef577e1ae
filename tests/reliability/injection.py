"""Fault injection for the reliability suite: seams that reach inside Ray worker processes.

Monkeypatching a module in the pytest process does not change Ray worker processes. What does reach them are the
callables the pipelines hand to Ray (map UDFs, actor classes), which the driver looks up in its own modules and
pickles. The factories here build wrappers around those callables; a test puts a wrapper where the pipeline looks
up the callable (``monkeypatch.setattr(pipelines.clip_store, "stage_video", wrapper)``), and the wrapper
travels to the workers by value. Each fault fires once across all processes: whoever first creates the marker
file (``O_CREAT | O_EXCL``) fails, every later attempt runs normally.

Worker processes of the session Ray are shared with other test files, so a wrapper that changes process state
(environment variables, module attributes) restores it before returning.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ray.cloudpickle

# Wrappers defined here must be pickled by value: worker processes cannot import this test-only module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXIT_CODE = 17  # the status a "killed" worker exits with (as pipelines.faults does)


def claim(marker: str) -> bool:
    """True for exactly one caller across all processes: the one that created ``marker``."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(f"pid {os.getpid()}\n")
    return True


@contextlib.contextmanager
def patched_env(env: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a call, then restore the previous values."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def exit_after_first_segment(original: Callable[..., dict], video_id: str, marker: str) -> Callable:
    """A ``stage_video`` (Ray ``map`` UDF) whose process dies once right after staging a segment of ``video_id``.

    The segment is in the staged part file (written, not committed) when the process exits, as an OOM kill in the
    middle of a video would leave it; the patch of the part writer is undone before returning.
    """

    def stage_video(row: dict[str, Any], spec: Any, **options: Any) -> dict[str, Any]:
        if row["video_id"] != video_id:
            return original(row, spec, **options)
        from pipelines import clip_store

        saved = clip_store._PartWriter.write

        def write(self: Any, start: int, frames: Any) -> None:
            saved(self, start, frames)
            if claim(marker):
                os._exit(EXIT_CODE)

        clip_store._PartWriter.write = write
        try:
            return original(row, spec, **options)
        finally:
            clip_store._PartWriter.write = saved

    return stage_video


def storage_outage_once(original: Callable[..., dict], video_id: str, marker: str) -> Callable:
    """A ``stage_video`` (Ray ``map`` UDF) during whose first call for ``video_id`` the object store is down.

    ``pipelines.storage.local_copy`` (how decoding fetches an input) raises :class:`StorageError` as it does once its
    bounded retries are exhausted; the patch is undone before returning.
    """

    def stage_video(row: dict[str, Any], spec: Any, **options: Any) -> dict[str, Any]:
        if row["video_id"] != video_id or not claim(marker):
            return original(row, spec, **options)
        from pipelines import storage

        saved = storage.local_copy

        def unavailable(uri: str) -> Any:
            raise storage.StorageError(f"local_copy {uri!r} failed after 3 attempts: OSError: Connection refused")

        storage.local_copy = unavailable
        try:
            return original(row, spec, **options)
        finally:
            storage.local_copy = saved

    return stage_video


def crash_on_first_batch(marker: str) -> type:
    """A ``TaskScorer`` subclass (Ray Data actor) whose process dies on the first batch any instance receives."""
    from pipelines.score import TaskScorer

    class CrashingTaskScorer(TaskScorer):
        def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
            if claim(marker):
                os._exit(EXIT_CODE)
            return super().__call__(rows)

    return CrashingTaskScorer


def with_env(original: Callable[..., Any], env: Mapping[str, str]) -> Callable[..., Any]:
    """A Ray UDF that runs ``original`` with ``env`` set (e.g. the endpoint of a test's own S3 server).

    Ray workers keep the environment the cluster started with; this is how one test points them elsewhere.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        with patched_env(env):
            return original(*args, **kwargs)

    call.__name__ = getattr(original, "__name__", "udf")
    return call


def pause_after_first_call(original: Callable[..., Any], token: str, paused: str, resume: str) -> Callable[..., Any]:
    """A Ray UDF whose first call (anywhere) creates ``paused`` when done; every call then waits for ``resume``.

    The test's driver watches for ``paused``, breaks something (stops the object store) and creates ``resume``: the
    outage then starts after exactly one call succeeded and before any other call runs.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        if not claim(token):
            _wait_for(resume)
            return original(*args, **kwargs)
        try:
            return original(*args, **kwargs)
        finally:  # signal even if the call failed, so that nobody waits for a pause that never comes
            with open(paused, "w") as handle:
                handle.write("first call done\n")
            _wait_for(resume)

    call.__name__ = getattr(original, "__name__", "udf")
    return call


def _wait_for(path: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.05)
