"""jobs/submit.py against a real local Ray head (dashboard + Jobs API), plus the wait logic on a scripted client.

The head is started with ``ray start --head --block`` in its own process group, with its own ``--temp-dir``, free
ports and token authentication, and stopped by signalling that group only: ``ray stop`` would kill every Ray
process on the machine, including the test session's embedded Ray (which the teardown checks is still alive).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from ray.job_submission import JobStatus

from pipelines import submit as submit_lib
from pipelines.submit import SubmitOptions, build_runtime_env, entrypoint_command, run_submission

REPO = Path(__file__).resolve().parents[2]
SUBMIT = [sys.executable, str(REPO / "jobs" / "submit.py")]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:  # field 5 of /proc/PID/stat is the process group
                members.append(int(entry))
    return members


@dataclass
class LocalHead:
    url: str
    env: dict[str, str]  # environment of a client that holds the cluster's token


@pytest.fixture(scope="module")
def ray_head(ray_local: None) -> Iterator[LocalHead]:
    """A one-CPU Ray head with the dashboard on free ports; nothing it starts outlives the module."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(16),
    )
    dashboard_port = _free_port()
    command = [RAY, "start", "--head", "--block", "--num-cpus", "1", "--include-dashboard=true",
               "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--temp-dir", temp_dir,
               "--disable-usage-stats", "--port", str(_free_port()), "--dashboard-port", str(dashboard_port)]
    for flag in ("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port", "--object-manager-port"):
        command += [flag, str(_free_port())]  # never the fixed defaults another Ray on this machine may hold
    log = open(Path(temp_dir) / "ray_start.log", "w")  # closed in the finally below
    head = subprocess.Popen(command, env=env, cwd=temp_dir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_dashboard(url, env["RAY_AUTH_TOKEN"], head, Path(temp_dir) / "ray_start.log")
        yield LocalHead(url=url, env=env)
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` tears down the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 30
        while (left := _group_members(head.pid)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        if head.returncode is None:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not _group_members(head.pid), "processes of the test's Ray head survived the teardown"
        # The session's embedded Ray must not have been touched.
        assert ray.is_initialized()
        assert ray.get(ray.remote(lambda: "alive").remote(), timeout=60) == "alive"


def _wait_for_dashboard(url: str, token: str, head: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    request = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the Ray dashboard at {url} did not come up within {timeout_s}s:\n{log.read_text()[-3000:]}")


def _run_submit(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(SUBMIT + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


# ------------------------------------------------------------------------------------------ real local cluster


@pytest.mark.slow
def test_ray_job_submit_trains_luss_on_the_cluster(ray_head: LocalHead, luss_store: str, tmp_path: Path) -> None:
    """The README's `ray job submit --working-dir . -- python jobs/train_luss.py ...` against `ray start --head`."""
    from tests.helpers import TINY_LUSS_OVERRIDES

    out = tmp_path / "run"
    command = [RAY, "job", "submit", "--address", ray_head.url, "--working-dir", ".", "--",
               sys.executable, "jobs/train_luss.py", "--data", luss_store, "--out", str(out), "--val-fraction", "0",
               *TINY_LUSS_OVERRIDES]
    done = subprocess.run(command, env=ray_head.env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr).lower()
    latest = out / "latest.json"
    assert latest.exists()
    from pipelines.checkpoint import load_checkpoint

    assert load_checkpoint(str(out)).train_state["finished"]


@pytest.mark.slow
def test_jobs_report_success_and_failure_through_exit_codes(ray_head: LocalHead, tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text("import sys\nprint('hello from the job', sys.argv[1:])\n")
    ok_args = ["--address", ray_head.url, "--working-dir", str(tmp_path), "--timeout", "150",
               "--", sys.executable, "hello.py", "two words", "it's"]
    bad_args = ["--address", ray_head.url, "--logs", "end", "--timeout", "150",
                "--", sys.executable, "-c", "import sys; print('about to fail'); sys.exit(3)"]
    # Both jobs run at once: the head's start-up cost is paid once and the module stays well under a minute.
    procs = [subprocess.Popen(SUBMIT + a, env=ray_head.env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for a in (ok_args, bad_args)]
    (ok_out, ok_err), (bad_out, bad_err) = (p.communicate(timeout=200) for p in procs)

    assert procs[0].returncode == 0, ok_err
    # Arguments survive quoting exactly, and the streamed log is not repeated by the final fetch.
    assert ok_out.splitlines().count("hello from the job ['two words', \"it's\"]") == 1, ok_out
    assert "SUCCEEDED" in ok_err
    assert procs[1].returncode == 1, bad_err
    assert bad_out.splitlines().count("about to fail") == 1, bad_out
    assert "FAILED" in bad_err and "exit code 3" in bad_err


@pytest.mark.slow
def test_rejected_token_is_a_connection_error(ray_head: LocalHead) -> None:
    env = {**ray_head.env, "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    result = _run_submit(["--address", ray_head.url, "--", "python", "-c", "pass"], env)
    assert result.returncode == 2
    assert "token" in result.stderr and "RAY_AUTH_TOKEN" in result.stderr


def _load_cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location("submit_cli", REPO / "jobs" / "submit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_exit_code(args: list[str]) -> int:
    """Run jobs/submit.py's main in-process; argparse errors surface as SystemExit."""
    try:
        return _load_cli().main(args)
    except SystemExit as exc:
        return int(exc.code)


def test_unreachable_cluster_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli_exit_code(["--address", f"http://127.0.0.1:{_free_port()}", "--", "python", "-c", "pass"]) == 2
    assert "cannot reach the Ray dashboard" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "http://127.0.0.1:8265"], "no entrypoint"),
        (["--address", "http://127.0.0.1:8265", "--"], "no entrypoint"),
        (["--", "python", "x.py"], "--address is required"),
        (["--address", "127.0.0.1:8265", "--", "python", "x.py"], "must be the Ray dashboard URL"),
        (["--address", "http://127.0.0.1:8265", "--runtime-env-json", "[1]", "--", "python"], "JSON object"),
        (["--address", "http://127.0.0.1:8265", "--runtime-env-json", "{", "--", "python"], "not valid JSON"),
        (["--address", "http://127.0.0.1:8265", "--working-dir", "/nonexistent/dir", "--", "python"], "not a dir"),
        (["--address", "http://127.0.0.1:8265", "--timeout", "0", "--", "python"], "--timeout must be positive"),
        (["--address", "http://127.0.0.1:8265", "--logs", "all", "--", "python"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert _cli_exit_code(args) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------- wait logic, scripted


class ScriptedClient:
    """Stands in for JobSubmissionClient: a scripted status sequence and a job log delivered in chunks."""

    def __init__(self, statuses: list[JobStatus], log: str, *, stream_breaks_after: int | None = None) -> None:
        self.statuses = list(statuses)
        self.log = log
        self.stream_breaks_after = stream_breaks_after
        self.stopped = False
        self.submitted: dict | None = None

    def submit_job(self, **kwargs: object) -> str:
        self.submitted = kwargs
        return "raysubmit_test"

    def get_job_status(self, job_id: str) -> JobStatus:
        if self.stopped:
            return JobStatus.STOPPED
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    async def tail_job_logs(self, job_id: str):  # noqa: ANN201 (async generator, as in Ray)
        for i, line in enumerate(self.log.splitlines(keepends=True)):
            if self.stream_breaks_after is not None and i == self.stream_breaks_after:
                raise RuntimeError("WebSocket connection closed unexpectedly")
            yield line

    def get_job_logs(self, job_id: str) -> str:
        return self.log

    def stop_job(self, job_id: str) -> bool:
        self.stopped = True
        return True

    def get_job_info(self, job_id: str) -> object:
        return type("Info", (), {"message": "scripted"})()


def _options(**kwargs: object) -> SubmitOptions:
    return SubmitOptions(address="http://head:8265", entrypoint=("python", "jobs/x.py"), poll_interval_s=0.01,
                         **kwargs)


def test_interrupted_log_stream_is_completed_once_from_the_stored_log() -> None:
    log = "".join(f"line {i}\n" for i in range(6))
    client = ScriptedClient([JobStatus.RUNNING, JobStatus.SUCCEEDED], log, stream_breaks_after=2)
    out, err = io.StringIO(), io.StringIO()
    assert run_submission(_options(), client=client, out=out, err=err) == 0
    assert out.getvalue() == log  # nothing lost, nothing printed twice
    assert "log stream interrupted" in err.getvalue()


def test_timeout_stops_the_job_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit_lib, "STOP_GRACE_S", 5.0)
    client = ScriptedClient([JobStatus.RUNNING], "working\n")
    err = io.StringIO()
    assert run_submission(_options(timeout_s=0.2), client=client, out=io.StringIO(), err=err) == 1
    assert client.stopped
    assert "still running after 0.2s; stopping it" in err.getvalue() and "STOPPED" in err.getvalue()


def test_no_wait_prints_the_job_id() -> None:
    client = ScriptedClient([JobStatus.PENDING], "")
    out = io.StringIO()
    assert run_submission(_options(wait=False, entrypoint_num_gpus=1.0), client=client, out=out,
                          err=io.StringIO()) == 0
    assert out.getvalue().strip() == "raysubmit_test"
    assert client.submitted["entrypoint"] == "python jobs/x.py"
    assert client.submitted["entrypoint_num_gpus"] == 1.0


def test_submission_refused_by_the_cluster_exits_2() -> None:
    class Refusing(ScriptedClient):
        def submit_job(self, **kwargs: object) -> str:
            raise RuntimeError("Request failed with status code 400: Job with submission_id nightly already exists.")

    err = io.StringIO()
    assert run_submission(_options(), client=Refusing([JobStatus.PENDING], ""), out=io.StringIO(), err=err) == 2
    assert "did not accept the job" in err.getvalue() and "already exists" in err.getvalue()


def test_entrypoint_round_trips_through_the_shell() -> None:
    argv = ["python", "jobs/score_archive.py", "--source", "s3://b/cam 1/", "--since", "2026-01-01T00:00:00+00:00",
            "$HOME", "a;b", "it's"]
    assert shlex.split(entrypoint_command(argv)) == argv


def test_working_dir_overrides_the_runtime_env_json(tmp_path: Path) -> None:
    env = build_runtime_env(str(tmp_path), '{"working_dir": "s3://b/pkg.zip", "env_vars": {"A": "1"}}')
    assert env == {"working_dir": str(tmp_path), "env_vars": {"A": "1"}}
    assert build_runtime_env(None, None) is None


def test_losing_the_cluster_while_waiting_exits_2() -> None:
    class Vanishing(ScriptedClient):
        def get_job_status(self, job_id: str) -> JobStatus:
            raise ConnectionError("Failed to connect to Ray at address: http://head:8265.")

    err = io.StringIO()
    client = Vanishing([JobStatus.RUNNING], "")
    assert run_submission(_options(logs="none"), client=client, out=io.StringIO(), err=err) == 2
    assert "lost contact with the cluster; raysubmit_test may still be running" in err.getvalue()
