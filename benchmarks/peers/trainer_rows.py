"""What the HF Trainer peers share: fastft's evaluation rows from a ``Trainer`` run, written as fastft writes them."""
from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import Trainer, TrainerCallback


class Rows(TrainerCallback):
    """An evaluation row at each evaluation: wall time since training began, and the evaluation's own."""

    def __init__(self, metric: str):
        self.metric, self.rows, self.start = metric, [], None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.rows.append({"step": state.global_step, "elapsed_s": time.perf_counter() - self.start,
                          "eval_runtime_s": metrics["eval_runtime"], self.metric: metrics[self.metric]})


def train_and_write(trainer: Trainer, rows: Rows, out: Path) -> None:
    """Train, evaluate at the end unless the last step just was, and write ``metrics.jsonl`` (fastft's rows:
    step, elapsed_s, eval_runtime_s, the metric) and ``run.json`` (the LR and steps) to ``out``."""
    trainer.train()
    if not rows.rows or rows.rows[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows.rows))
    (out / "run.json").write_text(json.dumps({"learning_rate": trainer.args.learning_rate,
                                              "steps": trainer.state.global_step}))
