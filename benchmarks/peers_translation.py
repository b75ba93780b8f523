"""fastft's translation recipe against the HF Seq2SeqTrainer, on the same pairs, weights, thread count and
machine, in one run (translation has no fastai peer).

    python benchmarks/peers_translation.py --workers 2 --threads 1 --seeds 3

Each seed exports the subset of the gettext de->en pairs that fastft's ``max_train_samples`` /
``max_eval_samples`` draw with that seed (fastft's own loader, empty pairs dropped) as JSON, and both
tools train BERT2BERT warm-started from the same all-MiniLM-L6-v2 weights (``fastft:minilm_l6``):

- ``fastft``: ``recipes/translation/quickstart.yaml`` at the size its test and the LoRA benchmark use
  (200 steps of 32 on 6,400 pairs, BLEU on 200 test messages every 40 steps);
- ``HF Seq2SeqTrainer``: transformers' translation example at its README's hyperparameters
  (``benchmarks/peers/hf_trainer_translation.py``), evaluated after as many pairs (every 1,280);
- ``fastft for 3 epochs``: the same recipe given the peer's 3 epochs (600 steps), so that final BLEU
  compares on equal data.

Time to target is training time only: evaluations are subtracted in both. Writes
benchmarks/results/peers_translation.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import peers  # noqa: E402
import time_to_accuracy as tta  # noqa: E402
from fastft import comparison, host  # noqa: E402

RECIPE = REPO / "recipes" / "translation" / "quickstart.yaml"
EVAL_PAIRS = 1280  # training pairs between evaluations, in both tools
HF_EPOCHS = 3  # the example's default num_train_epochs


def export(seed: int, train_samples: int, eval_samples: int, root: Path) -> Path:
    """The seed's pairs as fastft trains and scores them: train.json and test.json, one translation a line."""
    from fastft.arguments import parse_args
    from fastft.config import TrainingArguments
    from fastft.tasks.translation import TranslationArguments, TranslationTask

    task_args, args = parse_args([TranslationArguments, TrainingArguments], [
        "--config", str(RECIPE), "--seed", str(seed), "--max_train_samples", str(train_samples),
        "--max_eval_samples", str(eval_samples)])
    task = TranslationTask(task_args, args)
    folder = root / f"seed-{seed}"
    folder.mkdir(parents=True)
    for name, split in zip(("train", "test"), task._splits()):  # the task's own cut: seeded, empty pairs dropped
        read = task._pair_reader(split)
        lines = (json.dumps({"translation": dict(zip(("de", "en"), read(row)))}) for row in split)
        (folder / f"{name}.json").write_text("\n".join(lines) + "\n")
    return folder


def configurations(a: argparse.Namespace, model: Path) -> dict[str, tuple[list[str], str, str, str]]:
    """name -> (command without data, seed and output folder; its epochs; its batch; its LR)."""
    def fastft(steps: int) -> list[str]:
        return [sys.executable, str(REPO / "scripts" / "train_translation.py"), "--config", str(RECIPE),
                "--max_steps", str(steps), "--max_train_samples", str(a.max_train_samples),
                "--max_eval_samples", str(a.max_eval_samples), "--eval_strategy", "steps",
                "--eval_steps", str(EVAL_PAIRS // 32), "--report_to", "none"]

    hf = [sys.executable, str(REPO / "benchmarks" / "peers" / "hf_trainer_translation.py"), "--model", str(model),
          "--eval_steps", str(EVAL_PAIRS // 4)]
    as_peer = HF_EPOCHS * a.max_train_samples // 32  # the peer's 3 epochs, at fastft's batch
    lr = "3e-4 (new weights 3e-3)"
    return {"fastft (the translation quickstart recipe)": (fastft(a.steps), f"{a.steps * 32 / a.max_train_samples:g}",
                                                           "32", lr),
            "HF Seq2SeqTrainer (the example's README hyperparameters)": (hf, str(HF_EPOCHS), "4", "5e-5"),
            # the same recipe given as many pairs as the peer sees, to compare final BLEU on equal data
            f"fastft for {HF_EPOCHS} epochs (as many pairs as the peer)": (fastft(as_peer), str(HF_EPOCHS), "32", lr)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first_seed", type=int, default=0)
    p.add_argument("--configs", help="comma-separated names (default: all)")
    p.add_argument("--target", type=float, default=2.0, help="eval_bleu (the reduced translation target)")
    p.add_argument("--steps", type=int, default=200, help="fastft's optimizer steps")
    p.add_argument("--max_train_samples", type=int, default=6400)
    p.add_argument("--max_eval_samples", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--stem", default="peers_translation", help="result file name")
    a = p.parse_args(argv)
    from fastft.offline import text

    model = Path(text.model_asset("fastft:minilm_l6"))
    configs = configurations(a, model)
    names = tta.selected(list(configs), a.configs)
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    with tempfile.TemporaryDirectory() as tmp, comparison.Runs(Path(tmp) / "runs", a.workers, a.threads,
                                                               cwd=REPO) as runs:
        folders = {s: export(s, a.max_train_samples, a.max_eval_samples, Path(tmp) / "data") for s in seeds}
        futures = {}
        for seed in seeds:  # seed-major: the configurations take turns on the machine
            for name in names:
                cmd = [*configs[name][0], "--seed", str(seed)]
                if "hf_trainer" in cmd[1]:
                    cmd += ["--data", str(folders[seed])]
                futures[name, seed] = runs.submit(cmd)
        try:
            per_config = {name: [futures[name, s].result() for s in seeds] for name in names}
        except comparison.RunFailed as err:
            raise SystemExit(str(err)) from None
    results = []
    for name in names:
        _, epochs, batch, lr = configs[name]
        for seed, rows in zip(seeds, per_config[name]):
            print(f"{name} seed={seed}: time to target {comparison.time_to_target(rows, a.target, 'eval_bleu')}, "
                  f"final {rows[-1]['eval_bleu']:.2f}", flush=True)
        results.append({**comparison.summarise(name, per_config[name], a.target, "eval_bleu"),
                        "epochs": epochs, "batch": batch, "learning_rate": lr})
    meta = {"metric": "eval_bleu", "target": a.target, "seeds": a.seeds, "first_seed": a.first_seed,
            "threads": a.threads, "workers": a.workers, "machine": host.cpu(),
            "date": datetime.date.today().isoformat()}
    about = (f"Target eval_bleu >= {a.target:g} on {a.max_eval_samples} gettext test messages (German->English); "
             f"{a.max_train_samples} training pairs")
    table = peers.markdown(results, meta, about)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (a.out / f"{a.stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
