"""Training throughput by precision: fp32 vs bf16 vs fp16 (and channels_last), through the fastft engine.

    python benchmarks/precision_throughput.py     # on a GPU: ResNet-50 and ViT-B/16 at 224 px
    python benchmarks/precision_throughput.py --models small --batch 32   # what a CPU can run

Writes benchmarks/results/precision_throughput[_<device>].{json,md}. Every variant trains the
same timm model on the same in-memory batch through ``fastft.engine.Trainer`` (accelerate's
mixed precision, the engine's channels_last), interleaved repeat by repeat; reported are the
median images per second, the median of the per-repeat ratios to fp32 (runs next to each other
in time share the machine's state) and, on a GPU, the peak memory. fp16 needs a GPU:
accelerate ignores it on a CPU, which fastft refuses.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastft import host  # noqa: E402
from engine_overhead import DEVICE, MODEL_SETS, RESULTS, _paired, fastft_run, make_data  # noqa: E402

VARIANTS = {  # name -> (mixed_precision, channels_last)
    "fp32": ("no", False),
    "bf16": ("bf16", False),
    "fp16": ("fp16", False),
    "fp32 + channels_last": ("no", True),
    "bf16 + channels_last": ("bf16", True),
}


def measure(arch: str, size: int, data: Any, batch: int, steps: int, warmup: int, precision: str,
            channels_last: bool) -> tuple[float, float | None]:
    """(images per second after warm-up, peak GPU memory in GiB or None on a CPU) for one run."""
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps_per_s, _ = fastft_run(arch, size, data, batch, steps, warmup, seed=0, precision=precision,
                                channels_last=channels_last)
    peak = torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else None
    return steps_per_s * batch, peak


def main(argv: list[str] | None = None) -> dict[str, Any]:
    gpu = DEVICE.type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", choices=sorted(MODEL_SETS), default="large" if gpu else "small",
                        help="small: resnet18 and vit_tiny at 64 px; large: resnet50 and ViT-B/16 at 224 px")
    parser.add_argument("--variants", default=",".join(v for v in VARIANTS if gpu or "fp16" not in v),
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--batch", type=int, default=128 if gpu else 32, help="per-step batch size")
    parser.add_argument("--steps", type=int, default=40 if gpu else 12, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=10 if gpu else 4, help="steps left out of each run's timing")
    parser.add_argument("--repeats", type=int, default=5 if gpu else 3, help="interleaved repeats")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the json and md")
    opts = parser.parse_args(argv)
    variants = [v.strip() for v in opts.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
        if VARIANTS[v][0] == "fp16" and not gpu:
            parser.error(f"variant {v!r} needs a GPU (accelerate ignores fp16 on a CPU)")
    if opts.repeats < 2:
        parser.error("--repeats must be at least 2 (the ratios' spread needs two)")
    if opts.warmup >= opts.steps:
        parser.error(f"--warmup {opts.warmup} must be below --steps {opts.steps}")
    device = torch.cuda.get_device_name() if gpu else "cpu"
    report: dict[str, Any] = {"device": host.describe(), "batch": opts.batch, "steps": opts.steps,
                              "warmup": opts.warmup, "repeats": opts.repeats, "torch": torch.__version__,
                              "date": time.strftime("%Y-%m-%d"), "models": {}}
    for name, (arch, size) in MODEL_SETS[opts.models].items():
        data = make_data(opts.batch * (opts.steps + 1), size)
        rates: dict[str, list[float]] = {v: [] for v in variants}
        peaks: dict[str, float | None] = {}
        for r in range(opts.repeats):
            for v in variants:
                rate, peaks[v] = measure(arch, size, data, opts.batch, opts.steps, opts.warmup, *VARIANTS[v])
                rates[v].append(rate)
            print(f"{name} repeat {r + 1}: " + ", ".join(f"{v} {x[-1]:.1f} img/s" for v, x in rates.items()),
                  flush=True)
        base = variants[0]
        report["models"][name] = {
            "images_per_s": rates, "median": {v: statistics.median(x) for v, x in rates.items()},
            "peak_memory_gib": peaks,
            f"vs_{base}": {v: _paired(rates[v], rates[base]) for v in variants}}
    stem = "precision_throughput" + ("_" + device.replace(" ", "_").lower() if gpu else "_cpu")
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    table = markdown(report, variants)
    (opts.out / f"{stem}.md").write_text(table)
    print(table)
    return report


def markdown(report: dict[str, Any], variants: list[str]) -> str:
    base = variants[0]
    lines = [f"{report['device']}, batch {report['batch']}, {report['steps']} steps of which {report['warmup']} "
             f"warm-up, {report['repeats']} interleaved repeats, torch {report['torch']}, {report['date']}.", "",
             f"| model | variant | images/s (median) | vs {base} (median, IQR) | peak memory (GiB) |",
             "|---|---|---:|---:|---:|"]
    for name, m in report["models"].items():
        for v in variants:
            ratio = m[f"vs_{base}"][v]
            peak = m["peak_memory_gib"][v]
            lines.append(f"| {name} | {v} | {m['median'][v]:.1f} | {ratio['median']:.2f}x "
                         f"({ratio['q1']:.2f}-{ratio['q3']:.2f}) | {'-' if peak is None else f'{peak:.1f}'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
