"""Extract ten-crop I3D snippet features of a clip store (spec i3d) into a feature store.

Usage:
    python jobs/extract_i3d.py --data CLIP_STORE --out URI (--weights PATH [--weights-layout caffe2] | --random-init)
        [--use-gpu] [--batch-size N] [--concurrency N] [--config i3d.yaml] [key=value ...]

Weights never download: pass your own ResNet-50 I3D state dict (keys: see vad_models/i3d/weights.py; convert the
caffe2 blob names once with `python -m vad_models.i3d.weights SRC.npz DST.pt --layout caffe2`, or on the fly with
--weights-layout caffe2). --random-init is for pipeline tests only and is recorded in the store's _store.json.
Trailing key=value pairs override the pinned preprocessing (I3DConfig), e.g. crop_order=torchvision.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import fail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="clip store URI ingested with --spec i3d")
    parser.add_argument("--out", required=True, help="feature store URI (local path or s3://)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="user-supplied I3D weights (.pt/.pth state dict or .npz)")
    source.add_argument("--random-init", action="store_true", help="random backbone (tests only; recorded)")
    parser.add_argument("--weights-layout", default="native", choices=["native", "caffe2"], help="key names")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per extractor actor")
    parser.add_argument("--batch-size", type=int, default=20, help="snippets per forward pass (x10 crops)")
    parser.add_argument("--rows-per-batch", type=int, default=2, help="clip-store segments per actor call")
    parser.add_argument("--concurrency", type=int, default=1, help="extractor actors")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing feature store at --out")
    parser.add_argument("--config", default=None, help="YAML with I3DConfig fields (crop_order, normalisation...)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of I3DConfig")
    args = parser.parse_args(argv)

    from pipelines.config import ConfigError, load_config
    from pipelines.feature_store import ExtractOptions, extract_features
    from pipelines.runtime import init_ray
    from vad_models.i3d.config import I3DConfig

    try:
        cfg = load_config(I3DConfig, args.config, args.overrides)
        opts = ExtractOptions(
            weights=args.weights,
            weights_layout=args.weights_layout,
            random_init=args.random_init,
            seed=args.seed,
            use_gpu=args.use_gpu,
            batch_size=args.batch_size,
            rows_per_batch=args.rows_per_batch,
            concurrency=args.concurrency,
            overwrite=args.overwrite,
        )
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    init_ray(args.num_cpus)
    try:
        meta = extract_features(args.data, args.out, cfg, opts)
    except (ValueError, RuntimeError, OSError) as exc:  # OSError: missing weights file, existing --out
        fail(str(exc), code=1)
    extractor = meta["extractor"]
    print(
        f"[extract_i3d] {args.out}: {extractor['feature_dim']}-d ten-crop features, weights {extractor['weights']}, "
        f"crops {','.join(extractor['crop_order'])}, normalisation {extractor['normalisation']['name']}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
