"""LUSS-AE (Lohani et al., VISAPP 2023): one 3D conv autoencoder, three tasks (VCR, FFP, PRP), BPE scoring.

Importing the package registers the ``"luss_ae"`` frame spec: grayscale 256x256 frames, windows of 17 frames
(16 inputs + the future-frame target), 128-frame segments.

Example:
    >>> from vad_models.base import get_frame_spec
    >>> get_frame_spec("luss_ae").window
    17
"""

from vad_models.base import FrameSpec, register_frame_spec
from vad_models.luss_ae.config import LussAeConfig
from vad_models.luss_ae.model import LussAe

__all__ = ["FRAME_SPEC", "LussAe", "LussAeConfig"]

FRAME_SPEC = register_frame_spec("luss_ae", FrameSpec(256, 256, 1, window=17, segment_frames=128))
