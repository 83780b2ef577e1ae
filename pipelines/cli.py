"""Shared command-line plumbing for the thin scripts in ``jobs/``.

Every training job takes the same flags (``--data --out --config --num-workers --use-gpu`` and ``key=value``
overrides of the method config), so a new method's job is three lines.

Example:
    >>> from pipelines.cli import run_train_job
    >>> run_train_job("luss_ae", ["--data", "store", "--out", "train", "epochs=2"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pipelines.config import ConfigError, load_config
from vad_models.registry import get_method

__all__ = ["add_report_argument", "build_train_parser", "fail", "load_method_config", "report_dir",
           "run_train_job"]


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as an error (no traceback) and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def add_report_argument(parser: argparse.ArgumentParser) -> None:
    """``--report [DIR]`` of the scoring jobs: write the offline review report when the run ends."""
    parser.add_argument(
        "--report", nargs="?", const="", default=None, metavar="DIR",
        help="also write the offline HTML review report to the local folder DIR (default: OUT/report for a local OUT)",
    )


def report_dir(given: str | None, out: str) -> str | None:
    """The local report folder for ``--report``: ``given``, else ``OUT/report`` when OUT is local; ``None`` if off.

    Checked before the run starts, so a remote ``--out`` without a folder fails in seconds, not after scoring.

    Example:
        >>> report_dir("", "outputs/scores"), report_dir(None, "outputs/scores")
        ('outputs/scores/report', None)
    """
    if given is None:
        return None
    if given:
        if "://" in given and not given.startswith("file://"):
            fail(f"--report needs a local folder (the report is opened from disk), got {given}")
        return given.removeprefix("file://")
    if "://" in out and not out.startswith("file://"):
        fail(f"--out {out} is not local: give the report a local folder, e.g. --report ./report")
    return f"{out.removeprefix('file://').rstrip('/')}/report"


def load_method_config(method_name: str, config_path: str | None, overrides: Sequence[str]) -> Any:
    """The method's config: defaults, then the YAML file, then ``key=value`` overrides."""
    method = get_method(method_name)
    return load_config(method.config_class, config_path, overrides)


def build_train_parser(method_name: str) -> argparse.ArgumentParser:
    """Argument parser shared by every ``jobs/train_<method>.py``."""
    parser = argparse.ArgumentParser(
        description=f"Train {method_name} on a store with Ray Train (local mode or a cluster).",
        epilog="Trailing key=value pairs override the method config, e.g. epochs=5 lr=2e-4.",
    )
    parser.add_argument("--data", required=True, help="store URI (from jobs/ingest.py and friends)")
    parser.add_argument("--out", required=True, help="output URI for checkpoints (local path or s3://)")
    parser.add_argument("--config", default=None, help=f"YAML config, e.g. configs/{method_name}/ped2.yaml")
    parser.add_argument("--num-workers", type=int, default=0, help="Ray Train workers (0 = in-process local mode)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--max-failures", type=int, default=0, help="worker-group restarts allowed")
    parser.add_argument("--name", default="train", help="stable run name (reruns with the same --out resume)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="training videos held out (calibration)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out has a checkpoint")
    parser.add_argument("--placement", default="PACK", choices=["PACK", "SPREAD"], help="worker placement")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"],
        help="bf16 autocast for the forward pass and loss (Ampere or newer GPUs; fp32 master weights)",
    )
    parser.add_argument(
        "--fresh-samples", action="store_true",
        help="draw new random training samples every epoch (not reproducible run to run; default: seeded)",
    )
    parser.add_argument(
        "--cache-examples", action="store_true",
        help="build the training examples once in Ray's object store instead of every epoch (they must fit in "
        "memory; Ray spills the excess to disk)",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the method config")
    return parser


def run_train_job(method_name: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, train ``method_name`` and print where the checkpoint is."""
    from pipelines.runtime import init_ray
    from pipelines.train import TrainRunConfig, train

    args = build_train_parser(method_name).parse_args(argv)
    try:
        cfg = load_method_config(method_name, args.config, args.overrides)
    except ConfigError as exc:
        fail(str(exc))
    try:
        run = TrainRunConfig(
            num_workers=args.num_workers,
            use_gpu=args.use_gpu,
            max_failures=args.max_failures,
            name=args.name,
            seed=args.seed,
            val_fraction=args.val_fraction,
            resume=not args.no_resume,
            placement_strategy=args.placement,
            deterministic=not args.fresh_samples,
            precision=args.precision,
            cache_examples=args.cache_examples,
        )
    except ValueError as exc:  # e.g. --cache-examples with --fresh-samples
        fail(str(exc))
    init_ray(args.num_cpus)
    try:
        result = train(method_name, cfg, args.data, args.out, run)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc), code=1)
    print(f"[train] checkpoint: {result.checkpoint}", flush=True)
    return 0
