"""Shared plumbing of the benchmarks: modes, machine info, timing, worker subprocesses, result JSON, the table.

Every benchmark (``bench/<name>.py``) compares the pipeline ("ours") against a plain baseline doing the same work
in the same run on the same cores, and writes ``bench/results/<name>.json``::

    {"name", "mode", "machine": {...}, "config": {...}, "started", "duration_s", "load_average_end",
     "measurements": [{"case", "metric", "value", "unit", ...}],     # raw numbers ("headline": also in the table)
     "comparisons":  [{"name", "ours", "baseline", "unit", "ratio", "target", "met", "note", "lower_is_better"}],
     "targets":      [{"name", "value", "unit", "target", "op", "met", "note"}],
     "findings":     ["..."], "skipped": null | "why"}

``ratio`` is the speed-up of ours: ``ours / baseline`` for rates, ``baseline / ours`` for times; ``met`` is
``None`` where no target applies.

**Cores.** ``ray.init(num_cpus=N)`` works once per process, so each Ray configuration runs in its own worker
subprocess (``python bench/<name>.py --worker JOB ...``, see :func:`run_worker`). A worker pins itself to the
first N cores of the machine with ``sched_setaffinity`` before anything starts, so Ray, its worker processes and
FFmpeg's threads all share exactly those N cores, and a baseline given N cores gets the same ones.

Example:
    >>> entry = comparison("scoring frames/s", ours=90.0, baseline=100.0, unit="frames/s", target=0.85)
    >>> entry["ratio"], entry["met"]
    (0.9, True)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = REPO_ROOT / "outputs" / "bench"
MODES = ("smoke", "quick", "full")
WORKER_TIMEOUT_S = 900.0

__all__ = [
    "BENCH_DIR",
    "CACHE_DIR",
    "MODES",
    "REPO_ROOT",
    "RESULTS_DIR",
    "CpuClock",
    "PeakRssSampler",
    "base_parser",
    "comparison",
    "descendants",
    "ensure_corpus",
    "finish_result",
    "format_table",
    "machine_info",
    "measurement",
    "mode_of",
    "new_result",
    "parse_benchmark_args",
    "peak_rss_mb",
    "pin_cores",
    "rate",
    "ray_ready_in_process",
    "run_job",
    "run_worker",
    "table_rows",
    "target",
    "tree_cpu_by_pid",
    "worker_main",
    "write_video",
]


# ------------------------------------------------------------------------------------------------ machine info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # a missing optional package is recorded as None, never an error
        return None
    return str(getattr(mod, "__version__", "unknown"))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """What the numbers came from: CPU, cores, memory, load, library versions, GPU (if any).

    Example:
        >>> {"cpu_model", "cores_usable", "load_average", "torch", "ray", "decord"} <= set(machine_info())
        True
    """
    import torch

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ray": _version("ray"),
        "decord": _version("decord"),
        "pyarrow": _version("pyarrow"),
        "numpy": _version("numpy"),
        "opencv": _version("cv2"),
        "av": _version("av"),
        "git_commit": _git_commit(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


# ------------------------------------------------------------------------------------------------ measuring


def rate(count: float, seconds: float) -> float:
    """``count / seconds``, 0 for an empty or instant run (never a division error).

    Example:
        >>> rate(300, 1.5)
        200.0
    """
    return float(count) / seconds if seconds > 0 and count > 0 else 0.0


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (``None`` once the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the name may contain spaces and parentheses


def descendants(pid: int | None = None) -> list[int]:
    """Live descendant process ids of ``pid`` (default: this process), from the parent links in ``/proc``."""
    root = pid or os.getpid()
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _proc_cpu_seconds(pid: int, reaped_children: bool = True) -> float:
    """User + system CPU seconds of a process, plus (``reaped_children``) those of children it waited for."""
    fields = _proc_stat(pid)
    if fields is None:
        return 0.0
    # utime, stime, cutime, cstime are fields 14-17 of stat (index 11-14 after the name).
    return sum(int(x) for x in fields[11 : 15 if reaped_children else 13]) / _CLOCK_TICKS


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def tree_cpu_by_pid(pid: int | None = None) -> dict[int, float]:
    """CPU seconds used so far by a process and each of its live descendants, by pid."""
    root = pid or os.getpid()
    # Own time only: children are sampled themselves, and a reaped child's time would count twice.
    return {p: _proc_cpu_seconds(p, reaped_children=False) for p in [root, *descendants(root)]}


@dataclass
class CpuClock:
    """Wall time and process-tree CPU time of a block.

    Processes come and go inside the block (Ray starts workers and reaps idle ones, and the raylet does not
    collect its children's times), so a difference of two tree totals can even go negative. A thread samples
    every process's own CPU time every ``interval_s`` instead, and the block's CPU is the sum over processes of
    (last seen - at entry); a process that exits loses at most its last interval (one that lives less than an
    interval is missed: Ray's workers and actors live far longer).

    Example:
        >>> with CpuClock() as clock:
        ...     _ = sum(range(1000))
        >>> clock.wall_s >= 0 and clock.cpu_s >= 0
        True
    """

    interval_s: float = 0.2
    wall_s: float = 0.0
    cpu_s: float = 0.0
    _t0: float = 0.0
    _start: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        self._last.update(tree_cpu_by_pid())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> CpuClock:
        self._start = tree_cpu_by_pid()
        self._last = dict(self._start)
        self._thread = threading.Thread(target=self._run, name="cpu-clock", daemon=True)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        total = 0.0
        for pid, cpu in self._last.items():
            before = self._start.get(pid, 0.0)
            total += cpu - before if cpu >= before else cpu  # less than at entry: a new process reused the pid
        self.cpu_s = total


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (``getrusage``; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _vm_hwm_kb(pid: int) -> int | None:
    """``VmHWM`` (peak RSS) of a live process from ``/proc``, ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class PeakRssSampler:
    """Tracks the peak RSS of descendant processes whose command line contains ``match`` (e.g. a Ray actor).

    Ray Data kills its actors when a dataset finishes, so the peak cannot be read afterwards: a thread samples
    ``VmHWM`` (the kernel's own high-water mark, monotonic) every ``interval_s`` while the block runs.

    Example:
        >>> with PeakRssSampler(match="no-such-process") as sampler:
        ...     pass
        >>> sampler.peak_mb, sampler.processes
        (0.0, {})
    """

    match: str
    interval_s: float = 0.1
    processes: dict[int, dict[str, Any]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def peak_mb(self) -> float:
        """Largest peak RSS of any matching process, in MiB."""
        return max((p["peak_rss_mb"] for p in self.processes.values()), default=0.0)

    def _sample(self) -> None:
        for pid in descendants():
            cmdline = _cmdline(pid)
            if cmdline is None or self.match not in cmdline:
                continue
            hwm = _vm_hwm_kb(pid)
            if hwm is None:
                continue
            entry = self.processes.setdefault(pid, {"cmdline": cmdline[:120], "peak_rss_mb": 0.0})
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], hwm / 1024.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakRssSampler:
        self._thread = threading.Thread(target=self._run, name="peak-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


# ------------------------------------------------------------------------------------------------ result records


def measurement(case: str, metric: str, value: float | int | None, unit: str, **extra: Any) -> dict[str, Any]:
    """One raw number of a benchmark (``extra`` holds context such as cores or frames).

    ``headline=True`` puts it in the printed table too (with ``reference``, e.g. the source's bytes per frame,
    in the baseline column).
    """
    return {"case": case, "metric": metric, "value": _round(value), "unit": unit, **extra}


def comparison(
    name: str,
    ours: float | None,
    baseline: float | None,
    unit: str,
    target: float | None = None,
    note: str = "",
    *,
    lower_is_better: bool = False,
) -> dict[str, Any]:
    """Ours against a baseline as a ratio where higher is better, with its target ratio.

    ``ratio = ours / baseline`` for rates; ``baseline / ours`` for times (``lower_is_better``), so the ratio is
    always the speed-up of ours. ``met`` is ``None`` without a target or without both numbers.

    Example:
        >>> comparison("x", 50.0, 0.0, "frames/s")["ratio"] is None
        True
        >>> comparison("t", 2.0, 10.0, "s", lower_is_better=True)["ratio"]
        5.0
    """
    num, den = (baseline, ours) if lower_is_better else (ours, baseline)
    ratio = num / den if num is not None and den else None
    met = None if target is None or ratio is None else bool(ratio >= target)
    return {
        "name": name,
        "ours": _round(ours),
        "baseline": _round(baseline),
        "unit": unit,
        "ratio": _round(ratio),
        "target": target,
        "met": met,
        "note": note,
        "lower_is_better": lower_is_better,
    }


def target(name: str, value: float | None, unit: str, goal: float, op: str = ">=", note: str = "") -> dict[str, Any]:
    """An absolute target such as ``frames/s per core >= 200`` or ``start-up <= 15 s``.

    Example:
        >>> target("start-up", 12.0, "s", 15.0, "<=")["met"]
        True
    """
    if op not in (">=", "<="):
        raise ValueError(f"op must be '>=' or '<=', got {op!r}")
    met = None if value is None else bool(value >= goal if op == ">=" else value <= goal)
    return {"name": name, "value": _round(value), "unit": unit, "target": goal, "op": op, "met": met, "note": note}


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if abs(value) < 1e4 else round(value, 1)
    return value


def new_result(name: str, mode: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A result record with the machine description taken now (load average at start included)."""
    return {
        "name": name,
        "mode": mode,
        "machine": machine_info(),
        "config": dict(config),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "_t0": time.perf_counter(),
        "measurements": [],
        "comparisons": [],
        "targets": [],
        "findings": [],
        "skipped": None,
    }


def finish_result(result: dict[str, Any], results_dir: str | Path) -> Path:
    """Stamp duration and end load (in place), write ``<results_dir>/<name>.json`` atomically, return its path."""
    result["duration_s"] = round(time.perf_counter() - result.pop("_t0", time.perf_counter()), 1)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out_dir = Path(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['name']}.json"
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------ CLI and workers


def base_parser(description: str, *, benchmark: bool = True) -> argparse.ArgumentParser:
    """Mode, output and cache flags; for a benchmark script also ``--corpus`` and the hidden worker flags."""
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny inputs, seconds: checks the code path, not speed")
    mode.add_argument("--quick", action="store_true", help="smaller inputs than the full run (a few minutes)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where <name>.json goes")
    parser.add_argument("--cache-dir", default=str(CACHE_DIR), help="synthetic corpora, stores and scratch outputs")
    if not benchmark:
        return parser
    parser.add_argument("--corpus", default=None, help="an existing folder-format corpus instead of synthesizing one")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--payload", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--with-ray", action="store_true", help=argparse.SUPPRESS)
    return parser


def parse_benchmark_args(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    jobs: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]],
) -> tuple[argparse.Namespace, str]:
    """Parse a benchmark's flags; a worker subprocess (``--worker JOB``) runs its job and exits here.

    Returns:
        ``(args, mode)`` for the benchmark's own run.
    """
    args = parser.parse_args(argv)
    if args.worker:
        raise SystemExit(worker_main(args, jobs))
    return args, mode_of(args)


def mode_of(args: argparse.Namespace) -> str:
    """``"smoke"``, ``"quick"`` or ``"full"`` from the parsed flags."""
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def pin_cores(cpus: int) -> list[int]:
    """Restrict this process (and everything it starts later) to the first ``cpus`` usable cores.

    Raises:
        ValueError: If the machine has fewer usable cores than asked for.
    """
    usable = sorted(os.sched_getaffinity(0))
    if not 1 <= cpus <= len(usable):
        raise ValueError(f"asked for {cpus} cores but this process may use {len(usable)}: {usable}")
    chosen = usable[:cpus]
    os.sched_setaffinity(0, chosen)
    return chosen


def ray_ready_in_process(mode: str) -> bool:
    """Smoke runs reuse a Ray that is already up in this process (the test suite's) instead of starting one."""
    if mode != "smoke":
        return False
    import ray

    return ray.is_initialized()


_RUNS: dict[str, int] = {}  # worker runs per job in this process (numbers the log files)


def run_worker(
    script: str | Path,
    job: str,
    payload: Mapping[str, Any],
    *,
    cpus: int | None = None,
    with_ray: bool = False,
    log_dir: str | Path | None = None,
    timeout_s: float = WORKER_TIMEOUT_S,
) -> dict[str, Any]:
    """Run ``job`` of a benchmark script in a fresh Python process and return the dict it produced.

    The child pins itself to ``cpus`` cores (``None``: all), starts a local Ray with that many CPUs when
    ``with_ray``, runs the job and writes its result as JSON. Its output goes to
    ``log_dir/<script>-<job>-<n>-<cpus>cpu.log`` (``n`` counts this process's runs of the job).

    Raises:
        RuntimeError: If the child fails or times out; the message ends with the tail of its log.
    """
    log_dir = Path(log_dir or tempfile.gettempdir())
    log_dir.mkdir(parents=True, exist_ok=True)
    _RUNS[job] = _RUNS.get(job, 0) + 1
    log_path = log_dir / f"{Path(script).stem}-{job}-{_RUNS[job]}-{cpus or 'all'}cpu.log"
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        payload_path, output_path = Path(tmp) / "payload.json", Path(tmp) / "output.json"
        payload_path.write_text(json.dumps(dict(payload), default=str))
        cmd = [
            sys.executable,
            str(script),
            "--worker",
            job,
            "--payload",
            str(payload_path),
            "--output",
            str(output_path),
        ]
        if cpus is not None:
            cmd += ["--cpus", str(cpus)]
        if with_ray:
            cmd.append("--with-ray")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        env.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        env.pop("RAY_ADDRESS", None)  # a benchmark always measures its own local cluster
        with open(log_path, "w", encoding="utf-8") as log:
            try:
                proc = subprocess.run(
                    cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"worker {job} ({cpus} cpus) ran past {timeout_s:.0f}s; log: {log_path}") from None
        if proc.returncode != 0 or not output_path.exists():
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-25:])
            raise RuntimeError(
                f"worker {job} ({cpus} cpus) failed with exit code {proc.returncode}; log {log_path}:\n{tail}"
            )
        return json.loads(output_path.read_text())


def run_job(
    script: str | Path,
    job: str,
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    payload: Mapping[str, Any],
    *,
    in_process: bool,
    cpus: int | None = None,
    with_ray: bool = False,
    log_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run a job in a pinned worker subprocess (:func:`run_worker`), or here when ``in_process``.

    In-process runs (smoke runs inside the test suite's Ray) skip the core pinning and only set torch's thread
    count for the duration of the job, restoring it afterwards.
    """
    if not in_process:
        return run_worker(script, job, payload, cpus=cpus, with_ray=with_ray, log_dir=log_dir)
    import torch

    saved = torch.get_num_threads()
    threads = int(payload.get("torch_threads") or saved)
    torch.set_num_threads(threads)
    try:
        result = fn(dict(payload))
    finally:
        torch.set_num_threads(saved)
    result.setdefault("cores", len(os.sched_getaffinity(0)))
    result.setdefault("torch_threads", threads)
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    return result


class _StampedStdout(io.TextIOBase):
    """stdout that also records when each line arrived (start-up = first training step line - train() call)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.lines, self._partial = inner, [], ""

    def write(self, text: str) -> int:
        self.inner.write(text)
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self.lines.append((time.perf_counter(), line))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def first_time(self, pattern: str, after: float = 0.0) -> float | None:
        """``perf_counter`` time of the first line after ``after`` that matches ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        return next((t for t, line in self.lines if t >= after and regex.search(line)), None)


def worker_main(args: argparse.Namespace, jobs: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> int:
    """Entry point of a worker subprocess (``--worker JOB``): pin cores, maybe start Ray, run, write JSON."""
    if args.worker not in jobs:
        raise SystemExit(f"unknown worker job {args.worker!r}; known: {sorted(jobs)}")
    cores = pin_cores(args.cpus) if args.cpus else sorted(os.sched_getaffinity(0))
    payload = json.loads(Path(args.payload).read_text())
    stamped = _StampedStdout(sys.stdout)
    sys.stdout = stamped
    payload["_stdout"] = stamped  # jobs that time log lines (training start-up) read it
    import torch

    # Plain baselines get one torch thread per pinned core, as a user would run them (Ray sets its workers'
    # threads itself from their CPU reservation, see the jobs).
    torch.set_num_threads(int(payload.get("torch_threads") or len(cores)))
    if not payload.get("glibc_malloc"):
        from pipelines.runtime import reuse_freed_memory

        # The pipeline's training loop and actors reuse freed tensor memory (pipelines.runtime); baselines do too,
        # so a ratio measures the pipeline, not the allocator. Jobs given glibc_malloc measure that difference.
        reuse_freed_memory()
    if args.with_ray:
        from pipelines.runtime import init_ray

        started = time.perf_counter()
        init_ray(num_cpus=len(cores))
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        payload["_ray_init_s"] = time.perf_counter() - started
    result = jobs[args.worker](payload)
    result.setdefault("cores", len(cores))
    result.setdefault("torch_threads", torch.get_num_threads())
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    if args.with_ray:
        result.setdefault("ray_init_s", round(payload["_ray_init_s"], 2))
    Path(args.output).write_text(json.dumps(result, default=str))
    return 0


# ------------------------------------------------------------------------------------------------ inputs


def ensure_corpus(preset: str, cache_dir: str | Path, seed: int = 0) -> Path:
    """The synthetic corpus ``preset`` under the cache, generated once and reused while its ``corpus.json`` matches.

    Example:
        >>> ensure_corpus("tiny", "/tmp/bench-cache")  # doctest: +SKIP
        PosixPath('/tmp/bench-cache/corpus-tiny-seed0')
    """
    from pipelines.synthetic import synthesize

    root = Path(cache_dir) / f"corpus-{preset}-seed{seed}"
    meta = root / "corpus.json"
    if meta.exists():
        with contextlib.suppress(ValueError, OSError):
            saved = json.loads(meta.read_text())
            if saved.get("preset") == preset and saved.get("seed") == seed:
                return root
    print(f"[bench] synthesizing the {preset!r} corpus into {root} (once; reused afterwards)", flush=True)
    synthesize(root, preset=preset, seed=seed, overwrite=True)
    return root


def write_video(path: str | Path, height: int, width: int, num_frames: int, seed: int = 0, fps: float = 25.0) -> Path:
    """Write one synthetic surveillance video of any length (normal traffic only) as H.264 mp4, if not there yet.

    Uses the synthetic corpus's public scene renderer, so the content (and the decode cost) matches the presets.
    """
    import av

    from pipelines.synthetic import SceneConfig, VideoSpec, iter_frames, plan_video

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec("test", height, width, num_frames, (), fps)
    plan = plan_video(spec, path.stem, 0, seed, SceneConfig())
    tmp = path.with_name(path.name + ".partial")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = int(round(2 * fps))
        stream.codec_context.max_b_frames = 0
        stream.options = {"crf": str(SceneConfig().crf), "preset": "veryfast"}
        for i, frame in enumerate(iter_frames(plan)):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------ the table


def table_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """Table rows (bench, measurement, ours, baseline, ratio, target, status) of one result record."""
    name = str(result.get("name", "?"))
    if result.get("skipped"):
        return [[name, f"skipped: {result['skipped']}", "", "", "", "", "-"]]
    rows = []
    for c in result.get("comparisons", []):
        goal = f">= {c['target']:g}x" if c.get("target") is not None else "-"
        rows.append(
            [
                name,
                c["name"],
                _fmt(c.get("ours"), c.get("unit")),
                _fmt(c.get("baseline"), c.get("unit")),
                "n/a" if c.get("ratio") is None else f"{c['ratio']:.2f}x",
                goal,
                _status(c.get("met")),
            ]
        )
    for t in result.get("targets", []):
        rows.append(
            [
                name,
                t["name"],
                _fmt(t.get("value"), t.get("unit")),
                "",
                "",
                f"{t['op']} {t['target']:g}",
                _status(t.get("met")),
            ]
        )
    for m in result.get("measurements", []):
        if m.get("headline"):  # a number worth a row of its own (CPU efficiency, bytes, memory, fixed costs)
            rows.append(
                [
                    name,
                    f"{m['case']}: {m['metric']}",
                    _fmt(m.get("value"), m.get("unit")),
                    str(m.get("reference", "")),
                    "",
                    "",
                    "-",
                ]
            )
    if not rows:
        rows.append([name, "(no comparisons recorded)", "", "", "", "", "-"])
    return rows


def _fmt(value: Any, unit: str | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def _status(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


HEADER = ["bench", "measurement", "ours", "baseline", "ratio", "target", "status"]


def format_table(rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Fixed-width text table (or a Markdown table) of :func:`table_rows` rows.

    Example:
        >>> print(format_table([["b", "m", "1", "2", "0.50x", "-", "-"]]).splitlines()[0].split())
        ['bench', 'measurement', 'ours', 'baseline', 'ratio', 'target', 'status']
    """
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(c) for c in row)) for row in rows]
    return "\n".join(lines)
