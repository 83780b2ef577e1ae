"""Incremental archive scoring on local Ray + a moto S3 server: new videos only, kills, concurrent runs, bad uploads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import storage
from pipelines.archive import ArchiveConfig, Lease, score_archive, video_id_for

ROOT = Path(__file__).resolve().parents[2]
FAST = ArchiveConfig(lease_settle_s=0.2)


def _upload(local: Path, uri: str) -> None:
    storage.write_bytes_atomic(uri, local.read_bytes())


def _scored(out: str) -> dict[str, str]:
    files = storage.list_files(storage.join(out, "scores", "archive"), suffixes=(".parquet",))
    return {f.rsplit("/", 1)[-1][: -len(".parquet")]: f for f in files}


def _runs(out: str) -> list[dict]:
    runs = storage.join(out, "runs")
    return [storage.read_json(u) for u in storage.list_files(runs)] if storage.exists(runs) else []


def _job(source: str, model: str, out: str) -> list[str]:
    return [sys.executable, str(ROOT / "jobs" / "score_archive.py"), "--source", source, "--model", model,
            "--out", out, "--num-cpus", "2"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def test_video_ids_are_relative_paths() -> None:
    assert video_id_for("/a/src", "/a/src/cam 1/x.y.mp4") == "cam 1__x.y"
    with pytest.raises(ValueError):
        video_id_for("/a/src", "/a/src/../x.mp4")


def test_incremental_runs_on_s3_score_only_new_videos_and_quarantine_bad_uploads(
    tiny_corpus: Path, luss_checkpoint: str, s3_bucket: str, ray_local: None
) -> None:
    videos = sorted((tiny_corpus / "test").glob("*.mp4")) + sorted((tiny_corpus / "train").glob("*.mp4"))
    source, out = f"{s3_bucket}/archive", f"{s3_bucket}/scores"
    for path in videos[:3]:
        _upload(path, f"{source}/cam1/{path.name}")
    first = score_archive(source, luss_checkpoint, out, FAST)
    assert first["status"] == "ok" and first["videos_scored"] == 3
    before = {k: storage.file_info(u).etag for k, u in _scored(out).items()}
    assert set(before) == {f"cam1__{p.stem}" for p in videos[:3]}

    for path in videos[3:5]:
        _upload(path, f"{source}/cam2/{path.name}")
    storage.write_bytes_atomic(f"{source}/cam2/broken.mp4", b"\x00\x00\x00\x18ftypmp42 not really a video")
    second = score_archive(source, luss_checkpoint, out, FAST)
    assert second["videos_new"] == 3 and second["videos_scored"] == 2
    assert [q["video_id"] for q in second["quarantined"]] == ["cam2__broken"]
    after = _scored(out)
    assert len(after) == 5 and {k: storage.file_info(after[k]).etag for k in before} == before

    third = score_archive(source, luss_checkpoint, out, FAST)
    assert third["status"] == "nothing-new" and third["videos_new"] == 0  # the broken upload is not retried
    assert len(_runs(out)) == 3
    assert not storage.exists(f"{out}/_state/lease.json")
    assert not [u for u in storage.list_files(f"{out}/_state") if "/tmp/" in u]


def test_killed_run_then_rerun_scores_everything_once(tiny_corpus: Path, luss_checkpoint: str, tmp_path: Path) -> None:
    source, out = tmp_path / "archive", tmp_path / "scores"
    source.mkdir()
    for path in sorted((tiny_corpus / "test").glob("*.mp4")) + sorted((tiny_corpus / "train").glob("*.mp4")):
        (source / path.name).write_bytes(path.read_bytes())
    proc = subprocess.Popen(_job(str(source), luss_checkpoint, str(out)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    lease = out / "_state" / "lease.json"
    while time.monotonic() < deadline and not (out / "_state" / "tmp").exists():
        time.sleep(0.2)  # kill it mid-way: after it took the lease and started ingesting
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lease.exists(), "the killed run should have left its lease behind"
    done = subprocess.run(_job(str(source), luss_checkpoint, str(out)), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    scored = sorted(p.stem for p in (out / "scores" / "archive").glob("*.parquet"))
    assert scored == sorted(p.stem for p in source.glob("*.mp4"))
    assert not list(out.rglob("*.tmp")) and not lease.exists()
    report = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert sum(r["videos_scored"] for r in report) == len(scored)


def test_two_concurrent_runs_do_not_double_score(tiny_corpus: Path, luss_checkpoint: str, tmp_path: Path) -> None:
    source, out = tmp_path / "archive", tmp_path / "scores"
    source.mkdir()
    for path in sorted((tiny_corpus / "test").glob("*.mp4")):
        (source / path.name).write_bytes(path.read_bytes())
    procs = [subprocess.Popen(_job(str(source), luss_checkpoint, str(out)), env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    reports = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert sorted(r["status"] for r in reports) in (["lease-held", "ok"], ["nothing-new", "ok"])
    assert sum(r["videos_scored"] for r in reports) == 3


def test_a_dead_local_holder_is_taken_over(tmp_path: Path) -> None:
    lease = Lease(str(tmp_path), "dead-run", ttl_s=3600, settle_s=0)
    lease._write()
    record = json.loads((tmp_path / "_state" / "lease.json").read_text())
    record["pid"] = 2**22 + 12345  # no such process
    (tmp_path / "_state" / "lease.json").write_text(json.dumps(record))
    assert Lease(str(tmp_path), "next-run", ttl_s=3600, settle_s=0).acquire()


def test_since_scores_only_recent_uploads_and_writes_the_review_report(
    tiny_corpus: Path, luss_checkpoint: str, tmp_path: Path, ray_local: None
) -> None:
    source, out, report = tmp_path / "archive", tmp_path / "scores", tmp_path / "report"
    source.mkdir()
    old, new = sorted((tiny_corpus / "test").glob("*.mp4"))[:2], sorted((tiny_corpus / "test").glob("*.mp4"))[2]
    for path in old:
        (source / path.name).write_bytes(path.read_bytes())
        os.utime(source / path.name, (1_767_225_600, 1_767_225_600))  # 2026-01-01T00:00:00Z
    (source / new.name).write_bytes(new.read_bytes())  # modified now
    with pytest.raises(ValueError, match="ISO-8601"):
        ArchiveConfig(since="last tuesday")
    cfg = ArchiveConfig(lease_settle_s=0.2, since="2026-06-01", report_dir=str(report))  # no zone: UTC
    done = score_archive(str(source), luss_checkpoint, str(out), cfg)
    assert done["status"] == "ok" and done["videos_listed"] == 1 and done["videos_scored"] == 1
    assert sorted(_scored(str(out))) == [new.stem]
    # The run's review report: this run's video has its score curve and the model's anomaly maps are used.
    html = (report / "index.html").read_text(encoding="utf-8")
    assert done["report"] == str(report / "index.html") and new.stem in html
    assert "luss_ae model maps" in html and list((report / "img").glob("curve_*.png"))
    # Moving --since back picks the older uploads up; the recent one is not scored again.
    again = score_archive(str(source), luss_checkpoint, str(out), ArchiveConfig(lease_settle_s=0.2, since="2025-12-31"))
    assert again["videos_listed"] == 3 and again["videos_scored"] == 2
    assert sorted(_scored(str(out))) == sorted(p.stem for p in source.glob("*.mp4"))
