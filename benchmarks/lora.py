"""LoRA against full fine-tuning (and gradient checkpointing, torch.compile, group_by_length) on the quickstarts.

    python benchmarks/lora.py                                # ASR and translation quickstarts, 3 seeds
    python benchmarks/lora.py --task speech --seeds 1 --size reduced   # the test suite's size, a quick look
    python benchmarks/lora.py --configs full,lora,"full + gradient checkpointing"
    python benchmarks/lora.py --task speech --size reduced --seeds 1 --extra "--freeze_encoder false ..."  # memory

Every run is the task's quickstart recipe through ``scripts/train_<task>.py`` in its own
process, with the same seed, data, batch and thread count; only the configuration
differs. For each: time to the target (training time, evaluations excluded), the final
metric, the trainable parameters (``metrics.json``) and the process's peak resident memory
(``os.wait4``'s ``ru_maxrss``: weights, optimizer state, activations and everything else).
Seeds run one after another, interleaving the configurations, so every configuration
shares the machine alike. Writes benchmarks/results/lora_<task>_<size>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from fastft import host  # noqa: E402
from fastft import reporting  # noqa: E402
from fastft.comparison import paired_ratios, ratio_text, time_to_target  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
# task -> (script, recipe, metric, higher is better, sizes: name -> (extra flags, target))
TASKS = {
    "speech": ("train_speech.py", "recipes/speech/quickstart.yaml", "eval_wer", False, {
        "full": ([], 17.0),
        # tests/test_speech_quickstart.py: 320 clips x 2 epochs (40 steps), 96 test clips
        "reduced": (["--max_train_samples", "320", "--max_eval_samples", "96"], 17.0)}),
    "translation": ("train_translation.py", "recipes/translation/quickstart.yaml", "eval_bleu", True, {
        "full": (["--eval_strategy", "steps", "--eval_steps", "100"], 10.0),
        # tests/test_translation_quickstart.py's size, 200 steps on 6,400 pairs and 200 test messages, with
        # time_to_accuracy.py's reduced translation target (BLEU 2, evaluated every 40 steps)
        "reduced": (["--max_steps", "200", "--max_train_samples", "6400", "--max_eval_samples", "200",
                     "--eval_strategy", "steps", "--eval_steps", "40"], 2.0)}),
}
LORA = ["--peft", "lora", "--lora_r", "16", "--lora_alpha", "32"]
CONFIGS = {
    "full": [],
    "lora": LORA,
    # LoRA usually wants a higher LR than full fine-tuning; the new head keeps the recipe's LR (set in main)
    "lora at 10x LR": LORA,
    "full + gradient checkpointing": ["--gradient_checkpointing", "true"],
    "full + torch_compile (inductor)": ["--torch_compile", "true"],
    "full + group_by_length": ["--group_by_length", "true"],  # less padding (benchmarks/padding.py)
}
DEFAULT_CONFIGS = "full,lora,lora at 10x LR,full + gradient checkpointing"


def run(script: str, argv: list[str], out: Path, threads: int) -> dict:
    """One training run in its own process: its eval rows, final metrics, wall time and peak memory."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, str(REPO / "scripts" / script), *argv, "--output_dir", str(out), "--report_to", "none"]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN would be all of them)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            raise SystemExit(f"run failed ({' '.join(cmd)}):\n{log.read()[-3000:]}")
    return {"rows": reporting.read_jsonl(out / reporting.EVAL_LOG),
            "final": json.loads((out / reporting.FINAL).read_text()),
            "wall_s": time.perf_counter() - started, "peak_rss_mib": usage.ru_maxrss / 1024}


def ten_times_lr(recipe: str) -> list[str]:
    """10x the recipe's LR for the adapters; a recipe's head_lr_scale / 10, so its new head trains as in the recipe."""
    import yaml

    fields = yaml.safe_load((REPO / recipe).read_text())
    flags = ["--learning_rate", str(10 * float(fields["learning_rate"]))]
    if "head_lr_scale" in fields:  # a model without new weights refuses the field
        flags += ["--head_lr_scale", str(float(fields["head_lr_scale"]) / 10)]
    return flags


def summary(name: str, runs: list[dict], metric: str, target: float, higher: bool) -> dict:
    sign = 1 if higher else -1  # time_to_target counts "reached" as >=: compare signed values
    signed = [[{**r, metric: sign * r[metric]} for r in run["rows"]] for run in runs]
    times = [time_to_target(rows, sign * target, metric) for rows in signed]
    finals = [run["final"][metric] for run in runs]
    return {"config": name, "times_s": times, "finals": finals,
            "reached": sum(t is not None for t in times),
            "median_s": statistics.median([t if t is not None else float("inf") for t in times]),
            "final_median": statistics.median(finals),
            "trainable_parameters": runs[0]["final"].get("trainable_parameters"),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
            "wall_s": statistics.median(r["wall_s"] for r in runs)}


def markdown(results: list[dict], meta: dict) -> str:
    full = next(r for r in results if r["config"] == "full")
    lines = [f"Target {meta['metric']} {'>=' if meta['higher'] else '<='} {meta['target']}; {meta['recipe']} at "
             f"{meta['size']} size; {meta['threads']} thread(s), one run at a time, {meta['seeds']} seed(s); "
             f"{meta['machine']}; {meta['date']}; `{meta['command']}`.", "",
             "| configuration | trainable parameters | peak memory (MiB) | memory vs full | reached | "
             "median time to target (s) | vs full, paired by seed | final (median) | wall (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = ratio_text(paired_ratios(full["times_s"], r["times_s"])) if r is not full else "1"
        median = "-" if r["median_s"] == float("inf") else f"{r['median_s']:.1f}"
        lines.append(f"| {r['config']} | {r['trainable_parameters']:,} | {r['peak_rss_mib']:.0f} | "
                     f"{r['peak_rss_mib'] / full['peak_rss_mib']:.2f} | {r['reached']}/{len(r['times_s'])} | "
                     f"{median} | {ratio} | {r['final_median']:.2f} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=[*TASKS, "all"], default="all")
    p.add_argument("--size", choices=["full", "reduced"], default="full")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated, of: {', '.join(CONFIGS)}")
    p.add_argument("--stem", default=None, help="result file name (default lora_<task>_<size>)")
    p.add_argument("--extra", default="", help="flags added to every run, e.g. \"--freeze_encoder false\" to "
                                               "measure memory with the encoder trained")
    a = p.parse_args(argv)
    names = [c.strip() for c in a.configs.split(",")]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown or "full" not in names:
        p.error(f"--configs must include full and name only {', '.join(CONFIGS)}; got {', '.join(unknown) or a.configs}")
    for task in (TASKS if a.task == "all" else [a.task]):
        script, recipe, metric, higher, sizes = TASKS[task]
        size_flags, target = sizes[a.size]
        runs: dict[str, list[dict]] = {name: [] for name in names}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(a.seeds):  # seed by seed, across the configurations
                for name in names:
                    flags = list(CONFIGS[name])
                    if "10x LR" in name:
                        flags += ten_times_lr(recipe)
                    argv_run = ["--config", recipe, *size_flags, *shlex.split(a.extra), *flags, "--seed", str(seed)]
                    runs[name].append(run(script, argv_run, Path(tmp) / f"{len(runs[name])}-{name}", a.threads))
                    print(f"{task} seed {seed} {name}: {runs[name][-1]['final'][metric]:.2f}", flush=True)
        results = [summary(name, runs[name], metric, target, higher) for name in names]
        meta = {"task": task, "recipe": recipe, "metric": metric, "higher": higher, "target": target,
                "size": a.size, "seeds": a.seeds, "threads": a.threads, "machine": host.describe(),
                "date": time.strftime("%Y-%m-%d"),
                "command": shlex.join(["python", "benchmarks/lora.py", *(argv if argv is not None else sys.argv[1:])])}
        stem = a.stem or f"lora_{task}_{a.size}"
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        (RESULTS / f"{stem}.md").write_text(markdown(results, meta))
        print(markdown(results, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
