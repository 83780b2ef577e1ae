"""Frame specs: how a clip store decodes frames for one family of methods, and their registry.

Kept apart from :mod:`vad_models.base` and free of torch: the clip store's decode tasks receive a
:class:`FrameSpec`, and unpickling it imports this module only. Importing torch would cost every decode worker
process about 1.3 s and 180 MB of RSS for nothing (measured on 2 cores). :mod:`vad_models.base` re-exports
these names.

Example:
    >>> spec = FrameSpec(64, 64, 1, window=17, segment_frames=128)
    >>> spec.effective_overlap, spec.gray
    (16, True)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrameSpec", "get_frame_spec", "register_frame_spec"]


@dataclass(frozen=True)
class FrameSpec:
    """How a clip store decodes frames for one family of methods.

    Attributes:
        height: Output frame height in pixels.
        width: Output frame width in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        window: Frames one window spans (e.g. 17 for LUSS-AE: 16 inputs + the FFP target).
        segment_frames: Frames per stored segment row (S). Must be > ``window``.
        overlap: Frames shared by consecutive segments; ``None`` means ``window - 1`` (every window lies
            inside one row). I3D snippets use 0 (non-overlapping 16-frame snippets).
    """

    height: int
    width: int
    channels: int
    window: int
    segment_frames: int = 128
    overlap: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"FrameSpec.channels must be 1 or 3, got {self.channels}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"FrameSpec size must be positive, got {self.height}x{self.width}")
        if self.segment_frames <= self.window:
            raise ValueError(f"FrameSpec.segment_frames ({self.segment_frames}) must exceed window ({self.window})")
        if not 0 <= self.effective_overlap < self.segment_frames:
            raise ValueError(f"FrameSpec.overlap must be in [0, segment_frames), got {self.overlap}")

    @property
    def effective_overlap(self) -> int:
        """Frames shared by consecutive segments."""
        return self.window - 1 if self.overlap is None else self.overlap

    @property
    def gray(self) -> bool:
        """True for single-channel (grayscale) frames."""
        return self.channels == 1


_FRAME_SPECS: dict[str, FrameSpec] = {}


def register_frame_spec(name: str, spec: FrameSpec) -> FrameSpec:
    """Register the frame spec ``name`` (called by each ``vad_models`` package at import)."""
    _FRAME_SPECS[name] = spec
    return spec


def get_frame_spec(name: str) -> FrameSpec:
    """Return the registered frame spec ``name``; imports the method packages so all specs are known.

    Raises:
        KeyError: with the list of known spec names.
    """
    from vad_models import registry

    registry.import_all()
    try:
        return _FRAME_SPECS[name]
    except KeyError:
        raise KeyError(f"unknown frame spec {name!r}; known: {sorted(_FRAME_SPECS)}") from None
