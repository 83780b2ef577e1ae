"""Write a synthetic surveillance corpus (real mp4 files + frame labels) in the folder format.

Usage:
    python jobs/synthesize.py --out DIR [--preset tiny|demo|bench|weak] [--seed N] [--overwrite]

Presets: tiny (2 train + 3 test, 64x64, 64 frames; seconds), demo (8 + 6 at 128x128, 240 frames),
bench (600-frame videos plus one 854x480 and one 1920x1080 video), weak (12 train videos with video-level
labels only, 5 abnormal; 8 test videos).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from tqdm import tqdm  # noqa: E402

from pipelines.synthetic import PRESETS, get_preset, synthesize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (local)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    args = parser.parse_args(argv)

    # Errors are printed here rather than through pipelines.cli.fail, which imports torch (seconds, for no use).
    bar = tqdm(total=len(get_preset(args.preset).videos), desc=f"synthesize {args.preset}", unit="video")
    try:
        summary = synthesize(
            args.out, args.preset, args.seed, overwrite=args.overwrite, on_video=lambda _: bar.update()
        )
    except (FileExistsError, ValueError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    print(
        f"[synthesize] {len(summary.train)} train + {len(summary.test)} test videos, {summary.num_frames} frames, "
        f"{summary.test_anomalous_fraction:.0%} of test frames anomalous -> {summary.root}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
