"""LUSS-AE training throughput through ``pipelines/train.py`` vs a plain PyTorch loop over the same tensors.

* **ours**: :func:`pipelines.train.train` on a clip store of the ``bench`` preset's training videos (64x64 gray,
  the demo's narrow channels), in local mode (``num_workers=0``: the loop runs in the driver) and with one Ray
  Train worker. Examples stream from the store through Ray Data (``make_examples`` every epoch); the
  "cached examples" local run builds them once in the object store (``TrainRunConfig.cache_examples``).
* **plain**: the same videos decoded once into the same segments, ``make_examples`` once, then a bare loop:
  shuffled index batches -> ``training_loss`` -> ``backward`` -> ``Adam.step``. Same model, config and batch size.

Throughput is the steady state: clips per second inside the epoch loop of the last epoch (the first epoch of
ours also warms up the data pipeline). Start-up (``train()`` call -> first optimisation step) and the
end-to-end rate are reported separately.

Ray gives a Train worker with ``cpus_per_worker=1`` one torch thread (it sets ``OMP_NUM_THREADS`` from the CPU
reservation), so the one-worker run is compared with a plain loop using the same number of threads; the local run
uses the driver's threads and is compared with the plain loop on all pinned cores.

Run: ``.venv/bin/python bench/train.py [--quick | --smoke]``.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench import common

NAME = "train"
STARTUP_TARGET_S = 15.0
STEP_LINE = r"\[train\] luss_ae train epoch 1/\d+ step 1 "


@dataclass(frozen=True)
class Plan:
    """Inputs and model of one mode."""

    preset: str
    size: int
    encoder_channels: tuple[int, ...]
    prp_hidden: tuple[int, ...]
    batch_size: int
    train_stride: int
    epochs: int
    limit: int | None  # training videos (None: all of the preset's)
    runs: tuple[str, ...]  # "local", "local_cached" (TrainRunConfig.cache_examples), "worker"


RUN_LABELS = {
    "local": "local mode",
    "local_cached": "local mode, cached examples",
    "worker": "1 Ray Train worker",
}

PLANS = {
    "smoke": Plan("tiny", 32, (16, 16, 32, 32), (32, 16), 8, 4, 1, None, ("local",)),
    "quick": Plan("bench", 64, (32, 48, 64, 64), (64, 32), 16, 6, 2, 2, ("local", "local_cached", "worker")),
    "full": Plan("bench", 64, (32, 48, 64, 64), (64, 32), 16, 6, 2, None, ("local", "local_cached", "worker")),
}


def method_config(plan: Plan) -> Any:
    """The LUSS-AE config of a plan (configs/demo.yaml's widths and learning rate at the plan's size)."""
    from vad_models.luss_ae.config import LussAeConfig

    return LussAeConfig(
        height=plan.size,
        width=plan.size,
        encoder_channels=plan.encoder_channels,
        prp_hidden=plan.prp_hidden,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        lr=5e-4,
        train_stride=plan.train_stride,
    )


# ------------------------------------------------------------------------------------------------ jobs


def _ensure_store(corpus: str, store: str, size: int, limit: int | None) -> None:
    from pipelines.clip_store import build_clip_store

    if not (Path(store) / "_store.json").exists():
        build_clip_store(
            "folder", corpus, store, "luss_ae", size=(size, size), splits=("train",), limit=limit, overwrite=True
        )


def _epoch_metrics(out: Path) -> list[dict[str, Any]]:
    """Per-epoch loop metrics from the checkpoints train() wrote (kept: keep_checkpoints > epochs)."""
    import json

    epochs = []
    for meta in sorted(out.glob("checkpoints/*/config.json")):
        metrics = json.loads(meta.read_text()).get("metrics", {})
        if "examples_per_s" in metrics:
            examples, eps = int(metrics["examples"]), float(metrics["examples_per_s"])
            epochs.append(
                {
                    "epoch": int(metrics["epoch"]),
                    "examples": examples,
                    "examples_per_s": eps,
                    "loop_s": examples / eps if eps else None,
                }
            )
    return sorted(epochs, key=lambda e: e["epoch"])


def _ray_worker_threads(cpus: float) -> int:
    """torch threads a Ray worker holding ``cpus`` CPUs gets (Ray sets OMP_NUM_THREADS from the reservation)."""
    import ray

    @ray.remote(num_cpus=cpus)
    def threads() -> int:
        import torch

        return torch.get_num_threads()

    return int(ray.get(threads.remote()))


def job_train(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker job: one pipelines.train run (local mode or N workers) on the local Ray of this process."""
    from pipelines.config import config_from_dict
    from pipelines.train import TrainRunConfig, train
    from vad_models.luss_ae.config import LussAeConfig

    _ensure_store(payload["corpus"], payload["store"], payload["size"], payload["limit"])
    cfg = config_from_dict(LussAeConfig, payload["cfg"])
    out = Path(payload["out"])
    shutil.rmtree(out, ignore_errors=True)
    run = TrainRunConfig(
        num_workers=payload["num_workers"],
        val_fraction=0.0,
        log_every=1,
        resume=False,
        keep_checkpoints=cfg.epochs + 1,
        name=f"bench-{payload['num_workers']}w",
        cache_examples=bool(payload.get("cache_examples")),
    )
    stdout = payload.get("_stdout")
    started = time.perf_counter()
    train("luss_ae", cfg, payload["store"], str(out), run)
    wall = time.perf_counter() - started
    first_step = stdout.first_time(STEP_LINE, after=started) if stdout is not None else None
    epochs = _epoch_metrics(out)
    threads = _ray_worker_threads(run.cpus_per_worker) if run.num_workers else None
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_s": wall,
        "startup_s": None if first_step is None else first_step - started,
        "epochs": epochs,
        "worker_torch_threads": threads,
    }


def load_segments(store: str) -> dict[str, np.ndarray]:
    """The store's training segments, decoded again through the same path (no Ray): the plain loop's input."""
    from pipelines.decode import iter_segments
    from pipelines.stores import read_manifest, read_store_metadata
    from vad_models.base import FrameSpec

    fields = read_store_metadata(store)["frame_spec"]
    spec = FrameSpec(**{k: fields[k] for k in ("height", "width", "channels", "window", "segment_frames", "overlap")})
    ids, starts, segments = [], [], []
    for row in read_manifest(store).to_pylist():
        if row["split"] != "train":
            continue
        for start, frames in iter_segments(row["uri"], spec):
            ids.append(row["video_id"])
            starts.append(start)
            segments.append(frames)
    column = np.empty(len(segments), dtype=object)
    column[:] = segments
    return {"video_id": np.asarray(ids), "start_frame": np.asarray(starts, np.int64), "frames": column}


def job_plain(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker job: the plain PyTorch loop (no Ray) over tensors made once from the same segments."""
    import torch

    from pipelines.config import config_from_dict
    from vad_models.base import TrainContext
    from vad_models.luss_ae.config import LussAeConfig
    from vad_models.luss_ae.method import LussAeMethod

    cfg = config_from_dict(LussAeConfig, payload["cfg"])
    method = LussAeMethod()
    prep0 = time.perf_counter()
    examples = method.make_examples(load_segments(payload["store"]), cfg, np.random.default_rng(0))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in examples.items()}
    prep_s = time.perf_counter() - prep0
    torch.manual_seed(0)
    model = method.build_model(cfg).train()
    phase = method.phases(cfg)[0].name
    optimizer = method.configure_optimizer(model, cfg, phase)
    ctx = TrainContext(phase=phase, epoch=0, step=0, world_rank=0, world_size=1)
    count = len(tensors["clip"])
    epochs = []
    for epoch in range(int(payload["epochs"])):
        ctx.epoch = epoch
        started = time.perf_counter()
        order = torch.randperm(count)
        total = 0.0
        for first in range(0, count, cfg.batch_size):
            index = order[first : first + cfg.batch_size]
            parts = method.training_loss(model, {k: v[index] for k, v in tensors.items()}, cfg, ctx)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimizer.step()
            total += float(parts["loss"].detach()) * len(index)
            ctx.step += 1
        loop = time.perf_counter() - started
        epochs.append(
            {
                "epoch": epoch + 1,
                "examples": count,
                "examples_per_s": count / loop,
                "loop_s": loop,
                "loss": total / max(count, 1),
            }
        )
    return {"prep_s": prep_s, "epochs": epochs}


JOBS = {"train": job_train, "plain": job_plain}


# ------------------------------------------------------------------------------------------------ driver


def _store_path(cache: Path, corpus: Path, plan: Plan, mode: str) -> Path:
    import hashlib

    key = hashlib.sha1(str(corpus.resolve()).encode()).hexdigest()[:8]
    return cache / "stores" / f"train-{mode}-{plan.size}px-limit{plan.limit}-{key}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the training benchmark and write ``<results-dir>/train.json``; returns the result record."""
    parser = common.base_parser(__doc__.splitlines()[0])
    args, mode = common.parse_benchmark_args(parser, argv, JOBS)
    plan = PLANS[mode]
    cache = Path(args.cache_dir)
    corpus = Path(args.corpus) if args.corpus else common.ensure_corpus(plan.preset, cache)
    cfg = method_config(plan)
    from pipelines.config import config_to_dict

    cfg_dict = config_to_dict(cfg)
    store = _store_path(cache, corpus, plan, mode)
    result = common.new_result(
        NAME, mode, {"plan": asdict(plan), "method_config": cfg_dict, "corpus": str(corpus), "store": str(store)}
    )
    log_dir = cache / "logs"
    in_process = common.ray_ready_in_process(mode)
    runs: dict[str, dict[str, Any]] = {}
    for name in plan.runs:
        payload = {
            "corpus": str(corpus),
            "store": str(store),
            "size": plan.size,
            "limit": plan.limit,
            "cfg": cfg_dict,
            "num_workers": 1 if name == "worker" else 0,
            "cache_examples": name == "local_cached",
            "out": str(cache / "scratch" / f"train-{name}"),
        }
        print(f"[bench:train] {mode}: pipelines.train ({name}) ...", flush=True)
        runs[name] = common.run_job(
            __file__, "train", job_train, payload, in_process=in_process, with_ray=True, log_dir=log_dir
        )
    print(f"[bench:train] {mode}: plain PyTorch loop ...", flush=True)
    plain_payload = {"store": str(store), "cfg": cfg_dict, "epochs": plan.epochs}
    plain = {"all": common.run_job(__file__, "plain", job_plain, plain_payload, in_process=in_process, log_dir=log_dir)}
    worker_threads = runs.get("worker", {}).get("worker_torch_threads")
    if worker_threads and worker_threads != plain["all"]["torch_threads"]:
        plain["worker_threads"] = common.run_job(
            __file__,
            "plain",
            job_plain,
            dict(plain_payload, torch_threads=worker_threads, epochs=1),
            in_process=in_process,
            log_dir=log_dir,
        )
    if not in_process:  # the allocator setting cannot be undone inside the test process
        print(f"[bench:train] {mode}: plain PyTorch loop with glibc's malloc defaults ...", flush=True)
        plain["glibc_malloc"] = common.run_job(
            __file__, "plain", job_plain, dict(plain_payload, epochs=2, glibc_malloc=True), in_process=False,
            log_dir=log_dir,
        )
    summarize(result, runs, plain)
    path = common.finish_result(result, args.results_dir)
    print(common.format_table(common.table_rows(result)))
    print(f"[bench:train] wrote {path}", flush=True)
    return result


def _end_to_end(run: dict[str, Any]) -> float:
    """Clips/s of a plain run including its one-off preparation (decode + make_examples)."""
    epochs = run["epochs"]
    return common.rate(sum(e["examples"] for e in epochs), run["prep_s"] + sum(e["loop_s"] for e in epochs))


def _steady(run: dict[str, Any]) -> float | None:
    epochs = run.get("epochs") or []
    return float(epochs[-1]["examples_per_s"]) if epochs else None


def summarize(result: dict[str, Any], runs: dict[str, dict[str, Any]], plain: dict[str, dict[str, Any]]) -> None:
    """Raw runs -> measurements, ratios, start-up targets and findings (in place)."""
    meas, comps, targets, findings = (result[k] for k in ("measurements", "comparisons", "targets", "findings"))
    for key, run in plain.items():
        label = f"plain loop, {run['torch_threads']} torch threads"
        label += ", glibc malloc" if key == "glibc_malloc" else ""
        for e in run["epochs"]:
            meas.append(
                common.measurement(
                    label,
                    "clips/s",
                    e["examples_per_s"],
                    "clips/s",
                    epoch=e["epoch"],
                    examples=e["examples"],
                    baseline=key,
                )
            )
        meas.append(common.measurement(label, "prep (decode + make_examples)", run["prep_s"], "s"))
    plain_all = _steady(plain["all"])
    for name, run in runs.items():
        label = RUN_LABELS[name]
        for e in run["epochs"]:
            meas.append(
                common.measurement(
                    f"ours {label}", "clips/s", e["examples_per_s"], "clips/s", epoch=e["epoch"], examples=e["examples"]
                )
            )
        total = sum(e["examples"] for e in run["epochs"])
        meas.append(
            common.measurement(
                f"ours {label}",
                "end-to-end clips/s",
                common.rate(total, run["wall_s"]),
                "clips/s",
                headline=True,
                reference=f"plain loop incl. prep {_end_to_end(plain['all']):.3g} clips/s",
                wall_s=run["wall_s"],
                ray_init_s=run.get("ray_init_s"),
            )
        )
        if name != "worker":
            comps.append(
                common.comparison(
                    f"training {label} vs plain loop",
                    _steady(run),
                    plain_all,
                    "clips/s",
                    0.97,
                    note="steady state: last epoch's loop",
                )
            )
        else:
            threads = run.get("worker_torch_threads")
            same = plain.get("worker_threads", plain["all"])
            comps.append(
                common.comparison(
                    f"training {label} vs plain loop ({threads} torch thread(s))",
                    _steady(run),
                    _steady(same),
                    "clips/s",
                    0.97,
                    note="same torch threads as the Ray worker",
                )
            )
            if "worker_threads" in plain:
                comps.append(
                    common.comparison(f"training {label} vs plain loop (all cores)", _steady(run), plain_all, "clips/s")
                )
        targets.append(
            common.target(
                f"training {label}: start-up (train() -> first step)", run.get("startup_s"), "s", STARTUP_TARGET_S, "<="
            )
        )
    if "glibc_malloc" in plain:
        comps.append(
            common.comparison(
                "plain loop: freed tensor memory reused vs glibc malloc defaults",
                plain_all,
                _steady(plain["glibc_malloc"]),
                "clips/s",
                note="pipelines.runtime.reuse_freed_memory, used by ours and every baseline here",
            )
        )
    counts = {name: run["epochs"][-1]["examples"] for name, run in runs.items() if run["epochs"]}
    counts["plain"] = plain["all"]["epochs"][-1]["examples"]
    if len(set(counts.values())) > 1:
        findings.append(f"examples per epoch differ between runs: {counts}")
    worker = runs.get("worker")
    if worker and worker.get("worker_torch_threads"):
        findings.append(
            f"a Ray Train worker with cpus_per_worker=1 runs torch with {worker['worker_torch_threads']} thread(s) "
            f"(Ray sets OMP_NUM_THREADS from the reservation); on a {result['machine']['cores_usable']}-core machine "
            "the rest is left to Ray Data's make_examples tasks"
        )


if __name__ == "__main__":
    main()
