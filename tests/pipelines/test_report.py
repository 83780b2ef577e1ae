"""The review report on a hand-built score store: renders in headless Chromium, local files only, escaping."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import av
import cv2
import numpy as np
import pyarrow as pa
import pytest

from pipelines import storage
from pipelines.events import EventConfig, write_events
from pipelines.report import build_report
from pipelines.thumbnails import make_strip, overlay_heatmap, read_frames, strip_indices

FPS = 10.0
FRAMES = 60
ODD_ID = "cam<1>&'x'"  # video ids are user data: the page must escape them
IDS = (ODD_ID, "cam2", "seq3")  # cam2 is a missing video file, seq3 a folder of frame images


def frames_of(seed: int) -> np.ndarray:
    """A moving bright square on a gradient, ``[FRAMES, 48, 64, 3]``."""
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.linspace(40, 120, 64, dtype=np.uint8)[None, :, None], (48, 64, 3))
    out = np.repeat(base[None], FRAMES, axis=0).copy()
    for t in range(FRAMES):
        x = (t * 2 + int(rng.integers(0, 4))) % 48
        out[t, 16:32, x : x + 16] = (240, 200, 40)
    return out


def write_mp4(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def scores_of(video: int) -> np.ndarray:
    score = np.full(FRAMES, 0.1) + 0.01 * np.arange(FRAMES) % 0.05
    score[20 + 5 * video : 32 + 5 * video] = 2.0 + video  # one clear event per video
    score[26 + 5 * video] = 3.5 + video
    return score


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A score store (3 videos, summary.json, events.parquet) and a data store pointing at real source files."""
    root = tmp_path_factory.mktemp("report")
    write_mp4(root / "cam1.mp4", frames_of(0))
    (root / "seq3").mkdir()
    for t, frame in enumerate(frames_of(2)):
        cv2.imwrite(str(root / "seq3" / f"{t}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    store, run = root / "store", root / "run"
    uris = [str(root / "cam1.mp4"), str(root / "missing.mp4"), str(root / "seq3")]
    manifest = pa.table({
        "video_id": list(IDS), "dataset": ["synth"] * 3, "uri": uris, "split": ["test"] * 3,
        "video_label": pa.array([1, 1, 0], pa.int8()), "num_frames": pa.array([FRAMES] * 3, pa.int64()),
        "fps": [FPS] * 3, "height": [48] * 3, "width": [64] * 3,
    })  # fmt: skip
    storage.write_parquet_atomic(str(store / "manifest.parquet"), manifest)
    labels = [np.zeros(FRAMES, np.uint8) for _ in IDS]
    labels[0][22:30] = 1
    labels[1][50:55] = 1  # missed by the detector
    labels_table = pa.table({"video_id": list(IDS), "frame_labels": [y.tolist() for y in labels]})
    storage.write_parquet_atomic(str(store / "labels.parquet"), labels_table)
    for k, video_id in enumerate(IDS):
        table = pa.table({
            "video_id": [video_id] * FRAMES, "frame_idx": np.arange(FRAMES, dtype=np.int64),
            "score": scores_of(k), "vcr_bpe": scores_of(k) * 0.5,
        })  # fmt: skip
        meta = {"method": "luss_ae", "checkpoint_id": "abc123", "alignment": "last", "calibration": "global"}
        storage.write_parquet_atomic(
            storage.safe_join(str(run), "scores", "synth", f"{video_id}.parquet"),
            table.replace_schema_metadata({**meta, "fps": str(FPS)}),
        )
    summary = {"method": "luss_ae", "checkpoint_id": "abc123", "calibration": "global", "data": str(store),
               "videos_total": 3, "videos_scored": 3, "videos_failed": [{"video_id": "cam9", "error": "<boom>"}]}
    storage.write_json_atomic(str(run / "summary.json"), summary)
    write_events(str(run), str(run), EventConfig(threshold=1.0, min_duration_s=0.5))
    heat = np.zeros((6, 8))
    heat[2:4, 3:5] = 1.0
    html = build_report(str(run), root / "out", top=3, anomaly_maps={(ODD_ID, 26): heat})
    return {"root": root, "html": html, "run": run, "store": store}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_report_references_only_local_files(scored_run: dict[str, Path]) -> None:
    html = scored_run["html"]
    text = html.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    assert "link" not in parser.tags and "iframe" not in parser.tags
    assert "@import" not in text and "url(" not in text
    images = [link for link in parser.links if link.endswith(".png")]
    assert len(images) == 3 + 2  # 3 curves; strips for the mp4 and the frame folder (cam2's file is missing)
    for link in parser.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("//"), link
        if link.startswith("#"):
            assert f'id="{link[1:]}"' in text
            continue
        assert not Path(unquote(parts.path)).is_absolute(), link
        assert (html.parent / unquote(parts.path)).is_file(), link


def test_report_content_is_escaped_and_complete(scored_run: dict[str, Path]) -> None:
    text = scored_run["html"].read_text(encoding="utf-8")
    assert ODD_ID not in text and "<boom>" not in text
    assert "cam&lt;1&gt;&amp;&#x27;x&#x27;" in text and "&lt;boom&gt;" in text
    for needle in ("Micro AUROC", "Macro AUROC", "Event recall", "False alarms per hour", "fixed threshold"):
        assert needle in text
    assert "1 of 2 intervals" in text  # cam1's labelled interval is found, cam2's is not
    assert text.count('<tr><td class="num" data-v=') == 3  # one event per video
    assert "red overlay: anomaly map" in text
    assert "no thumbnails" in text and "missing.mp4" in text
    events_csv = scored_run["html"].parent / "events.csv"
    assert events_csv.read_text().count("\n") == 4


def test_thumbnail_strips_show_the_source_frames(scored_run: dict[str, Path]) -> None:
    out = scored_run["html"].parent
    strips = sorted((out / "img").glob("event_*.png"))
    assert len(strips) == 2
    for strip in strips:
        image = cv2.imread(str(strip))
        assert image.shape[0] == 96 and image.shape[1] > 4 * 128  # five 96x128 thumbnails side by side
        assert image.std() > 10
    frames = read_frames(str(scored_run["root"] / "seq3"), [0, 59, 60])
    assert sorted(frames) == [0, 59]  # 60 is past the end
    np.testing.assert_array_equal(frames[59], frames_of(2)[59])  # PNG frames are lossless
    decoded = read_frames(str(scored_run["root"] / "cam1.mp4"), [10])[10]
    assert np.abs(decoded.astype(int) - frames_of(0)[10]).mean() < 8  # mpeg4 is lossy, but it is that frame


def test_report_renders_in_headless_chromium(scored_run: dict[str, Path], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed but CI=true: install it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI=true makes this a failure")
    shot = tmp_path / "shot.png"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
        scored_run["html"].resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = cv2.imread(str(shot)).astype(np.float64)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.var() > 100  # text, tables and images, not a blank page
    assert (np.abs(pixels - pixels[0, 0]).sum(axis=2) > 30).mean() > 0.02


def test_overlay_and_strip_helpers() -> None:
    frame = np.full((40, 40, 3), 100, np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0] = 5.0
    out = overlay_heatmap(frame, heat)
    assert out[0, 0, 0] > 150 and out[0, 0, 1] < 100  # hottest corner turns red
    np.testing.assert_array_equal(out[-1, -1], frame[-1, -1])  # the coldest stays untouched
    with pytest.raises(ValueError, match="2-D"):
        overlay_heatmap(frame, np.zeros((2, 2, 2)))
    strip = make_strip([frame, frame], highlight=0, height=20)
    assert strip.shape == (20, 42, 3) and tuple(strip[0, 0]) == (220, 30, 30)
    assert strip_indices(0, 3, 1, 10, count=5) == [0, 1, 2, 3]  # clipped at the start, duplicates dropped
    assert strip_indices(50, 59, 58, 60, count=3) == [55, 58, 59]


def test_report_job_recomputes_events_with_overrides(
    scored_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = runpy.run_path(str(Path(__file__).resolve().parents[2] / "jobs" / "report.py"), run_name="report_job")
    out = tmp_path / "job"
    assert job["main"](["--scores", str(scored_run["run"]), "--out", str(out), "--top", "1", "threshold=3.0"]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    text = (out / "index.html").read_text(encoding="utf-8")
    assert "<th>threshold</th><td>3.0</td>" in text  # the overridden threshold is shown
    assert len(list((out / "img").glob("event_*.png"))) == 1
    with pytest.raises(SystemExit) as exited:
        job["main"](["--scores", str(tmp_path / "none"), "--out", str(out)])
    assert exited.value.code == 1 and "scores/" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        job["main"](["--scores", str(scored_run["run"]), "--out", str(out), "thresold=3"])
    assert exited.value.code == 2 and "thresold" in capsys.readouterr().err


def test_anomaly_maps_may_be_a_callable(scored_run: dict[str, Path], tmp_path: Path) -> None:
    asked: list[tuple[str, int]] = []

    def maps(video_id: str, frame: int) -> np.ndarray | None:
        asked.append((video_id, frame))
        return np.ones((3, 3)) if frame == 36 else None  # seq3's peak

    text = build_report(str(scored_run["run"]), tmp_path / "r", top=1, anomaly_maps=maps).read_text(encoding="utf-8")
    assert ("seq3", 36) in asked and "red overlay: anomaly map" in text
    with pytest.raises(ValueError, match="2-D"):
        build_report(str(scored_run["run"]), tmp_path / "bad", top=1, anomaly_maps=lambda v, f: np.ones(4))
