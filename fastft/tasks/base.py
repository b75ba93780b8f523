"""What a task contributes to the engine: its data, model, loss and metric."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import nn

from fastft.batches import TokenBudgetBatches
from fastft.config import TrainingArguments
from fastft.errors import UserError


class Task(abc.ABC):
    """One fine-tuning task. The engine owns the loop; a task never steps an optimizer.

    Each attempt (an auto_find_batch_size retry too) calls ``load_data`` first, then ``build_model``:
    the model is sized from the data's labels, and the data is prepared from the checkpoint's files
    (its config, processor or tokenizer), never from a built model.
    """

    main_metric: str = "eval_accuracy"
    greater_is_better: bool = True
    pipeline_tag: str = "other"  # the Hub's task name, for the model card
    drop_last: bool = False  # drop the last incomplete training batch
    eval_split_used: Optional[str] = None  # the split evaluated on, in words, once load_data has picked it
    has_token_lengths: bool = False  # sample_lengths counts each sample's tokens (group_by_length)
    # A batch's compute follows its padded tokens (batch_by_tokens); not so where every input is one
    # fixed window (Whisper's 30 s), which a large batch of short transcripts would multiply.
    cost_follows_tokens: bool = False

    def __init__(self, task_args: Any, args: TrainingArguments):
        self.task_args, self.args = task_args, args
        if args.group_by_length and not self.has_token_lengths:
            raise UserError(f"group_by_length groups translation and speech-recognition samples by their token "
                            f"lengths; {self.pipeline_tag} samples have none: drop group_by_length")
        if args.batch_by_tokens and not self.cost_follows_tokens:
            raise UserError(f"batch_by_tokens sizes each batch by its tokens, which set a translation batch's cost; "
                            f"a {self.pipeline_tag} batch's cost does not follow them: drop batch_by_tokens"
                            + (" (group_by_length applies)" if self.has_token_lengths else ""))

    @abc.abstractmethod
    def num_train_samples(self) -> int:
        """Training-set size, for the plan; may avoid loading the data (dry runs)."""

    @abc.abstractmethod
    def load_data(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """The train and eval datasets, already cut to max_*_samples; what ``build_model`` needs of the data
        (e.g. the label names) is known once it returns."""

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A new model, with pretrained weights and a head sized for the data (after ``load_data``)."""

    @abc.abstractmethod
    def collate(self, examples: list[Any]) -> dict[str, torch.Tensor]:
        """Examples to a batch of tensors (the engine's data loaders call it)."""

    @abc.abstractmethod
    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss of one micro-batch SUMMED over its items, with the task's regularisation applied.

        The engine divides by the items of the whole global batch (``count_items``).
        """

    def count_items(self, batch: dict[str, torch.Tensor]) -> int | torch.Tensor:
        """Items the loss sums over: samples by default, target tokens for sequence tasks."""
        return len(next(iter(batch.values())))

    @abc.abstractmethod
    def evaluation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample tensors (``loss`` at least) that the engine gathers across processes."""

    @abc.abstractmethod
    def compute_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics (names start with ``eval_``) from the gathered evaluation outputs."""

    @abc.abstractmethod
    def head_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        """Parameters of the new head: the only ones trained during freeze_epochs."""

    @abc.abstractmethod
    def save_model(self, model: nn.Module, output_dir: Path) -> None:
        """Write the model so the ecosystem reloads it (and this script, via model_name_or_path)."""

    def set_head_only(self, head_only: bool) -> None:
        """With freeze_epochs: whether the epoch about to begin trains the head alone (the engine says so
        before its first batch is loaded)."""

    def sample_lengths(self, train_set: torch.utils.data.Dataset) -> list[int]:
        """Each training sample's length in tokens, for ``group_by_length`` (tasks with has_token_lengths)."""
        raise NotImplementedError(f"{type(self).__name__} has no token lengths")

    def token_batches(self, train_set: torch.utils.data.Dataset) -> Optional[TokenBudgetBatches]:
        """The training set's token-budget batches where the recipe asks for them (batch_by_tokens), else None."""
        if not self.args.batch_by_tokens:
            return None
        return TokenBudgetBatches(self.sample_lengths(train_set), self.args.per_device_train_batch_size, self.args.seed)

    def evaluate_before_training(self) -> bool:
        """Evaluate once before the first optimizer step of a fresh run (a baseline row at step 0)."""
        return False

    def write_artifacts(self, output_dir: Path) -> None:
        """Extra files from the last evaluation (e.g. predictions.txt); main process only, at the end."""

    def metric_names(self) -> set[str]:
        """Every metric an evaluation reports (target_metric must be one of them)."""
        return {self.main_metric, "eval_loss"}

    def card_info(self) -> dict[str, Any]:
        """What the model card says about the task (see fastft.model_card.build_card)."""
        metric = self.main_metric.removeprefix("eval_")
        return {"library_name": "transformers", "pipeline_tag": self.pipeline_tag, "tags": [],
                "main_metric": self.main_metric, "metric_type": metric, "metric_name": metric,
                "eval_split": self.eval_split_used,
                "load": 'from transformers import AutoModel\n\nmodel = AutoModel.from_pretrained("{repo_id}")'}

    def check_sources(self) -> None:
        """For --dry_run: refuse local model paths and data files that are missing or unreadable, cheaply
        (no weights loaded, nothing downloaded)."""

    def describe(self) -> list[str]:
        """Extra lines for the dry-run plan."""
        return []
