"""Decode a dataset into a Parquet clip store (local path or s3://), quarantining inputs that cannot be used.

Usage:
    python jobs/ingest.py --dataset NAME --root URI --out URI --spec {luss_ae,std,ssmtl,i3d} [--size HxW]
        [--segment-frames S] [--splits train,test] [--limit N] [--overwrite] [--num-cpus N]
        [--compression {zstd[:LEVEL],lz4,none}] [--dataset-option KEY=VALUE ...]

Exit status: 0 when the store was written (some inputs may be quarantined), 2 when every input failed,
1 on a usage problem (missing dataset pieces, existing --out without --overwrite).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import fail  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 64x64 (HxW), got {text!r}") from None
    return height, width


def _compression(text: str) -> str:
    from pipelines.clip_store import parquet_compression

    try:
        parquet_compression(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--dataset-option must be KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset", required=True, help="folder, ped2, avenue, shanghaitech, shanghaitech_weak or ucf_crime"
    )
    parser.add_argument("--root", required=True, help="dataset root (local path or s3://)")
    parser.add_argument("--out", required=True, help="store URI (local path or s3://)")
    parser.add_argument("--spec", required=True, help="frame spec: luss_ae, std, ssmtl or i3d")
    parser.add_argument("--size", type=_size, default=None, help="frame size HxW overriding the spec's")
    parser.add_argument("--segment-frames", type=int, default=None, help="frames per stored segment (S)")
    parser.add_argument("--splits", default="train,test", help="comma-separated splits to ingest")
    parser.add_argument("--limit", type=int, default=None, help="at most N videos per split (smoke runs)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing store at --out first")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    parser.add_argument(
        "--compression",
        type=_compression,
        default="zstd:1",
        help="Parquet codec of the frames: zstd[:LEVEL] (-7..22; default zstd:1), lz4 or none. A negative zstd level "
        "or none writes faster and stores more bytes (docs/performance.md, Ingest)",
    )
    parser.add_argument(
        "--dataset-option", type=_option, action="append", default=[], help="adapter option KEY=VALUE (repeatable)"
    )
    args = parser.parse_args(argv)

    from pipelines.clip_store import build_clip_store
    from pipelines.datasets import DatasetLayoutError
    from pipelines.runtime import init_ray
    from pipelines.stores import StoreExistsError, prepare_store

    try:
        if not args.overwrite:
            prepare_store(args.out)  # refuse an existing store before starting Ray (checked again after listing)
        init_ray(args.num_cpus)
        summary = build_clip_store(
            args.dataset,
            args.root,
            args.out,
            args.spec,
            size=args.size,
            segment_frames=args.segment_frames,
            splits=[s.strip() for s in args.splits.split(",") if s.strip()],
            limit=args.limit,
            overwrite=args.overwrite,
            dataset_options=dict(args.dataset_option),
            compression=args.compression,
        )
    except (DatasetLayoutError, StoreExistsError, KeyError, TypeError, ValueError) as exc:
        fail(str(exc).strip("'\""), code=1)
    for row in summary.quarantine:
        print(f"[ingest] quarantined {row['video_id']} ({row['stage']}): {row['error']}", flush=True)
    print(summary.line(), flush=True)
    return 2 if summary.all_failed else 0


if __name__ == "__main__":
    sys.exit(main())
