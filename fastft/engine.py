"""The one training loop every task runs: accelerate, accumulation, evaluation, checkpoints.

A task (``fastft.tasks.base.Task``) contributes data, model, loss and metric;
``Trainer`` owns everything from ``accelerator.prepare`` to ``optimizer.step()``.
Its methods read in calling order: set-up, ``fit``, the loop, one ``step``,
evaluation, checkpoints, the end. ``fastft.run`` decides what a launch does.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fastft import checkpoints, lora, output_folder, reporting
from fastft.batches import IGNORE_INDEX, LengthGroupedOrder, SeededSamples, TokenBudgetBatches, cat_padded, windows
from fastft.config import TrainingArguments, to_dict
from fastft.ema import WeightAverage, changing_tensors, copy_into, named_copies
from fastft.errors import UserError
from fastft.interrupts import StopSignals
from fastft.launch import make_accelerator
from fastft.memory import enable_gradient_checkpointing
from fastft.metrics import higher_is_better, resolve_best_metric
from fastft.model_card import write_card
from fastft.optim import build_optimizer, set_backbone_frozen
from fastft.plan import TrainPlan, make_plan
from fastft.plots import write_plots
from fastft.push_to_hub import prepare_repo, push_folder
from fastft.schedules import Scheduler
from fastft.tasks.base import Task

BEST_WEIGHTS, BEST_INFO = "best_model.safetensors", "best_model.json"  # load_best_model_at_end, until the end


def evaluate(accelerator: Accelerator, task: Task, model: torch.nn.Module, loader: Any) -> dict[str, float]:
    """Metrics over the whole eval set; gather_for_metrics drops the duplicates padding adds.

    Sequence outputs (2-D, e.g. generated ids) are padded with -100 to a common length
    across processes and batches. ``eval_loss`` is per item: per sample, or per token
    when the task also returns ``loss_items`` (items summed into each sample's loss).
    The model is left in eval mode.
    """
    acc = accelerator
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    # leave=False: the bar goes once evaluation ends, and the metrics line takes its place
    bar = tqdm(loader, desc="evaluating", leave=False, disable=not acc.is_local_main_process)
    with torch.no_grad():
        for batch in bar:
            outputs = {k: acc.pad_across_processes(v, dim=1, pad_index=IGNORE_INDEX) if v.ndim > 1 else v
                       for k, v in task.evaluation_step(model, batch).items()}
            for key, value in acc.gather_for_metrics(outputs).items():
                parts.setdefault(key, []).append(value.cpu())
    bar.close()
    gathered = {k: cat_padded(v) for k, v in parts.items()}
    metrics = task.compute_metrics(gathered)
    items = gathered.get("loss_items", torch.ones_like(gathered["loss"]))
    metrics["eval_loss"] = (gathered["loss"].double().sum() / items.double().sum().clamp(min=1)).item()
    metrics["eval_samples"] = len(gathered["loss"])
    return metrics


class Trainer:
    """One run. ``__init__`` builds what every use of the loop needs (``fastft.lr_find`` steps it
    too); ``fit`` adds the run's own state (output_dir, resume, the Hub, the weight average) and trains."""

    def __init__(self, task: Task, args: TrainingArguments, learning_rate: Optional[float] = None,
                 lr_find_s: float = 0.0):
        """``learning_rate`` and ``lr_find_s``: for ``learning_rate: auto``, what the LR range test at the start
        picked and how long it took (counted in the run's time, as a user waits for it)."""
        self.task, self.args = task, args
        self.learning_rate, self.lr_find_s = learning_rate, lr_find_s
        self._setup_accelerator()
        self._setup_data_and_model()
        self._setup_optimization()

    def _setup_accelerator(self) -> None:
        self.best_metric = resolve_best_metric(self.task, self.args)
        self.higher_is_better = higher_is_better(self.best_metric, self.args.greater_is_better)
        self.accelerator = make_accelerator(self.args)
        self.output_dir = Path(self.args.output_dir)
        self.stop = StopSignals()  # installed by fit only: elsewhere (lr_find) a Ctrl-C simply ends the run

    def _setup_data_and_model(self) -> None:
        """The task's data, then its model for those labels, from the recipe's seed."""
        args, task = self.args, self.task
        set_seed(args.seed)
        train_set, self.eval_set = task.load_data()
        self.model = task.build_model()
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        name = getattr(task.task_args, "model_name_or_path", None) or type(self.model).__name__
        if args.gradient_checkpointing:
            enable_gradient_checkpointing(self.model, name)
        self.adapter: Optional[lora.LoraAdapter] = None
        if args.peft == "lora":
            self.adapter = lora.LoraAdapter(self.model, args, task.head_parameters(self.model), name)
            for line in self.adapter.summary:
                self.accelerator.print(line)
        token_batches = task.token_batches(train_set)
        self.plan: TrainPlan = make_plan(args, len(train_set), self.accelerator.num_processes, task.drop_last,
                                         self.learning_rate, token_batches)
        self.train_set = SeededSamples(train_set, args.seed)
        # group_by_length: one optimizer step's samples on all processes come from one stretch of similar lengths
        self.order: Optional[LengthGroupedOrder | TokenBudgetBatches] = (
            LengthGroupedOrder(task.sample_lengths(train_set), self.plan.global_batch_size, args.seed)
            if args.group_by_length else token_batches)

    def _setup_optimization(self) -> None:
        """Optimizer (holding the scaled peak LR), loaders, accelerate's wrapping, the schedule."""
        args, task, acc = self.args, self.task, self.accelerator
        optimizer = build_optimizer(self.model, args, self.plan.scaled_learning_rate, self._head_parameters(self.model))
        # Workers are not persistent so each epoch's workers see the new train_set.epoch.
        if isinstance(self.order, TokenBudgetBatches):  # accelerate deals each process every n-th batch
            train_loader = DataLoader(self.train_set, batch_sampler=self.order, collate_fn=task.collate,
                                      num_workers=args.dataloader_num_workers)
        else:
            train_loader = DataLoader(self.train_set, batch_size=args.per_device_train_batch_size,
                                      shuffle=self.order is None, sampler=self.order,
                                      collate_fn=task.collate, num_workers=args.dataloader_num_workers,
                                      drop_last=task.drop_last)
        eval_loader = DataLoader(self.eval_set, batch_size=args.per_device_eval_batch_size, collate_fn=task.collate,
                                 num_workers=args.dataloader_num_workers)
        self.model, self.optimizer, self.train_loader, self.eval_loader = acc.prepare(
            self.model, optimizer, train_loader, eval_loader)
        if len(self.train_loader) != self.plan.batches_per_epoch:
            raise RuntimeError(f"plan expects {self.plan.batches_per_epoch} batches per epoch, "
                               f"the loader gives {len(self.train_loader)}")
        # Stepped by us once per optimizer step, so not passed to prepare (which steps it per process).
        self.scheduler = Scheduler(self.optimizer, self.plan.schedule)
        self.state = checkpoints.TrainState()
        self.ema: Optional[WeightAverage] = None
        # Asked after prepare(): FSDP2 replaces parameter objects, so the ids given to the optimizer
        # builder above may no longer be the model's.
        self.head = list(self._head_parameters(self._unwrapped()))
        # What the task left trainable: unfreezing after freeze_epochs returns to this, not to everything.
        self.trainable = [p for p in self._unwrapped().parameters() if p.requires_grad]

    def _head_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The new head's weights: the task's, or under LoRA the trainable copies peft keeps of them."""
        return lora.head_parameters(model) if self.adapter is not None else list(self.task.head_parameters(model))

    def _unwrapped(self) -> torch.nn.Module:
        """The task's model, out of accelerate's wrappers and torch.compile's (whose state_dict keys differ)."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def fit(self) -> dict[str, Any]:
        """Train to the plan's end (or the target, or a stop signal), save, report, push; the final metrics."""
        self._setup_run()
        args, acc, state, plan = self.args, self.accelerator, self.state, self.plan
        if state.step == 0:  # a resumed run's elapsed_s holds its LR range test already
            state.elapsed_s = self.lr_find_s
        self._t0 = time.perf_counter()
        elapsed_before, samples_before = state.elapsed_s, state.step * plan.global_batch_size
        self.progress = tqdm(total=plan.total_steps, initial=state.step, disable=not acc.is_local_main_process,
                             desc="training")
        metrics: dict[str, float] = {}
        self.model.train()
        if state.step == 0 and self.task.evaluate_before_training():
            self._on_eval(0.0)
        try:
            with self.stop:
                metrics = self._loop() or metrics
        finally:  # also on an error, so its message starts on a line of its own
            self.progress.close()
        if state.last_eval_step != state.step or not metrics:
            metrics = self._on_eval(state.step / plan.steps_per_epoch)
        runtime = self._elapsed()
        if self.ema:  # training is over: the model keeps the average, as evaluated
            self.ema.copy_to()
            self.ema = None
        if args.load_best_model_at_end and self._restore_best():
            metrics = self.evaluate()  # of the model saved, and its predictions too, not the last evaluation's
        samples = state.step * plan.global_batch_size
        final = {**metrics,
                 "train_runtime_s": round(runtime, 3),
                 "train_samples_per_second": round((samples - samples_before) / max(runtime - elapsed_before, 1e-9), 3),
                 "time_to_target_s": None if state.time_to_target_s is None else round(state.time_to_target_s, 3),
                 "target_metric": args.target_metric, "target_value": args.target_value,
                 "best_metric": state.best_metric, "num_processes": acc.num_processes,
                 "global_batch_size": plan.global_batch_size, "learning_rate": plan.scaled_learning_rate,
                 "trainable_parameters": sum(p.numel() for p in self.trainable),
                 "total_steps": state.step, "epoch": round(state.step / plan.steps_per_epoch, 4),
                 "skipped_optimizer_steps": state.skipped_steps,
                 "distributed_type": acc.distributed_type.value,
                 "stopped_at_target": bool(args.stop_at_target and state.step < plan.total_steps),
                 "lr_find_runtime_s": round(self.lr_find_s, 3) if args.learning_rate == "auto" else None,
                 "metric_for_best_model": self.best_metric,
                 "best_model_step": state.best_step if args.load_best_model_at_end else None}
        self._finish(final)
        return final

    def _setup_run(self) -> None:
        """The run's own state: refuse a foreign output_dir, check the Hub, resume, mark the folder as fastft's."""
        args, acc, task = self.args, self.accelerator, self.task
        resume = output_folder.resume_candidates(args)
        # Only the main process talks to the Hub; it checks token and repo before any training.
        self.repo_id = (prepare_repo(args.hub_model_id, args.output_dir, args.hub_private_repo, args.hub_revision)
                        if args.push_to_hub and acc.is_main_process else None)
        self._pushes: list = []  # background every_save pushes
        if args.model_ema:
            self.ema = WeightAverage(self._unwrapped(), args.model_ema_decay, args.model_ema_warmup, self.trainable)
        # Not register_for_checkpointing: accelerate unpickles those objects, so a planted file would run code.
        self.identity = checkpoints.run_identity(args, self.plan.as_dict(), task.task_args)
        if resume:
            loaded = checkpoints.load_checkpoint(acc, resume, self.state, self.scheduler, self.ema, self.identity,
                                                 explicit=bool(args.resume_from_checkpoint))
            acc.print(f"Resuming from {loaded} (step {self.state.step})")
        if acc.is_main_process:  # touched only now, so a recipe or data mistake leaves no trace
            self.output_dir.mkdir(parents=True, exist_ok=True)
            # First, so that a run killed from here on leaves a folder that marks itself as fastft's.
            reporting.write_config(self.output_dir, to_dict(task.task_args, args), self.plan.as_dict())
            checkpoints.remove_partial(self.output_dir)
            if args.overwrite_output_dir and not resume:
                for old in self.output_dir.glob("checkpoint-*"):
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        self.log = reporting.RunLog(self.output_dir, acc.is_main_process, self.state.step if resume else None)
        if acc.log_with:
            acc.init_trackers("runs", config={k: v for k, v in to_dict(task.task_args, args).items()
                                                if isinstance(v, (int, float, str, bool))})

    def _loop(self) -> dict[str, float]:
        """Optimizer steps until the plan's total (or a stop signal); returns the last metrics."""
        args, acc, state, plan = self.args, self.accelerator, self.state, self.plan
        every = int(args.checkpointing_steps) if str(args.checkpointing_steps).isdigit() else None
        running = torch.zeros(2, device=acc.device)  # loss sum, items since the last log line
        metrics: dict[str, float] = {}
        while state.step < plan.total_steps:
            epoch = state.epoch
            if args.freeze_epochs:  # else requires_grad stays as the task set it (e.g. a frozen speech encoder)
                set_backbone_frozen(self._unwrapped(), self.head, epoch < args.freeze_epochs, self.trainable)
                self.task.set_head_only(epoch < args.freeze_epochs)
            self.train_loader.set_epoch(epoch)
            self.train_set.epoch = epoch
            if self.order is not None:  # accelerate passes set_epoch on too; this does not depend on how
                self.order.set_epoch(epoch)
            loader = self.train_loader
            if state.batches_in_epoch:
                loader = acc.skip_first_batches(self.train_loader, state.batches_in_epoch)
            for window in windows(loader, args.gradient_accumulation_steps):
                loss_sum, items, stop = self.step(window)
                state.batches_in_epoch += len(window)
                running += torch.stack([loss_sum, items])
                if acc.optimizer_step_was_skipped:  # fp16 overflow: counted, and the schedule waits
                    state.skipped_steps += 1
                else:
                    self.scheduler.step()
                state.step += 1
                self.progress.update(1)
                epoch_float = epoch + state.batches_in_epoch / plan.batches_per_epoch
                if state.step % args.logging_steps == 0 or state.step == plan.total_steps:
                    loss_total, item_total = acc.reduce(running, "sum").tolist()
                    mean_loss = loss_total / max(item_total, 1)
                    row = {"step": state.step, "epoch": round(epoch_float, 4), "elapsed_s": round(self._elapsed(), 4),
                           "loss": mean_loss,
                           "learning_rate": self.scheduler.get_last_lr()[0],
                           "momentum": self.scheduler.last_momentum()}
                    self.log.train(row)
                    acc.log({k: v for k, v in row.items() if k != "step"}, step=state.step)
                    self.progress.set_postfix(loss=f"{mean_loss:.4f}")
                    running.zero_()
                if args.eval_strategy == "steps" and state.step % args.eval_steps == 0:
                    metrics = self._on_eval(epoch_float)
                    if self._stops_at_target():
                        return metrics
                if every and state.step % every == 0:
                    self._checkpoint()
                if stop:
                    self._stop_on_signal(saved=bool(every and state.step % every == 0))
                if state.step >= plan.total_steps:
                    if state.batches_in_epoch >= plan.batches_per_epoch:  # else the last epoch would get no checkpoint
                        metrics = self._end_epoch() or metrics
                    break
            else:  # the epoch ran to its end
                metrics = self._end_epoch() or metrics
                if self._stops_at_target():
                    return metrics
        return metrics

    def step(self, window: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Accumulate gradients over the window, sync once, step; return (summed loss, item count, stop).

        The loss is normalised per item (sample or target token) over the whole global
        batch, counted before the first backward: a per-micro-batch mean would weight
        short batches up and make accumulation differ from a larger batch.
        """
        acc = self.accelerator
        items = torch.stack([torch.as_tensor(self.task.count_items(b), dtype=torch.float32) for b in window]).sum()
        total = acc.reduce(items.to(acc.device), "sum")
        scale = acc.num_processes / total.clamp(min=1)  # DDP averages gradients over processes
        loss_sum = torch.zeros((), device=acc.device)
        for i, batch in enumerate(window):
            with contextlib.nullcontext() if i == len(window) - 1 else acc.no_sync(self.model):
                loss = self.task.training_loss(self.model, batch)
                acc.backward(loss * scale)
            loss_sum += loss.detach().float()
        # One small all-reduce a step: all processes must agree to halt (a non-finite loss on any
        # of them) or to stop (a signal) before anyone steps, or they would diverge or deadlock.
        flags = torch.stack([torch.isfinite(loss_sum).logical_not().float(),
                             torch.tensor(float(self.stop.received is not None), device=acc.device)])
        non_finite, stop = acc.reduce(flags, "sum").tolist()
        if non_finite:
            saved = checkpoints.list_checkpoints(self.output_dir)
            raise UserError(f"the training loss is not finite at optimizer step {self.state.step + 1}; likely "
                            f"causes: learning rate too high, fp16 overflow, or bad inputs; this step was not "
                            f"applied; last good checkpoint: {saved[-1] if saved else 'none (set checkpointing_steps)'}")
        if self.args.max_grad_norm > 0:
            acc.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema:
            self.ema.update(self.state.step + 1)
        return loss_sum, items.to(acc.device), bool(stop)

    def _on_eval(self, epoch_float: float) -> dict[str, float]:
        args, state = self.args, self.state
        started = time.perf_counter()
        metrics = self.evaluate()
        eval_runtime_s = time.perf_counter() - started
        state.last_eval_step = state.step
        value = state.last_metric = metrics.get(self.best_metric)
        if value is not None and (state.best_metric is None or (value > state.best_metric if self.higher_is_better
                                                                else value < state.best_metric)):
            state.best_metric, state.best_step = value, state.step
            if args.load_best_model_at_end:
                self._save_best()
        if args.target_metric and state.time_to_target_s is None:
            value = metrics.get(args.target_metric)
            if value is None:
                raise UserError(f"target_metric {args.target_metric} is not among the metrics "
                                f"{', '.join(sorted(metrics))}")
            if (value >= args.target_value) if higher_is_better(args.target_metric) else (value <= args.target_value):
                state.time_to_target_s = self._elapsed()
        # eval_runtime_s lets a benchmark subtract evaluation from elapsed_s (time spent training).
        row = {"step": state.step, "epoch": round(epoch_float, 4), "elapsed_s": round(self._elapsed(), 3),
               "eval_runtime_s": round(eval_runtime_s, 3), **metrics}
        self.log.eval(row)
        self.accelerator.log(metrics, step=state.step)
        if self.accelerator.is_main_process:  # through tqdm, so the line is not glued to the progress bar
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        return metrics

    def evaluate(self, averaged: bool = True) -> dict[str, float]:
        """Metrics over the whole eval set, of the weight average when there is one (and ``averaged``)."""
        with self._averaged_weights() if averaged else contextlib.nullcontext():
            metrics = evaluate(self.accelerator, self.task, self.model, self.eval_loader)
        self.model.train()
        return metrics

    def _save_best(self) -> None:
        """Keep the weights of the best evaluation so far (load_best_model_at_end): safetensors, main process."""
        acc = self.accelerator
        if acc.is_main_process:
            with self._averaged_weights():  # what training changes: under LoRA the adapters and head only
                weights = named_copies(changing_tensors(self._unwrapped(), self.trainable))
            tmp = self.output_dir / f"{BEST_WEIGHTS}.tmp"
            save_file(weights, str(tmp))
            os.replace(tmp, self.output_dir / BEST_WEIGHTS)
            reporting.write_json_atomic(self.output_dir / BEST_INFO, {"step": self.state.step,
                                                                      self.best_metric: self.state.best_metric})
        acc.wait_for_everyone()

    def _stops_at_target(self) -> bool:
        """With stop_at_target, whether the evaluation just made reached the target: then training ends here."""
        if not (self.args.stop_at_target and self.state.time_to_target_s is not None):
            return False
        self.progress.close()
        self.accelerator.print(f"Reached {self.args.target_metric} {self.args.target_value:g} at optimizer step "
                               f"{self.state.step} of {self.plan.total_steps}: stopping (stop_at_target)")
        return True

    def _end_epoch(self) -> Optional[dict[str, float]]:
        """Per-epoch evaluation and checkpoint; returns the metrics when it evaluated."""
        state, args = self.state, self.args
        state.epoch += 1
        state.batches_in_epoch = 0
        metrics = self._on_eval(float(state.epoch)) if args.eval_strategy == "epoch" else None
        if args.checkpointing_steps == "epoch":
            self._checkpoint()
        return metrics

    def _checkpoint(self) -> None:
        self.state.elapsed_s = self._elapsed()
        self._t0 = time.perf_counter()
        checkpoints.save_checkpoint(self.accelerator, self.output_dir, self.state, self.scheduler, self.ema,
                                    self.identity, self.args.save_total_limit, self.higher_is_better)
        if self.repo_id and self.args.hub_strategy == "every_save":
            with self._averaged_weights():
                self._save_model()
            self._pushes.append(push_folder(self.output_dir, self.repo_id, self.args.hub_revision,
                                                f"Training in progress, step {self.state.step}", background=True))

    def _save_model(self, final: bool = False) -> None:
        """The model as the ecosystem reloads it; under LoRA also the adapter, and the merged model if asked."""
        if self.adapter is None:
            self.task.save_model(self._unwrapped(), self.output_dir)
        else:
            a = self.task.task_args
            base = getattr(a, "model_name_or_path", None) or getattr(a, "encoder_name_or_path", None) or ""
            reporting.usual_modes(self.adapter.save(self.output_dir, base))
            if self.args.merge_lora:  # merged in place only once training is over
                self.task.save_model(self.adapter.merged(in_place=final), self.output_dir)
        reporting.usual_modes(self.output_dir)  # safetensors writes its files 0600

    def _stop_on_signal(self, saved: bool) -> None:
        """Preemption or Ctrl-C: checkpoint, say how to resume, exit without a traceback."""
        if not saved:
            self._checkpoint()
        self.progress.close()
        command = "the same command"
        if sys.argv and sys.argv[0].endswith(".py"):
            command = shlex.join(["accelerate", "launch", *sys.argv])
        elif sys.argv and Path(sys.argv[0]).name == "fastft":
            command = shlex.join(["fastft", *sys.argv[1:]])
        self.accelerator.print(f"Stopped by {self.stop.name} after optimizer step {self.state.step}; saved "
                               f"{self.output_dir / f'checkpoint-{self.state.step}'}. Resume with: {command}")
        raise SystemExit(128 + self.stop.received)

    def _restore_best(self) -> bool:
        """Put the best evaluation's weights back in the model; False when the last evaluation was the best."""
        state = self.state
        if state.best_step is None or state.best_step == state.last_eval_step:
            return False
        path, info_path = self.output_dir / BEST_WEIGHTS, self.output_dir / BEST_INFO
        try:
            step = json.loads(info_path.read_text()).get("step")
        except (OSError, ValueError, AttributeError):
            step = None
        if step != state.best_step or not path.is_file():  # e.g. a resumed run that did not repeat that evaluation
            warnings.warn(f"load_best_model_at_end: {path} does not hold the weights of step {state.best_step}, the "
                          f"best evaluation; the model saved is the last evaluation's", stacklevel=2)
            return False
        copy_into(changing_tensors(self._unwrapped(), self.trainable), load_file(str(path), device="cpu"), str(path))
        return True

    def _finish(self, final: dict[str, Any]) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            self._save_model(final=True)
            for scratch in (BEST_WEIGHTS, BEST_INFO):  # the best weights are now the saved model
                (self.output_dir / scratch).unlink(missing_ok=True)
            self.task.write_artifacts(self.output_dir)
            task_args = self.task.task_args
            write_plots(self.output_dir, self.plan.schedule, self.plan.scaled_learning_rate,
                        reporting.read_jsonl(self.output_dir / reporting.TRAIN_LOG),
                        reporting.read_jsonl(self.output_dir / reporting.EVAL_LOG), self.task.main_metric,
                        target_metric=self.args.target_metric, target_value=self.args.target_value,
                        label_smoothing=self.args.label_smoothing_factor,
                        soft_targets=bool(getattr(task_args, "mixup_alpha", 0) or getattr(task_args, "cutmix_alpha", 0)))
            reporting.write_json_atomic(self.output_dir / reporting.FINAL, final)
            write_card(self.output_dir, self.task.card_info(), self.repo_id)
        acc.wait_for_everyone()
        best = (f" (the best evaluation by {self.best_metric}, step {final['best_model_step']})"
                if final["best_model_step"] is not None else "")
        acc.print(f"Done: {self.task.main_metric}={final.get(self.task.main_metric)}{best} after "
                  f"{final['total_steps']} steps in {final['train_runtime_s']:.0f}s. Model, metrics.json and plots/ "
                  f"are in {self.output_dir.resolve()}")
        if self.repo_id:
            for pending in self._pushes:  # let in-progress pushes land before the final commit
                error = pending.exception()
                if error is not None:  # the final commit below still holds everything
                    acc.print(f"warning: a checkpoint push to {self.repo_id} failed ({error})")
            main = self.task.main_metric
            url = push_folder(self.output_dir, self.repo_id, self.args.hub_revision,
                                  f"fastft: {main}={final.get(main)} after {final['total_steps']} steps")
            acc.print(f"Pushed to the Hub: {url}")
        acc.end_training()  # closes trackers and, in recent accelerate, the process group: last

    def _averaged_weights(self) -> contextlib.AbstractContextManager:
        """With model_ema, the weight average in the model's place (evaluation, saving); else nothing."""
        return self.ema.swapped_in() if self.ema else contextlib.nullcontext()

    def _elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self._t0
