"""Smoke runs of every benchmark (``main(["--smoke"])`` on tiny data) so the scripts cannot rot unnoticed.

No timing assertions anywhere: on a shared 2-core runner the numbers mean nothing. What is checked is that each
benchmark runs end to end (its Ray jobs and most baselines in this process, on the session Ray; the ingest
baseline in a worker subprocess pinned to one core, so that path runs too), measures both sides of every
comparison and writes a result JSON with the documented fields and machine info.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bench import common, gpu, i3d, ingest, run_all, score, train

RECORD_KEYS = {
    "name",
    "mode",
    "machine",
    "config",
    "started",
    "duration_s",
    "load_average_end",
    "measurements",
    "comparisons",
    "targets",
    "findings",
    "skipped",
}
MACHINE_KEYS = {"cpu_model", "cores_usable", "load_average", "torch", "ray", "decord", "pyarrow"}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    return {"results": root / "results", "cache": root / "cache"}


def _args(dirs: dict[str, Path], *extra: str) -> list[str]:
    return ["--smoke", "--results-dir", str(dirs["results"]), "--cache-dir", str(dirs["cache"]), *extra]


def _check_record(record: dict[str, Any], name: str, dirs: dict[str, Path]) -> dict[str, Any]:
    on_disk = json.loads((dirs["results"] / f"{name}.json").read_text())
    assert on_disk["name"] == name and on_disk["mode"] == "smoke"
    assert RECORD_KEYS <= set(on_disk), RECORD_KEYS - set(on_disk)
    assert MACHINE_KEYS <= set(on_disk["machine"]), MACHINE_KEYS - set(on_disk["machine"])
    assert len(on_disk["machine"]["load_average"]) == 3
    assert on_disk["comparisons"], "every benchmark compares against a baseline"
    for comp in on_disk["comparisons"]:
        assert {"name", "ours", "baseline", "unit", "ratio", "target", "met"} <= set(comp)
        if "steady state" in comp["name"]:  # a difference of two timings: noise may leave it undefined
            continue
        # Both sides were measured and the ratio is their quotient (rounded): nothing about speed.
        assert comp["ours"] > 0 and comp["baseline"] > 0, comp
        quotient = comp["baseline"] / comp["ours"] if comp["lower_is_better"] else comp["ours"] / comp["baseline"]
        assert math.isclose(comp["ratio"], quotient, rel_tol=1e-2), comp
        assert comp["met"] is None or comp["met"] == (comp["ratio"] >= comp["target"])
    assert record["comparisons"] == on_disk["comparisons"]
    return on_disk


def test_ingest_smoke(ray_local: None, tiny_corpus: Path, dirs: dict[str, Path]) -> None:
    record = _check_record(ingest.main(_args(dirs, "--corpus", str(tiny_corpus))), "ingest", dirs)
    names = [c["name"] for c in record["comparisons"]]
    assert any("plain decord" in n for n in names) and any("read_videos" in n for n in names)
    metrics = {(m["case"], m["metric"]) for m in record["measurements"]}
    assert ("source file", "bytes/frame") in metrics and ("ours <=480p, 1 CPU", "store bytes/frame") in metrics
    variants = {m["case"] for m in record["measurements"] if m["case"].startswith("plain ")}
    assert {f"plain {v} 1 core" for v in ingest.PLANS["smoke"].variants} <= variants
    assert [t["name"] for t in record["targets"]] == ["ingest <=480p, 1 CPU: frames/s per core"]
    headlines = {m["metric"] for m in record["measurements"] if m.get("headline")}
    assert headlines == {"bytes/frame", "frames per CPU-second"}


def test_train_smoke(ray_local: None, tiny_corpus: Path, dirs: dict[str, Path]) -> None:
    record = _check_record(train.main(_args(dirs, "--corpus", str(tiny_corpus))), "train", dirs)
    assert [c["name"] for c in record["comparisons"]] == ["training local mode vs plain loop"]
    assert record["comparisons"][0]["target"] == 0.97
    assert any("start-up" in t["name"] for t in record["targets"])
    # Ours and the plain loop trained on the same number of examples (else a finding says they differ).
    assert not any("differ" in f for f in record["findings"])


def test_score_smoke(ray_local: None, dirs: dict[str, Path]) -> None:
    record = _check_record(score.main(_args(dirs)), "score", dirs)
    ours = [m for m in record["measurements"] if m["case"].startswith("ours ") and m["metric"] == "frames/s"]
    assert len(ours) == len(score.PLANS["smoke"].multiples)
    assert all(m["actor_peak_rss_mb"] > 0 for m in ours), "the scoring actor's memory was never sampled"
    flat = [t for t in record["targets"] if "peak RSS" in t["name"] or "time/frame" in t["name"]]
    assert len(flat) == 2 and all(t["value"] is not None for t in flat)
    assert any("steady state" in c["name"] for c in record["comparisons"])


def test_i3d_smoke(ray_local: None, dirs: dict[str, Path]) -> None:
    record = _check_record(i3d.main(_args(dirs)), "i3d", dirs)
    assert not any("differ" in f for f in record["findings"]), record["findings"]
    assert record["config"]["gflops_per_snippet"] > 0
    assert len(record["comparisons"]) == 2


def test_gpu_smoke_runs_the_code_path_on_cpu(dirs: dict[str, Path]) -> None:
    record = gpu.main(_args(dirs))
    if torch.cuda.is_available():
        pytest.skip("smoke mode measures on the GPU here; the CPU path is what this test checks")
    record = _check_record(record, "gpu", dirs)
    assert record["targets"] == []  # the moonshots are not judged on a CPU
    dtypes = {m["dtype"] for m in record["measurements"]}
    assert dtypes == {"fp32", "bf16"}
    cases = {m["case"] for m in record["measurements"]}
    assert {"i3d ten-crop fp32 eager (baseline)", "i3d ten-crop bf16 autocast"} <= cases
    fidelity = {m["metric"]: m["value"] for m in record["measurements"] if m["case"] == "i3d bf16 vs fp32 features"}
    assert fidelity["min_cosine"] > 0.99 and 0 < fidelity["max_relative_l2"] < 0.1


def test_gpu_sections_and_partial_results(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--sections`` limits the work; each measurement is saved at once, so a run killed mid-way keeps what it had."""
    record = gpu.main(_args(dirs, "--sections", "i3d"))
    assert {m["case"].split(" ")[0] for m in record["measurements"]} == {"i3d"}
    assert not (dirs["results"] / "gpu.partial.json").exists()  # a finished run leaves only gpu.json

    def killed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt  # as a time limit would stop it, after the bf16 variants were measured

    monkeypatch.setattr(gpu, "measure_i3d", lambda plan, v, b, device: killed() if v.precision == "fp32" else
                        {"snippets_per_s": 1.0})  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        gpu.main(_args(dirs, "--sections", "i3d"))
    partial = json.loads((dirs["results"] / "gpu.partial.json").read_text())
    assert partial["partial"] is True
    assert {m["dtype"] for m in partial["measurements"]} == {"bf16"}  # bf16 runs first


def test_fold_batchnorm_matches_the_model() -> None:
    cfg = gpu.method_config(gpu.PLANS["smoke"])
    assert gpu.check_folding(cfg) < 1e-4
    from vad_models.luss_ae.model import LussAe

    folded, count = gpu.fold_batchnorm(LussAe(cfg))
    assert count == 7  # four encoder BNs, three decoder BNs
    assert not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())


def test_fold_batchnorm_handles_transposed_convs_and_leaves_the_original() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.ConvTranspose3d(2, 3, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm3d(3))
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net.eval()
    folded, count = gpu.fold_batchnorm(net)
    x = torch.randn(2, 2, 4, 5, 6)
    assert count == 1 and isinstance(net[1], nn.BatchNorm3d)
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


def test_channels_last_3d_and_fp32_precision() -> None:
    cfg = gpu.method_config(gpu.PLANS["smoke"])
    from vad_models.luss_ae.model import LussAe

    model = gpu.to_channels_last_3d(LussAe(cfg))
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    before = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    with gpu.fp32_precision("fp32"):
        assert torch.backends.cudnn.conv.fp32_precision == torch.backends.cuda.matmul.fp32_precision == "ieee"
        with gpu.fp32_precision("tf32"):
            assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before


def test_run_all_renders_the_doc_section(dirs: dict[str, Path], tmp_path: Path) -> None:
    records = run_all.load_results(dirs["results"])
    assert records, "run after the benchmark smoke tests of this module"
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Perf\n\nintro\n\n{run_all.BEGIN}\nold table\n{run_all.END}\n\nanalysis\n")
    run_all.write_doc(records, doc)
    text = doc.read_text()
    assert text.startswith("# Perf\n\nintro\n\n") and text.endswith("\n\nanalysis\n")
    assert "old table" not in text and "| bench | measurement |" in text and "Measured on:" in text
    for record in records:
        assert f"`{record['name']}`" in text
    assert ("Not representative" in text) == bool(run_all.overloaded(records))
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="section to fill"):
        run_all.write_doc(records, doc)
    assert run_all.main(["--table", "--results-dir", str(dirs["results"])]) == 0


def test_run_all_passes_the_alpha_sweep_only_the_flags_it_knows(tmp_path: Path) -> None:
    script = tmp_path / "alpha_sweep.py"
    script.write_text(
        textwrap.dedent("""
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--points", type=int)
        parser.parse_args()
    """)
    )
    assert run_all._flags_for(script, "smoke", "R", "C") == ["--points", "8"]
    assert run_all._flags_for(script, "full", "R", "C") == []  # its --help has no --out: left to its default
    ours = run_all._flags_for(common.BENCH_DIR / "score.py", "quick", "R", "C")
    assert ours == ["--quick", "--results-dir", "R", "--cache-dir", "C"]


def test_run_all_flags_runs_on_a_busy_machine() -> None:
    def record(name: str, load: float) -> dict[str, Any]:
        return {"name": name, "machine": {"load_average": [load, 0.0, 0.0], "cores_usable": 2}}

    assert run_all.overloaded([record("a", 3.0), record("b", 3.5), {"name": "c", "machine": {}}]) == [
        "b (load 3.5 on 2 cores)"
    ]
    assert "Not representative" in run_all.render_doc_section([record("b", 9.0)])


def test_run_all_reads_the_alpha_sweep_schema(tmp_path: Path) -> None:
    (tmp_path / "alpha_sweep.json").write_text(
        json.dumps(
            {
                "benchmark": "alpha_sweep",
                "points": 1000,
                "rescore_s": 6.0,
                "sweep_s": 2.0,
                "vectorised_s": 0.5,
                "per_point_s": 8.0,
            }
        )
    )
    (record,) = run_all.load_results(tmp_path)
    assert record["name"] == "alpha_sweep"
    assert [c["ratio"] for c in record["comparisons"]] == [3.0, 16.0]
    assert common.table_rows(record)[0][4] == "3.00x"


def test_common_records_and_table() -> None:
    assert common.comparison("x", 1.0, None, "u")["met"] is None
    assert common.comparison("x", 90.0, 100.0, "u", 0.97)["met"] is False
    assert common.comparison("t", 4.0, 2.0, "s", 0.97, lower_is_better=True)["met"] is False
    assert common.target("t", None, "s", 15.0, "<=")["met"] is None
    with pytest.raises(ValueError, match="op must be"):
        common.target("t", 1.0, "s", 1.0, "<")
    rows = common.table_rows(
        {
            "name": "b",
            "comparisons": [common.comparison("c", 2.0, 1.0, "u", 2.0)],
            "targets": [common.target("t", 300.0, "f/s", 200.0)],
        }
    )
    assert rows == [["b", "c", "2 u", "1 u", "2.00x", ">= 2x", "met"], ["b", "t", "300 f/s", "", "", ">= 200", "met"]]
    assert common.table_rows({"name": "g", "skipped": "no GPU"})[0][1] == "skipped: no GPU"
    headline = common.measurement("store", "bytes/frame", 4096.0, "B/frame", headline=True, reference="source 300")
    hidden = common.measurement("store", "segments", 3, "")
    assert common.table_rows({"name": "i", "measurements": [headline, hidden]}) == [
        ["i", "store: bytes/frame", "4,096 B/frame", "source 300", "", "", "-"]
    ]
    assert "| b | c |" in common.format_table(rows, markdown=True)


def test_cpu_clock_counts_a_child_process_once() -> None:
    import resource
    import subprocess
    import sys

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with common.CpuClock(interval_s=0.05) as clock:
        subprocess.run([sys.executable, "-c", "sum(i * i for i in range(4_000_000))"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # Sampled live and never again through the parent's reaped-children total; the last interval may be missed.
    assert child - 0.3 <= clock.cpu_s <= child + 0.3, (clock.cpu_s, child)


def test_run_worker_reports_a_failing_job(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="unknown worker job"):
        common.run_worker(common.BENCH_DIR / "ingest.py", "no-such-job", {}, log_dir=tmp_path)
