"""Detect objects in every video of an RGB clip store (spec ssmtl) into a detection store (resumable).

Usage:
    python jobs/detect.py --data CLIP_STORE --out URI [--detector background|torchscript|whole_frame]
        [--weights DETECTOR.pt] [--conf 0.8] [--config configs/ssmtl/ped2.yaml] [--concurrency N] [--use-gpu]
        [key=value ...]

Detectors (vad_models/ssmtl/detect.py): "background" (default, no weights: running-median background subtraction
for fixed cameras), "torchscript" (your YOLO-style detector exported with torch.jit; ONNX models must be converted
to TorchScript first) and "whole_frame" (one box per frame: SSMTL's frame-level variant). Each video is processed
whole, in order, by one actor; videos that already have a detection file are skipped unless --overwrite.
Trailing key=value pairs override DetectConfig fields, e.g. diff_threshold=30.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import fail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="clip store URI (RGB frames, e.g. ingested with --spec ssmtl)")
    parser.add_argument("--out", required=True, help="detection store URI (local path or s3://)")
    parser.add_argument("--config", default=None, help="SSMTL YAML whose 'detect' section is used")
    parser.add_argument("--detector", default=None, help="background | torchscript | whole_frame")
    parser.add_argument("--weights", default=None, help="TorchScript detector file (--detector torchscript)")
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold (paper: 0.5 Ped2, 0.8 others)")
    parser.add_argument("--concurrency", type=int, default=1, help="detection actors (one video at a time each)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per actor (TorchScript detector)")
    parser.add_argument("--overwrite", action="store_true", help="redo videos that already have detections")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of DetectConfig")
    args = parser.parse_args(argv)

    from pipelines.config import ConfigError, load_config
    from pipelines.detections import detect
    from pipelines.runtime import init_ray
    from vad_models.ssmtl.config import SsmtlConfig

    flags = {"detector": args.detector, "weights": args.weights, "conf_threshold": args.conf}
    overrides = [f"detect.{k}={v}" for k, v in flags.items() if v is not None]
    overrides += [item if item.startswith("detect.") else f"detect.{item}" for item in args.overrides]
    try:
        cfg = load_config(SsmtlConfig, args.config, overrides).detect
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    init_ray(args.num_cpus)
    try:
        meta = detect(args.data, args.out, cfg, concurrency=args.concurrency, num_gpus=1.0 if args.use_gpu else 0.0,
                      overwrite=args.overwrite)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc), code=1)
    print(
        f"[detect] {args.out}: {meta['detections']} detections ({cfg.detector}, conf >= {cfg.conf_threshold}) in "
        f"{meta['videos_detected']} videos, {meta['videos_failed']} failed (see quarantine.parquet)",
        flush=True,
    )
    return 1 if meta["videos_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
