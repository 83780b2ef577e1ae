"""Submit a command to a Ray cluster as a Ray job, follow its logs and turn the outcome into an exit code.

A thin layer over :class:`ray.job_submission.JobSubmissionClient` for cron jobs and CI, where the exit status is
all a scheduler looks at:

* ``0`` — the job ``SUCCEEDED``;
* ``1`` — the job ``FAILED`` or was ``STOPPED`` (a job still running at the timeout is stopped, so that one
  night's run can never overlap the next);
* ``2`` — bad options, or the cluster could not be reached, refused the request or the credentials.

Logs are streamed over the dashboard's websocket while the job status is polled; whatever the stream missed
(e.g. a proxy that drops websockets) is fetched from the stored job log once the job has finished.

Example:
    >>> from pipelines.submit import SubmitOptions, run_submission
    >>> run_submission(SubmitOptions(address="http://127.0.0.1:8265",
    ...                              entrypoint=("python", "jobs/score.py", "--help")))  # doctest: +SKIP
    0
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = [
    "EXIT_FAILED",
    "EXIT_SUCCEEDED",
    "EXIT_USAGE",
    "LOG_MODES",
    "SubmitError",
    "SubmitOptions",
    "build_runtime_env",
    "connect",
    "entrypoint_command",
    "exit_code_for",
    "run_submission",
    "wait_for_job",
]

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LOG_MODES = ("stream", "end", "none")

# Consecutive failed status requests tolerated while waiting (a dashboard restart, a network blip).
MAX_POLL_FAILURES = 5
# After the job has finished: how long the log stream may take to deliver its last lines.
LOG_DRAIN_S = 10.0
# After stopping a timed-out job: how long to wait for Ray to report it stopped.
STOP_GRACE_S = 60.0


class SubmitError(RuntimeError):
    """Bad options, or a cluster that cannot be reached or refuses the request (exit code 2)."""


@dataclass(frozen=True)
class SubmitOptions:
    """One submission.

    Attributes:
        address: Ray dashboard URL of the cluster, e.g. ``http://127.0.0.1:8265``.
        entrypoint: The command and its arguments, one item per argument (quoted with :func:`shlex.join`).
        working_dir: Local directory (or remote package URI) uploaded as the job's working directory.
        runtime_env_json: A Ray runtime environment as a JSON object; ``working_dir`` overrides its key.
        entrypoint_num_gpus: GPUs reserved for the entrypoint process itself (the job driver).
        submission_id: Fixed job id; Ray refuses a second job with the same id (useful for once-a-day runs).
        wait: Wait for the job to finish; ``False`` returns right after submission.
        timeout_s: Longest wait in seconds (``None``: no limit); a job still running then is stopped.
        poll_interval_s: Seconds between status requests.
        logs: ``"stream"`` (follow while running), ``"end"`` (print the whole log when finished) or ``"none"``.
    """

    address: str
    entrypoint: tuple[str, ...]
    working_dir: str | None = None
    runtime_env_json: str | None = None
    entrypoint_num_gpus: float | None = None
    submission_id: str | None = None
    wait: bool = True
    timeout_s: float | None = None
    poll_interval_s: float = 2.0
    logs: str = "stream"


def entrypoint_command(argv: Sequence[str]) -> str:
    """Join an argument list into one shell command that Ray runs verbatim.

    Example:
        >>> entrypoint_command(["python", "jobs/score.py", "--out", "s3://b/my scores"])
        "python jobs/score.py --out 's3://b/my scores'"

    Raises:
        SubmitError: when ``argv`` is empty.
    """
    if not argv:
        raise SubmitError("no entrypoint: put the command after '--', e.g. -- python jobs/train_luss.py ...")
    return shlex.join(argv)


def build_runtime_env(working_dir: str | None = None, runtime_env_json: str | None = None) -> dict[str, Any] | None:
    """The job's runtime environment from ``--runtime-env-json`` and ``--working-dir`` (which wins, as in Ray's CLI).

    Example:
        >>> build_runtime_env(None, '{"env_vars": {"LOG_LEVEL": "INFO"}}')
        {'env_vars': {'LOG_LEVEL': 'INFO'}}

    Raises:
        SubmitError: for JSON that is not an object, or a local working directory that does not exist.
    """
    runtime_env: dict[str, Any] = {}
    if runtime_env_json:
        try:
            parsed = json.loads(runtime_env_json)
        except json.JSONDecodeError as exc:
            raise SubmitError(f"--runtime-env-json is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise SubmitError(f"--runtime-env-json must be a JSON object, got {type(parsed).__name__}")
        runtime_env.update(parsed)
    if working_dir:
        if "://" not in working_dir and not os.path.isdir(working_dir):
            raise SubmitError(f"--working-dir {working_dir!r} is not a directory")
        runtime_env["working_dir"] = working_dir
    return runtime_env or None


def connect(address: str) -> Any:
    """A :class:`~ray.job_submission.JobSubmissionClient` for the dashboard at ``address``.

    Raises:
        SubmitError: for an address that is not an ``http(s)://`` URL, a cluster that does not answer, or one
            that rejects the credentials (token authentication).
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise SubmitError(f"--address must be the Ray dashboard URL, e.g. http://HEAD:8265, got {address!r}")
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise SubmitError(
            f"the Ray cluster at {address} rejected the request (token authentication): set RAY_AUTH_MODE=token "
            f"and the cluster's token in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH. Ray says: {_first_line(exc)}"
        ) from exc
    except (OSError, RuntimeError, ValueError) as exc:  # requests' ConnectionError is an OSError
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {_first_line(exc)}") from exc


def exit_code_for(status: Any) -> int:
    """``0`` for ``SUCCEEDED``, ``1`` for ``FAILED``/``STOPPED``.

    Example:
        >>> from ray.job_submission import JobStatus
        >>> exit_code_for(JobStatus.SUCCEEDED), exit_code_for(JobStatus.FAILED)
        (0, 1)

    Raises:
        ValueError: for a status that is not terminal.
    """
    from ray.job_submission import JobStatus

    if not status.is_terminal():
        raise ValueError(f"job status {status} is not terminal")
    return EXIT_SUCCEEDED if status == JobStatus.SUCCEEDED else EXIT_FAILED


def wait_for_job(
    client: Any,
    job_id: str,
    *,
    timeout_s: float | None = None,
    poll_interval_s: float = 2.0,
    logs: str = "stream",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> Any:
    """Wait until the job reaches a terminal status, writing its log to ``out``.

    Args:
        client: A connected ``JobSubmissionClient``.
        job_id: The submission id.
        timeout_s: Longest wait in seconds (``None``: no limit).
        poll_interval_s: Seconds between status requests.
        logs: One of :data:`LOG_MODES`.
        out: Where the job's log goes (default ``sys.stdout``).
        err: Where notes about the log stream go (default ``sys.stderr``).

    Returns:
        The terminal :class:`~ray.job_submission.JobStatus`, or ``None`` when ``timeout_s`` passed first (the job
        is left running; :func:`run_submission` stops it).

    Raises:
        SubmitError: when the cluster stops answering status requests.

    Example:
        >>> status = wait_for_job(client, "raysubmit_abc", timeout_s=3600)  # doctest: +SKIP
    """
    if logs not in LOG_MODES:
        raise ValueError(f"logs must be one of {LOG_MODES}, got {logs!r}")
    return asyncio.run(
        _wait(client, job_id, timeout_s, poll_interval_s, logs, out or sys.stdout, err or sys.stderr)
    )


async def _wait(
    client: Any, job_id: str, timeout_s: float | None, poll_interval_s: float, logs: str, out: TextIO, err: TextIO
) -> Any:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    printed = [0]  # characters of the job log already written to `out`
    tail = asyncio.create_task(_stream_logs(client, job_id, out, err, printed)) if logs == "stream" else None
    try:
        status = await _poll_until_terminal(client, job_id, deadline, poll_interval_s)
        if tail is not None and status is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(tail), LOG_DRAIN_S)
    finally:
        if tail is not None:
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tail
    if logs != "none":
        # The stored log is the same text the stream delivers, so its unseen suffix is exactly what is missing.
        with contextlib.suppress(OSError, RuntimeError):
            text = await asyncio.to_thread(client.get_job_logs, job_id)
            _write(out, text[printed[0] :])
    return status


async def _stream_logs(client: Any, job_id: str, out: TextIO, err: TextIO, printed: list[int]) -> None:
    try:
        async for chunk in client.tail_job_logs(job_id):
            _write(out, chunk)
            printed[0] += len(chunk)
    except Exception as exc:  # aiohttp/websocket trouble: the rest of the log is fetched when the job ends
        print(f"[submit] log stream interrupted ({_first_line(exc)}); the rest follows at the end", file=err)


async def _poll_until_terminal(client: Any, job_id: str, deadline: float | None, poll_interval_s: float) -> Any:
    failures = 0
    while True:
        try:
            status = await asyncio.to_thread(client.get_job_status, job_id)
        except (OSError, RuntimeError) as exc:
            failures += 1
            if failures >= MAX_POLL_FAILURES:
                message = f"lost contact with the cluster; {job_id} may still be running: {_first_line(exc)}"
                raise SubmitError(message) from exc
        else:
            failures = 0
            if status.is_terminal():
                return status
        if deadline is not None and time.monotonic() >= deadline:
            return None
        pause = poll_interval_s if deadline is None else min(poll_interval_s, max(deadline - time.monotonic(), 0.0))
        await asyncio.sleep(pause)


def run_submission(
    options: SubmitOptions, *, client: Any = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Submit, optionally wait, and return the exit code (see the module docstring).

    Args:
        options: What to submit and how to wait.
        client: A connected ``JobSubmissionClient`` (default: :func:`connect` to ``options.address``).
        out: Where the job's log goes (default ``sys.stdout``).
        err: Where progress and error messages go (default ``sys.stderr``).

    Returns:
        ``0``, ``1`` or ``2``; a wait interrupted with Ctrl-C returns ``130`` and leaves the job running.

    Example:
        >>> run_submission(SubmitOptions("http://127.0.0.1:8265", ("python", "-c", "print(1)")))  # doctest: +SKIP
        0
    """
    out, err = out or sys.stdout, err or sys.stderr
    try:
        if options.logs not in LOG_MODES:
            raise SubmitError(f"--logs must be one of {LOG_MODES}, got {options.logs!r}")
        if options.timeout_s is not None and options.timeout_s <= 0:
            raise SubmitError(f"--timeout must be positive, got {options.timeout_s}")
        if options.entrypoint_num_gpus is not None and options.entrypoint_num_gpus < 0:
            raise SubmitError(f"--entrypoint-num-gpus must be >= 0, got {options.entrypoint_num_gpus}")
        command = entrypoint_command(options.entrypoint)
        runtime_env = build_runtime_env(options.working_dir, options.runtime_env_json)
        client = client if client is not None else connect(options.address)
        job_id = _submit(client, command, runtime_env, options)
        print(f"[submit] {job_id} submitted to {options.address}: {command}", file=err, flush=True)
        if not options.wait:
            print(job_id, file=out, flush=True)
            return EXIT_SUCCEEDED
        try:
            status = wait_for_job(
                client,
                job_id,
                timeout_s=options.timeout_s,
                poll_interval_s=options.poll_interval_s,
                logs=options.logs,
                out=out,
                err=err,
            )
        except KeyboardInterrupt:
            print(f"[submit] interrupted; {job_id} keeps running (ray job stop {job_id})", file=err, flush=True)
            return 130
        if status is None:
            print(f"[submit] {job_id} still running after {options.timeout_s:g}s; stopping it", file=err, flush=True)
            status = _stop(client, job_id)
        print(f"[submit] {job_id} {status}{_status_message(client, job_id)}", file=err, flush=True)
        return exit_code_for(status) if status.is_terminal() else EXIT_FAILED
    except SubmitError as exc:
        print(f"error: {exc}", file=err, flush=True)
        return EXIT_USAGE


def _submit(client: Any, command: str, runtime_env: dict[str, Any] | None, options: SubmitOptions) -> str:
    try:
        return client.submit_job(
            entrypoint=command,
            runtime_env=runtime_env,
            submission_id=options.submission_id,
            entrypoint_num_gpus=options.entrypoint_num_gpus,
        )
    except (OSError, RuntimeError, ValueError) as exc:  # duplicate id, bad runtime env, upload failure, ...
        raise SubmitError(f"the cluster at {options.address} did not accept the job: {_first_line(exc)}") from exc


def _stop(client: Any, job_id: str) -> Any:
    """Stop a job and wait (bounded) until Ray reports a terminal status; returns the last status seen."""
    with contextlib.suppress(OSError, RuntimeError):
        client.stop_job(job_id)
    deadline = time.monotonic() + STOP_GRACE_S
    status = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, RuntimeError):
            status = client.get_job_status(job_id)
            if status.is_terminal():
                return status
        time.sleep(1.0)
    if status is None:
        raise SubmitError(f"could not stop {job_id}: the cluster does not answer")
    return status


def _status_message(client: Any, job_id: str) -> str:
    # Only the first line: for a failed entrypoint Ray appends the tail of the log, which is already printed.
    with contextlib.suppress(OSError, RuntimeError):
        message = (client.get_job_info(job_id).message or "").strip()
        if message:
            return ": " + message.splitlines()[0].rstrip(",")
    return ""


def _write(stream: TextIO, text: str) -> None:
    if text:
        stream.write(text)
        stream.flush()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
