"""Weakly supervised multi-task VAE for video anomaly detection (seed 004) on I3D ten-crop features."""

from vad_models.mtvae.config import ARCHITECTURES, MtVaeConfig
from vad_models.mtvae.method import MtVaeMethod
from vad_models.mtvae.model import MtVaeModel, MultiTaskVae, RtfmHost, SnippetClassifier

__all__ = ["ARCHITECTURES", "MtVaeConfig", "MtVaeMethod", "MtVaeModel", "MultiTaskVae", "RtfmHost", "SnippetClassifier"]
