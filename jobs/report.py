"""Write the offline HTML review report of a scoring run (events, thumbnails, score curves, metrics).

Usage:
    python jobs/report.py --scores URI --out DIR [--data STORE] [--top N] [--events-config YAML] [--no-maps]
        [key=value ...]

Events come from SCORES/events.parquet; an --events-config file or key=value overrides of the event settings
(threshold=2.5, alarms_per_hour=1, quantile=0.995, hysteresis=0.5, merge_gap_s=2, min_duration_s=1,
reference_scores=URI) recompute them for this report. Thumbnails carry the method's anomaly map in red where it
has one (stored regions of object-level methods such as SSMTL; the checkpoint's own maps, e.g. LUSS-AE's prediction
residual); --no-maps shows plain frames. Open DIR/index.html in any browser; it needs no network.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or a Ray job working dir

from pipelines.cli import fail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", required=True, help="scoring run output URI (holds scores/, summary.json)")
    parser.add_argument("--out", required=True, help="local folder for index.html and its images")
    parser.add_argument("--data", default=None, help="store with the source videos and labels (default: summary's)")
    parser.add_argument("--top", type=int, default=20, help="events (by peak score) shown with thumbnails")
    parser.add_argument("--events-config", default=None, help="YAML with EventConfig fields")
    parser.add_argument("--no-maps", action="store_true", help="plain thumbnails, no anomaly-map overlay")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the event settings")
    args = parser.parse_args(argv)

    from pipelines.config import load_config
    from pipelines.events import EventConfig
    from pipelines.report import build_report

    events_cfg = None
    if args.events_config or args.overrides:
        try:
            events_cfg = load_config(EventConfig, args.events_config, args.overrides)
        except ValueError as exc:  # ConfigError, or a value EventConfig rejects
            fail(str(exc))
    try:
        html = build_report(
            args.scores, args.out, data_uri=args.data, top=args.top, events_cfg=events_cfg,
            anomaly_maps=None if args.no_maps else "auto",
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc), code=1)
    print(f"[report] {html}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
