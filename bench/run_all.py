"""Run every benchmark, print one table of ratios and targets, and (``--write-doc``) refresh docs/performance.md.

``make bench`` runs this with no flags: each benchmark in its own process (``bench/<name>.py``), in order, each
writing ``bench/results/<name>.json``; a benchmark that fails is reported and the others still run. Then the
table of every comparison (ours / baseline, with its target ratio) and absolute target is printed.

Other uses::

    .venv/bin/python bench/run_all.py --quick               # smaller inputs (a few minutes)
    .venv/bin/python bench/run_all.py --only ingest score   # some benchmarks
    .venv/bin/python bench/run_all.py --table               # print the table of the existing results, run nothing
    .venv/bin/python bench/run_all.py --write-doc           # rewrite the table section of docs/performance.md

``bench/alpha_sweep.py`` (score-fusion weight sweep, written separately) runs too when it exists; it gets the mode
and output flags its ``--help`` says it understands.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

BENCHES = ("ingest", "train", "score", "i3d", "gpu", "alpha_sweep")
DOC = common.REPO_ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"
BENCH_TIMEOUT_S = 1200.0
BUSY_FACTOR = 1.5  # load average / cores above which a run is flagged as not representative


# bench/alpha_sweep.py has its own CLI (checked against its --help before each run): sizes by point count, writes
# the JSON named by --out. Flags its --help does not mention are dropped, so a changed CLI degrades to defaults.
FOREIGN_FLAGS = {
    "alpha_sweep": {
        "smoke": ["--points", "8"],
        "quick": ["--points", "125"],
        "full": [],
        "out": ["--out", "{results_dir}/alpha_sweep.json"],
    },
}


def _split_flags(flags: list[str]) -> list[list[str]]:
    """``["--a", "1", "--b"]`` -> ``[["--a", "1"], ["--b"]]``."""
    groups: list[list[str]] = []
    for item in flags:
        if item.startswith("--") or not groups:
            groups.append([item])
        else:
            groups[-1].append(item)
    return groups


def _flags_for(script: Path, mode: str, results_dir: str, cache_dir: str) -> list[str]:
    """Flags for one benchmark: ours all take mode/results/cache flags; a foreign script gets its mapping."""
    if script.stem not in FOREIGN_FLAGS:
        return ([f"--{mode}"] if mode != "full" else []) + ["--results-dir", results_dir, "--cache-dir", cache_dir]
    mapping = FOREIGN_FLAGS[script.stem]
    wanted = mapping.get(mode, []) + [f.format(results_dir=results_dir) for f in mapping.get("out", [])]
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=common.REPO_ROOT, timeout=120
    ).stdout
    return [item for group in _split_flags(wanted) if group[0] in help_text for item in group]


def _adapt(record: dict[str, Any], name: str) -> dict[str, Any]:
    """Give a foreign result file (alpha_sweep's own schema) the fields the table reads."""
    record.setdefault("name", name)
    if "comparisons" in record or name != "alpha_sweep" or "sweep_s" not in record:
        return record
    points = record.get("points", "?")
    record["comparisons"] = [
        common.comparison(
            f"alpha sweep, {points} points from stored scores vs one re-scoring",
            record["sweep_s"],
            record.get("rescore_s"),
            "s",
            lower_is_better=True,
            note="ratio: re-scorings per sweep",
        ),
        common.comparison(
            f"alpha sweep, {points} points: vectorised evaluation vs fuse() per point",
            record.get("vectorised_s", record["sweep_s"]),  # the evaluation core, without writing outputs
            record.get("per_point_s"),
            "s",
            lower_is_better=True,
        ),
    ]
    record.setdefault("started", record.get("date"))
    return record


def run_benchmarks(names: list[str], mode: str, results_dir: str, cache_dir: str) -> dict[str, str]:
    """Run each benchmark script in its own process; returns ``{name: "ok" | "failed: ..." | "absent"}``."""
    status: dict[str, str] = {}
    for name in names:
        script = common.BENCH_DIR / f"{name}.py"
        if not script.exists():
            status[name] = "absent"
            print(f"[bench] {name}: {script.name} does not exist, skipped", flush=True)
            continue
        old = Path(results_dir) / f"{name}.json"
        old.unlink(missing_ok=True)  # never show a stale result as this run's
        cmd = [sys.executable, str(script), *_flags_for(script, mode, results_dir, cache_dir)]
        print(f"\n[bench] === {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=common.REPO_ROOT, timeout=BENCH_TIMEOUT_S)
            ok = proc.returncode == 0
            why = f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            ok, why = False, f"ran past {BENCH_TIMEOUT_S:.0f}s"
        elapsed = time.perf_counter() - started
        if ok and not old.exists() and name in FOREIGN_FLAGS:
            status[name] = "ok (no result file)"
        else:
            status[name] = "ok" if ok else f"failed: {why}"
        print(f"[bench] === {name}: {status[name]} in {elapsed:.0f}s", flush=True)
    return status


def load_results(results_dir: str | Path, names: tuple[str, ...] = BENCHES) -> list[dict[str, Any]]:
    """The result records present in ``results_dir``, in benchmark order (unreadable files are reported)."""
    records = []
    for name in names:
        path = Path(results_dir) / f"{name}.json"
        if not path.exists():
            continue
        try:
            records.append(_adapt(json.loads(path.read_text()), name))
        except (OSError, json.JSONDecodeError) as exc:
            records.append({"name": name, "skipped": f"unreadable result file {path}: {exc}"})
    return records


def machine_line(record: dict[str, Any]) -> str:
    """One line describing where a result came from."""
    m = record.get("machine", {})
    if "cpu_model" not in m:  # a foreign result file with its own, smaller machine record
        return f"machine not recorded in the common format ({json.dumps(m, sort_keys=True)}); {record.get('started')}"
    load = m.get("load_average") or ["?"]
    gpu = f", GPU {m['gpu']} (cuDNN {m.get('cudnn')})" if m.get("gpu") else ""
    return (
        f"{m.get('cpu_model')}, {m.get('cores_usable')} cores, {m.get('memory_gb')} GB{gpu}; "
        f"load average {load[0]} at start; torch {m.get('torch')}, ray {m.get('ray')}, decord {m.get('decord')}, "
        f"pyarrow {m.get('pyarrow')}; commit {m.get('git_commit')}; {record.get('started')}, mode {record.get('mode')}"
    )


def overloaded(records: list[dict[str, Any]]) -> list[str]:
    """Benchmarks that started while the 1-minute load average exceeded 1.5x the usable cores.

    The margin absorbs the load the previous benchmark of the same run leaves in the 1-minute average.
    """
    out = []
    for record in records:
        m = record.get("machine", {})
        load, cores = (m.get("load_average") or [None])[0], m.get("cores_usable")
        if load is not None and cores and load > BUSY_FACTOR * cores and not record.get("skipped"):
            out.append(f"{record.get('name')} (load {load:g} on {cores} cores)")
    return out


def render_doc_section(records: list[dict[str, Any]]) -> str:
    """The Markdown that goes between the markers of docs/performance.md."""
    rows = [row for record in records for row in common.table_rows(record)]
    lines = [BEGIN, ""]
    busy = overloaded(records)
    if busy:
        lines += [
            f"**Not representative:** other processes shared the cores when these started: {', '.join(busy)}. "
            "Rerun `make bench` on an otherwise idle machine, then `bench/run_all.py --write-doc`.",
            "",
        ]
    lines += [common.format_table(rows, markdown=True), "", "Measured on:", ""]
    for record in records:
        lines.append(f"- `{record.get('name')}` ({record.get('duration_s', '?')} s): {machine_line(record)}")
    findings = [(r.get("name"), f) for r in records for f in r.get("findings", [])]
    if findings:
        lines += ["", "Findings recorded by the runs:", ""]
        lines += [f"- `{name}`: {text}" for name, text in findings]
    lines += ["", END]
    return "\n".join(lines)


def write_doc(records: list[dict[str, Any]], doc: Path = DOC) -> None:
    """Replace the table section of ``doc`` (between the markers) with the current results.

    Raises:
        ValueError: If the document lacks the markers (the rest of it is never rewritten).
    """
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no '{BEGIN}' ... '{END}' section to fill")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + render_doc_section(records) + tail)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (or only render their results); returns the process exit code."""
    parser = common.base_parser(__doc__.splitlines()[0], benchmark=False)
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benchmarks")
    parser.add_argument("--skip", nargs="+", choices=BENCHES, default=[], help="do not run these benchmarks")
    parser.add_argument("--table", action="store_true", help="print the table of existing results; run nothing")
    parser.add_argument(
        "--write-doc",
        action="store_true",
        help=f"rewrite the table section of {DOC.relative_to(common.REPO_ROOT)}; run nothing",
    )
    args = parser.parse_args(argv)
    status: dict[str, str] = {}
    started = time.perf_counter()
    if not (args.table or args.write_doc):
        names = [n for n in (args.only or BENCHES) if n not in args.skip]
        status = run_benchmarks(names, common.mode_of(args), args.results_dir, args.cache_dir)
    records = load_results(args.results_dir)
    if status:
        records = [r for r in records if status.get(r.get("name", "")) in ("ok",)]
        records += [{"name": n, "skipped": s} for n, s in status.items() if s.startswith("failed")]
    rows = [row for record in records for row in common.table_rows(record)]
    print()
    print(common.format_table(rows) if rows else "[bench] no results")
    if records:
        print(f"\nmachine: {machine_line(records[0])}")
    for entry in overloaded(records):
        print(f"[bench] warning: not representative, the machine was busy when it started: {entry}")
    if status:
        print(f"[bench] total {time.perf_counter() - started:.0f}s; results in {args.results_dir}")
    if args.write_doc:
        write_doc(records)
        print(f"[bench] rewrote the table section of {DOC}")
    return 1 if any(s.startswith("failed") for s in status.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
