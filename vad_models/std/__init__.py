"""STD (Chang et al., Pattern Recognition 2022): spatio-temporal dissociation with deep K-means.

A spatial autoencoder on the first frame and a motion U-Net (with variance attention) predicting the RGB
difference to the last frame of a 5-frame RGB window; both representations are clustered by a deep K-means.

Importing the package registers the ``"std"`` frame spec: RGB 256x256 frames, windows of 5 frames (4 inputs +
the predicted last frame), 128-frame segments.

Example:
    >>> from vad_models.base import get_frame_spec
    >>> spec = get_frame_spec("std")
    >>> spec.window, spec.channels
    (5, 3)
"""

from vad_models.base import FrameSpec, register_frame_spec
from vad_models.std.config import StdConfig
from vad_models.std.model import StdModel

__all__ = ["FRAME_SPEC", "StdConfig", "StdModel"]

_DEFAULTS = StdConfig()
FRAME_SPEC = register_frame_spec(
    "std", FrameSpec(_DEFAULTS.height, _DEFAULTS.width, 3, window=_DEFAULTS.clip_length, segment_frames=128)
)
