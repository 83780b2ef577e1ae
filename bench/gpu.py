"""GPU section: LUSS-AE scoring frames/s and training clips/s at 256x256, and ten-crop I3D snippets/s, in fp32,
TF32 and bf16 (autocast).

Runs only where CUDA is available; elsewhere it prints a note and records ``skipped``. ``--smoke`` runs the same
code path on the CPU with a tiny model (a correctness check of the code, not a measurement).

Scoring goes through ``LussAeMethod.task_scores``, the path the scoring actor runs: each segment's uint8 frames
are copied to the GPU once and the 16+1-frame windows are strided views built there (``Tensor.unfold``), never
16x copies on the host. Inference variants: eager fp32 (the baseline), TF32, and bf16 autocast, each with the
model in ``channels_last_3d`` and BatchNorm folded into the preceding convolution (:func:`fold_batchnorm`).
Training runs ``training_loss`` + Adam on GPU-resident uint8 batches (BatchNorm kept: it trains). I3D runs
``vad_models.i3d.extract.snippet_features``, the feature-store actor's step (uint8 snippets shipped to the GPU,
ten-cropped and normalised there), on the full ResNet-50 I3D at 256x340 frames and 224x224 crops; it also records
how close bf16 features are to fp32 ones (cosine similarity, relative L2), the question before extracting in bf16.

Moonshots (REFERENCE.md §10): >= 3,000 scored frames/s in bf16 on one H100 for <=480p sources (frames arrive
already resized to 256x256; decoding them is the CPU side's job) and >= 1,000 training clips/s in bf16.

Run: ``.venv/bin/python bench/gpu.py [--quick | --smoke] [--sections scoring training i3d] [--cudnn-benchmark]``; bf16
variants run first and ``gpu.partial.json`` holds the measurements so far, so a run cut short keeps them. GPU code-path
checks (no Ray needed):
``python -m pytest tests/vad_models/test_cuda_paths.py`` (skipped without CUDA).
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench import common

NAME = "gpu"
SCORE_TARGET = 3000.0  # frames/s, bf16, one H100
TRAIN_TARGET = 1000.0  # clips/s, bf16

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An inference copy of ``model`` with every BatchNorm that directly follows a conv folded into it.

    ``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` is a per-channel affine map of the conv output,
    so it folds into the conv's weight and bias (output channels are dim 0 of a conv weight and dim 1 of a
    transposed conv weight; ``torch.nn.utils.fusion.fuse_conv_bn_eval`` handles both). The BatchNorm becomes
    ``nn.Identity``. Pairs are found inside ``nn.Sequential`` containers, which is how LUSS-AE's encoder and
    decoder are built; the original model is not modified.

    Returns:
        ``(folded model in eval mode, number of BatchNorms folded)``.

    Example:
        >>> net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU()).eval()
        >>> folded, count = fold_batchnorm(net)
        >>> count, type(folded[1]).__name__
        (1, 'Identity')
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    count = 0
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, _CONVS) and isinstance(bn, _BATCHNORMS) and bn.track_running_stats:
                if conv.out_channels != bn.num_features:
                    raise ValueError(
                        f"{first} has {conv.out_channels} output channels but {second} normalises {bn.num_features}"
                    )
                transposed = isinstance(conv, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
                module._modules[first] = fuse_conv_bn_eval(conv, bn, transpose=transposed)
                module._modules[second] = nn.Identity()
                count += 1
    return folded, count


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Variant:
    """One inference/training setting."""

    name: str
    precision: str  # "fp32" (IEEE), "tf32" or "bf16" (autocast)
    channels_last: bool
    fold_bn: bool


SCORE_VARIANTS = (
    Variant("fp32 eager (baseline)", "fp32", False, False),
    Variant("fp32 channels_last_3d + folded BN", "fp32", True, True),
    Variant("tf32 channels_last_3d + folded BN", "tf32", True, True),
    Variant("bf16 autocast channels_last_3d + folded BN", "bf16", True, True),
)
SECTIONS = ("scoring", "training", "i3d")
I3D_VARIANTS = (
    Variant("fp32 eager (baseline)", "fp32", False, False),
    Variant("tf32", "tf32", False, False),
    Variant("bf16 autocast", "bf16", False, False),
    Variant("bf16 autocast channels_last_3d", "bf16", True, False),
)
TRAIN_VARIANTS = (
    Variant("fp32 (baseline)", "fp32", False, False),
    Variant("tf32 channels_last_3d", "tf32", True, False),
    Variant("bf16 autocast channels_last_3d", "bf16", True, False),
)


@dataclass(frozen=True)
class Plan:
    """Sizes of one mode."""

    size: int
    encoder_channels: tuple[int, ...]
    prp_hidden: tuple[int, ...]
    segment_frames: int
    segments: int  # segments per scoring call
    score_batch_sizes: tuple[int, ...]
    train_batch_sizes: tuple[int, ...]
    min_seconds: float  # each measurement repeats until this much time has passed
    i3d_frames: tuple[int, int, int]  # I3D extractor: frame height, width, crop size
    i3d_base_channels: int  # 64 = ResNet-50 I3D
    i3d_batch_sizes: tuple[int, ...]  # snippets (x10 crops) per forward pass


PLANS = {
    "smoke": Plan(32, (8, 8, 16, 16), (16, 8), 40, 1, (8,), (4,), 0.0, (64, 80, 48), 4, (2,)),
    "quick": Plan(256, (96, 128, 256, 256), (128, 32), 128, 4, (64,), (32,), 2.0, (256, 340, 224), 64, (8,)),
    "full": Plan(
        256, (96, 128, 256, 256), (128, 32), 128, 8, (32, 128), (16, 32), 3.0, (256, 340, 224), 64, (4, 16)
    ),
}


def method_config(plan: Plan) -> Any:
    """LUSS-AE at the plan's size (the paper's widths outside smoke runs)."""
    from vad_models.luss_ae.config import LussAeConfig

    return LussAeConfig(
        height=plan.size, width=plan.size, encoder_channels=plan.encoder_channels, prp_hidden=plan.prp_hidden
    )


@contextlib.contextmanager
def fp32_precision(precision: str) -> Iterator[None]:
    """TF32 on (``"tf32"``) or off (anything else) for fp32 matmuls and cuDNN convolutions inside the block.

    Uses the per-backend ``fp32_precision`` settings of torch >= 2.9 (which refuses mixing them with the legacy
    ``allow_tf32`` flags) and restores the previous values on exit. Autocast (bf16) runs with TF32 off, so the
    fp32 parts it leaves (losses, score errors) stay IEEE.

    Example:
        >>> with fp32_precision("tf32"):
        ...     torch.backends.cuda.matmul.fp32_precision
        'tf32'
    """
    mode = "tf32" if precision == "tf32" else "ieee"
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = mode
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _repeat(fn: Callable[[], int], device: torch.device, min_seconds: float) -> tuple[int, float]:
    """Run ``fn`` (returns items done) once to warm up, then until ``min_seconds`` passed (at least twice)."""
    fn()
    _synchronize(device)
    done, calls, started = 0, 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < min_seconds:
        done += fn()
        calls += 1
        _synchronize(device)
    return done, time.perf_counter() - started


def window_gflops(cfg: Any) -> float:
    """Forward FLOPs of one scoring window (16 frames) of LUSS-AE, counted on the meta device."""
    from vad_models.luss_ae.model import LussAe

    with torch.device("meta"):
        model = LussAe(cfg).eval()
        x = torch.empty(1, 1, cfg.clip_len, cfg.height, cfg.width)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


# ------------------------------------------------------------------------------------------------ measurements


def _prepare_model(cfg: Any, variant: Variant, device: torch.device, train: bool) -> nn.Module:
    from vad_models.luss_ae.model import LussAe

    torch.manual_seed(0)
    model = LussAe(cfg)
    if variant.fold_bn and not train:
        model, _ = fold_batchnorm(model)
    model = model.to(device).train(train)
    if variant.channels_last:
        to_channels_last_3d(model)
    return model


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """Store every 3D (transposed) conv weight as ``channels_last_3d`` (NDHWC), in place.

    ``Module.to(memory_format=...)`` refuses models that also hold 2D/1D parameters (LUSS-AE's PRP head), so
    the 5-D weights are converted one by one; cuDNN then runs those convs in NDHWC and keeps activations so.

    Example:
        >>> net = to_channels_last_3d(nn.Sequential(nn.Conv3d(2, 4, 3), nn.Flatten(), nn.LazyLinear(2)))
        >>> net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
        True
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def measure_scoring(cfg: Any, plan: Plan, variant: Variant, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Scored frames/s through ``task_scores`` (uint8 segments -> device -> windows on device -> scores)."""
    from vad_models.luss_ae.method import LussAeMethod

    run_cfg = replace(cfg, score_batch_size=batch_size, autocast="bf16" if variant.precision == "bf16" else "none")
    model = _prepare_model(run_cfg, variant, device, train=False)
    rng = np.random.default_rng(0)
    frames = np.empty(plan.segments, dtype=object)
    frames[:] = [
        rng.integers(0, 256, (plan.segment_frames, cfg.height, cfg.width, 1), dtype=np.uint8)
        for _ in range(plan.segments)
    ]
    rows = {
        "video_id": np.asarray(["bench"] * plan.segments),
        "start_frame": np.arange(plan.segments, dtype=np.int64) * plan.segment_frames,
        "frames": frames,
    }
    method = LussAeMethod()

    def call() -> int:
        return len(method.task_scores(model, rows, run_cfg)["frame_idx"])

    with fp32_precision(variant.precision):
        done, seconds = _repeat(call, device, plan.min_seconds)
    return {
        "variant": variant.name,
        **asdict(variant),
        "batch_size": batch_size,
        "frames": done,
        "seconds": seconds,
        "frames_per_s": common.rate(done, seconds),
    }


def measure_training(cfg: Any, plan: Plan, variant: Variant, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Training clips/s: ``training_loss`` + backward + Adam on uint8 batches already on the device."""
    from vad_models.base import TrainContext
    from vad_models.luss_ae.method import LussAeMethod

    model = _prepare_model(cfg, variant, device, train=True)
    method = LussAeMethod()
    phase = method.phases(cfg)[0].name
    optimizer = method.configure_optimizer(model, cfg, phase)
    ctx = TrainContext(phase=phase, epoch=0, step=0, world_rank=0, world_size=1)
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (batch_size, cfg.clip_len, cfg.height, cfg.width)
    batch = {
        "clip": torch.randint(
            0, 256, (batch_size, cfg.clip_len + 1, cfg.height, cfg.width), generator=gen, dtype=torch.uint8
        ).to(device),
        "prp_clip": torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(device),
        "prp_label": torch.randint(0, 2, (batch_size,), generator=gen).to(device),
    }
    amp = variant.precision == "bf16"

    def step() -> int:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            parts = method.training_loss(model, batch, cfg, ctx)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        return batch_size

    with fp32_precision(variant.precision):
        done, seconds = _repeat(step, device, plan.min_seconds)
    return {
        "variant": variant.name,
        **asdict(variant),
        "batch_size": batch_size,
        "clips": done,
        "seconds": seconds,
        "clips_per_s": common.rate(done, seconds),
    }


def i3d_config(plan: Plan) -> Any:
    """The ten-crop extractor settings of a plan (the published recipe outside smoke runs)."""
    from vad_models.i3d.config import I3DConfig

    height, width, crop = plan.i3d_frames
    return I3DConfig(height=height, width=width, crop_size=crop, base_channels=plan.i3d_base_channels)


def _i3d_inputs(plan: Plan, cfg: Any, variant: Variant, device: torch.device) -> tuple[nn.Module, list[np.ndarray]]:
    from vad_models.i3d.model import I3DResNet50, init_random_features

    model = init_random_features(I3DResNet50(cfg.base_channels), seed=0).to(device).eval()
    if variant.channels_last:
        to_channels_last_3d(model)
    rng = np.random.default_rng(0)
    count = 2 * max(plan.i3d_batch_sizes)
    snippets = [rng.integers(0, 256, (cfg.snippet_frames, cfg.height, cfg.width, 3), dtype=np.uint8)] * count
    return model, snippets


def measure_i3d(plan: Plan, variant: Variant, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Ten-crop snippets/s through ``snippet_features`` (the feature-store actor's step): uint8 in, float32 out."""
    from vad_models.i3d.extract import snippet_features

    cfg = i3d_config(plan)
    model, snippets = _i3d_inputs(plan, cfg, variant, device)
    snippets = snippets[: 2 * batch_size]
    amp = torch.bfloat16 if variant.precision == "bf16" else None

    def call() -> int:
        return len(snippet_features(model, snippets, cfg, batch_size, autocast=amp))

    with fp32_precision(variant.precision):
        done, seconds = _repeat(call, device, plan.min_seconds)
    return {"variant": variant.name, "batch_size": batch_size, "snippets": done, "snippets_per_s": done / seconds}


def i3d_bf16_fidelity(plan: Plan, device: torch.device) -> dict[str, float]:
    """How far bf16-autocast features are from IEEE fp32 ones: min cosine similarity and max relative L2 error."""
    from vad_models.i3d.extract import snippet_features

    cfg = i3d_config(plan)
    model, snippets = _i3d_inputs(plan, cfg, I3D_VARIANTS[0], device)
    snippets = snippets[: plan.i3d_batch_sizes[0]]
    with fp32_precision("fp32"):
        exact = torch.from_numpy(snippet_features(model, snippets, cfg, len(snippets))).flatten(0, 1)
        approx = torch.from_numpy(
            snippet_features(model, snippets, cfg, len(snippets), autocast=torch.bfloat16)
        ).flatten(0, 1)
    cosine = torch.nn.functional.cosine_similarity(exact, approx, dim=1)
    rel = (approx - exact).norm(dim=1) / exact.norm(dim=1).clamp_min(1e-12)
    return {"min_cosine": float(cosine.min()), "max_relative_l2": float(rel.max())}


def check_folding(cfg: Any) -> float:
    """Max absolute difference between the model and its BN-folded copy on CPU (eval mode, non-trivial BN stats)."""
    from vad_models.luss_ae.model import LussAe

    torch.manual_seed(0)
    model = LussAe(cfg).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):  # random statistics: folding the identity BN would prove nothing
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    folded, _ = fold_batchnorm(model)
    x = torch.rand(2, 1, cfg.clip_len, cfg.height, cfg.width) * 2 - 1
    with torch.no_grad():
        a, b = model(x), folded(x)
    return max(float((p - q).abs().max()) for p, q in zip(a, b))


# ------------------------------------------------------------------------------------------------ driver


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the GPU benchmark (or record why it was skipped) and write ``<results-dir>/gpu.json``."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN time every 3D conv algorithm at each new shape (on an H100 this first call took 74-151 s)",
    )
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="measure only these (default: all)"
    )
    args = parser.parse_args(argv)
    mode = common.mode_of(args)
    plan = PLANS[mode]
    cfg = method_config(plan)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    result = common.new_result(
        NAME, mode, {"plan": asdict(plan), "device": str(device), "gflops_per_window": round(window_gflops(cfg), 2)}
    )
    if not cuda and mode != "smoke":
        result["skipped"] = "no CUDA device on this machine (run bench/gpu.py on a GPU node)"
        print(f"[bench:gpu] skipped: {result['skipped']}", flush=True)
    else:
        if cuda:
            # Off by default: autotuning LUSS-AE's 3D convs cost 74 s (NCDHW) and 151 s (channels_last_3d) per new
            # shape on an H100, longer than the measurements; the scoring and training pipelines leave it off too.
            torch.backends.cudnn.benchmark = args.cudnn_benchmark
            result["config"].update(
                gpu=torch.cuda.get_device_name(0),
                torch=torch.__version__,
                cudnn=torch.backends.cudnn.version(),
                cudnn_benchmark=args.cudnn_benchmark,
            )
        else:
            result["findings"].append("smoke run on the CPU: checks the code path, the numbers are not GPU numbers")
        partial = Path(args.results_dir) / f"{NAME}.partial.json"
        partial.parent.mkdir(parents=True, exist_ok=True)

        def save() -> None:  # what a run killed by its time limit still leaves behind
            partial.write_text(json.dumps({**result, "partial": True}, indent=2, default=str) + "\n")

        run(result, cfg, plan, device, tuple(args.sections), save)
        partial.unlink(missing_ok=True)
    path = common.finish_result(result, args.results_dir)
    print(common.format_table(common.table_rows(result)))
    print(f"[bench:gpu] wrote {path}", flush=True)
    return result


def _sweep(
    records: list[dict[str, Any]],
    kind: str,
    variants: list[Variant],
    batch_sizes: tuple[int, ...],
    measure: Callable[[Variant, int], dict[str, Any]],
    unit: str,
    gflops: float | None = None,
    save: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Measure every variant at every batch size; returns the best rate per variant (OOM is recorded, not fatal)."""
    layout = {True: "channels_last_3d", False: "NCDHW"}
    best: dict[str, float] = {}
    # bf16 first: the moonshots are bf16 numbers, and a run cut short by its time limit should have them
    for variant in sorted(variants, key=lambda v: v.precision != "bf16"):
        for batch_size in batch_sizes:
            context = {"dtype": variant.precision, "layout": layout[variant.channels_last], "batch_size": batch_size}
            if kind == "scoring":
                context["folded_bn"] = variant.fold_bn
            print(f"[bench:gpu] {kind} {variant.name} batch {batch_size} ...", flush=True)
            started = time.perf_counter()
            try:
                value = measure(variant, batch_size)
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                records.append(
                    common.measurement(
                        f"{kind} {variant.name}", "error", None, "", **context, error=str(exc).splitlines()[0][:200]
                    )
                )
                continue
            print(f"[bench:gpu]   {value:,.1f} {unit} ({time.perf_counter() - started:.1f} s)", flush=True)
            best[variant.name] = max(best.get(variant.name, 0.0), value)
            if gflops is not None:
                context["tflop_per_s"] = value * gflops / 1e3
            records.append(common.measurement(f"{kind} {variant.name}", unit, value, unit, **context))
            save()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return best


def run(
    result: dict[str, Any],
    cfg: Any,
    plan: Plan,
    device: torch.device,
    sections: tuple[str, ...] = SECTIONS,
    save: Callable[[], None] = lambda: None,
) -> None:
    """The measurements of ``sections`` on ``device``; fills the record in place, calling ``save`` after each one."""
    meas, comps, targets = result["measurements"], result["comparisons"], result["targets"]
    on_gpu = device.type == "cuda"
    size = f"{cfg.height}x{cfg.width}"
    # section -> (label, variants (the first is the baseline), batch sizes, measure, unit, GFLOP per item)
    table: dict[str, tuple[str, tuple[Variant, ...], tuple[int, ...], Callable[[Variant, int], float], str, Any]] = {
        "scoring": (
            "scoring", SCORE_VARIANTS, plan.score_batch_sizes,
            lambda v, b: measure_scoring(cfg, plan, v, b, device)["frames_per_s"],
            "frames/s", result["config"]["gflops_per_window"],
        ),
        "training": (
            "training", TRAIN_VARIANTS, plan.train_batch_sizes,
            lambda v, b: measure_training(cfg, plan, v, b, device)["clips_per_s"],
            "clips/s", None,
        ),
        "i3d": (
            "i3d ten-crop", I3D_VARIANTS, plan.i3d_batch_sizes,
            lambda v, b: measure_i3d(plan, v, b, device)["snippets_per_s"],
            "snippets/s", None,
        ),
    }  # fmt: skip
    best: dict[str, dict[str, float]] = {}
    for section in (s for s in SECTIONS if s in sections):
        label, variants, batch_sizes, measure, unit, gflops = table[section]
        runnable = [v for v in variants if on_gpu or v.precision != "tf32"]  # TF32 exists on CUDA only
        best[section] = _sweep(meas, label, runnable, batch_sizes, measure, unit, gflops=gflops, save=save)
        base = best[section].get(variants[0].name)
        for name, value in best[section].items():
            if name != variants[0].name:
                comps.append(common.comparison(f"gpu {label} {name} vs {variants[0].name}", value, base, unit))
    if "i3d" in sections:
        for metric, value in i3d_bf16_fidelity(plan, device).items():
            meas.append(common.measurement("i3d bf16 vs fp32 features", metric, value, "", dtype="bf16"))
    scoring, training = best.get("scoring", {}), best.get("training", {})
    if on_gpu:  # the moonshots are GPU numbers; a CPU smoke run only checks the code path
        if "scoring" in sections:
            bf16 = SCORE_VARIANTS[-1].name
            targets.append(
                common.target(f"gpu scoring bf16 {size} (moonshot)", scoring.get(bf16), "frames/s", SCORE_TARGET)
            )
        if "training" in sections:
            bf16 = TRAIN_VARIANTS[-1].name
            targets.append(
                common.target(f"gpu training bf16 {size} (moonshot)", training.get(bf16), "clips/s", TRAIN_TARGET)
            )

if __name__ == "__main__":
    main()
