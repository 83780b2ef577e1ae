"""Settings of the I3D ten-crop snippet extractor, pinned once and written to the feature store's metadata.

Facts (REFERENCE.md §2): ResNet-50 I3D, non-overlapping 16-frame snippets, frames resized to 340×256 (W×H), ten
224² crops, pixels scaled as ``x·2/255 − 1``. Published extractors disagree on crop order and normalisation, and
features extracted with different conventions do not match (RTFM #63, #95), so both are explicit fields here.

Example:
    >>> cfg = I3DConfig()
    >>> cfg.feature_dim, cfg.norm_mean_std
    (2048, (127.5, 127.5))
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CROP_ORDERS", "NORMALISATIONS", "I3DConfig"]

# Crop position names in output order. "field": GowthamGottimukkala's extract_features.py (the recipe behind the
# widely used RTFM features); "torchvision": torchvision's TenCrop (what the RTFM author names in issue #33).
CROP_ORDERS: dict[str, tuple[str, ...]] = {
    "field": ("tl", "tr", "center", "bl", "br", "tl_flip", "tr_flip", "center_flip", "bl_flip", "br_flip"),
    "torchvision": ("tl", "tr", "bl", "br", "center", "tl_flip", "tr_flip", "bl_flip", "br_flip", "center_flip"),
}

# name -> (mean, std) in 0..255 pixel units; the input is (x - mean) / std.
NORMALISATIONS: dict[str, tuple[float, float]] = {
    "minus_one_one": (127.5, 127.5),  # x·2/255 − 1 (field recipe, piergiaj, v-iashin)
    "kinetics": (114.75, 57.375),  # pytorch-resnet3d's own Kinetics statistics
}


@dataclass(frozen=True)
class I3DConfig:
    """Backbone and preprocessing of the I3D ten-crop extractor.

    Attributes:
        snippet_frames: Frames per non-overlapping snippet (16; the tail that does not fill one is dropped).
        height: Frame height the clip store must hold (256; frames are resized at ingest, not here).
        width: Frame width the clip store must hold (340).
        crop_size: Side of each of the ten square crops (224).
        crop_order: A key of :data:`CROP_ORDERS`.
        normalisation: A key of :data:`NORMALISATIONS`.
        base_channels: Width of the stem; 64 is the published ResNet-50 I3D (2048-d features). Smaller values
            keep the same layer list with narrower layers (tests and smoke runs only).
    """

    snippet_frames: int = 16
    height: int = 256
    width: int = 340
    crop_size: int = 224
    crop_order: str = "field"
    normalisation: str = "minus_one_one"
    base_channels: int = 64

    def __post_init__(self) -> None:
        if self.crop_order not in CROP_ORDERS:
            raise ValueError(f"I3DConfig.crop_order must be one of {sorted(CROP_ORDERS)}, got {self.crop_order!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"I3DConfig.normalisation must be one of {sorted(NORMALISATIONS)}, got {self.normalisation!r}"
            )
        if not 0 < self.crop_size <= min(self.height, self.width):
            raise ValueError(
                f"I3DConfig.crop_size ({self.crop_size}) must be positive and fit in {self.height}x{self.width}"
            )
        if self.snippet_frames < 8:
            raise ValueError(f"I3DConfig.snippet_frames must be >= 8 (I3D pools time by 8), got {self.snippet_frames}")
        if self.base_channels < 1:
            raise ValueError(f"I3DConfig.base_channels must be positive, got {self.base_channels}")

    @property
    def feature_dim(self) -> int:
        """Feature width: layer4's output channels (512·4 for the published 64-channel stem)."""
        return self.base_channels * 32

    @property
    def norm_mean_std(self) -> tuple[float, float]:
        """``(mean, std)`` in pixel units for :attr:`normalisation`."""
        return NORMALISATIONS[self.normalisation]

    @property
    def crop_names(self) -> tuple[str, ...]:
        """Crop position names in output order."""
        return CROP_ORDERS[self.crop_order]
