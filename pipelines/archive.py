"""Incremental scoring of a growing archive of footage: only new videos, safe to rerun, kill or run twice.

One run (:func:`score_archive`):

1. takes the **lease** ``OUT/_state/lease.json`` (a second concurrent run finds it held and exits; a lease
   whose holder died expires after ``lease_ttl_s`` and is taken over);
2. **lists** the source (local or ``s3://``) and keeps the videos not yet processed for this model: a video
   counts as done when ``OUT/_state/<checkpoint_id>.json`` records its fingerprint (ETag, or size + mtime), or
   when its score file already carries this checkpoint's id (a run killed after scoring, before saving state);
3. **ingests** only those into a temporary clip store under ``OUT/_state/tmp/<run_id>`` (bad uploads are
   quarantined there and recorded, so they are not retried until the object changes);
4. **scores** them (per-video atomic score files, events), saves the state, writes the run report
   ``OUT/runs/<run_id>.json`` and removes the temporary store.

Killing a run at any point loses nothing and scores nothing twice: score files are atomic and skipped by
checkpoint id, the state file is replaced atomically, and the next run finishes the rest.

Example:
    >>> report = score_archive("s3://cams/archive", "s3://models/luss/run", "s3://cams/scores")  # doctest: +SKIP
    >>> report["videos_scored"]  # doctest: +SKIP
    12
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pipelines import storage
from pipelines.checkpoint import load_checkpoint
from pipelines.clip_store import build_clip_store
from pipelines.datasets import DatasetAdapter, VideoEntry
from pipelines.decode import is_video_file
from pipelines.score import ScoreConfig, score, score_file_uri

__all__ = ["ArchiveConfig", "ArchiveListing", "Lease", "score_archive", "video_id_for"]

DATASET = "archive"


@dataclass(frozen=True)
class ArchiveConfig:
    """Settings of an archive run.

    Attributes:
        since: Only objects modified at or after this ISO-8601 time, UTC unless it names a zone (``None``: all).
        calibration: ``"global"`` (default: a quiet video stays quiet) or ``"per-video"``.
        use_gpu: Score with one GPU per actor.
        concurrency: Scoring actors.
        batch_size: Segments per actor call.
        lease_ttl_s: A lease older than this is considered abandoned and taken over.
        lease_settle_s: Pause between writing the lease and reading it back (detects a simultaneous start).
        limit: At most this many new videos per run (``None``: all).
        report_dir: Local folder for the offline review report of ``OUT`` (``None``: none), written after scoring
            while this run's temporary clip store still exists, so this run's videos get thumbnails and anomaly
            maps; videos of earlier runs appear in the tables and curves.
    """

    since: str | None = None
    calibration: str = "global"
    use_gpu: bool = False
    concurrency: int = 1
    batch_size: int = 2
    lease_ttl_s: float = 6 * 3600.0
    lease_settle_s: float = 1.0
    limit: int | None = None
    report_dir: str | None = None

    def __post_init__(self) -> None:
        if self.since is not None:
            since_timestamp(self.since)  # a bad --since fails before the run takes the lease


def since_timestamp(since: str) -> float:
    """POSIX time of an ISO-8601 ``--since`` value; a time without a zone is UTC (archives span time zones).

    Example:
        >>> since_timestamp("2026-11-24T00:00:00Z") == since_timestamp("2026-11-24") == 1795478400.0
        True
    """
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise ValueError(f"--since must be an ISO-8601 time such as 2026-11-24T00:00:00Z, got {since!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def video_id_for(source: str, uri: str) -> str:
    """A stable, file-name-safe video id from an object's path relative to the source.

    Example:
        >>> video_id_for("s3://cams/archive", "s3://cams/archive/cam 1/2026-11-24.mp4")
        'cam 1__2026-11-24'
    """
    rel = uri[len(source.rstrip("/")) :].lstrip("/")
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", rel)
    video_id = stem.replace("/", "__")
    if not video_id or video_id in (".", "..") or ".." in video_id.split("__"):
        raise ValueError(f"cannot derive a video id from {uri!r}")
    return video_id


class ArchiveListing(DatasetAdapter):
    """A dataset adapter over an explicit list of archive objects (all in the ``test`` split, unlabelled)."""

    name = DATASET
    expected_tree = "SOURCE/**/<video>.{mp4,avi,mkv,mov}   (any nesting; ids are relative paths with / -> __)"

    def __init__(self, entries: list[VideoEntry]) -> None:
        self._entries = entries

    def entries(self, root: str, splits: Any = ("test",)) -> list[VideoEntry]:
        return [e for e in self._entries if e.split in splits]


class Lease:
    """A best-effort mutual-exclusion lease held as one small object.

    Object stores reached through pyarrow offer no conditional create, so acquisition writes the lease,
    waits ``settle_s`` and reads it back: of two runs starting together, the one whose write landed last
    proceeds and the other backs off. Holders renew the lease between stages and re-check ownership.
    """

    def __init__(self, out: str, owner: str, ttl_s: float, settle_s: float) -> None:
        self.uri = storage.join(out, "_state", "lease.json")
        self.owner, self.ttl_s, self.settle_s = owner, ttl_s, settle_s

    def holder(self) -> dict[str, Any] | None:
        """The current lease, or ``None`` when there is none, it expired, or its holder process is gone.

        A holder on this host whose process no longer exists (a killed run) is detected at once; holders on
        other hosts are taken over when the lease expires.
        """
        if not storage.exists(self.uri):
            return None
        try:
            lease = storage.read_json(self.uri)
        except (ValueError, FileNotFoundError):
            return None
        if float(lease.get("expires", 0)) <= time.time():
            return None
        if lease.get("host") == socket.gethostname() and not _process_alive(int(lease.get("pid", -1))):
            return None
        return lease

    def acquire(self) -> bool:
        """Take the lease unless another live run holds it."""
        current = self.holder()
        if current is not None and current.get("owner") != self.owner:
            return False
        self._write()
        time.sleep(self.settle_s)
        current = self.holder()
        return current is not None and current.get("owner") == self.owner

    def renew(self) -> None:
        """Extend the lease; raises if another run took it over meanwhile."""
        current = self.holder()
        if current is not None and current.get("owner") != self.owner:
            raise RuntimeError(f"lease {self.uri} was taken over by {current.get('owner')}; stopping this run")
        self._write()

    def release(self) -> None:
        """Drop the lease if this run still holds it."""
        current = self.holder()
        if current is not None and current.get("owner") == self.owner:
            storage.delete(self.uri)

    def _write(self) -> None:
        now = time.time()
        storage.write_json_atomic(
            self.uri,
            {
                "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "acquired": now, "expires": now + self.ttl_s,
            },
        )


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fingerprint(meta: storage.FileMeta) -> str:
    return meta.etag or f"{meta.size}:{meta.mtime}"


def _list_source(source: str, since: str | None) -> list[storage.FileMeta]:
    cutoff = since_timestamp(since) if since else None
    found = []
    for uri in storage.list_files(source):
        if not is_video_file(uri):
            continue
        meta = storage.file_info(uri)
        if cutoff is not None and meta.mtime is not None and meta.mtime < cutoff:
            continue
        found.append(meta)
    return found


def _scored_with(out: str, video_id: str, checkpoint_id: str) -> bool:
    import pyarrow.parquet as pq

    uri = score_file_uri(out, DATASET, video_id)
    if not storage.exists(uri):
        return False
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as handle:
        meta = pq.read_schema(handle).metadata or {}
    return meta.get(b"checkpoint_id", b"").decode() == checkpoint_id


def score_archive(source: str, checkpoint: str, out: str, cfg: ArchiveConfig | None = None) -> dict[str, Any]:
    """Score the videos under ``source`` that this model has not scored yet (see the module docstring).

    Args:
        source: Archive URI (local folder or ``s3://bucket/prefix``), searched recursively for video files.
        checkpoint: Checkpoint or training output URI.
        out: Output URI: ``scores/archive/<video_id>.parquet``, ``events.parquet``, ``runs/``, ``_state/``.
        cfg: Run settings.

    Returns:
        The run report (also written to ``OUT/runs/<run_id>.json``); ``status`` is ``"ok"``, ``"nothing-new"``
        or ``"lease-held"``.
    """
    cfg = cfg or ArchiveConfig()
    started = time.perf_counter()
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    loaded = load_checkpoint(checkpoint)
    spec = loaded.method.input_spec(loaded.config)
    if spec.store != "clips":
        raise ValueError(
            f"archive scoring ingests raw footage into a clip store; {loaded.method.name} reads {spec.store!r} "
            "stores — build that store (jobs/detect.py / jobs/extract_i3d.py) and use jobs/score.py"
        )
    report: dict[str, Any] = {
        "run_id": run_id, "source": source, "out": out, "method": loaded.method.name,
        "checkpoint": loaded.uri, "checkpoint_id": loaded.checkpoint_id, "calibration": cfg.calibration,
        "videos_listed": 0, "videos_new": 0, "videos_scored": 0, "videos_already_scored": 0,
        "quarantined": [], "failed": [], "durations_s": {},
    }
    lease = Lease(out, run_id, cfg.lease_ttl_s, cfg.lease_settle_s)
    if not lease.acquire():
        holder = lease.holder() or {}
        report.update(status="lease-held", lease_holder=holder.get("owner"))
        print(f"[archive] another run ({holder.get('owner')}) holds {lease.uri}; nothing to do", flush=True)
        return _finish(out, report, started)
    tmp_store = storage.join(out, "_state", "tmp", run_id)
    state_uri = storage.join(out, "_state", f"{loaded.checkpoint_id}.json")
    try:
        state: dict[str, dict[str, Any]] = storage.read_json(state_uri) if storage.exists(state_uri) else {}
        t = time.perf_counter()
        listed = _list_source(source, cfg.since)
        report["videos_listed"] = len(listed)
        todo: list[tuple[storage.FileMeta, str]] = []
        for meta in listed:
            video_id = video_id_for(source, meta.uri)
            key = meta.uri[len(source.rstrip("/")) :].lstrip("/")
            if state.get(key, {}).get("fingerprint") == _fingerprint(meta):
                continue
            if _scored_with(out, video_id, loaded.checkpoint_id):  # scored by a run killed before saving state
                state[key] = {"video_id": video_id, "fingerprint": _fingerprint(meta), "status": "scored"}
                report["videos_already_scored"] += 1
                continue
            todo.append((meta, video_id))
        if cfg.limit is not None:
            todo = todo[: cfg.limit]
        report["videos_new"] = len(todo)
        report["durations_s"]["list"] = round(time.perf_counter() - t, 3)
        if not todo:
            storage.write_json_atomic(state_uri, state)
            report["status"] = "nothing-new"
            return _finish(out, report, started)
        print(f"[archive] {len(todo)} new video(s) of {len(listed)} listed; run {run_id}", flush=True)
        t = time.perf_counter()
        entries = [VideoEntry(video_id=vid, uri=meta.uri, split="test", video_label=-1) for meta, vid in todo]
        size = (loaded.config.height, loaded.config.width) if hasattr(loaded.config, "height") else None
        ingest = build_clip_store(ArchiveListing(entries), source, tmp_store, spec.frame_spec, size=size,
                                  splits=("test",), overwrite=True)
        report["durations_s"]["ingest"] = round(time.perf_counter() - t, 3)
        lease.renew()
        by_id = {vid: meta for meta, vid in todo}
        for q in ingest.quarantine:
            meta = by_id[q["video_id"]]
            key = meta.uri[len(source.rstrip("/")) :].lstrip("/")
            state[key] = {"video_id": q["video_id"], "fingerprint": _fingerprint(meta), "status": "quarantined",
                          "error": q["error"]}
            report["quarantined"].append({"video_id": q["video_id"], "uri": meta.uri, "stage": q["stage"],
                                          "error": q["error"]})
        t = time.perf_counter()
        summary = (
            score(loaded.uri, tmp_store, out, ScoreConfig(
                split="test", only_new=True, use_gpu=cfg.use_gpu, calibration=cfg.calibration,
                concurrency=cfg.concurrency, batch_size=cfg.batch_size,
            ))
            if ingest.videos_ok else {"videos_failed": [], "videos_scored": 0}
        )
        report["durations_s"]["score"] = round(time.perf_counter() - t, 3)
        failed = {f["video_id"]: f["error"] for f in summary["videos_failed"]}
        for vid, meta in by_id.items():
            key = meta.uri[len(source.rstrip("/")) :].lstrip("/")
            if vid in failed:
                report["failed"].append({"video_id": vid, "error": failed[vid]})
            elif _scored_with(out, vid, loaded.checkpoint_id):
                state[key] = {"video_id": vid, "fingerprint": _fingerprint(meta), "status": "scored"}
                report["videos_scored"] += 1
        lease.renew()
        storage.write_json_atomic(state_uri, state)
        if cfg.report_dir is not None and summary["videos_scored"]:
            from pipelines.report import build_report

            report["report"] = str(build_report(out, cfg.report_dir, data_uri=tmp_store))
        report["status"] = "ok"
        return _finish(out, report, started)
    finally:
        if storage.exists(tmp_store):
            storage.delete(tmp_store, recursive=True)
        lease.release()


def _finish(out: str, report: dict[str, Any], started: float) -> dict[str, Any]:
    report["durations_s"]["total"] = round(time.perf_counter() - started, 3)
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    storage.write_text_atomic(
        storage.join(out, "runs", f"{report['run_id']}.json"),
        storage.redact(json.dumps(report, indent=2, sort_keys=True, default=str)),
    )
    print(
        f"[archive] {report['status']}: {report['videos_scored']} scored, {len(report['quarantined'])} quarantined, "
        f"{len(report['failed'])} failed, {report['videos_already_scored']} already scored "
        f"({report['durations_s']['total']:.1f}s) -> {out}/runs/{report['run_id']}.json",
        flush=True,
    )
    return report
