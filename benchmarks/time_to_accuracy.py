"""Time to accuracy, trick by trick: image (pretrained EfficientNet-Lite0 on Fashion-MNIST) or
translation (MiniLM BERT2BERT, gettext German->English).

    python benchmarks/time_to_accuracy.py                        # image, every configuration, 5 seeds
    python benchmarks/time_to_accuracy.py --workers 2 --threads 1   # two runs at a time on a 2-core CPU
    python benchmarks/time_to_accuracy.py --seeds 1 --configs baseline,recommended   # a quick look
    python benchmarks/time_to_accuracy.py --task translation     # the same for translation
    python benchmarks/time_to_accuracy.py --first_seed 5 --configs ...   # confirm a pick on fresh seeds

Writes benchmarks/results/time_to_accuracy[_translation].{json,md,png}. Every run is the
real ``scripts/train_<task>.py`` in its own process, with the same data subset, batch,
evaluation schedule and thread count; only the configuration differs:

- ``baseline`` does what the HF ``no_trainer`` examples do: AdamW, linear decay
  without warmup, no label smoothing, no mixup, fp32, NCHW, new weights initialised
  as the library does and trained at the same LR as the rest; its LR is the best of
  a small sweep (``--sweep``), so the comparison is fair;
- ``from scratch`` is the baseline without pretrained weights (``for N epochs``: given a longer
  schedule, so that its time to target is measured, or bounded further);
- ``baseline for 1 epoch`` (image) checks how much a shorter schedule alone gives;
- ``+ <trick>`` is the baseline plus that trick alone;
- ``recommended`` is fastft's recipe with every trick that helps (the task's quickstart,
  with its own schedule length), its peak LR from ``--lr_find`` (Smith 2017) unless
  ``--recommended_lr`` is given;
- ``recommended + <trick>`` / ``recommended for N epoch(s)`` / ``recommended without <part>`` change one thing of it.

Time to target is training time only (``elapsed_s`` minus ``eval_runtime_s`` of the
evaluations so far) at the first evaluation reaching ``--target``; the target is
fixed before any run. Reported: the median over seeds with its min-max spread, the
speed-up over the baseline both as a ratio of medians and paired seed by seed, how
many seeds reached it, the optimizer steps to it (free of timing noise) and the final
metric. With ``--workers`` > 1 runs go side by side, seed by seed across the
configurations, so every configuration shares the machine alike.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from fastft import comparison, host  # noqa: E402
from fastft.comparison import paired_ratios, ratio_text, steps_to_target, time_to_target  # noqa: E402,F401
RESULTS = REPO / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Bench:
    """One task's benchmark: the flags every run shares and those that make each configuration."""

    script: str
    metric: str
    eval_data: str  # what one evaluation scores, for the table's header
    common: list[str]  # same data, model, batch and evaluation in every run
    no_trainer: list[str]  # what the transformers no_trainer example does
    tricks: dict[str, list[str]]  # each added alone to no_trainer
    recommended: list[str]  # fastft's recipe, without its LR
    variants: dict[str, list[str]]  # each added to recommended, at its LR: what one of its parts is worth
    defaults: dict[str, object]  # this task's defaults of the command-line options

    @property
    def configurations(self) -> list[str]:
        """Every name ``--configs`` accepts, in the table's order."""
        return [*self.tricks, "recommended", *self.variants]


EMA_2_EPOCHS = ["--model_ema", "true", "--num_train_epochs", "2"]
SHORT_RISE = [*EMA_2_EPOCHS, "--one_cycle_pct_start", "0.1"]  # the shorter one-cycle rise (10 %), with the EMA
HALF_BATCH = ["--per_device_train_batch_size", "32", "--lr_scaling", "linear"]  # at half the LR (linear scaling)
# recipes/image/quickstart.yaml: the weight EMA at batch 32, linear decay
LINEAR_EMA = ["--model_ema", "true", *HALF_BATCH, "--lr_scheduler_type", "linear", "--warmup_steps", "0"]
LP_FT = ["--freeze_epochs", "1", "--cache_frozen_features", "true"]  # a cached probe epoch ahead of the recipe's
LINEAR_LP_FT = [*LINEAR_EMA, *LP_FT, "--num_train_epochs", "2"]
RESTART = ["--restart_schedule_at_unfreeze", "true", "--warmup_steps", "0.1"]  # a fresh schedule after the probe
IMAGE = Bench(
    script="train_image.py", metric="eval_accuracy", eval_data="Fashion-MNIST test images",
    common=["--model_name_or_path", "fastft:efficientnet_lite0", "--dataset_name", "fastft:fashion_mnist",
            "--eval_crop_pct", "1.0", "--train_crop_scale_min", "0.6", "--hflip", "0.5",
            "--per_device_train_batch_size", "64", "--per_device_eval_batch_size", "256",
            "--reference_batch_size", "64", "--weight_decay", "0.01", "--eval_strategy", "steps",
            "--logging_steps", "1000", "--report_to", "none", "--mixed_precision", "no"],
    # transformers' run_image_classification_no_trainer.py
    no_trainer=["--optim", "adamw", "--lr_scheduler_type", "linear", "--warmup_steps", "0",
                "--label_smoothing_factor", "0", "--mixup_alpha", "0", "--cutmix_alpha", "0",
                "--channels_last", "false", "--zero_init_head", "false", "--freeze_epochs", "0"],
    tricks={
        "baseline": [],
        "baseline for 1 epoch": ["--num_train_epochs", "1"],  # is a shorter schedule alone faster?
        "from scratch": ["--pretrained", "false"],
        "from scratch for 8 epochs": ["--pretrained", "false", "--num_train_epochs", "8"],  # time it to the target
        "+ one-cycle": ["--lr_scheduler_type", "one_cycle"],
        "+ warmup and LR scaled to batch 128": ["--per_device_train_batch_size", "128", "--lr_scaling", "linear",
                                                "--warmup_steps", "0.1"],
        "+ label smoothing 0.1": ["--label_smoothing_factor", "0.1"],
        "+ mixup/cutmix": ["--mixup_alpha", "0.2", "--cutmix_alpha", "1.0"],
        "+ channels_last": ["--channels_last", "true"],
        "+ zero-init head": ["--zero_init_head", "true"],
        "+ head only then all (freeze_epochs 1)": ["--freeze_epochs", "1"],
        "+ weight EMA": ["--model_ema", "true"],
    },
    # The batch-64 image recipe: one epoch of one-cycle. recipes/image/quickstart.yaml trains as
    # "weight EMA at batch 32 with linear decay"; this stays, so that the results' commands reproduce.
    recommended=["--optim", "adamw", "--lr_scheduler_type", "one_cycle", "--label_smoothing_factor", "0.1",
                 "--channels_last", "true", "--zero_init_head", "true", "--num_train_epochs", "1"],
    variants={"recommended + weight EMA": ["--model_ema", "true"],
              "recommended for 2 epochs": ["--num_train_epochs", "2"],
              "recommended + weight EMA for 2 epochs": EMA_2_EPOCHS,
              # Candidates for a faster EMA recipe, chosen on seeds 10-11, confirmed on others.
              "recommended + weight EMA for 2 epochs and one-cycle rising 10%": SHORT_RISE,
              "recommended + weight EMA for 2 epochs and EMA decay at most 0.9": [
                  *EMA_2_EPOCHS, "--model_ema_decay", "0.9"],
              "recommended + weight EMA for 2 epochs and linear decay after 10% warmup": [
                  *EMA_2_EPOCHS, "--lr_scheduler_type", "linear", "--warmup_steps", "0.1"],
              # Candidates on top of the shorter rise, chosen on seeds 10-11, confirmed on 12-16.
              "shorter rise + 10x LR on the new head": [*SHORT_RISE, "--head_lr_scale", "10"],
              "shorter rise + layer-wise LR decay 0.9": [*SHORT_RISE, "--layer_decay", "0.9"],
              "shorter rise at batch 32": [*SHORT_RISE, *HALF_BATCH],
              # The same three changes at the quickstart's own schedule (1 epoch), to measure them at its size.
              "recommended + weight EMA and 10% rise at batch 32": [
                  "--model_ema", "true", "--one_cycle_pct_start", "0.1", *HALF_BATCH],
              # The quickstart without label smoothing, which `fastft ablate` left unclear (it stays: RESULTS).
              "weight EMA at batch 32 with linear decay and no label smoothing": [
                  *LINEAR_EMA, "--label_smoothing_factor", "0"],
              # One-cycle alone replaced by linear decay (label smoothing kept); and the quickstart after a
              # cached linear-probe epoch (LP-FT), to time that trick to the quickstart's own target.
              "weight EMA at batch 32 with linear decay": LINEAR_EMA,
              "recommended + weight EMA and 10% rise at batch 32 after a cached linear-probe epoch": [
                  "--model_ema", "true", "--one_cycle_pct_start", "0.1", *HALF_BATCH, *LP_FT,
                  "--num_train_epochs", "2"],
              # LP-FT on the quickstart as it is, with one schedule over both phases or a fresh one (and its
              # warmup) from the unfreezing, as fastai's fine_tune runs it.
              "weight EMA at batch 32 with linear decay after a cached linear-probe epoch": LINEAR_LP_FT,
              "weight EMA at batch 32 with linear decay after a cached linear-probe epoch and a restarted schedule":
                  [*LINEAR_LP_FT, *RESTART],
              # Two ways to move the pretrained layers less after the probe, as fastai's fine_tune halves its
              # LR at the unfreezing: the backbone at half the LR (the head's LR kept), or layer-wise LR decay.
              "LP-FT with a restarted schedule and the backbone at half the LR": [
                  *LINEAR_LP_FT, *RESTART, "--learning_rate", "1e-3", "--head_lr_scale", "2"],
              "LP-FT with a restarted schedule and layer-wise LR decay 0.8": [
                  *LINEAR_LP_FT, *RESTART, "--layer_decay", "0.8"],
              # The LR range test inside the run (its time counted), not a separate, untimed command.
              "recommended with learning_rate auto": ["--learning_rate", "auto"],
              "recommended with learning_rate auto over 40 steps": ["--learning_rate", "auto", "--lr_find_steps", "40"],
              # A head-only epoch before the recipe's, its features computed once or not (LP-FT, Kumar et al. 2022).
              "recommended after a head-only epoch": ["--freeze_epochs", "1", "--num_train_epochs", "2"],
              "recommended after a cached linear-probe epoch": [*LP_FT, "--num_train_epochs", "2"]},
    defaults={"target": 0.85, "max_train_samples": 10000, "max_eval_samples": 2000, "epochs": 2, "eval_steps": 20,
              "sweep": "1e-4,3e-4,1e-3,3e-3", "image_size": 64},
)
TRANSLATION = Bench(
    script="train_translation.py", metric="eval_bleu", eval_data="gettext test messages (German->English)",
    common=["--encoder_name_or_path", "fastft:minilm_l6", "--decoder_name_or_path", "fastft:minilm_l6",
            "--dataset_name", "fastft:gettext_en_de", "--source_lang", "de", "--target_lang", "en",
            "--eval_split", "test", "--max_source_length", "24", "--max_target_length", "16",
            "--max_new_tokens", "20", "--num_beams", "1", "--eval_lowercase", "true",
            "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "128",
            "--reference_batch_size", "32", "--weight_decay", "0.01", "--eval_strategy", "steps",
            "--logging_steps", "1000", "--report_to", "none", "--mixed_precision", "no"],
    # transformers' run_translation_no_trainer.py
    no_trainer=["--optim", "adamw", "--lr_scheduler_type", "linear", "--warmup_steps", "0",
                "--label_smoothing_factor", "0", "--head_lr_scale", "1", "--freeze_embeddings", "false"],
    tricks={
        "baseline": [],
        "from scratch": ["--pretrained", "false"],
        # It has not started translating after one epoch: 4 epochs bound its time well past 5x.
        "from scratch for 4 epochs": ["--pretrained", "false", "--num_train_epochs", "4"],
        "+ one-cycle": ["--lr_scheduler_type", "one_cycle"],
        "+ warmup and LR scaled to batch 64": ["--per_device_train_batch_size", "64", "--lr_scaling", "linear",
                                               "--warmup_steps", "0.05"],
        "+ label smoothing 0.1": ["--label_smoothing_factor", "0.1"],
        "+ new weights at 10x LR (head_lr_scale 10)": ["--head_lr_scale", "10"],
        "+ frozen embeddings": ["--freeze_embeddings", "true"],
        "+ weight EMA": ["--model_ema", "true"],
    },
    # recipes/translation/quickstart.yaml
    recommended=["--optim", "adamw", "--lr_scheduler_type", "linear", "--warmup_steps", "30",
                 "--label_smoothing_factor", "0.1", "--head_lr_scale", "10", "--freeze_embeddings", "true"],
    # The recipe minus one part: no part helps alone, so what each adds is seen only in the whole.
    variants={"recommended without warmup": ["--warmup_steps", "0"],
              "recommended without label smoothing": ["--label_smoothing_factor", "0"],
              "recommended without 10x LR on new weights": ["--head_lr_scale", "1"],
              "recommended without frozen embeddings": ["--freeze_embeddings", "false"],
              # Beside a baseline given --epochs 2: the baseline's time is measured, not bounded by one epoch.
              "recommended for 1 epoch": ["--num_train_epochs", "1"],
              "recommended + length-grouped batches": ["--group_by_length", "true"]},
    defaults={"target": 10.0, "max_train_samples": 11200, "max_eval_samples": 500, "epochs": 2, "eval_steps": 50,
              "sweep": "1e-4,3e-4,1e-3", "image_size": None},
)
BENCHES = {"image": IMAGE, "translation": TRANSLATION}


def command(script: str, argv: list[str]) -> list[str]:
    """scripts/<script> with these flags (the runner adds --output_dir)."""
    return [sys.executable, str(REPO / "scripts" / script), *argv]


def lr_find(script: str, argv: list[str], threads: int) -> float:
    """The LR range test's valley suggestion (fastai's default) for these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        comparison.train_process([*command(script, [*argv, "--lr_find", "true"]), "--output_dir", tmp], Path(tmp),
                                 threads, cwd=REPO)
        return json.loads((Path(tmp) / "lr_find.json").read_text())["suggested"]["valley"]


def flag(argv: list[str], name: str) -> str:
    """The value a run gets for ``--name``: the last one given, as argparse takes it."""
    return argv[len(argv) - 1 - argv[::-1].index(f"--{name}") + 1]


def selected(valid: list[str], names: str | None) -> list[str]:
    """The comma-separated --configs names in their order (None: every valid one); an unknown name is a
    one-line error that lists the valid ones."""
    chosen = [n.strip() for n in names.split(",") if n.strip()] if names else list(valid)
    unknown = [n for n in chosen if n not in valid]
    if unknown:
        raise SystemExit(f"--configs: unknown configuration(s) {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(valid)}")
    return chosen


def summarise(name: str, lr: float, argv: list[str], rows_per_seed: list[list[dict]], target: float,
              metric: str) -> dict:
    """comparison.summarise, with the LR, epochs and batch the table shows."""
    stated = flag(argv, "learning_rate") if "--learning_rate" in argv else lr
    return {**comparison.summarise(name, rows_per_seed, target, metric),
            "learning_rate": "auto" if stated == "auto" else float(stated), "epochs": flag(argv, "num_train_epochs"),
            "batch": flag(argv, "per_device_train_batch_size")}


def markdown(results: list[dict], meta: dict) -> str:
    baseline = next(r for r in results if r["config"] == "baseline")
    base = baseline["median_s"]
    size = f", {meta['image_size']} px" if meta.get("image_size") else ""
    first = meta.get("first_seed", 0)
    seeds = f"{meta['seeds']} seeds" + (f" ({first}-{first + meta['seeds'] - 1})" if first else "")
    lines = [f"Target {meta['metric']} >= {meta['target']} on {meta['eval_samples']} {meta['eval_data']}; "
             f"{meta['train_samples']} training samples{size}, "
             f"{meta['threads']} thread(s) per run, {meta['workers']} run(s) at a time, {seeds}; "
             f"{meta['machine']}; {meta['date']}.", "",
             "| configuration | epochs | batch | LR | reached | median time to target (s) | spread (s) | "
             "vs baseline (ratio of medians) | vs baseline, paired by seed: median (min-max) | "
             f"median steps to target | final {meta['metric']} (median, min-max) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        median, spread = comparison.seconds_text(r)
        speedup = (f"{base / r['median_s']:.2f}x" if r["median_s"] not in (0, float("inf"))
                   and base != float("inf") else "-")
        steps = "never" if r["median_steps"] == float("inf") else f"{r['median_steps']:.0f}"
        lr = r["learning_rate"] if isinstance(r["learning_rate"], str) else f"{r['learning_rate']:.2g}"
        lines.append(f"| {r['config']} | {r['epochs']} | {r['batch']} | {lr} | "
                     f"{r['reached']}/{r['seeds']} | {median} | {spread} | {speedup} | "
                     f"{ratio_text(paired_ratios(baseline['times_s'], r['times_s']))} | {steps} | "
                     f"{comparison.final_text(r)} |")
    return "\n".join(lines) + "\n"


def run_all(bench: Bench, a: argparse.Namespace, configs: list[str], common: list[str],
            runs: comparison.Runs) -> tuple[list[dict], dict]:
    """The baseline's LR sweep, then every configuration's seeds; (summaries, sweep)."""
    metric = bench.metric
    seeds = range(a.first_seed, a.first_seed + a.seeds)

    def submit(extra: list[str], lr: float, seed: int) -> concurrent.futures.Future:
        # The LR before the configuration's own flags, so that one (learning_rate auto) may replace it.
        argv = [*common, "--learning_rate", str(lr), *extra, "--seed", str(seed)]
        # Every configuration is evaluated after the same number of training samples, whatever its batch.
        batch, common_batch = (int(flag(x, "per_device_train_batch_size")) for x in (argv, common))
        if batch != common_batch:
            argv += ["--eval_steps", str(max(1, round(a.eval_steps * common_batch / batch)))]
        # the same command runs once: the sweep's run at the chosen LR doubles as baseline seed 0
        return runs.submit(command(bench.script, argv))

    recommended = {"recommended": bench.recommended,
                   **{name: [*bench.recommended, *flags] for name, flags in bench.variants.items()}}
    # The recommended LR's range test runs beside the sweep; it is not timed.
    found = (None if a.recommended_lr or not set(configs) & set(recommended) else
             runs.pool.submit(lr_find, bench.script, [*common, *bench.recommended, "--seed", "0"], a.threads))
    # The baseline's LR: best final metric of a one-seed sweep (ties: the faster to target).
    sweep = {} if a.baseline_lr else {float(x): submit(bench.no_trainer, float(x), 0) for x in a.sweep.split(",")}
    if a.recommended_lr and sweep:  # independent of the sweep: queued behind it, so no worker idles while it ends
        for seed in seeds:
            for name in (n for n in configs if n in recommended):
                submit(recommended[name], a.recommended_lr, seed)
    for lr, future in sweep.items():
        rows = future.result()
        reached = time_to_target(rows, a.target, metric)
        sweep[lr] = (rows[-1][metric], -(reached if reached is not None else float("inf")))
    base_lr = a.baseline_lr or max(sweep, key=sweep.get)
    print(f"sweep (final {metric}): {sweep}; baseline LR {base_lr:g}", flush=True)
    plans = {name: (recommended[name], a.recommended_lr or found.result()) if name in recommended
             else ([*bench.no_trainer, *bench.tricks[name]], base_lr) for name in configs}
    # Seed-major order: configurations take turns, so a slow spell of the machine hits them alike.
    futures = {(name, seed): submit(extra, lr, seed) for seed in seeds for name, (extra, lr) in plans.items()}
    results = []
    for name, (extra, lr) in plans.items():
        per_seed = [futures[name, seed].result() for seed in seeds]
        for seed, rows in zip(seeds, per_seed):
            print(f"{name} lr={lr:g} seed={seed}: time to target {time_to_target(rows, a.target, metric)}, "
                  f"final {rows[-1][metric]:.4f}", flush=True)
        results.append(summarise(name, lr, [*common, *extra], per_seed, a.target, metric))
    return results, sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(BENCHES), default="image", help="which task's benchmark")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration")
    parser.add_argument("--first_seed", type=int, default=0, help="seeds run are first_seed .. first_seed + seeds - 1 "
                        "(fresh seeds confirm a configuration chosen on others)")
    parser.add_argument("--configs", default=None, help="comma-separated configurations to run (baseline is "
                        "always run); default: all of the task's")
    parser.add_argument("--target", type=float, help="metric value that counts as reached (image: eval_accuracy "
                        f"{IMAGE.defaults['target']}, translation: eval_bleu {TRANSLATION.defaults['target']})")
    parser.add_argument("--max_train_samples", type=int, help="training subset size")
    parser.add_argument("--max_eval_samples", type=int, help="evaluation samples per evaluation")
    parser.add_argument("--epochs", type=int, help="epochs per run")
    parser.add_argument("--image_size", type=int, help="image task: training and evaluation resolution")
    parser.add_argument("--eval_steps", type=int, help="evaluate every N optimizer steps")
    parser.add_argument("--sweep", help="baseline LRs to sweep (seed 0), comma-separated")
    parser.add_argument("--recommended_lr", type=float, default=None, help="skip lr_find and use this peak LR")
    parser.add_argument("--baseline_lr", type=float, default=None, help="skip the sweep and use this baseline LR "
                        "(e.g. the one an earlier run's sweep chose)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads per run")
    parser.add_argument("--workers", type=int, default=1, help="runs side by side (workers x threads <= cores)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the json, md and png")
    parser.add_argument("--stem", help="their file name (default time_to_accuracy, time_to_accuracy_<task>)")
    a = parser.parse_args(argv)
    bench = BENCHES[a.task]
    for key, value in bench.defaults.items():  # the task's default for every option left unset
        if getattr(a, key) is None:
            setattr(a, key, value)
    if a.image_size and a.task != "image":
        parser.error("--image_size is for --task image")
    configs = selected(bench.configurations, a.configs)
    configs = ["baseline", *[c for c in configs if c != "baseline"]]
    common = [*bench.common, *(["--image_size", str(a.image_size)] if a.image_size else []),
              "--max_train_samples", str(a.max_train_samples), "--max_eval_samples", str(a.max_eval_samples),
              "--num_train_epochs", str(a.epochs), "--eval_steps", str(a.eval_steps)]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp, comparison.Runs(Path(tmp), a.workers, a.threads, cwd=REPO) as runs:
        try:
            results, sweep = run_all(bench, a, configs, common, runs)
        except comparison.RunFailed as err:
            raise SystemExit(str(err)) from None
    import torch

    meta = {"task": a.task, "metric": bench.metric, "eval_data": bench.eval_data, "target": a.target,
            "train_samples": a.max_train_samples, "eval_samples": a.max_eval_samples, "epochs": a.epochs,
            "batch": bench.common[bench.common.index("--per_device_train_batch_size") + 1],
            "image_size": a.image_size, "threads": a.threads, "workers": a.workers, "seeds": a.seeds,
            "first_seed": a.first_seed,
            "sweep": {str(k): v[0] for k, v in sweep.items()},
            "machine": f"{host.describe()}, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.time() - started)}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.stem or "time_to_accuracy" + ("" if a.task == "image" else f"_{a.task}")
    (a.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    table = markdown(results, meta)
    (a.out / f"{stem}.md").write_text(table)
    comparison.plot(results, a.out / f"{stem}.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
