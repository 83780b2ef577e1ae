"""Every registered method on a CUDA device: the same smoke inputs score as on the CPU, and training steps run.

Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/vad_models/test_cuda_paths.py`` (torch, numpy and the project only: no Ray needed).
They check what the CPU tests cannot: every tensor a method builds lands on the model's device (no CPU/GPU mix),
uint8 frames are shipped and windowed on the device, ``on_phase_start`` works on device batches, bf16 autocast
(``TrainRunConfig.precision="bf16"``) trains with finite losses, and the GPU's numbers match the CPU's in IEEE fp32.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bench.gpu import fp32_precision  # TF32 off: CPU and GPU then compute the same fp32 arithmetic
from tests.helpers import method_smoke_batch, method_smoke_examples, method_smoke_setup
from vad_models.base import TrainContext
from vad_models.registry import available_methods

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METHODS = available_methods()
CUDA = torch.device("cuda")


def _assert_close(gpu: np.ndarray, cpu: np.ndarray, what: str) -> None:
    cpu = np.asarray(cpu, dtype=np.float64)
    scale = max(1.0, float(np.abs(cpu).max())) if cpu.size else 1.0
    np.testing.assert_allclose(np.asarray(gpu, dtype=np.float64), cpu, rtol=2e-3, atol=2e-4 * scale, err_msg=what)


@pytest.mark.parametrize("name", METHODS)
def test_task_scores_on_cuda_match_the_cpu(name: str) -> None:
    method, cfg, rows = method_smoke_setup(name)
    torch.manual_seed(0)
    model = method.build_model(cfg).eval()
    gpu_model = copy.deepcopy(model).to(CUDA)
    with fp32_precision("fp32"):
        cpu_scores = method.task_scores(model, rows, cfg)
        gpu_scores = method.task_scores(gpu_model, rows, cfg)
    assert set(gpu_scores) == set(cpu_scores)
    assert list(map(str, gpu_scores["video_id"])) == list(map(str, cpu_scores["video_id"]))
    np.testing.assert_array_equal(gpu_scores["frame_idx"], cpu_scores["frame_idx"])
    for column in method.score_columns(cfg):
        _assert_close(gpu_scores[column], cpu_scores[column], f"{name} score column {column!r}")
    with fp32_precision("fp32"):
        cpu_maps = method.anomaly_maps(model, rows, cfg)
        gpu_maps = None if cpu_maps is None else method.anomaly_maps(gpu_model, rows, cfg)
    if cpu_maps is not None:
        _assert_close(gpu_maps["map"], cpu_maps["map"], f"{name} anomaly maps")


@pytest.mark.parametrize("name", METHODS)
def test_first_training_loss_on_cuda_matches_the_cpu(name: str) -> None:
    """Same weights, same batch: the first phase's loss agrees (eval mode: no dropout; BN on running statistics).

    Skipped for a loss that still draws random numbers (CPU and CUDA generators differ).
    """
    method, cfg, rows = method_smoke_setup(name)
    torch.manual_seed(0)
    model = method.build_model(cfg).train()
    examples = method_smoke_examples(method, rows, cfg)
    phase = method.phases(cfg)[0].name
    ctx = TrainContext(phase=phase, epoch=0, step=0)
    cpu_batch = method_smoke_batch(examples, cfg)
    method.on_phase_start(model, phase, [cpu_batch], cfg, ctx)
    model.eval()
    gpu_model = copy.deepcopy(model).to(CUDA)
    gpu_batch = method_smoke_batch(examples, cfg, CUDA)

    def loss(net: torch.nn.Module, batch: dict[str, torch.Tensor], seed: int) -> dict[str, float]:
        torch.manual_seed(seed)
        with fp32_precision("fp32"), torch.no_grad():
            return {k: float(v) for k, v in method.training_loss(net, batch, cfg, ctx).items()}

    reference = loss(copy.deepcopy(model), cpu_batch, 0)
    if reference != loss(copy.deepcopy(model), cpu_batch, 1):
        pytest.skip(f"{name}'s {phase} loss draws random numbers; the training-step test covers its CUDA path")
    on_gpu = loss(gpu_model, gpu_batch, 0)
    assert set(on_gpu) == set(reference)
    for key, value in reference.items():
        _assert_close(np.asarray([on_gpu[key]]), np.asarray([value]), f"{name} {phase} loss part {key!r}")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", METHODS)
def test_every_phase_trains_on_cuda(name: str, precision: str) -> None:
    """Two optimiser steps per phase on device batches, as ``pipelines/train.py`` runs them (autocast for bf16)."""
    method, cfg, rows = method_smoke_setup(name)
    torch.manual_seed(0)
    model = method.build_model(cfg).to(CUDA).train()
    batch = method_smoke_batch(method_smoke_examples(method, rows, cfg), cfg, CUDA)
    for index, phase in enumerate(method.phases(cfg)):
        ctx = TrainContext(phase=phase.name, epoch=0, step=2 * index)
        method.on_phase_start(model, phase.name, [batch], cfg, ctx)
        optimizer = method.configure_optimizer(model, cfg, phase.name)
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                parts = method.training_loss(model, batch, cfg, ctx)
            for key, value in parts.items():
                assert value.device.type == "cuda", f"{name} {phase.name} part {key!r} is on {value.device}"
                assert torch.isfinite(value).all(), f"{name} {phase.name} part {key!r} = {value} ({precision})"
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and any(g.abs().sum() > 0 for g in grads), f"{name} {phase.name}: no gradient"
            optimizer.step()
            ctx.step += 1
    for key, tensor in model.state_dict().items():
        assert tensor.device.type == "cuda", f"{name}: {key} left the device"
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), f"{name}: {key} is not finite after bf16/fp32 steps"
