"""LUSS-AE hyperparameters, each defined once (defaults from Lohani et al., VISAPP 2023, §4.3).

Example:
    >>> cfg = LussAeConfig(height=64, width=64)
    >>> cfg.clip_len, cfg.lambda_vcr, cfg.error
    (16, 0.6, 'bpe')
"""

from __future__ import annotations

from dataclasses import dataclass

from vad_models.ops import PADDING_MODES

__all__ = ["ERROR_TYPES", "LussAeConfig"]

ERROR_TYPES = ("mse", "pse", "bpe")
_RESCALINGS = ("robust", "minmax")
_AUTOCAST = ("none", "bf16", "fp16")


@dataclass(frozen=True)
class LussAeConfig:
    """LUSS-AE configuration.

    Attributes:
        height: Frame height; a multiple of 16 (paper: 256). Must match the clip store.
        width: Frame width; a multiple of 16 (paper: 256).
        clip_len: Input frames ``T`` per clip (paper: 16); a multiple of 8 (three temporal stride-2 convs).
        encoder_channels: Widths of the four encoder convs (MemAE's 3DCAE: 96, 128, 256, 256); the decoder mirrors.
        leaky_slope: Negative slope of the LeakyReLUs.
        prp_conv_channels: Output channels of the PRP head's Conv2d (32).
        prp_pool_size: Side of the PRP head's pooled grid before flattening. At 256x256 the conv map is 8x8 and
            the original MaxPool2d(2) gives 4x4 (32 * 4 * 4 = 512 features); an adaptive max pool to this size
            equals that layer at 256x256 and keeps the head size-independent at other resolutions.
        prp_hidden: Hidden widths of the PRP MLP (128, 32).
        epochs: Training epochs (paper: 60).
        batch_size: Clips per optimisation step (paper: 16).
        lr: Adam learning rate (paper: 1e-4).
        lambda_vcr: Weight of the reconstruction loss (eq. 7, lambda_1 = 0.6).
        lambda_ffp: Weight of the future-frame loss (lambda_2 = 0.4).
        lambda_prp: Weight of the playback-rate cross-entropy (lambda_3 = 1).
        prp_prob: Probability that a PRP sample is accelerated (eq. 5: 0.5).
        prp_strides: Temporal gaps ``s`` of accelerated clips, drawn uniformly (2x to 5x).
        train_stride: Step between training-window starts within a segment (1 = every clip, as in the paper).
        error: Error measure of the VCR and FFP scores used by :meth:`fuse`: ``"mse"``, ``"pse"`` or ``"bpe"``.
        alpha_vcr: Fusion weight of the VCR score (eq. 15). The default is the paper's ShanghaiTech setting
            (0.2, 0.2, 0.9): the only set the released code ships, found on the multi-scene benchmark closest
            to archive footage. Dataset YAMLs set the paper's per-dataset values.
        alpha_ffp: Fusion weight of the FFP score.
        alpha_prp: Fusion weight of the PRP score.
        sigma: Gaussian standard deviation of PSE and BPE (paper: 1).
        kernel_size: Gaussian kernel width (paper: 5).
        blur_stride: BPE subsampling step ``b`` (paper: 2).
        pse_padding: Border handling of the PSE blur (kornia ``gaussian_blur2d`` default: reflect).
        bpe_padding: Border handling of the BPE blur pool (kornia ``blur_pool2d``: zeros).
        rescale: Per-video rescaling of the VCR and FFP scores: ``"robust"`` (eq. 16) or ``"minmax"``.
        prp_rescale: Per-video rescaling of the PRP score. The paper applies robust rescaling to every score;
            the released code uses min-max for PRP (set ``"minmax"`` to reproduce it).
        robust_percentiles: Percentiles bounding the robust range (paper: 1 and 99).
        score_batch_size: Windows per forward pass when scoring.
        autocast: Mixed precision when scoring: ``"none"``, ``"bf16"`` or ``"fp16"``.
    """

    height: int = 256
    width: int = 256
    clip_len: int = 16
    encoder_channels: tuple[int, ...] = (96, 128, 256, 256)
    leaky_slope: float = 0.2
    prp_conv_channels: int = 32
    prp_pool_size: int = 4
    prp_hidden: tuple[int, ...] = (128, 32)
    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-4
    lambda_vcr: float = 0.6
    lambda_ffp: float = 0.4
    lambda_prp: float = 1.0
    prp_prob: float = 0.5
    prp_strides: tuple[int, ...] = (2, 3, 4, 5)
    train_stride: int = 1
    error: str = "bpe"
    alpha_vcr: float = 0.2
    alpha_ffp: float = 0.2
    alpha_prp: float = 0.9
    sigma: float = 1.0
    kernel_size: int = 5
    blur_stride: int = 2
    pse_padding: str = "reflect"
    bpe_padding: str = "zeros"
    rescale: str = "robust"
    prp_rescale: str = "robust"
    robust_percentiles: tuple[float, float] = (1.0, 99.0)
    score_batch_size: int = 32
    autocast: str = "none"

    def __post_init__(self) -> None:
        # YAML gives lists; store tuples so the config stays hashable and immutable.
        for name in ("encoder_channels", "prp_hidden", "prp_strides", "robust_percentiles"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        if self.height < 16 or self.width < 16 or self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be positive multiples of 16, got {self.height}x{self.width}")
        if self.clip_len < 8 or self.clip_len % 8:
            raise ValueError(f"clip_len must be a positive multiple of 8, got {self.clip_len}")
        if len(self.encoder_channels) != 4 or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be 4 positive widths, got {self.encoder_channels}")
        if not self.prp_hidden or min(self.prp_hidden) < 1 or self.prp_conv_channels < 1 or self.prp_pool_size < 1:
            raise ValueError("prp_conv_channels, prp_pool_size and prp_hidden must be positive")
        if min(self.epochs, self.batch_size, self.train_stride, self.score_batch_size) < 1:
            raise ValueError("epochs, batch_size, train_stride and score_batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if min(self.lambda_vcr, self.lambda_ffp, self.lambda_prp, self.alpha_vcr, self.alpha_ffp, self.alpha_prp) < 0:
            raise ValueError("loss weights (lambda_*) and fusion weights (alpha_*) must be >= 0")
        if not 0.0 <= self.prp_prob <= 1.0:
            raise ValueError(f"prp_prob must be in [0, 1], got {self.prp_prob}")
        if not self.prp_strides or min(self.prp_strides) < 2:
            raise ValueError(f"prp_strides must be non-empty temporal gaps >= 2, got {self.prp_strides}")
        if self.error not in ERROR_TYPES:
            raise ValueError(f"error must be one of {ERROR_TYPES}, got {self.error!r}")
        if self.rescale not in _RESCALINGS or self.prp_rescale not in _RESCALINGS:
            raise ValueError(f"rescale and prp_rescale must be one of {_RESCALINGS}")
        if self.pse_padding not in PADDING_MODES or self.bpe_padding not in PADDING_MODES:
            raise ValueError(f"pse_padding and bpe_padding must be one of {PADDING_MODES}")
        if self.sigma <= 0 or self.kernel_size < 1 or self.kernel_size % 2 == 0 or self.blur_stride < 1:
            raise ValueError("sigma must be > 0, kernel_size a positive odd integer and blur_stride >= 1")
        low, high = self.robust_percentiles if len(self.robust_percentiles) == 2 else (1.0, 0.0)
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"robust_percentiles must be (low, high) with 0 <= low < high <= 100, got "
                             f"{self.robust_percentiles}")
        if self.autocast not in _AUTOCAST:
            raise ValueError(f"autocast must be one of {_AUTOCAST}, got {self.autocast!r}")
