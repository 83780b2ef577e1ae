"""Small real media files for the reliability suite: videos written with PyAV, frame folders with OpenCV."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def frame_image(i: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A distinct RGB frame: a bright square that moves with ``i`` on a tinted gradient."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:, :, 0] = (i * 9) % 256
    img[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    y = (i * 3) % max(1, height - 12)
    img[y : y + 12, 8:20] = 255
    return img


def write_video(path: Path, num_frames: int, height: int = 48, width: int = 64) -> Path:
    """An H.264 video (container from the extension) of ``num_frames`` frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(num_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame_image(i, height, width), format="rgb24")))
        container.mux(stream.encode())
    return path


def write_resolution_change(path: Path, parts: Sequence[tuple[int, int, int]]) -> Path:
    """A Matroska video whose frame size changes mid-stream: ``parts`` are ``(num_frames, height, width)``.

    Each part is encoded as its own H.264 elementary stream (in-band parameter sets); the packets of all parts are
    then muxed, in order, into one video track, as a camera that switches resolution would record.
    """
    streams = []
    for index, (num_frames, height, width) in enumerate(parts):
        raw = path.with_name(f".{path.stem}.part{index}.h264")
        with av.open(str(raw), "w", format="h264") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast"}
            for i in range(num_frames):
                frame = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        streams.append(raw.read_bytes())
        raw.unlink()
    joined = path.with_name(f".{path.stem}.h264")
    joined.write_bytes(b"".join(streams))
    with av.open(str(joined), format="h264") as source, av.open(str(path), "w") as target:
        video = source.streams.video[0]
        out = target.add_stream_from_template(video)
        index = 0
        for packet in source.demux(video):
            if packet.size == 0:
                continue
            packet.stream, packet.pts, packet.dts, packet.time_base = out, index, index, Fraction(1, 25)
            target.mux(packet)
            index += 1
    joined.unlink()
    return path


def write_frames(folder: Path, sizes: Sequence[tuple[int, int]], ext: str = ".png") -> Path:
    """A frame folder ``0.png, 1.png, ...`` with one image per ``(height, width)`` in ``sizes``."""
    folder.mkdir(parents=True)
    for i, (height, width) in enumerate(sizes):
        assert cv2.imwrite(str(folder / f"{i}{ext}"), cv2.cvtColor(frame_image(i, height, width), cv2.COLOR_RGB2BGR))
    return folder
