"""STD hyperparameters, each defined once (defaults from Chang et al., Pattern Recognition 2022, §3-§4.2).

Where the paper gives no value, the default comes from the authors' released code (REFERENCE.md §1.3) and the
attribute says so.

Example:
    >>> cfg = StdConfig(height=64, width=64)
    >>> cfg.clip_length, cfg.num_clusters, cfg.alpha
    (5, 32, 25.0)
    >>> cfg.representation_channels
    512
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StdConfig"]


@dataclass(frozen=True)
class StdConfig:
    """STD configuration.

    Attributes:
        height: Frame height; a multiple of 8 (three stride-2 stages; paper: 256). Must match the clip store.
        width: Frame width; a multiple of 8 (paper: 256).
        clip_length: Frames per window ``T`` (§4.4: 5): the first ``T - 1`` feed the motion stream, the first
            one the spatial stream, the last one (LIF) is the prediction target.
        base_channels: Width of the stem conv; the three ResNet stages have 2x, 4x and 8x this many channels and
            so does each stream's representation (released code: 32 -> 64, 128, 256). Must be even so that every
            pixel-shuffle input has a multiple of 4 channels.
        negative_slope: Slope of the LeakyReLUs (§3.2; the value is not given, 0.2 as in MemAE-style AEs).
        num_clusters: Deep K-means centres ``K`` (§4.4 and Table 3: 32).
        alpha: Sharpness of the soft assignment of eq. 10 (not given in the paper; released code: 25).
        lambda_r: Weight of the cluster loss in eq. 12 (not given in the paper; released code: 0.1). The cluster
            loss is averaged over feature-map positions (eq. 11 sums them), so this weight does not depend on
            the frame size.
        gradient_weight: Weight of the gradient term in the motion loss (eq. 6: 1; released code: 0.01).
        lr: Adam learning rate of the autoencoders in both phases (§4.2: 1e-4; released code: 1e-5).
        centre_lr: Adam learning rate of the cluster centres in the joint phase (§4.2: 1e-5; released code: 1e-6).
        lr_decay_epoch: Joint-phase epoch at which the autoencoder learning rate is multiplied by
            ``lr_decay_factor`` (§4.2: 1e-4 -> 1e-5 at epoch 100); 0 disables the decay.
        lr_decay_factor: See ``lr_decay_epoch``.
        batch_size: Clips per optimisation step (not given in the paper; released code: 4).
        pretrain_epochs: Epochs of the autoencoder pre-training without the cluster term (§4.2: 50 for Ped2,
            100 for Avenue and ShanghaiTech).
        epochs: Epochs of the joint (alternating) phase after the K-means initialisation (§4.2: 100 for Ped2,
            200 for Avenue and ShanghaiTech).
        ae_steps_per_turn: Consecutive optimisation steps of the autoencoders (eq. 12, centres frozen) per turn.
        centre_steps_per_turn: Consecutive steps of the centres (eq. 11, autoencoders frozen) per turn. With both
            at 1 the two parts alternate every batch, as the released code does.
        kmeans_init_batches: Training batches whose representations feed the K-means initialisation (released
            code: 500).
        kmeans_points_per_clip: Feature-map positions drawn at random from each clip for the K-means
            initialisation (§3.5: "randomly select several motion representations").
        kmeans_max_points: Upper bound on the points given to scikit-learn's KMeans.
        kmeans_n_init: K-means++ restarts of scikit-learn's KMeans.
        seed: Seed of the point sampling and of scikit-learn's KMeans.
        train_stride: Step between training-window starts within a segment (1 = every clip).
        score_stride: Step between scored windows (1 scores every frame from the fifth on).
        score_batch_size: Windows per forward pass when scoring.
        score_eps: Floor on the raw scores before the reciprocal of eq. 13 and the logarithms of the fusion.
    """

    height: int = 256
    width: int = 256
    clip_length: int = 5
    base_channels: int = 32
    negative_slope: float = 0.2
    num_clusters: int = 32
    alpha: float = 25.0
    lambda_r: float = 0.1
    gradient_weight: float = 1.0
    lr: float = 1e-4
    centre_lr: float = 1e-5
    lr_decay_epoch: int = 100
    lr_decay_factor: float = 0.1
    batch_size: int = 4
    pretrain_epochs: int = 50
    epochs: int = 100
    ae_steps_per_turn: int = 1
    centre_steps_per_turn: int = 1
    kmeans_init_batches: int = 500
    kmeans_points_per_clip: int = 64
    kmeans_max_points: int = 100_000
    kmeans_n_init: int = 4
    seed: int = 0
    train_stride: int = 1
    score_stride: int = 1
    score_batch_size: int = 32
    score_eps: float = 1e-8

    def __post_init__(self) -> None:
        self._validate()

    @property
    def representation_channels(self) -> int:
        """Channels ``D`` of the clustered representation ``r`` (spatial and motion streams concatenated)."""
        return 2 * self.latent_channels

    @property
    def latent_channels(self) -> int:
        """Channels of each stream's representation (``z_a`` and ``z_m``)."""
        return 8 * self.base_channels

    def _validate(self) -> None:  # noqa: C901 - a flat list of independent checks
        if self.height < 8 or self.width < 8 or self.height % 8 or self.width % 8:
            raise ValueError(f"height and width must be positive multiples of 8, got {self.height}x{self.width}")
        if self.clip_length < 2:
            raise ValueError(f"clip_length must be >= 2 (inputs plus the predicted last frame), got {self.clip_length}")
        if self.base_channels < 2 or self.base_channels % 2:
            raise ValueError(f"base_channels must be a positive even number, got {self.base_channels}")
        if self.num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {self.num_clusters}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if min(self.lambda_r, self.gradient_weight) < 0:
            raise ValueError("lambda_r and gradient_weight must be >= 0")
        if min(self.lr, self.centre_lr, self.lr_decay_factor) <= 0:
            raise ValueError("lr, centre_lr and lr_decay_factor must be positive")
        if self.lr_decay_epoch < 0 or self.pretrain_epochs < 0 or self.epochs < 0:
            raise ValueError("lr_decay_epoch, pretrain_epochs and epochs must be >= 0")
        counts = {
            "batch_size": self.batch_size,
            "ae_steps_per_turn": self.ae_steps_per_turn,
            "centre_steps_per_turn": self.centre_steps_per_turn,
            "kmeans_init_batches": self.kmeans_init_batches,
            "kmeans_points_per_clip": self.kmeans_points_per_clip,
            "kmeans_n_init": self.kmeans_n_init,
            "train_stride": self.train_stride,
            "score_stride": self.score_stride,
            "score_batch_size": self.score_batch_size,
        }
        bad = [name for name, value in counts.items() if value < 1]
        if bad:
            raise ValueError(f"these settings must be >= 1: {', '.join(f'{n}={counts[n]}' for n in bad)}")
        if self.kmeans_max_points < self.num_clusters:
            raise ValueError(
                f"kmeans_max_points ({self.kmeans_max_points}) must be >= num_clusters ({self.num_clusters})"
            )
        if self.score_eps <= 0:
            raise ValueError(f"score_eps must be positive, got {self.score_eps}")
