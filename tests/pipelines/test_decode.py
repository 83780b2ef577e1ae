"""Decoding: containers, frame folders, segmenting, bad inputs, storage URIs and bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import decord
import numpy as np
import pytest

from pipelines import storage
from pipelines.clip_store import segment_starts, stage_video
from pipelines.decode import (
    DecodeError,
    FrameSource,
    count_frames,
    decoder_info,
    is_video_file,
    iter_frames,
    iter_segments,
    list_frame_files,
    natural_key,
    probe,
    resize_frames,
)
from pipelines.windows import segment_windows
from vad_models.base import FrameSpec

GRAY = FrameSpec(24, 32, 1, window=5, segment_frames=16)  # overlap 4
SNIPPETS = FrameSpec(24, 32, 3, window=4, segment_frames=8, overlap=0)


def frame_image(i: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A distinct, compressible RGB frame: a moving bright square on a gradient whose tint follows ``i``."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:, :, 0] = (i * 9) % 256
    img[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    y = (i * 3) % (height - 12)
    img[y : y + 12, 8:20] = 255
    return img


def write_video(path: Path, num_frames: int, height: int = 48, width: int = 64, codec: str = "libx264") -> Path:
    """A real video file written with PyAV (container from the extension)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_frames(folder: Path, num_frames: int, ext: str = ".png", name: str = "{i}") -> Path:
    """A frame folder of ``num_frames`` images named without zero padding (to exercise natural order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        ok = cv2.imwrite(str(folder / f"{name.format(i=i)}{ext}"), cv2.cvtColor(frame_image(i), cv2.COLOR_RGB2BGR))
        assert ok
    return folder


def reference_decode(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """The whole video straight from decord, through the same resize."""
    reader = decord.VideoReader(str(path), num_threads=1)
    frames = reader.get_batch(list(range(len(reader)))).asnumpy()
    del reader
    return resize_frames(frames, height, width, channels)


def assemble(segments: list[tuple[int, np.ndarray]], overlap: int) -> np.ndarray:
    """Rebuild the video from its segments, checking that consecutive segments share ``overlap`` equal frames."""
    assert segments[0][0] == 0
    full = segments[0][1]
    for start, frames in segments[1:]:
        assert start == len(full) - overlap, "segments must overlap by exactly the spec's overlap"
        np.testing.assert_array_equal(frames[:overlap], full[len(full) - overlap :])
        full = np.concatenate([full, frames[overlap:]])
    return full


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_video(root / "clip.mp4", 50)
    write_video(root / "clip.avi", 30, codec="mpeg4")
    write_video(root / "clip.mkv", 30)
    write_video(root / "clip.mov", 30)
    write_frames(root / "frames", 23)
    return root


def test_natural_order_and_kind() -> None:
    names = ["f10.png", "f2.png", "F1.png", "f1a.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f1a.png", "f2.png", "f10.png"]
    assert is_video_file("s3://b/x/cam.MKV") and not is_video_file("/data/Test001")


@pytest.mark.parametrize("name,frames", [("clip.mp4", 50), ("clip.avi", 30), ("clip.mkv", 30), ("clip.mov", 30)])
def test_probe_and_count_containers(media: Path, name: str, frames: int) -> None:
    info = probe(str(media / name))
    assert (info.num_frames, info.fps, info.height, info.width) == (frames, 25.0, 48, 64)
    assert count_frames(str(media / name), GRAY) == frames


def test_frame_folder_reads_in_natural_order(media: Path) -> None:
    files = list_frame_files(str(media / "frames"))
    assert [Path(f).stem for f in files] == [str(i) for i in range(23)]
    info = probe(str(media / "frames"))
    assert (info.num_frames, info.height, info.width) == (23, 48, 64) and np.isnan(info.fps)
    frames = np.concatenate(list(iter_frames(str(media / "frames"))))
    # PNG is lossless: natural order means frame i is exactly image i.
    np.testing.assert_array_equal(frames, np.stack([frame_image(i) for i in range(23)]))


@pytest.mark.parametrize("spec", [GRAY, SNIPPETS], ids=["gray-overlap4", "rgb-overlap0"])
def test_segments_cover_video_exactly_and_match_decord(media: Path, spec: FrameSpec) -> None:
    path = media / "clip.mp4"
    segments = list(iter_segments(str(path), spec))
    assert [s for s, _ in segments] == segment_starts(50, spec)
    assert all(f.dtype == np.uint8 and f.shape[1:] == (24, 32, spec.channels) for _, f in segments)
    assert all(len(f) == spec.segment_frames for _, f in segments[:-1])
    full = assemble(segments, spec.effective_overlap)
    np.testing.assert_array_equal(full, reference_decode(path, 24, 32, spec.channels))


def test_windows_of_segments_cover_every_start_once(media: Path) -> None:
    segments = list(iter_segments(str(media / "clip.mkv"), GRAY))
    full = assemble(segments, GRAY.effective_overlap)
    starts = []
    for start, frames in segments:
        windows, window_starts = segment_windows(frames, start, GRAY.window)
        for w, s in zip(windows, window_starts):
            np.testing.assert_array_equal(w, full[s : s + GRAY.window])
        starts += window_starts.tolist()
    assert sorted(starts) == list(range(len(full) - GRAY.window + 1))
    assert len(starts) == len(set(starts))


@pytest.mark.parametrize("num_frames", [3, 16, 17, 20, 28, 29])
def test_segment_boundaries(tmp_path: Path, num_frames: int) -> None:
    folder = write_frames(tmp_path / "v", num_frames, ext=".bmp")
    segments = list(iter_segments(str(folder), GRAY))
    assert [s for s, _ in segments] == segment_starts(num_frames, GRAY)
    assert len(assemble(segments, GRAY.effective_overlap)) == num_frames
    # The tail segment exists only when it adds frames (more than the overlap).
    assert all(len(f) > GRAY.effective_overlap for s, f in segments if s > 0)


def test_size_override_and_native_size(media: Path) -> None:
    (_, frames), *_ = iter_segments(str(media / "clip.avi"), GRAY, size=(12, 20))
    assert frames.shape == (16, 12, 20, 1)
    native = next(iter_frames(str(media / "clip.avi")))
    assert native.shape[1:] == (48, 64, 3)


def test_resize_frames_is_area_resize_of_gray() -> None:
    frames = np.stack([frame_image(i) for i in range(3)])
    out = resize_frames(frames, 24, 32, 1)
    expected = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (32, 24), interpolation=cv2.INTER_AREA) for f in frames]
    np.testing.assert_array_equal(out[..., 0], np.stack(expected))
    with pytest.raises(ValueError, match="RGB uint8"):
        resize_frames(frames[..., :1], 24, 32, 1)


def test_decoded_count_wins_over_container_header(tmp_path: Path) -> None:
    """An AVI whose timestamps jump counts the skipped frames in its header; the decoded count is used."""
    path = tmp_path / "gaps.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")
            frame.pts, frame.time_base = i if i < 20 else 20 + (i - 20) * 3, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        reported = container.streams.video[0].frames
    assert reported > 40
    assert count_frames(str(path), GRAY) == 40
    row = {"video_id": "gaps", "uri": str(path), "staging": str(tmp_path / "staging" / "000000")}
    checked = stage_video(row, GRAY)  # what the clip store records
    assert checked["ok"] and checked["num_frames"] == 40 and checked["parts"] == 1
    assert len(assemble(list(iter_segments(str(path), GRAY)), GRAY.effective_overlap)) == 40


def test_truncated_mkv_decodes_what_is_there(media: Path, tmp_path: Path) -> None:
    data = (media / "clip.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    n = count_frames(str(tmp_path / "cut.mkv"), GRAY)
    assert 0 < n < 30
    assert len(assemble(list(iter_segments(str(tmp_path / "cut.mkv"), GRAY)), 4)) == n


def test_bad_inputs_raise_decode_error(media: Path, tmp_path: Path) -> None:
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    data = (media / "clip.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom lost
    scrambled = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 2000):  # damage the compressed frames, keep the container
        scrambled[i] = (scrambled[i] * 7 + 13) % 256
    (tmp_path / "corrupt.mp4").write_bytes(bytes(scrambled))
    (tmp_path / "empty_dir").mkdir()
    bad_frames = write_frames(tmp_path / "bad_frames", 10)
    (bad_frames / "5.png").write_bytes(b"garbage")
    mixed = write_frames(tmp_path / "mixed", 4)
    cv2.imwrite(str(mixed / "4.png"), np.zeros((10, 10, 3), np.uint8))
    cases = {
        "zero.mp4": "cannot open video",
        "text.mp4": "cannot open video",
        "truncated.mp4": "cannot open video",
        "corrupt.mp4": "decoding frames .* failed",
        "missing.mp4": "does not exist",
        "empty_dir": "holds no images",
        "no_such_dir": "does not exist",
        "bad_frames": "cannot decode frame .*5.png",
        "mixed": "is 10x10 but the first frame",
    }
    for name, message in cases.items():
        with pytest.raises(DecodeError, match=message):
            count_frames(str(tmp_path / name), GRAY)


def test_mid_way_failure_raises_after_good_segments(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "v", 40)
    (folder / "35.png").write_bytes(b"\x89PNG broken")
    got = []
    with pytest.raises(DecodeError, match="35.png"):
        for start, _ in iter_segments(str(folder), GRAY):
            got.append(start)
    assert got == [0, 12]  # the caller sees the failure only after earlier segments: hence the clip store's staging
    assert probe(str(folder)).num_frames == 40  # a probe alone cannot tell


def test_frame_source_opens_once_and_tells_open_failures_from_later_ones(media: Path, tmp_path: Path) -> None:
    """Opening is the probe (DecodeError from the constructor); a later failure raises while iterating."""
    with FrameSource(str(media / "clip.mp4")) as source:
        assert source.info == probe(str(media / "clip.mp4"))
        chunks = list(source.chunks(chunk_frames=16))
        with pytest.raises(RuntimeError, match="already read"):
            next(source.chunks())
    assert [len(c) for c in chunks] == [1, 16, 16, 16, 1]  # frame 0 (decoded by the probe) is not decoded twice
    np.testing.assert_array_equal(
        resize_frames(np.concatenate(chunks), 24, 32, 1), reference_decode(media / "clip.mp4", 24, 32, 1)
    )
    folder = write_frames(tmp_path / "v", 40)
    (folder / "0.png").write_bytes(b"broken")
    with pytest.raises(DecodeError, match="0.png"):
        FrameSource(str(folder))
    (folder / "0.png").write_bytes(cv2.imencode(".png", frame_image(0))[1].tobytes())
    (folder / "35.png").write_bytes(b"broken")
    with FrameSource(str(folder)) as source:
        assert source.info.num_frames == 40
        with pytest.raises(DecodeError, match="35.png"):
            list(source.segments(GRAY))


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    video = write_video(tmp_path / "café caméra 1.mp4", 20)
    folder = write_frames(tmp_path / "ç dossier", 6, ext=".jpg", name="img {i}")
    assert count_frames(str(video), GRAY) == 20
    assert count_frames(str(folder), GRAY) == 6


def test_memory_uri_is_downloaded_and_decoded(media: Path) -> None:
    """Remote inputs (s3://, here memory://) go through storage.local_copy for videos, bytes for frames."""
    storage.write_bytes_atomic("memory://decode-test/v.mp4", (media / "clip.mp4").read_bytes())
    for f in sorted((media / "frames").iterdir())[:5]:
        storage.write_bytes_atomic(f"memory://decode-test/frames/{f.name}", f.read_bytes())
    remote = np.concatenate(list(iter_frames("memory://decode-test/v.mp4", 24, 32, 1)))
    np.testing.assert_array_equal(remote, reference_decode(media / "clip.mp4", 24, 32, 1))
    assert count_frames("memory://decode-test/frames", GRAY) == 5


def test_decoder_info_names_versions() -> None:
    info = decoder_info()
    assert decord.__version__ in str(info["video"]) and "INTER_AREA" in str(info["resize"])


_MEASURE = """
import json, sys, tracemalloc
from types import SimpleNamespace
from pipelines.decode import iter_segments

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

# FrameSpec(64, 64, 1, window=17, segment_frames=128) without importing torch (vad_models.base) in the child.
spec = SimpleNamespace(height=64, width=64, channels=1, segment_frames=128, effective_overlap=16)
tracemalloc.start()
base, peak, frames = rss(), 0, 0
for start, seg in iter_segments(sys.argv[1], spec):
    frames = start + len(seg)
    peak = max(peak, rss())
print(json.dumps({"frames": frames, "rss": peak - base, "traced": tracemalloc.get_traced_memory()[1]}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS sampling needs Linux /proc")
def test_decoding_memory_does_not_grow_with_video_length(tmp_path: Path) -> None:
    """3,000 frames vs 300 frames: peak memory (numpy allocations and process RSS) stays about the same.

    Holding the whole long video would add >= 12 MB of gray output (36 MB of RGB input) to a ~15 MB baseline.
    """
    results = {}
    for n in (300, 3000):
        path = write_video(tmp_path / f"v{n}.mp4", n, 64, 64)
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, check=True, timeout=120
        )
        results[n] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results[300]["frames"] == 300 and results[3000]["frames"] == 3000
    assert results[3000]["traced"] / results[300]["traced"] < 1.5, results
    assert results[3000]["rss"] / max(results[300]["rss"], 1) < 2.5, results
