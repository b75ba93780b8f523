"""How much of each padded training batch is padding: the shuffled order against ``group_by_length``
and, for translation, ``batch_by_tokens``.

    python benchmarks/padding.py                    # translation and ASR quickstarts, seeds 0-2

No training and no timing: each task loads its quickstart recipe's training set as a run does,
and one epoch is laid out in per-device batches both ways, the shuffled order (a permutation
drawn from the seed) and the engine's length-grouped order (``fastft.batches.LengthGroupedOrder``
over the task's own ``sample_lengths``), and for translation the token-budget batches
(``fastft.batches.TokenBudgetBatches``). Each padded tensor counts apart, as the task's collate
pads it: a translation's source and its labels, a transcript's labels (Whisper's input is a fixed
window, the same for every clip). Reported: the share of the padded tokens that is padding, and
the padded tokens of the grouped epoch over the shuffled one (the work that scales with sequence
length), and how many batches the token budget makes of an epoch. Writes benchmarks/results/padding.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from fastft import host  # noqa: E402
import torch  # noqa: E402

from fastft.arguments import parse_args  # noqa: E402
from fastft.batches import LengthGroupedOrder, TokenBudgetBatches  # noqa: E402
from fastft.cli import task_factory, task_fields  # noqa: E402
from fastft.config import TrainingArguments  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
RECIPES = {"translation": "recipes/translation/quickstart.yaml", "speech": "recipes/speech/quickstart.yaml"}


def padded_lengths(task_name: str, train_set: torch.utils.data.Dataset) -> list[tuple[int, ...]]:
    """Per sample, the length of each tensor its batch pads: (source, labels) or (labels,)."""
    if task_name == "translation":  # tokenizing only; no model
        return [(len(e["input_ids"]), len(e["labels"])) for e in (train_set[i] for i in range(len(train_set)))]
    return [(n,) for n in train_set.token_lengths()]  # reads the transcripts, decodes no audio


def epoch_padding(order: list[int] | list[list[int]], lengths: list[tuple[int, ...]],
                  batch: int | None) -> tuple[int, int]:
    """(padding tokens, padded tokens) of one epoch, each tensor padded to its batch's longest: ``order`` cut
    into batches of ``batch``, or (``batch`` None) already a list of batches."""
    batches = order if batch is None else [order[start:start + batch] for start in range(0, len(order), batch)]
    padding = padded = 0
    for indices in batches:
        rows = [lengths[i] for i in indices]
        for part in zip(*rows):
            padded += max(part) * len(part)
            padding += max(part) * len(part) - sum(part)
    return padding, padded


def measure(task_name: str, seeds: range) -> dict:
    task_args, args = parse_args([task_fields(task_name), TrainingArguments], ["--config", RECIPES[task_name]],
                                 task=task_name)
    task = task_factory(task_name)(task_args, args)
    train_set, _ = task.load_data()
    lengths = padded_lengths(task_name, train_set)
    grouping = task.sample_lengths(train_set)  # what group_by_length sorts by
    batch, group = args.per_device_train_batch_size, args.per_device_train_batch_size * args.gradient_accumulation_steps
    rows = []
    for seed in seeds:
        shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
        grouped = list(LengthGroupedOrder(grouping, group, seed))
        (pad_s, all_s), (pad_g, all_g) = (epoch_padding(o, lengths, batch) for o in (shuffled, grouped))
        row = {"seed": seed, "shuffled_padding": pad_s / all_s, "grouped_padding": pad_g / all_g,
               "padded_tokens_ratio": all_g / all_s}
        if task.cost_follows_tokens:  # batch_by_tokens applies
            token_batches = list(TokenBudgetBatches(grouping, batch, seed))
            pad_t, all_t = epoch_padding(token_batches, lengths, None)
            row.update(token_batches_padding=pad_t / all_t, token_batches=len(token_batches))
        rows.append(row)
    keys = ["shuffled_padding", "grouped_padding", "padded_tokens_ratio"]
    keys += ["token_batches_padding", "token_batches"] if task.cost_follows_tokens else []
    return {"task": task_name, "recipe": RECIPES[task_name], "samples": len(lengths), "batch": batch,
            "tensors": "source, labels" if task_name == "translation" else "labels", "seeds": rows,
            "fixed_batches": -(-len(lengths) // batch), **{k: statistics.median(r[k] for r in rows) for k in keys}}


def markdown(results: list[dict], meta: dict) -> str:
    lines = [f"{meta['machine']}; {meta['date']}; `{meta['command']}`; seeds {meta['seeds']} (medians).", "",
             "| recipe | training samples | batch | padded tensors | padding, shuffled | padding, group_by_length | "
             "padded tokens, grouped / shuffled | padding, batch_by_tokens | batches, batch_by_tokens / fixed |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        tokens = (f"{100 * r['token_batches_padding']:.1f} % | {r['token_batches']:,} / {r['fixed_batches']:,}"
                  if "token_batches" in r else "- | -")
        lines.append(f"| {r['recipe']} | {r['samples']:,} | {r['batch']} | {r['tensors']} | "
                     f"{100 * r['shuffled_padding']:.1f} % | {100 * r['grouped_padding']:.1f} % | "
                     f"{r['padded_tokens_ratio']:.2f}x | {tokens} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=[*RECIPES, "all"], default="all")
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args(argv)
    seeds = range(a.seeds)
    results = [measure(t, seeds) for t in (RECIPES if a.task == "all" else [a.task])]
    meta = {"machine": host.describe(), "date": time.strftime("%Y-%m-%d"), "seeds": f"0-{a.seeds - 1}",
            "command": " ".join(["python benchmarks/padding.py", *(argv if argv is not None else sys.argv[1:])])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "padding.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (RESULTS / "padding.md").write_text(markdown(results, meta))
    print(markdown(results, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
