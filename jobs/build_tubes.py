"""Crop SSMTL object tubes for every stored detection into a tube store (the store SSMTL trains and scores on).

Usage:
    python jobs/build_tubes.py --data CLIP_STORE --detections DET --out URI [--config configs/ssmtl/ped2.yaml]
        [--teacher RESNET50.pt | --random-teacher] [--split train] [--concurrency N] [--use-gpu] [key=value ...]

--teacher is a TorchScript classifier (see vad_models/ssmtl/teachers.py) whose outputs on each 64x64 middle crop
become the distillation target; without it the store has no teacher features and the config must drop the
"distill" task (or set teacher_dim=0). --random-teacher uses a tiny random network: for pipeline tests only, and
recorded in _store.json. Trailing key=value pairs override SsmtlConfig fields (e.g. detect.conf_threshold=0.5).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import fail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="clip store URI the detections were made on")
    parser.add_argument("--detections", required=True, help="detection store URI (jobs/detect.py)")
    parser.add_argument("--out", required=True, help="tube store URI (local path or s3://)")
    parser.add_argument("--config", default=None, help="SSMTL YAML (tube length, crop size, threshold, teacher size)")
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument("--teacher", default=None, help="TorchScript classifier teacher for distillation targets")
    teacher.add_argument("--random-teacher", action="store_true", help="tiny random teacher (tests only; recorded)")
    parser.add_argument("--split", default=None, help="only this split (default: all)")
    parser.add_argument("--concurrency", type=int, default=1, help="tube-building actors")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per actor (for the teacher)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing tube store at --out")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of SsmtlConfig")
    args = parser.parse_args(argv)

    from pipelines.config import ConfigError, load_config
    from pipelines.detections import build_tubes
    from pipelines.runtime import init_ray
    from vad_models.ssmtl.config import SsmtlConfig
    from vad_models.ssmtl.teachers import RANDOM_TEACHER

    try:
        cfg = load_config(SsmtlConfig, args.config, args.overrides)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    init_ray(args.num_cpus)
    try:
        meta = build_tubes(
            args.data, args.detections, args.out, cfg,
            teacher=RANDOM_TEACHER if args.random_teacher else args.teacher, split=args.split,
            concurrency=args.concurrency, num_gpus=1.0 if args.use_gpu else 0.0, overwrite=args.overwrite,
        )
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc), code=1)
    tube = meta["tube"]
    print(f"[build_tubes] {args.out}: tubes of {tube['frames']} frames at {tube['crop_size']}px, teacher "
          f"{meta['teacher'] or 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
