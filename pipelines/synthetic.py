"""Synthetic surveillance corpus with exact ground truth, written as real H.264 mp4 files.

The scene is one fixed camera over a park: grass with trees and benches and two paved horizontal walkways.
Pedestrians (small textured figures with a walking gait and a soft shadow) arrive at fairly regular intervals
and all walk **left to right** at 0.5-1.5 px/frame (at 128 px frame height), so "against the flow" is well defined.
Each frame adds mild sensor noise and a slow illumination drift. Test videos contain anomalies of four kinds:

- ``fast``: a person running 3-5x the mean walking speed along a walkway;
- ``cart``: a large square cart (18-26 px at 128 px height), i.e. an object of unusual shape and size;
- ``against_flow``: a person walking right to left;
- ``erratic``: a person appearing suddenly mid-scene, jittering around, then vanishing.

Every size and speed is given in *nominal pixels* (a 128 px tall frame) and scaled with the frame height, so a
1080p video shows the same scene at higher resolution. Ground truth comes from the rasterised sprites
themselves: a pixel belongs to an object where its coverage is >= :data:`VISIBLE_ALPHA`, a frame is anomalous
iff some anomalous object has such a pixel, and the box is those pixels' bounds. Labels therefore match the
pixels by construction, and :func:`annotate` recomputes them without rendering or encoding.

Folder format written by :func:`synthesize` (``DIR``)::

    train/<video_id>.mp4          normal videos (the ``weak`` preset also has abnormal ones)
    test/<video_id>.mp4
    labels/<video_id>.npy         uint8 0/1 per frame (test videos only)
    labels/<video_id>.boxes.json  header + {"frames": {"<t>": [{"box", "track_id", "kind"}, ...]}}
    video_labels.json             {video_id: 0 | 1} for every video
    corpus.json                   preset, seed, scene config and per-video summary

Example:
    >>> summary = synthesize("/tmp/tiny", preset="tiny", seed=0, overwrite=True)  # doctest: +SKIP
    >>> len(summary.train), len(summary.test)  # doctest: +SKIP
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = [
    "ANOMALY_KINDS",
    "PRESETS",
    "VISIBLE_ALPHA",
    "Preset",
    "SceneConfig",
    "SyntheticSummary",
    "SyntheticVideo",
    "VideoPlan",
    "VideoSpec",
    "annotate",
    "get_preset",
    "iter_frames",
    "plan_video",
    "render_background",
    "synthesize",
]

ANOMALY_KINDS = ("fast", "cart", "against_flow", "erratic")
VISIBLE_ALPHA = 0.5  # sprite coverage at which a pixel counts as showing the object
_NOMINAL_HEIGHT = 128.0  # sizes and speeds in SceneConfig are pixels of a frame this tall
_WALKWAY_GRAY = 148.0  # luma of the paving; figures are drawn with a minimum contrast against it


@dataclass(frozen=True)
class SceneConfig:
    """Scene geometry and behaviour; lengths in nominal pixels (128 px frame height), times in frames.

    Attributes:
        walkways: Vertical centres of the two walkways, as fractions of the frame height.
        walkway_half_width: Half width of a walkway, fraction of the frame height.
        person_height: Range of pedestrian heights.
        walk_speed: Range of normal walking speeds (px/frame), always left to right.
        arrival_rate: New pedestrians per frame and walkway (mean of a gamma renewal process).
        arrival_regularity: Gamma shape of the gaps between arrivals (1 = Poisson; larger = more evenly spaced,
            so the number of people in view varies less).
        normal_contrast: Minimum luma difference between a pedestrian's shirt and the paving.
        anomaly_contrast: Same, for the anomalous figures (kept clearly visible at 64x64 gray).
        fast_factor: Running speed as a multiple of the mean walking speed.
        against_speed: Speed range of people walking against the flow.
        cart_size: Side length range of carts.
        cart_speed: Speed range of carts (with the flow).
        erratic_steps: Std of the per-frame random displacement of an erratic person.
        erratic_duration: Visible time of an erratic person, as a multiple of the nominal crossing time.
        lead_in: Range of the normal stretch before the first event, fraction of the video length.
        gap: Range of the normal stretch between events, fraction of the video length.
        sensor_noise: Std of the per-frame Gaussian sensor noise (gray levels).
        flicker: Amplitude of the slow global illumination drift (relative).
        crf: H.264 constant rate factor (lower = closer to the rendered pixels).
    """

    walkways: tuple[float, float] = (0.36, 0.70)
    walkway_half_width: float = 0.085
    person_height: tuple[float, float] = (8.0, 12.0)
    walk_speed: tuple[float, float] = (0.5, 1.5)
    arrival_rate: float = 0.02
    arrival_regularity: float = 3.0
    normal_contrast: float = 35.0
    anomaly_contrast: float = 60.0
    fast_factor: tuple[float, float] = (3.0, 5.0)
    against_speed: tuple[float, float] = (1.0, 1.5)
    cart_size: tuple[float, float] = (18.0, 26.0)
    cart_speed: tuple[float, float] = (1.0, 1.5)
    erratic_steps: float = 2.5
    erratic_duration: tuple[float, float] = (0.3, 0.45)
    lead_in: tuple[float, float] = (0.06, 0.12)
    gap: tuple[float, float] = (0.06, 0.10)
    sensor_noise: float = 2.0
    flicker: float = 0.01
    crf: int = 18


@dataclass(frozen=True)
class VideoSpec:
    """One video of a preset: split, size, length and the anomaly kinds it stages (in order)."""

    split: str
    height: int
    width: int
    num_frames: int
    events: tuple[str, ...] = ()
    fps: float = 25.0


@dataclass(frozen=True)
class Preset:
    """A named corpus recipe. ``weak`` marks presets whose train split holds abnormal videos."""

    name: str
    videos: tuple[VideoSpec, ...]
    weak: bool = False


def _videos(split: str, size: tuple[int, int], frames: int, events: list[tuple[str, ...]]) -> tuple[VideoSpec, ...]:
    return tuple(VideoSpec(split, size[0], size[1], frames, ev) for ev in events)


_AF, _F, _C, _E = "against_flow", "fast", "cart", "erratic"
PRESETS: dict[str, Preset] = {
    # 2 train + 3 test, 64 frames at 64x64: seconds, for tests.
    "tiny": Preset(
        "tiny", _videos("train", (64, 64), 64, [()] * 2) + _videos("test", (64, 64), 64, [(_F, _E), (_C,), (_AF,)])
    ),
    # 8 train + 6 test, 240 frames at 128x128 (~45% of test frames anomalous). Every test video has a fast
    # runner: methods that rescale scores per video (LUSS-AE, eq. 16) need a clear anomaly in each video to
    # anchor the scale, and against-flow (the hardest kind for frame-level methods) appears once.
    "demo": Preset(
        "demo",
        _videos("train", (128, 128), 240, [()] * 8)
        + _videos("test", (128, 128), 240, [(_F, _E), (_C, _F), (_AF, _F), (_E, _F), (_F, _C), (_F, _E)]),
    ),
    # Longer videos plus one 480p and one 1080p video for throughput benchmarks.
    "bench": Preset(
        "bench",
        _videos("train", (128, 128), 600, [()] * 4)
        + _videos("test", (128, 128), 600, [(_F, _C, _E), (_AF, _F, _C), (_E, _AF, _F)])
        + _videos("test", (480, 854), 300, [(_C, _F)])
        + _videos("test", (1080, 1920), 150, [(_F, _E)]),
    ),
    # Weak supervision: abnormal videos in train carry only a video-level label; test has normal videos too.
    "weak": Preset(
        "weak",
        _videos("train", (128, 128), 192, [(), (_F,), (), (_C,), (), (_E,), (), (_AF, _F), (), (_F, _E), (), ()])
        + _videos("test", (128, 128), 192, [(_F,), (), (_C,), (), (_E, _F), (), (_AF, _F), (_C, _E)]),
        weak=True,
    ),
}


def get_preset(name: str) -> Preset:
    """Return the preset ``name``; ``KeyError`` lists the known presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown synthetic preset {name!r}; known: {', '.join(PRESETS)}") from None


@dataclass(frozen=True)
class SyntheticVideo:
    """One written video: identity, geometry and a label summary."""

    video_id: str
    split: str
    path: Path
    num_frames: int
    height: int
    width: int
    fps: float
    video_label: int
    anomalous_frames: int
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`synthesize` wrote under ``root``."""

    root: Path
    preset: str
    seed: int
    videos: tuple[SyntheticVideo, ...]

    @property
    def train(self) -> tuple[SyntheticVideo, ...]:
        return tuple(v for v in self.videos if v.split == "train")

    @property
    def test(self) -> tuple[SyntheticVideo, ...]:
        return tuple(v for v in self.videos if v.split == "test")

    @property
    def num_frames(self) -> int:
        return sum(v.num_frames for v in self.videos)

    @property
    def test_anomalous_fraction(self) -> float:
        frames = sum(v.num_frames for v in self.test)
        return sum(v.anomalous_frames for v in self.test) / max(frames, 1)


# --------------------------------------------------------------------------------------------------- planning
@dataclass
class _Agent:
    """One moving figure: per-frame centre (NaN when absent) and its look."""

    track_id: int
    kind: str  # "person" for normal pedestrians, else one of ANOMALY_KINDS
    xs: np.ndarray  # [T] centre x in px
    ys: np.ndarray  # [T] centre y in px
    size: float  # person height or cart side, px
    colors: np.ndarray  # [4, 3] RGB: shirt, trousers, skin, accent (cart: body, band, wheels, accent)
    texture: tuple[float, float, float]  # stripe frequency along u, along v (rad/px), phase
    phase: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [T] gait phase (rad)

    @property
    def anomalous(self) -> bool:
        return self.kind != "person"

    @property
    def half_extent(self) -> tuple[float, float]:
        """Half width/height of the sprite support (parts + soft edge)."""
        if self.kind == "cart":
            return 0.62 * self.size + 1.0, 0.62 * self.size + 1.0
        return 0.36 * self.size + 1.0, 0.58 * self.size + 1.0


@dataclass
class VideoPlan:
    """Everything needed to render (and label) one video; a pure function of spec, index and seed."""

    video_id: str
    spec: VideoSpec
    agents: list[_Agent]
    render_seed: tuple[int, ...]
    background_seed: tuple[int, ...]
    scene: SceneConfig


def _scale(spec: VideoSpec) -> float:
    return spec.height / _NOMINAL_HEIGHT


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _shirt(rng: np.random.Generator, contrast: float) -> np.ndarray:
    while True:  # rejection sampling: keep figures visible against the paving in grayscale
        rgb = rng.uniform(15, 240, size=3)
        if abs(_luma(rgb) - _WALKWAY_GRAY) >= contrast:
            return rgb


def _person_look(rng: np.random.Generator, contrast: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    skin = np.array([[224, 172, 140], [198, 134, 98], [141, 85, 56], [92, 58, 40]], float)[rng.integers(4)]
    trousers = rng.uniform(20, 90, size=3) * np.array([1.0, 1.0, rng.uniform(1.0, 1.8)])
    colors = np.stack([_shirt(rng, contrast), trousers, skin, rng.uniform(0, 255, size=3)])
    period = rng.uniform(2.0, 4.0)  # shirt stripes, in px at nominal scale (rescaled by size at draw time)
    return colors, (0.0 if rng.random() < 0.5 else 2 * np.pi / period, 2 * np.pi / period, rng.uniform(0, 2 * np.pi))


def _cart_look(rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    bodies = np.array([[200, 40, 30], [30, 60, 160], [235, 205, 40], [240, 240, 235], [28, 28, 32]], float)
    body = bodies[rng.integers(len(bodies))]
    band = np.full(3, 30.0) if _luma(body) > 120 else np.full(3, 235.0)
    colors = np.stack([body, band, np.full(3, 20.0), band])
    return colors, (2 * np.pi / 6.0, 0.0, rng.uniform(0, 2 * np.pi))


def _walkway_y(spec: VideoSpec, scene: SceneConfig, rng: np.random.Generator, lane: int, size: float) -> float:
    centre = scene.walkways[lane] * spec.height
    half = scene.walkway_half_width * spec.height
    return centre + rng.uniform(-0.45, 0.45) * half - 0.1 * size  # feet stay on the paving


def _gait(xs: np.ndarray, ys: np.ndarray, size: float) -> np.ndarray:
    step = np.hypot(np.diff(xs, prepend=xs[:1]), np.diff(ys, prepend=ys[:1]))
    return np.cumsum(np.nan_to_num(step)) / (0.35 * size) * np.pi  # one leg swing per ~0.7 body heights


def _straight(
    spec: VideoSpec, start: float, speed: float, y: float, half_w: float, leftwards: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Path entering at the left (right) edge at frame ``start``; NaN outside the frame's horizontal span."""
    t = np.arange(spec.num_frames, dtype=np.float64)
    xs = -half_w + speed * (t - start)
    if leftwards:
        xs = spec.width + half_w - speed * (t - start)
    xs[(t < start) | (xs < -half_w) | (xs > spec.width + half_w)] = np.nan
    return xs, np.full_like(xs, y)


def _pedestrians(spec: VideoSpec, scene: SceneConfig, rng: np.random.Generator) -> list[_Agent]:
    s = _scale(spec)
    slowest = scene.walk_speed[0] * s
    agents: list[_Agent] = []
    for lane in range(len(scene.walkways)):
        # Start the arrival process early enough that frame 0 already shows a steady-state crowd.
        t = -(spec.width + 40 * s) / slowest
        while True:
            t += rng.gamma(scene.arrival_regularity, 1.0 / (scene.arrival_rate * scene.arrival_regularity))
            if t >= spec.num_frames:
                break
            size = rng.uniform(*scene.person_height) * s
            speed = rng.uniform(*scene.walk_speed) * s
            colors, texture = _person_look(rng, scene.normal_contrast)
            xs, ys = _straight(spec, t, speed, _walkway_y(spec, scene, rng, lane, size), 0.36 * size + 1.0)
            ys = ys + 0.04 * size * np.sin(_gait(xs, ys, size))  # slight bob with each step
            if np.isfinite(xs).any():
                agents.append(_Agent(len(agents), "person", xs, ys, size, colors, texture))
    return agents


def _anomaly(
    kind: str, start: float, spec: VideoSpec, scene: SceneConfig, rng: np.random.Generator, tid: int
) -> _Agent:
    s = _scale(spec)
    lane = int(rng.integers(len(scene.walkways)))
    mean_walk = 0.5 * (scene.walk_speed[0] + scene.walk_speed[1])
    if kind == "cart":
        size = rng.uniform(*scene.cart_size) * s
        colors, texture = _cart_look(rng)
        y = scene.walkways[lane] * spec.height
        xs, ys = _straight(spec, start, rng.uniform(*scene.cart_speed) * s, y, 0.62 * size + 1.0)
        return _Agent(tid, kind, xs, ys, size, colors, texture)
    size = rng.uniform(*scene.person_height) * s
    colors, texture = _person_look(rng, scene.anomaly_contrast)
    y = _walkway_y(spec, scene, rng, lane, size)
    if kind == "fast":
        xs, ys = _straight(spec, start, rng.uniform(*scene.fast_factor) * mean_walk * s, y, 0.36 * size + 1.0)
    elif kind == "against_flow":
        xs, ys = _straight(spec, start, rng.uniform(*scene.against_speed) * s, y, 0.36 * size + 1.0, leftwards=True)
    elif kind == "erratic":
        crossing = spec.width / s / mean_walk
        stop = start + rng.uniform(*scene.erratic_duration) * crossing
        t = np.arange(spec.num_frames, dtype=np.float64)
        # AR(1) jitter around a slowly drifting anchor: large frame-to-frame jumps, bounded excursion.
        steps = rng.normal(0.0, scene.erratic_steps * s, size=(spec.num_frames, 2))
        offset = np.zeros_like(steps)
        for i in range(1, len(steps)):
            offset[i] = 0.8 * offset[i - 1] + steps[i]
        drift = rng.normal(0.0, 0.4 * s, size=2)
        anchor_x = rng.uniform(0.25, 0.75) * spec.width
        xs = anchor_x + drift[0] * (t - start) + offset[:, 0]
        ys = y + 0.3 * drift[1] * (t - start) + 0.5 * offset[:, 1]
        gone = (t < start) | (t >= stop)
        xs[gone], ys[gone] = np.nan, np.nan
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; known: {', '.join(ANOMALY_KINDS)}")
    return _Agent(tid, kind, xs, ys, size, colors, texture)


def _visible_until(agent: _Agent) -> float:
    present = np.flatnonzero(np.isfinite(agent.xs))
    return float(present[-1]) if present.size else 0.0


def plan_video(spec: VideoSpec, video_id: str, index: int, seed: int, scene: SceneConfig | None = None) -> VideoPlan:
    """Plan one video: pedestrians and the scheduled anomalies, deterministic in ``(seed, split, index)``.

    Events of ``spec.events`` are staged one after another, after a normal lead-in and separated by normal
    gaps; an event that would start within the last few frames is dropped (check :func:`annotate`).

    Example:
        >>> spec = VideoSpec("test", 64, 64, 64, ("cart",))
        >>> plan = plan_video(spec, "test_000", 0, seed=0)
        >>> [a.kind for a in plan.agents if a.anomalous]
        ['cart']
    """
    scene = scene or SceneConfig()
    if spec.height % 2 or spec.width % 2 or min(spec.height, spec.width) < 16:
        raise ValueError(f"video size must be even and >= 16 (yuv420p), got {spec.height}x{spec.width}")
    split_code = {"train": 0, "test": 1}.get(spec.split)
    if split_code is None:
        raise ValueError(f"split must be 'train' or 'test', got {spec.split!r}")
    rng = np.random.default_rng([seed, split_code, index, 0])
    agents = _pedestrians(spec, scene, rng)
    t = rng.uniform(*scene.lead_in) * spec.num_frames
    for kind in spec.events:
        if t >= spec.num_frames - 4:
            break
        agent = _anomaly(kind, t, spec, scene, rng, len(agents))
        agents.append(agent)
        t = _visible_until(agent) + rng.uniform(*scene.gap) * spec.num_frames
    for agent in agents:  # erratic figures flail at a fixed rate; walkers swing their legs with distance
        erratic = agent.kind == "erratic"
        agent.phase = 1.7 * np.arange(spec.num_frames) if erratic else _gait(agent.xs, agent.ys, agent.size)
    return VideoPlan(video_id, spec, agents, (seed, split_code, index, 1), (seed, spec.height, spec.width, 2), scene)


# -------------------------------------------------------------------------------------------------- rasterising
def _ellipse(u: np.ndarray, v: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    r = np.sqrt(((u - cx) / ax) ** 2 + ((v - cy) / ay) ** 2)
    return np.clip(0.5 - (r - 1.0) * min(ax, ay), 0.0, 1.0)  # ~1 px anti-aliased edge at pixel centres


def _rect(u: np.ndarray, v: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return np.clip(0.5 - np.maximum(np.abs(u - cx) - ax, np.abs(v - cy) - ay), 0.0, 1.0)


def _sprite(agent: _Agent, t: int, height: int, width: int) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """Rasterise ``agent`` at frame ``t``: ``(y0, x0, premultiplied RGB [h, w, 3], coverage [h, w])``."""
    cx, cy = agent.xs[t], agent.ys[t]
    if not np.isfinite(cx):
        return None
    ex, ey = agent.half_extent
    x0, x1 = max(int(np.floor(cx - ex)), 0), min(int(np.ceil(cx + ex)) + 1, width)
    y0, y1 = max(int(np.floor(cy - ey)), 0), min(int(np.ceil(cy + ey)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    u = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    v = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    h, c = agent.size, agent.colors
    fu, fv, phi = agent.texture
    stripes = 1.0 + 0.18 * np.sin((fu * u + fv * v) * (10.0 / h if agent.kind != "cart" else 20.0 / h) + phi)
    if agent.kind == "cart":
        parts = [
            (_ellipse(u, v, 0.0, 0.55 * h, 0.6 * h, 0.07 * h) * 0.35, np.zeros(3)),  # shadow
            (_rect(u, v, 0.0, 0.0, 0.5 * h, 0.42 * h), c[0] * stripes[..., None]),  # body with panel lines
            (_rect(u, v, 0.0, -0.3 * h, 0.5 * h, 0.09 * h), c[1]),  # contrasting band
            (_ellipse(u, v, -0.3 * h, 0.45 * h, 0.1 * h, 0.1 * h), c[2]),  # wheels
            (_ellipse(u, v, 0.3 * h, 0.45 * h, 0.1 * h, 0.1 * h), c[2]),
        ]
    else:
        swing = 0.08 * h * np.sin(agent.phase[t])
        parts = [
            (_ellipse(u, v, 0.05 * h, 0.5 * h, 0.28 * h, 0.07 * h) * 0.35, np.zeros(3)),  # shadow
            (_rect(u, v, -0.07 * h + swing, 0.3 * h, 0.055 * h, 0.19 * h), c[1]),  # legs
            (_rect(u, v, 0.07 * h - swing, 0.3 * h, 0.055 * h, 0.19 * h), c[1]),
            (_ellipse(u, v, 0.0, -0.05 * h, 0.19 * h, 0.24 * h), c[0] * stripes[..., None]),  # torso
            (_ellipse(u, v, 0.0, -0.38 * h, 0.11 * h, 0.12 * h), c[2]),  # head
        ]
    rgb = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
    for a, color in parts:  # "over" compositing, premultiplied
        rgb = a[..., None] * color + (1.0 - a[..., None]) * rgb
        alpha = a + (1.0 - a) * alpha
    return y0, x0, rgb, alpha


def annotate(plan: VideoPlan) -> tuple[np.ndarray, dict[int, list[dict]]]:
    """Frame labels and boxes of the anomalous objects, from their rasterised coverage (no frame rendering).

    Returns:
        ``(labels, boxes)``: uint8 ``[num_frames]`` (1 iff an anomalous object has a pixel of coverage
        >= :data:`VISIBLE_ALPHA`) and frame index -> ``[{"box": [x1, y1, x2, y2], "track_id", "kind"}]`` for
        anomalous frames; boxes are pixel bounds with exclusive ``x2``/``y2``.
    """
    spec = plan.spec
    labels = np.zeros(spec.num_frames, np.uint8)
    boxes: dict[int, list[dict]] = {}
    for agent in (a for a in plan.agents if a.anomalous):
        for t in np.flatnonzero(np.isfinite(agent.xs)):
            sprite = _sprite(agent, int(t), spec.height, spec.width)
            if sprite is None:
                continue
            y0, x0, _, alpha = sprite
            rows, cols = np.nonzero(alpha >= VISIBLE_ALPHA)
            if rows.size == 0:
                continue
            box = [x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()) + 1, y0 + int(rows.max()) + 1]
            boxes.setdefault(int(t), []).append({"box": box, "track_id": agent.track_id, "kind": agent.kind})
            labels[t] = 1
    return labels, boxes


# --------------------------------------------------------------------------------------------------- rendering
def _value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features of about ``cell`` px (bicubic upsampling of a random grid)."""
    grid = rng.random((int(height / cell) + 3, int(width / cell) + 3)).astype(np.float32)
    big = cv2.resize(grid, (int(grid.shape[1] * cell), int(grid.shape[0] * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:height, :width], 0.0, 1.0)


def render_background(height: int, width: int, seed: tuple[int, ...], scene: SceneConfig) -> np.ndarray:
    """The static scene as float32 RGB ``[H, W, 3]``: grass, paving with grout, trees, benches, vignetting."""
    rng = np.random.default_rng(list(seed))
    s = height / _NOMINAL_HEIGHT
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = 0.6 * _value_noise(rng, height, width, 24 * s) + 0.3 * _value_noise(rng, height, width, 6 * s)
    texture += 0.1 * _value_noise(rng, height, width, max(1.5 * s, 1.0))
    img = np.array([86, 112, 64], np.float32) * (0.75 + 0.5 * texture)[..., None]  # grass
    half = scene.walkway_half_width * height
    tile, grout = 6.0 * s, max(0.6 * s, 0.5)
    shades = rng.uniform(0.92, 1.06, size=(int(height / tile) + 2, int(width / tile) + 3)).astype(np.float32)
    for centre in scene.walkways:
        top, bottom = int(round(centre * height - half)), int(round(centre * height + half))
        rows = (yy[top:bottom] - top) / tile
        cols = xx[top:bottom] / tile + 0.5 * (np.floor(rows) % 2)  # staggered courses
        shade = shades[np.floor(rows).astype(int), np.floor(cols).astype(int)]
        joint = (np.minimum(rows % 1.0, cols % 1.0) * tile) < grout
        paving = _WALKWAY_GRAY * shade * np.where(joint, 0.78, 1.0) * (0.95 + 0.1 * texture[top:bottom])
        img[top:bottom] = paving[..., None] * np.array([1.02, 1.0, 0.95], np.float32)
        curb = max(int(round(s)), 1)
        img[top : top + curb] = img[bottom - curb : bottom] = 185.0  # kerb stones
    # Static furniture on the grass: tree crowns above the upper walkway, benches between the walkways.
    upper, lower = (c * height for c in scene.walkways)
    for _ in range(max(2, width // int(40 * s))):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0.05, upper / height - 0.15) * height, rng.uniform(6, 11) * s
        crown = np.clip((r - np.hypot(xx - cx, yy - cy)) / (0.4 * r), 0, 1) * (0.8 + 0.4 * texture)
        crown = crown[..., None]
        img = img * (1 - 0.85 * crown) + 0.85 * crown * np.array([38, 70, 34], np.float32)
    bench_y = 0.5 * (upper + lower)
    for cx in np.linspace(0.2, 0.8, 3) * width + rng.uniform(-8, 8, 3) * s:
        bench = (np.abs(xx - cx) < 7 * s) & (np.abs(yy - bench_y) < 1.5 * s)
        img[bench] = np.array([96, 64, 40], np.float32)
    radius2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
    return img * (1.0 - 0.09 * radius2)[..., None]


def iter_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """Yield the rendered ``[H, W, 3]`` uint8 RGB frames of ``plan`` one at a time (never the whole video)."""
    spec, scene = plan.spec, plan.scene
    background = render_background(spec.height, spec.width, plan.background_seed, scene)
    rng = np.random.default_rng(list(plan.render_seed))
    flicker_phase = rng.uniform(0, 2 * np.pi)
    # Normal figures first, anomalies on top (never occluded); within each group, far (higher) figures first.
    agents = sorted(plan.agents, key=lambda a: (a.anomalous, float(np.nanmean(a.ys)) if np.isfinite(a.ys).any() else 0))
    for t in range(spec.num_frames):
        frame = background.copy()
        for agent in agents:
            sprite = _sprite(agent, t, spec.height, spec.width)
            if sprite is not None:
                y0, x0, rgb, alpha = sprite
                region = frame[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]]
                region[:] = rgb + (1.0 - alpha[..., None]) * region
        frame *= 1.0 + scene.flicker * np.sin(2 * np.pi * t / 200.0 + flicker_phase)
        frame += rng.standard_normal((spec.height, spec.width, 1), dtype=np.float32) * scene.sensor_noise
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def _codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # an FFmpeg build without x264: MPEG-4 part 2 also decodes with decord
        return "mpeg4"


def _write_mp4(path: Path, frames: Iterator[np.ndarray], spec: VideoSpec, crf: int) -> None:
    """Encode frames to ``path`` (yuv420p, GOP of 2 s, no B-frames, single thread so bytes are reproducible)."""
    tmp = path.with_name(path.name + ".partial")
    codec = _codec()
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(spec.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.codec_context.gop_size = int(round(2 * spec.fps))
        stream.codec_context.max_b_frames = 0
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": "veryfast"} if codec == "libx264" else {"qscale": "2"}
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------ corpus
def _boxes_document(plan: VideoPlan, boxes: dict[int, list[dict]]) -> dict:
    spec = plan.spec
    return {
        "video_id": plan.video_id,
        "width": spec.width,
        "height": spec.height,
        "num_frames": spec.num_frames,
        "fps": spec.fps,
        "box_format": "xyxy pixel bounds, x2/y2 exclusive; pixels with sprite coverage >= 0.5",
        "frames": {str(t): boxes[t] for t in sorted(boxes)},
    }


def _prepare(root: Path, overwrite: bool) -> None:
    managed = ("train", "test", "labels", "video_labels.json", "corpus.json")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
        for name in managed:  # only what synthesize writes; anything else in the folder is left alone
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    for sub in ("train", "test", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def synthesize(
    out: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    overwrite: bool = False,
    scene: SceneConfig | None = None,
    on_video: Callable[[SyntheticVideo], None] | None = None,
) -> SyntheticSummary:
    """Write the synthetic corpus ``preset`` to the local folder ``out`` (layout in the module docstring).

    Deterministic per ``seed``: labels, boxes and decoded frames are identical across runs.

    Args:
        out: Local output folder (created; must be empty unless ``overwrite``).
        preset: ``tiny`` (2 + 3 videos, 64x64x64: seconds), ``demo`` (8 + 6 videos, 128x128x240),
            ``bench`` (4 + 5 videos, 600 frames at 128x128 plus one 854x480 and one 1920x1080 video) or
            ``weak`` (12 train videos with video-level labels only, 5 of them abnormal; 8 test videos).
        seed: Random seed.
        overwrite: Replace a previous corpus in ``out`` (only the files this function writes are removed).
        scene: Scene parameters (defaults: :class:`SceneConfig`).
        on_video: Called after each video is written (progress bars).

    Returns:
        The :class:`SyntheticSummary` of what was written.

    Example:
        >>> summary = synthesize("/tmp/demo", preset="demo", seed=0, overwrite=True)  # doctest: +SKIP
        >>> round(summary.test_anomalous_fraction, 2)  # doctest: +SKIP
        0.47
    """
    recipe, scene = get_preset(preset), scene or SceneConfig()
    root = Path(out)
    _prepare(root, overwrite)
    counters = {"train": 0, "test": 0}
    written: list[SyntheticVideo] = []
    for spec in recipe.videos:
        index = counters[spec.split]
        counters[spec.split] += 1
        plan = plan_video(spec, f"{spec.split}_{index:03d}", index, seed, scene)
        labels, boxes = annotate(plan)
        path = root / spec.split / f"{plan.video_id}.mp4"
        _write_mp4(path, iter_frames(plan), spec, scene.crf)
        if spec.split == "test":  # weakly supervised training videos get the video label only
            np.save(root / "labels" / f"{plan.video_id}.npy", labels)
            (root / "labels" / f"{plan.video_id}.boxes.json").write_text(json.dumps(_boxes_document(plan, boxes)))
        kinds = tuple(sorted({b["kind"] for frame in boxes.values() for b in frame}))
        video = SyntheticVideo(
            plan.video_id, spec.split, path, spec.num_frames, spec.height, spec.width, spec.fps,
            int(labels.any()), int(labels.sum()), kinds,
        )  # fmt: skip
        written.append(video)
        if on_video is not None:
            on_video(video)
    (root / "video_labels.json").write_text(json.dumps({v.video_id: v.video_label for v in written}, indent=1))
    meta = {
        "preset": preset,
        "seed": seed,
        "scene": dataclasses.asdict(scene),
        "videos": [{**dataclasses.asdict(v), "path": str(v.path.relative_to(root))} for v in written],
    }
    (root / "corpus.json").write_text(json.dumps(meta, indent=1))
    return SyntheticSummary(root, preset, seed, tuple(written))
