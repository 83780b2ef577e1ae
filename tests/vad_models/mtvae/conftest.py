"""Synthetic weakly labelled I3D-like features and an in-process phase runner for the MT-VAE tests.

Features: F=64, 10 crops. Normal snippets are non-negative noise around a per-video scene vector; abnormal
snippets add +1.5 to the first 8 channels. An abnormal video has one anomalous interval (30–50 % of its
snippets); only its video label is given for training, its snippet labels are kept for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vad_models.base import Method, TrainContext

FEATURE_DIM, CROPS = 64, 10


@dataclass
class WeakFeatures:
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    snippet_labels: dict[str, np.ndarray]  # test video -> 0/1 per snippet


def _video(rng: np.random.Generator, n: int, abnormal: bool) -> tuple[np.ndarray, np.ndarray]:
    scene = rng.random(FEATURE_DIM).astype(np.float32)
    feats = np.abs(scene + 0.5 * rng.standard_normal((n, 1, FEATURE_DIM))).astype(np.float32)
    feats = feats + 0.1 * rng.standard_normal((n, CROPS, FEATURE_DIM)).astype(np.float32)
    labels = np.zeros(n, np.uint8)
    if abnormal:
        length = int(rng.integers(int(0.3 * n), int(0.5 * n) + 1))
        start = int(rng.integers(0, n - length + 1))
        labels[start : start + length] = 1
        feats[labels == 1, :, :8] += 1.5
    return np.maximum(feats, 0.0), labels


def make_rows(rng: np.random.Generator, labels: list[int], split: str, prefix: str) -> tuple[dict, dict]:
    cols: dict[str, list[Any]] = {k: [] for k in ("video_id", "snippet_idx", "video_label", "features")}
    snippet_labels = {}
    for i, label in enumerate(labels):
        n = int(rng.integers(12, 30))
        feats, snippets = _video(rng, n, bool(label))
        vid = f"{prefix}{i:03d}"
        snippet_labels[vid] = snippets
        cols["video_id"] += [vid] * n
        cols["snippet_idx"] += list(range(n))
        cols["video_label"] += [label] * n
        cols["features"].append(feats)
    n_rows = len(cols["video_id"])
    idx = np.asarray(cols["snippet_idx"], np.int64)
    rows = {
        "video_id": np.asarray(cols["video_id"], dtype=object),
        "dataset": np.full(n_rows, "synthetic", dtype=object),
        "split": np.full(n_rows, split, dtype=object),
        "snippet_idx": idx,
        "start_frame": idx * 16,
        "video_label": np.asarray(cols["video_label"], np.int8),
        "features": np.concatenate(cols["features"]),
    }
    return rows, snippet_labels


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny networks: one intra-op thread avoids OpenMP hand-off latency on the shared 2-core runners."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def weak_features() -> WeakFeatures:
    rng = np.random.default_rng(0)
    train, _ = make_rows(rng, [0] * 24 + [1] * 12, "train", "tr")
    test, snippet_labels = make_rows(rng, [0] * 8 + [1] * 8, "test", "te")
    return WeakFeatures(train, test, snippet_labels)


def examples_per_video(method: Method, rows: dict[str, np.ndarray], cfg: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """What the training pipeline does: make_examples on the rows of each video."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(rows["video_id"])
    parts = [method.make_examples({k: v[ids == vid] for k, v in rows.items()}, cfg, rng) for vid in np.unique(ids)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_phases(method: Method, cfg: Any, rows: dict[str, np.ndarray], seed: int = 0) -> tuple[Any, dict[str, list]]:
    """Train every phase in-process the way pipelines/train.py does; returns the model and per-epoch mean losses."""
    torch.manual_seed(seed)
    model = method.build_model(cfg)
    history: dict[str, list[float]] = {}
    gen = np.random.default_rng(seed)
    step = 0
    for phase in method.phases(cfg):
        optimizer = method.configure_optimizer(model, cfg, phase.name)
        scheduler = method.configure_scheduler(optimizer, cfg, phase.name)
        first = examples_per_video(method, rows, cfg, seed=int(gen.integers(1 << 30)))
        batches = (
            {k: torch.from_numpy(v[i : i + int(cfg.batch_size)]) for k, v in first.items()}
            for i in range(0, len(first["video_label"]), int(cfg.batch_size))
        )
        method.on_phase_start(model, phase.name, batches, cfg, TrainContext(phase.name, 0, step))
        for epoch in range(phase.epochs):
            model.train()
            examples = examples_per_video(method, rows, cfg, seed=int(gen.integers(1 << 30)))
            order = gen.permutation(len(examples["video_label"]))
            losses = []
            for i in range(0, len(order), int(cfg.batch_size)):
                batch = {k: torch.from_numpy(v[order[i : i + int(cfg.batch_size)]]) for k, v in examples.items()}
                parts = method.training_loss(model, batch, cfg, TrainContext(phase.name, epoch, step))
                optimizer.zero_grad()
                parts["loss"].backward()
                optimizer.step()
                losses.append(float(parts["loss"].detach()))
                step += 1
            if scheduler is not None:
                scheduler.step()
            history.setdefault(phase.name, []).append(float(np.mean(losses)))
    return model.eval(), history


def snippet_auroc(method: Method, model: Any, cfg: Any, data: WeakFeatures, column: str) -> float:
    """AUROC of one raw score column over all test snippets (each snippet = its 16 frames, equally weighted)."""
    scores = method.task_scores(model, data.test, cfg)
    y, s = [], []
    for vid, labels in data.snippet_labels.items():
        mask = scores["video_id"] == vid
        order = np.argsort(scores["frame_idx"][mask])
        y.append(labels)
        s.append(np.asarray(scores[column])[mask][order])
    return float(roc_auc_score(np.concatenate(y), np.concatenate(s)))


@pytest.fixture()
def train_locally() -> Callable[..., tuple[Any, dict[str, list]]]:
    return run_phases


@pytest.fixture()
def auroc() -> Callable[..., float]:
    return snippet_auroc


@pytest.fixture()
def examples() -> Callable[..., dict[str, np.ndarray]]:
    return examples_per_video
