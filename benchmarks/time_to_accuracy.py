"""Time to accuracy, trick by trick, on the image task (pretrained EfficientNet-Lite0, Fashion-MNIST).

    python benchmarks/time_to_accuracy.py                        # every configuration, 5 seeds
    python benchmarks/time_to_accuracy.py --seeds 1 --configs baseline,recommended   # a quick look

Writes benchmarks/results/time_to_accuracy.{json,md,png}. Every run is the real
``scripts/train_image.py`` in its own process, with the same data subset, batch,
evaluation schedule and thread count; only the configuration differs:

- ``baseline`` does what the HF ``no_trainer`` examples do: AdamW, linear decay
  without warmup, no label smoothing, no mixup, fp32, NCHW, a randomly initialised
  head; its LR is the best of a small sweep (``--sweep``), so the comparison is fair;
- ``from scratch`` is the baseline without pretrained weights;
- ``+ <trick>`` is the baseline plus that trick alone;
- ``recommended`` is fastft's recipe with every trick that helps, its peak LR from
  ``--lr_find`` (Smith 2017) unless ``--recommended_lr`` is given.

Time to target is training time only (``elapsed_s`` minus ``eval_runtime_s`` of the
evaluations so far) at the first evaluation reaching ``--target``; the target is
fixed before any run. Reported: the median over seeds with its min-max spread, how
many seeds reached it, and the final accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastft import reporting  # noqa: E402
RESULTS = REPO / "benchmarks" / "results"
METRIC = "eval_accuracy"

# Same data, model, resolution, batch and evaluation schedule for every configuration.
COMMON = ["--model_name_or_path", "fastft:efficientnet_lite0", "--dataset_name", "fastft:fashion_mnist",
          "--image_size", "64", "--eval_crop_pct", "1.0", "--train_crop_scale_min", "0.6", "--hflip", "0.5",
          "--per_device_train_batch_size", "64", "--per_device_eval_batch_size", "256",
          "--reference_batch_size", "64", "--weight_decay", "0.01", "--eval_strategy", "steps",
          "--logging_steps", "1000", "--report_to", "none", "--mixed_precision", "no"]
# What transformers' run_image_classification_no_trainer.py does.
NO_TRAINER = ["--optim", "adamw", "--lr_scheduler_type", "linear", "--warmup_steps", "0",
              "--label_smoothing_factor", "0", "--mixup_alpha", "0", "--cutmix_alpha", "0",
              "--channels_last", "false", "--zero_init_head", "false", "--freeze_epochs", "0"]
TRICKS = {
    "baseline": [],
    "from scratch": ["--pretrained", "false"],
    "+ one-cycle": ["--lr_scheduler_type", "one_cycle"],
    "+ warmup, LR scaled to batch 128": ["--per_device_train_batch_size", "128", "--lr_scaling", "linear",
                                         "--warmup_steps", "0.1"],
    "+ label smoothing 0.1": ["--label_smoothing_factor", "0.1"],
    "+ mixup/cutmix": ["--mixup_alpha", "0.2", "--cutmix_alpha", "1.0"],
    "+ channels_last": ["--channels_last", "true"],
    "+ zero-init head": ["--zero_init_head", "true"],
    "+ head only, then all (freeze_epochs 1)": ["--freeze_epochs", "1"],
}
# fastft's recommendation for a short fine-tuning run: what the quickstart recipe uses.
RECOMMENDED = ["--optim", "adamw", "--lr_scheduler_type", "one_cycle", "--label_smoothing_factor", "0.1",
               "--channels_last", "true", "--zero_init_head", "true"]


def train(argv: list[str], out: Path, threads: int) -> None:
    """scripts/train_image.py in a fresh process with this many threads; stops the benchmark if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, str(REPO / "scripts" / "train_image.py"), *argv, "--output_dir", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")


def run_once(argv: list[str], out: Path, threads: int) -> list[dict]:
    """One training run; its evaluation rows."""
    train(argv, out, threads)
    return reporting.read_jsonl(out / reporting.EVAL_LOG)


def time_to_target(rows: list[dict], target: float) -> float | None:
    """Training seconds (evaluation excluded) at the first evaluation reaching the target."""
    evaluating = 0.0
    for row in rows:
        evaluating += row.get("eval_runtime_s", 0.0)
        if row[METRIC] >= target:
            return row["elapsed_s"] - evaluating
    return None


def lr_find(argv: list[str], threads: int) -> float:
    """The LR range test's valley suggestion (fastai's default) for these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        train([*argv, "--lr_find", "true"], Path(tmp), threads)
        return json.loads((Path(tmp) / "lr_find.json").read_text())["suggested"]["valley"]


def summarise(name: str, lr: float, rows_per_seed: list[list[dict]], target: float) -> dict:
    times = [time_to_target(rows, target) for rows in rows_per_seed]
    reached = sorted(t for t in times if t is not None)
    finals = [rows[-1][METRIC] for rows in rows_per_seed]
    return {"config": name, "learning_rate": lr, "seeds": len(times), "reached": len(reached),
            # A seed that never reaches the target counts as infinitely slow in the median.
            "median_s": statistics.median([t if t is not None else float("inf") for t in times]),
            "min_s": reached[0] if reached else None, "max_s": reached[-1] if reached else None,
            "final_median": statistics.median(finals), "final_min": min(finals), "final_max": max(finals),
            "times_s": times, "finals": finals}


def markdown(results: list[dict], meta: dict) -> str:
    base = next(r for r in results if r["config"] == "baseline")["median_s"]
    lines = [f"Target {METRIC} >= {meta['target']} on {meta['eval_samples']} Fashion-MNIST test images; "
             f"{meta['train_samples']} training images, {meta['epochs']} epochs, batch 64, 64 px, "
             f"{meta['threads']} threads, {meta['seeds']} seeds; {meta['machine']}; {meta['date']}.", "",
             "| configuration | LR | reached | median time to target (s) | spread (s) | vs baseline | "
             "final accuracy (median, min-max) |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        median = "never" if r["median_s"] == float("inf") else f"{r['median_s']:.0f}"
        spread = f"{r['min_s']:.0f}-{r['max_s']:.0f}" if r["reached"] else "-"
        speedup = (f"{base / r['median_s']:.2f}x" if r["median_s"] not in (0, float("inf"))
                   and base != float("inf") else "-")
        lines.append(f"| {r['config']} | {r['learning_rate']:.2g} | {r['reached']}/{r['seeds']} | {median} | "
                     f"{spread} | {speedup} | {r['final_median']:.4f} ({r['final_min']:.4f}-{r['final_max']:.4f}) |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(results) + 1))
    names = [r["config"] for r in results]
    for i, r in enumerate(results):
        times = [t for t in r["times_s"] if t is not None]
        ax.scatter(times, [i] * len(times), color="tab:blue", alpha=0.6)
        if r["median_s"] != float("inf"):
            ax.scatter([r["median_s"]], [i], color="black", marker="|", s=300)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("training seconds to target (dots: seeds, bar: median)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration")
    parser.add_argument("--configs", default=",".join([*TRICKS, "recommended"]),
                        help="comma-separated configurations to run (baseline is always run)")
    parser.add_argument("--target", type=float, default=0.85, help=f"{METRIC} that counts as reached")
    parser.add_argument("--max_train_samples", type=int, default=10000, help="training subset size")
    parser.add_argument("--max_eval_samples", type=int, default=2000, help="test images per evaluation")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument("--eval_steps", type=int, default=20, help="evaluate every N optimizer steps")
    parser.add_argument("--sweep", default="1e-4,3e-4,1e-3,3e-3", help="baseline LRs to sweep (seed 0)")
    parser.add_argument("--recommended_lr", type=float, default=None, help="skip lr_find and use this peak LR")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads per run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the json, md and png")
    a = parser.parse_args(argv)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(TRICKS) - {"recommended"})
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; valid: {', '.join([*TRICKS, 'recommended'])}")
    configs = ["baseline", *[c for c in configs if c != "baseline"]]
    common = [*COMMON, "--max_train_samples", str(a.max_train_samples), "--max_eval_samples",
              str(a.max_eval_samples), "--num_train_epochs", str(a.epochs), "--eval_steps", str(a.eval_steps)]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        done: dict[tuple, list[dict]] = {}  # the sweep's seed-0 run at the chosen LR is the baseline's too

        def runs(name: str, extra: list[str], lr: float, seeds: range) -> list[list[dict]]:
            out = []
            for seed in seeds:
                argv = [*common, *extra, "--learning_rate", str(lr), "--seed", str(seed)]
                if tuple(argv) not in done:
                    done[tuple(argv)] = run_once(argv, tmp / str(len(done)), a.threads)
                rows = done[tuple(argv)]
                print(f"{name} lr={lr:g} seed={seed}: time to target {time_to_target(rows, a.target)}, "
                      f"final {rows[-1][METRIC]:.4f}", flush=True)
                out.append(rows)
            return out

        # The baseline's LR: best final accuracy of a one-seed sweep (ties: the faster to target).
        sweep = {}
        for lr in (float(x) for x in a.sweep.split(",")):
            rows = runs("sweep", NO_TRAINER, lr, range(1))[0]
            reached = time_to_target(rows, a.target)
            sweep[lr] = (rows[-1][METRIC], -(reached if reached is not None else float("inf")))
        base_lr = max(sweep, key=sweep.get)
        results = []
        for name in configs:
            if name == "recommended":
                lr = a.recommended_lr or lr_find([*common, *RECOMMENDED, "--seed", "0"], a.threads)
                results.append(summarise(name, lr, runs(name, RECOMMENDED, lr, range(a.seeds)), a.target))
            else:
                results.append(summarise(name, base_lr, runs(name, [*NO_TRAINER, *TRICKS[name]], base_lr,
                                                              range(a.seeds)), a.target))
    import torch

    meta = {"target": a.target, "train_samples": a.max_train_samples, "eval_samples": a.max_eval_samples,
            "epochs": a.epochs, "threads": a.threads, "seeds": a.seeds, "sweep": {str(k): v[0] for k, v in sweep.items()},
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.time() - started)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "time_to_accuracy.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    table = markdown(results, meta)
    (a.out / "time_to_accuracy.md").write_text(table)
    plot(results, a.out / "time_to_accuracy.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
