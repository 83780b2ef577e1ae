"""SSMTL: anomaly detection in video via self-supervised and multi-task learning (Georgescu et al., CVPR 2021).

Pipeline: clip store (RGB frames) -> detections (:mod:`vad_models.ssmtl.detect`, ``jobs/detect.py``) -> object
tubes (``jobs/build_tubes.py``) -> the 3D CNN trained on four proxy tasks (:mod:`vad_models.ssmtl.method`) ->
object scores painted into pixel-level anomaly maps -> frame scores (:mod:`vad_models.ssmtl.pixel_map`).

Registers the frame spec ``"ssmtl"``: RGB frames at 240x360 (UCSD Ped2's native size; ingest may override the
size, e.g. 64x96 for the demo) in segments whose overlap (``window - 1``) holds a whole tube, so tubes are built
per segment without joins.

Example:
    >>> from vad_models.base import get_frame_spec
    >>> get_frame_spec("ssmtl").window
    25
"""

from vad_models.base import FrameSpec, register_frame_spec
from vad_models.ssmtl.config import DetectConfig, SsmtlConfig

__all__ = ["FRAME_SPEC", "DetectConfig", "SsmtlConfig"]

FRAME_SPEC = register_frame_spec(
    "ssmtl", FrameSpec(height=240, width=360, channels=3, window=SsmtlConfig().tube_frames, segment_frames=128)
)
