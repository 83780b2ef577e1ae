"""The whole pipeline on synthetic footage, on an embedded local Ray: what `make demo` runs.

synthesize (demo preset) -> ingest (clip store) -> train (LUSS-AE with configs/demo.yaml by default) -> score ->
evaluate (micro and macro AUROC, plots) -> events -> offline HTML report. Prints the metrics and where every output
is. The config's ``method:`` key picks the method; any method that reads a clip store runs, e.g. STD with
``--config configs/std/synthetic.yaml``. SSMTL (object tubes from a detector) and MT-VAE (I3D features) need more
stages: see their jobs in README.

Usage:
    python jobs/demo.py [--out outputs/demo] [--config configs/demo.yaml] [--num-cpus 2] [key=value ...]
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout or a Ray job working dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output directory (or s3:// URI)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--preset", default="demo", help="synthetic corpus preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the method config")
    args = parser.parse_args(argv)
    try:
        demo_method(args.config)  # fail before Ray starts
    except ValueError as exc:  # ConfigError too
        print(f"[demo] error: {exc}", file=sys.stderr)
        return 2
    result = run_demo(args.out, args.config, args.overrides, preset=args.preset, seed=args.seed, num_cpus=args.num_cpus)
    metrics = result["metrics"]
    print(
        f"\n[demo] done in {result['minutes']:.1f} min\n"
        f"  micro AUROC (all frames concatenated): {metrics['micro_auroc']:.4f}\n"
        f"  macro AUROC (mean over videos, padded): {metrics['macro_auroc']:.4f}\n"
        f"  checkpoint: {result['checkpoint']}\n"
        f"  scores:     {result['scores']}/scores/   events: {result['scores']}/events.csv\n"
        f"  metrics:    {result['out']}/eval/metrics.json   plots: {result['out']}/eval/plots/\n"
        f"  report:     {result['report']}",
        flush=True,
    )
    return 0


def demo_method(config: str) -> str:
    """The method a demo config names (``method:``; LUSS-AE if absent), refused unless it reads a clip store.

    Raises:
        ValueError: for an unknown method or one whose store needs more than ingest (tubes, features).
    """
    from pipelines.config import config_method
    from vad_models.registry import get_method

    name = config_method(config) or "luss_ae"
    store = get_method(name).input_spec(get_method(name).config_class()).store
    if store != "clips":
        raise ValueError(
            f"the demo trains methods that read a clip store; {name} reads a {store!r} store "
            "(build it with its own job, see README)"
        )
    return name


def run_demo(
    out: str,
    config: str,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    preset: str = "demo",
    seed: int = 0,
    num_cpus: int | None = None,
) -> dict:
    """Run every stage; returns the metrics and output locations (also used by the end-to-end test)."""
    from pipelines import storage
    from pipelines.cli import load_method_config
    from pipelines.clip_store import build_clip_store
    from pipelines.evaluate import evaluate
    from pipelines.report import build_report
    from pipelines.runtime import init_ray
    from pipelines.score import ScoreConfig, score, scoring_event_config
    from pipelines.synthetic import synthesize
    from pipelines.train import TrainRunConfig, train
    from vad_models.registry import get_method

    started = time.perf_counter()
    method = demo_method(config)
    cfg = load_method_config(method, config, overrides)
    spec = get_method(method).input_spec(cfg)
    init_ray(num_cpus)
    corpus = storage.join(out, "corpus")
    print(f"[demo] 1/6 synthesizing the '{preset}' corpus -> {corpus}", flush=True)
    synthesize(corpus, preset=preset, seed=seed, overwrite=True)
    store = storage.join(out, "store")
    print(f"[demo] 2/6 ingesting into a clip store -> {store}", flush=True)
    ingest = build_clip_store("folder", corpus, store, spec.frame_spec, size=(cfg.height, cfg.width), overwrite=True)
    print(ingest.line(), flush=True)
    run_dir = storage.join(out, "train")
    print(f"[demo] 3/6 training {method} at {cfg.height}x{cfg.width} -> {run_dir}", flush=True)
    # The demo's examples fit in memory many times over: build them once instead of every epoch.
    run = TrainRunConfig(num_workers=0, val_fraction=0.15, resume=False, cache_examples=True)
    result = train(method, cfg, store, run_dir, run)
    scores = storage.join(out, "scores")
    print(f"[demo] 4/6 scoring the test videos -> {scores}", flush=True)
    score(result.checkpoint, store, scores, ScoreConfig(split="test"))
    print("[demo] 5/6 evaluating", flush=True)
    metrics = evaluate(scores, store, out_uri=storage.join(out, "eval"))
    print("[demo] 6/6 review report (events were written by the scoring run)", flush=True)
    report = build_report(scores, f"{out}/report", data_uri=store, events_cfg=scoring_event_config())
    return {
        "metrics": metrics,
        "minutes": (time.perf_counter() - started) / 60,
        "checkpoint": result.checkpoint,
        "scores": scores,
        "out": out,
        "report": str(report),
    }


if __name__ == "__main__":
    raise SystemExit(main())
