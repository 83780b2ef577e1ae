"""Hyperparameters of the weakly supervised MT-VAE pipeline (seed 004), each defined once.

Defaults come from the paper (Huang, Chen, Kachappilly, "Weakly Supervised Multi-Task VAE for VAD"): §4.1
(baseline: Adam 1e-3, batch 32, 100 epochs, S = 32 segments; MT-VAE: Adam 1e-4, γ = 0.95 per epoch, 100 epochs,
≤ 1,024 snippets per video), §3.2.4 (abnormal snippets = baseline score > 0.5), Table 5 (architectures) and
Table 6 (pseudo-video ratio), and for the RTFM-style host from REFERENCE.md §1.4. Values the paper leaves open
are marked "not in the paper" with the choice made.

Example:
    >>> cfg = MtVaeConfig()
    >>> cfg.vae_dims, cfg.num_segments
    ((1024, 512, 256), 32)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARCHITECTURES", "HOSTS", "MtVaeConfig"]

# Table 5: output widths of the encoder's layers; the last one is the latent size. Decoders mirror them.
ARCHITECTURES: dict[str, tuple[int, ...]] = {
    "arch1": (1024, 512, 256),
    "arch2": (1024, 512, 256, 128),
    "arch3": (1024, 512, 512, 256, 256),
}
HOSTS = ("mlp", "rtfm")


@dataclass(frozen=True)
class MtVaeConfig:
    """MT-VAE: MLP baseline → multi-task VAE → host detector trained on original + pseudo videos.

    Attributes:
        feature_dim: Snippet feature width (2048 for ResNet-50 I3D).
        standardise_features: Z-score every feature channel with the mean and standard deviation of the training
            split, fitted once when the baseline phase starts and kept in the checkpoint, so every phase and
            scoring see the same inputs (not in the paper: off, as RTFM and the paper feed pretrained I3D
            features raw). Meant for random-init features, whose snippets share one large common component
            (configs/mtvae/synthetic.yaml says why).
        num_crops: Crops per snippet (10).
        snippet_frames: Frames per snippet (16); fusion spreads a snippet's score over them.
        num_segments: S, segments every training video is resampled to by linear interpolation (§4.1).
        classifier_hidden1: First hidden width of the snippet classifiers (not in the paper: RTFM's 512).
        classifier_hidden2: Second hidden width (not in the paper: RTFM's 128).
        dropout: Dropout of the snippet classifiers (not in the paper: RTFM's 0.7).
        epochs: Baseline epochs (§4.1: 100).
        lr: Baseline learning rate (§4.1: Adam 1e-3).
        batch_size: Videos per step in every phase (§4.1: 32).
        vae_arch: Key of :data:`ARCHITECTURES` (Table 5; Arch1 is best).
        vae_width_divisor: Divides every MT-VAE width (1 = the paper; larger only for smoke tests).
        kl_weight: α of Eq. 6 (not in the paper: 1, the standard ELBO weighting).
        vae_epochs: MT-VAE epochs (§4.1: 100).
        vae_lr: MT-VAE learning rate (§4.1: Adam 1e-4).
        vae_lr_gamma: Per-epoch exponential decay of the MT-VAE learning rate (§4.1: 0.95).
        max_snippets: Snippets per video and step for the MT-VAE (§4.1: 1,024; shorter videos are padded).
        abnormal_threshold: Baseline score above which a snippet of an abnormal video is abnormal (§3.2.4: 0.5).
        pseudo_ratio: Pseudo videos per original video (Table 6: 1/2, 1, 2; 1 is best).
        host: ``"mlp"`` (the baseline architecture, §4.2.1) or ``"rtfm"`` (RTFM-style host, §4.2.2).
        host_pseudo: Train the host with pseudo videos (False skips the MT-VAE phase: the ablation control).
        host_epochs: Host epochs (not in the paper: 100, as the baseline).
        host_lr: Host learning rate (baseline and RTFM: 1e-3).
        rtfm_weight_decay: Adam weight decay of the RTFM host (RTFM: 0.005).
        rtfm_k: Top-k snippets by feature magnitude (RTFM: 3).
        rtfm_margin: Feature-magnitude margin m (RTFM: 100).
        rtfm_magnitude_weight: Weight of the magnitude separability loss (RTFM: 1e-4).
        rtfm_sparsity_weight: Weight of the sparsity loss on abnormal-video scores (RTFM: 8e-3).
        rtfm_smoothness_weight: Weight of the temporal smoothness loss (RTFM: 8e-4).
        w_host: Fusion weight of ``host_score``.
        w_baseline: Fusion weight of ``baseline_score``.
    """

    feature_dim: int = 2048
    standardise_features: bool = False
    num_crops: int = 10
    snippet_frames: int = 16
    num_segments: int = 32
    classifier_hidden1: int = 512
    classifier_hidden2: int = 128
    dropout: float = 0.7
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 32
    vae_arch: str = "arch1"
    vae_width_divisor: int = 1
    kl_weight: float = 1.0
    vae_epochs: int = 100
    vae_lr: float = 1e-4
    vae_lr_gamma: float = 0.95
    max_snippets: int = 1024
    abnormal_threshold: float = 0.5
    pseudo_ratio: float = 1.0
    host: str = "rtfm"
    host_pseudo: bool = True
    host_epochs: int = 100
    host_lr: float = 1e-3
    rtfm_weight_decay: float = 0.005
    rtfm_k: int = 3
    rtfm_margin: float = 100.0
    rtfm_magnitude_weight: float = 1e-4
    rtfm_sparsity_weight: float = 8e-3
    rtfm_smoothness_weight: float = 8e-4
    w_host: float = 1.0
    w_baseline: float = 0.0

    def __post_init__(self) -> None:
        if self.vae_arch not in ARCHITECTURES:
            raise ValueError(f"vae_arch must be one of {sorted(ARCHITECTURES)}, got {self.vae_arch!r}")
        if self.host not in HOSTS:
            raise ValueError(f"host must be one of {HOSTS}, got {self.host!r}")
        if self.host == "rtfm" and self.feature_dim % 4:
            raise ValueError("the RTFM host splits features into 4 branches: feature_dim must divide by 4")
        if self.num_segments < 2 or self.max_snippets < 1:
            raise ValueError("num_segments must be >= 2 and max_snippets >= 1")
        if self.vae_width_divisor < 1:
            raise ValueError(f"vae_width_divisor must be >= 1, got {self.vae_width_divisor}")
        if self.pseudo_ratio < 0:
            raise ValueError(f"pseudo_ratio must be >= 0, got {self.pseudo_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def vae_dims(self) -> tuple[int, ...]:
        """Encoder output widths of :attr:`vae_arch` (÷ :attr:`vae_width_divisor`); the last is the latent size."""
        return tuple(max(1, d // self.vae_width_divisor) for d in ARCHITECTURES[self.vae_arch])
