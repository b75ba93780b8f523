"""Engine overhead: fastft vs a plain PyTorch loop vs the HF Trainer, same model, data and batch.

    python benchmarks/engine_overhead.py            # writes benchmarks/results/engine_overhead.{json,md,png}
    python benchmarks/engine_overhead.py --models large --mixed_precision bf16   # on a GPU

All three run on the GPU when there is one (else the CPU), at the same precision.

First it checks that fastft and the plain loop follow the same loss trajectory (full-batch
steps, so data order cannot differ). Then it times the three interleaved (A B C A B C ...),
several repeats after warm-up, the same optimizer (SGD, Nesterov momentum 0.9), thread
count and no evaluation, and reports the median optimizer steps per second and the median of
the per-repeat ratios: runs next to each other in time share the machine's state, so pairing
them cancels the slow drift of a shared VM's speed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from fastft import host  # noqa: E402
from fastft import reporting  # noqa: E402
from fastft.config import TrainingArguments  # noqa: E402
from fastft.engine import Trainer  # noqa: E402
from fastft.tasks.base import Task  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODEL_SETS = {  # name -> (timm architecture, image size): a convolutional network and a transformer
    "small": {"resnet18 (conv)": ("resnet18", 64), "vit_tiny (transformer)": ("vit_tiny_patch16_224", 64)},
    "large": {"resnet50 (conv)": ("resnet50", 224), "vit_base_patch16 (transformer)": ("vit_base_patch16_224", 224)},
}
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def sync() -> None:
    """Wait for queued GPU work, so a clock reading covers it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def make_model(arch: str, size: int, seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    kwargs = {"img_size": size} if "vit" in arch else {}
    return timm.create_model(arch, num_classes=10, **kwargs)


def make_data(n: int, size: int, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))


@dataclasses.dataclass
class SyntheticArguments:
    arch: str
    size: int


class SyntheticTask(Task):
    """In-memory tensors and a timm model: what every framework gets alike."""

    def __init__(self, args: TrainingArguments, arch: str, size: int, data: Any, seed: int):
        super().__init__(SyntheticArguments(arch, size), args)
        self.arch, self.size, self.data, self.seed = arch, size, data, seed

    def num_train_samples(self) -> int:
        return len(self.data)

    def load_data(self):
        return self.data, torch.utils.data.Subset(self.data, range(2))

    def build_model(self):
        return make_model(self.arch, self.size, self.seed)

    def collate(self, examples):
        x, y = zip(*examples)
        x = torch.stack(x)
        return {"pixel_values": x.contiguous(memory_format=torch.channels_last) if self.args.channels_last else x,
                "labels": torch.stack(y)}

    def training_loss(self, model, batch):
        return F.cross_entropy(model(batch["pixel_values"]), batch["labels"], reduction="sum")

    def evaluation_step(self, model, batch):
        logits = model(batch["pixel_values"])
        return {"loss": F.cross_entropy(logits, batch["labels"], reduction="none")}

    def compute_metrics(self, outputs):
        return {}

    def head_parameters(self, model):
        return model.get_classifier().parameters()

    def save_model(self, model, output_dir):
        pass


def fastft_run(arch: str, size: int, data: Any, batch: int, steps: int, warmup: int, seed: int,
               shuffle: bool = True, precision: str = "no", channels_last: bool = False) -> tuple[float, list[float]]:
    """(steps per second after warm-up, per-step losses) through the fastft engine."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch,
                                 learning_rate=0.01, optim="sgd", momentum=0.9, max_grad_norm=0,
                                 lr_scheduler_type="constant", eval_strategy="no", logging_steps=1 if not shuffle
                                 else warmup, seed=seed, save_total_limit=None, mixed_precision=precision,
                                 channels_last=channels_last)
        Trainer(SyntheticTask(args, arch, size, data, seed), args).fit()
        rows = reporting.read_jsonl(Path(out) / reporting.TRAIN_LOG)
    for reset in (AcceleratorState, GradientState):
        reset._reset_state()
    PartialState._reset_state()
    at = {r["step"]: r["elapsed_s"] for r in rows}
    rate = (steps - warmup) / (at[steps] - at[warmup]) if warmup in at else float("nan")
    return rate, [r["loss"] for r in rows]


def plain_run(arch: str, size: int, data: Any, batch: int, steps: int, warmup: int, seed: int,
              shuffle: bool = True, precision: str = "no") -> tuple[float, list[float]]:
    """The loop a user would write by hand: DataLoader, forward, backward, step, LR scheduler
    (under autocast, with a gradient scaler for fp16, when mixed)."""
    model = make_model(arch, size, seed).to(DEVICE).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=shuffle,
                                         generator=torch.Generator().manual_seed(seed))
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=precision == "fp16")
    losses, t = [], 0
    while t < steps:
        for x, y in loader:
            if t == warmup:
                sync()
                start = time.perf_counter()
            x, y = x.to(DEVICE, non_blocking=True), y.to(DEVICE, non_blocking=True)
            with torch.autocast(DEVICE.type, dtype=DTYPES.get(precision), enabled=precision in DTYPES):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            losses.append(loss.detach())  # no .item() here: that would wait for the GPU every step
            t += 1
            if t == steps:
                break
    sync()
    return (steps - warmup) / (time.perf_counter() - start), [loss.item() for loss in losses]


def hf_trainer_run(arch: str, size: int, data: Any, batch: int, steps: int, warmup: int, seed: int,
                   precision: str = "no") -> float:
    from transformers import Trainer as HFTrainer, TrainerCallback, TrainingArguments as HFArgs

    class WithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_model(arch, size, seed)

        def forward(self, pixel_values, labels):
            return {"loss": F.cross_entropy(self.net(pixel_values), labels)}

    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, steps):  # a GPU sync only where the clock is read
                sync()
                marks[state.global_step] = time.perf_counter()

    collate = lambda ex: {"pixel_values": torch.stack([e[0] for e in ex]), "labels": torch.stack([e[1] for e in ex])}  # noqa: E731
    model = WithLoss()
    # HF's optim="sgd" has no momentum; give it the optimizer the other two use.
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    with tempfile.TemporaryDirectory() as out:
        hf_args = HFArgs(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=0.01,
                         optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=warmup,
                         save_strategy="no", eval_strategy="no", report_to=[], seed=seed,
                         use_cpu=DEVICE.type == "cpu", bf16=precision == "bf16", fp16=precision == "fp16",
                         dataloader_num_workers=0, disable_tqdm=True)
        HFTrainer(model=model, args=hf_args, train_dataset=data, data_collator=collate,
                  callbacks=[Clock()], optimizers=(opt, sched)).train()
    return (steps - warmup) / (marks[steps] - marks[warmup])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="interleaved timing repeats")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per timed run")
    parser.add_argument("--warmup", type=int, default=8, help="steps of each run left out of its timing")
    parser.add_argument("--batch", type=int, default=32, help="batch size")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--models", choices=sorted(MODEL_SETS), default="large" if DEVICE.type == "cuda" else "small",
                        help="small: resnet18 and vit_tiny at 64 px (CPU); large: resnet50 and ViT-B/16 at 224 px")
    parser.add_argument("--mixed_precision", choices=["no", *DTYPES], default="no", help="precision of the timed runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the json, md and png")
    parser.add_argument("--stem", default="engine_overhead", help="their file name")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(opts.threads))
    opts.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"threads": opts.threads, "batch": opts.batch, "steps": opts.steps,
                              "warmup": opts.warmup, "repeats": opts.repeats, "mixed_precision": opts.mixed_precision,
                              "device": host.describe(),
                              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "models": {}}
    precision = opts.mixed_precision
    for name, (arch, size) in MODEL_SETS[opts.models].items():
        # 1. Same trajectory: full-batch fp32 steps (batch = dataset), so data order cannot matter.
        small = make_data(opts.batch, size)
        _, ours = fastft_run(arch, size, small, opts.batch, 10, 1, seed=0, shuffle=False)
        _, theirs = plain_run(arch, size, small, opts.batch, 10, 1, seed=0, shuffle=False)
        gap = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(ours, theirs))
        print(f"{name}: loss trajectory fastft vs plain loop, max relative gap {gap:.2e}", flush=True)
        # 2. Interleaved timing.
        data = make_data(opts.batch * (opts.steps + 1), size)
        runners: dict[str, Callable[[], float]] = {
            "plain loop": lambda: plain_run(arch, size, data, opts.batch, opts.steps, opts.warmup, 0,
                                            precision=precision)[0],
            "fastft": lambda: fastft_run(arch, size, data, opts.batch, opts.steps, opts.warmup, 0,
                                         precision=precision)[0],
            "HF Trainer": lambda: hf_trainer_run(arch, size, data, opts.batch, opts.steps, opts.warmup, 0, precision),
        }
        rates: dict[str, list[float]] = {k: [] for k in runners}
        for r in range(opts.repeats):
            for key, fn in runners.items():
                rates[key].append(fn())
            print(f"  repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} steps/s" for k, v in rates.items()), flush=True)
        medians = {k: statistics.median(v) for k, v in rates.items()}
        report["models"][name] = {"trajectory_max_rel_gap": gap, "steps_per_s": rates, "median": medians,
                                  "fastft_vs_plain": _paired(rates["fastft"], rates["plain loop"]),
                                  "fastft_vs_hf_trainer": _paired(rates["fastft"], rates["HF Trainer"])}
    (opts.out / f"{opts.stem}.json").write_text(json.dumps(report, indent=1))
    lines = ["| model | plain loop steps/s | fastft steps/s | HF Trainer steps/s | fastft / plain | fastft / HF Trainer |",
             "|---|---:|---:|---:|---:|---:|"]
    ratio = lambda r: f"{r['median']:.3f} ({r['q1']:.3f}-{r['q3']:.3f})"  # noqa: E731
    for name, m in report["models"].items():
        med = m["median"]
        lines.append(f"| {name} | {med['plain loop']:.2f} | {med['fastft']:.2f} | {med['HF Trainer']:.2f} | "
                     f"{ratio(m['fastft_vs_plain'])} | {ratio(m['fastft_vs_hf_trainer'])} |")
    lines.append(f"\n{report['device']}, mixed precision {precision}, batch {opts.batch}, {opts.repeats} repeats. "
                 "Steps/s: medians over repeats. Ratios: median of the per-repeat ratios (interquartile range).")
    table = "\n".join(lines)
    (opts.out / f"{opts.stem}.md").write_text(table + "\n")
    print(table)
    _plot(report, opts.out / f"{opts.stem}.png")


def _paired(ours: list[float], theirs: list[float]) -> dict[str, float]:
    """Median and quartiles of the per-repeat ratios ours[i] / theirs[i]."""
    q1, median, q3 = statistics.quantiles([a / b for a, b in zip(ours, theirs)], n=4)
    return {"median": median, "q1": q1, "q3": q3}


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report["models"]), figsize=(10, 3.5))
    for ax, (name, m) in zip(axes, report["models"].items()):
        ax.boxplot(list(m["steps_per_s"].values()), tick_labels=list(m["steps_per_s"]))
        ax.set_title(name)
        ax.set_ylabel("optimizer steps / s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
