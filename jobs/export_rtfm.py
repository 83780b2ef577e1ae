"""Export a feature store in RTFM's layout: <video>_i3d.npy [T,10,F], .list files (abnormal first), gt-<dataset>.npy.

Usage:
    python jobs/export_rtfm.py --features FEATURE_STORE --out DIR

RTFM's dataset.py slices the train list at the number of abnormal videos; OUT/rtfm_export.json records it.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import fail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True, help="feature store URI (from jobs/extract_i3d.py)")
    parser.add_argument("--out", required=True, help="output directory (local path or s3://)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded local Ray")
    args = parser.parse_args(argv)

    from pipelines.feature_store import export_rtfm
    from pipelines.runtime import init_ray

    init_ray(args.num_cpus)
    try:
        summary = export_rtfm(args.features, args.out)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), code=1)
    print(json.dumps(summary, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
