"""Evaluate per-frame scores against frame labels: micro/macro AUROC, PR-AUC, EER, and PNG plots.

Usage:
    python jobs/evaluate.py --scores URI --labels URI [--out URI] [--no-plots] [--regions-gt DIR]

--scores is a score store (OUT with scores/<dataset>/<video>.parquet, as jobs/score.py writes); --labels is a
store (labels.parquet) or a folder-format corpus (DIR/labels/<video>.npy). With --out, metrics.json and
plots/<video>.png + plots/roc.png are written there. --regions-gt (object-level methods such as SSMTL, whose runs
store regions/) adds RBDC and TBDC against <video>.boxes.json (synthetic corpus labels/) or ShanghaiTech/Avenue
track files <video>.txt.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", required=True, help="score store URI (local path or s3://)")
    parser.add_argument("--labels", required=True, help="store URI or folder-format corpus with labels/*.npy")
    parser.add_argument("--out", default=None, help="where to write metrics.json and plots/")
    parser.add_argument("--no-plots", action="store_true", help="write metrics.json only")
    parser.add_argument("--regions-gt", default=None, help="folder of region annotations: adds RBDC and TBDC")
    args = parser.parse_args(argv)

    from pipelines.evaluate import evaluate
    from pipelines.storage import StorageError

    try:
        metrics = evaluate(
            args.scores, args.labels, out_uri=args.out, plots=not args.no_plots, regions_gt=args.regions_gt
        )
    except (ValueError, FileNotFoundError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = ("micro_auroc", "macro_auroc", "pr_auc", "eer", "rbdc", "tbdc", "num_videos", "num_frames")
    headline = {k: metrics[k] for k in keys if k in metrics}
    print(json.dumps(headline))
    for name, definition in metrics["auroc_definitions"].items():
        print(f"  {name}: {definition}")
    if args.out:
        print(f"[evaluate] metrics.json{' and plots/' if not args.no_plots else ''} written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
