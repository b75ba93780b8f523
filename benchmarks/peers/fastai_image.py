"""One fastai run for benchmarks/peers.py, in the peers' own environment (fastai never enters fastft's).

``vision_learner`` on a local timm checkpoint (fastai's own pooled head, its normalisation and
``aug_transforms``), trained by ``fine_tune`` or, unfrozen, by ``fit_one_cycle``, at fastai's default
LR or at its ``lr_find`` valley. Every ``--eval_every`` optimizer steps the model is scored on the
whole validation folder; those seconds, and fastai's own end-of-epoch validation, are reported as
evaluation time, so that the benchmark counts training time only. Writes ``metrics.jsonl`` rows as
fastft's (step, elapsed_s, eval_runtime_s, eval_accuracy) and ``run.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.vision.all import (ImageDataLoaders, Resize, accuracy, aug_transforms, set_seed,
                               vision_learner)


class EvalEvery(Callback):
    """Accuracy on the validation set every ``every`` training steps, its time kept apart."""

    order = 90  # after the Recorder has logged the batch

    def __init__(self, every: int, start: float, rows: list[dict]):
        self.every, self.start, self.rows, self.steps, self.excluded = every, start, rows, 0, 0.0

    def before_fit(self) -> None:  # kept: the final score comes after fit, when fastai has detached callbacks
        self.owner = self.learn

    def after_batch(self) -> None:
        if not self.training:
            return
        self.steps += 1
        if self.steps % self.every == 0:
            self.score()

    def before_validate(self) -> None:  # fastai's own end-of-epoch validation is evaluation time too
        self._validating = time.perf_counter()

    def after_validate(self) -> None:
        self.excluded += time.perf_counter() - self._validating

    def score(self) -> None:
        started = time.perf_counter()
        model = self.owner.model
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for xb, yb in self.owner.dls.valid:
                correct += (model(xb).argmax(1) == yb).sum().item()
                seen += len(yb)
        model.train()
        now = time.perf_counter()
        self.rows.append({"step": self.steps, "elapsed_s": now - self.start,
                          "eval_runtime_s": now - started + self.excluded, "eval_accuracy": correct / seen})
        self.excluded = 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="imagefolder with train/ and test/")
    p.add_argument("--model", type=Path, required=True, help="local timm checkpoint folder")
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--method", choices=["fine_tune", "fit_one_cycle"], required=True)
    p.add_argument("--epochs", type=int, required=True, help="fine_tune: unfrozen epochs after its frozen one")
    p.add_argument("--lr", default="default", help="a number, default (fastai's) or lr_find (its valley)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--eval_every", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    set_seed(a.seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(a.data, train="train", valid="test", item_tfms=Resize(a.size),
                                       batch_tfms=aug_transforms(size=a.size), bs=a.bs, num_workers=0,
                                       seed=a.seed)
    learn = vision_learner(dls, f"local-dir:{a.model}", pretrained=True, metrics=accuracy)
    if a.method == "fit_one_cycle":
        learn.unfreeze()
    lr = a.lr
    if lr == "lr_find":  # a separate, untimed command, as fastft's own --lr_find for its recipe
        with learn.no_bar(), learn.no_logging():
            lr = float(learn.lr_find(show_plot=False).valley)
        set_seed(a.seed, reproducible=True)
    rows: list[dict] = []
    start = time.perf_counter()
    evaluator = EvalEvery(a.eval_every, start, rows)
    kwargs = {} if lr == "default" else {"base_lr" if a.method == "fine_tune" else "lr_max": float(lr)}
    with learn.no_bar(), learn.no_logging():
        if a.method == "fine_tune":
            learn.fine_tune(a.epochs, cbs=[evaluator], **kwargs)
        else:
            learn.fit_one_cycle(a.epochs, cbs=[evaluator], **kwargs)
        if not rows or rows[-1]["step"] != evaluator.steps:
            evaluator.score()
    a.output_dir.mkdir(parents=True, exist_ok=True)
    (a.output_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (a.output_dir / "run.json").write_text(json.dumps({"learning_rate": lr, "steps": evaluator.steps}))


if __name__ == "__main__":
    main()
