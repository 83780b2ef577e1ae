"""ResNet-50 I3D ten-crop snippet features (REFERENCE.md §2) for the weakly supervised methods.

Registers the ``"i3d"`` frame spec: 256×340 RGB frames, 16-frame snippets, 128-frame segments with no overlap
(128 is a multiple of 16, so snippets never straddle two clip-store rows).
"""

from vad_models.base import FrameSpec, register_frame_spec
from vad_models.i3d.config import I3DConfig
from vad_models.i3d.model import I3DResNet50
from vad_models.i3d.transforms import crop_boxes, preprocess, segment_snippets, ten_crop
from vad_models.i3d.weights import caffe2_to_native, load_i3d_weights, native_to_caffe2

__all__ = [
    "I3DConfig",
    "I3DResNet50",
    "caffe2_to_native",
    "crop_boxes",
    "load_i3d_weights",
    "native_to_caffe2",
    "preprocess",
    "segment_snippets",
    "ten_crop",
]

register_frame_spec("i3d", FrameSpec(256, 340, 3, window=16, segment_frames=128, overlap=0))
