"""Sequence-to-sequence tasks (translation, speech recognition): token loss, generation, decoding.

What every encoder-decoder task shares lives here; a subclass brings its data,
its inputs (``collate_inputs``) and its metric (``score``):

- labels are padded with -100 and the decoder reads them shifted right;
- the training loss is summed over target tokens, -100 positions ignored by the
  cross-entropy and by the label-smoothing term alike; the engine divides by the
  target tokens of the whole accumulation window (``count_items``);
- evaluation generates (``num_beams``, ``max_new_tokens``) and reports a per-token loss;
- the last evaluation's predictions go to ``predictions.txt``.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from fastft import reporting
from fastft.batches import IGNORE_INDEX  # label padding that the loss skips, as in transformers
from fastft.config import TrainingArguments
from fastft.task_fields import Seq2SeqArguments
from fastft.tasks.base import Task

PREDICTIONS_FILE = "predictions.txt"


def token_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy SUMMED over target tokens; -100 labels add nothing, smoothing term included.

    torch masks ignore_index positions out of both the likelihood and the uniform
    (smoothing) term, which is what transformers' ``LabelSmoother`` does by hand.
    """
    return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing, reduction="sum")


def pad_labels(sequences: list[list[int]]) -> torch.Tensor:
    """Right-pad label sequences of different lengths with -100 into one (batch, longest) tensor."""
    return pad_sequence([torch.tensor(s, dtype=torch.long) for s in sequences], batch_first=True,
                        padding_value=IGNORE_INDEX)


def decoder_input_ids(model: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """The decoder's inputs: the labels shifted right behind the decoder start token (teacher forcing)."""
    model = extract_model_from_parallel(model)
    if hasattr(model, "prepare_decoder_input_ids_from_labels"):  # Marian, T5, BART, mBART, EncoderDecoder
        return model.prepare_decoder_input_ids_from_labels(labels=labels)
    config = model.config  # e.g. Whisper, which shifts only inside forward(labels=...)
    shifted = labels.new_full(labels.shape, config.pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = config.decoder_start_token_id
    return shifted.masked_fill(shifted == IGNORE_INDEX, config.pad_token_id)


class Seq2SeqTask(Task):
    """An encoder-decoder trained with teacher forcing and scored on generated text."""

    main_metric = "eval_bleu"
    greater_is_better = True
    has_token_lengths = True

    def __init__(self, task_args: Seq2SeqArguments, args: TrainingArguments):
        super().__init__(task_args, args)
        self.tokenizer: Any = None  # set by the subclass; decodes targets and generations
        # Set by the subclass's load_data, one per eval sample: what predictions.txt shows as the source,
        # and the untokenized reference text that is scored (not the possibly truncated label ids).
        self.eval_sources: list[str] = []
        self.eval_references: list[str] = []
        self.last_predictions: list[tuple[str, str, str]] = []  # (source, reference, prediction)

    # -- what a subclass brings ---------------------------------------------------------
    @abc.abstractmethod
    def collate_inputs(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The encoder's inputs for a batch (``input_ids`` + ``attention_mask``, ``input_features``, ...)."""

    @abc.abstractmethod
    def score(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        """Metrics (``eval_`` names) of generated texts against their references."""

    def evaluate_before_training(self) -> bool:
        return self.task_args.eval_before_training

    # -- targets -------------------------------------------------------------------------
    def set_decoder_start(self, decoder_start_token_id: int) -> None:
        """Note whether the tokenizer starts every target with the decoder start token (the model's config says
        which it is).

        BERT's [CLS] and Whisper's <|startoftranscript|> are both; shifting the labels
        right prepends that token again, so ``target_ids`` drops the tokenizer's copy.
        """
        first = self.tokenizer(text_target="a")["input_ids"][0]
        self.labels_repeat_start = first == decoder_start_token_id

    def target_ids(self, text: str) -> list[int]:
        """Label ids of a target: at most ``max_target_length``, ending with EOS, no repeated start token."""
        drop = int(self.labels_repeat_start)
        ids = self.tokenizer(text_target=text, max_length=self.task_args.max_target_length + drop,
                             truncation=True)["input_ids"]
        return ids[drop:]

    # -- batches and losses -------------------------------------------------------------
    def sample_lengths(self, train_set: torch.utils.data.Dataset) -> list[int]:
        # Padding costs in the decoder's labels (and a translation's source): both datasets count their tokens.
        return train_set.token_lengths()

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collate_inputs(examples)
        batch["labels"] = pad_labels([e["labels"] for e in examples])
        if "index" in examples[0]:  # position in the eval set, to find the untokenized reference
            batch["index"] = torch.tensor([e["index"] for e in examples])
        return batch

    def model_inputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The encoder inputs of a batch (everything but labels and bookkeeping) for ``model``."""
        return {k: v for k, v in batch.items() if k not in ("labels", "index")}

    def _logits(self, model: nn.Module, batch: dict[str, torch.Tensor], inputs: Optional[dict[str, Any]] = None
                ) -> torch.Tensor:
        inputs = self.model_inputs(model, batch) if inputs is None else inputs
        return model(**inputs, decoder_input_ids=decoder_input_ids(model, batch["labels"])).logits

    def count_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["labels"] != IGNORE_INDEX).sum()

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_loss(self._logits(model, batch), batch["labels"], self.args.label_smoothing_factor)

    def generation_kwargs(self) -> dict[str, Any]:
        a = self.task_args
        return {"num_beams": a.num_beams, "max_new_tokens": a.max_new_tokens or a.max_target_length}

    def evaluation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        inputs = self.model_inputs(model, batch)  # once: with cached encoder outputs it stacks them for the batch
        # Unsmoothed per-token loss, summed per sample; the engine divides by loss_items.
        per_token = F.cross_entropy(self._logits(model, batch, inputs).float().transpose(1, 2), labels,
                                    ignore_index=IGNORE_INDEX, reduction="none")
        generated = extract_model_from_parallel(model).generate(**inputs, **self.generation_kwargs())
        out = {"loss": per_token.sum(1), "loss_items": (labels != IGNORE_INDEX).sum(1),
               "generated": generated, "labels": labels}
        if "index" in batch:
            out["index"] = batch["index"]
        return out

    # -- text --------------------------------------------------------------------------
    def decode(self, ids: torch.Tensor) -> list[str]:
        """Token ids (padded with -100 by the engine's gather) to text, special tokens dropped."""
        ids = ids.masked_fill(ids == IGNORE_INDEX, self.tokenizer.pad_token_id)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def compute_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        indices = outputs["index"].tolist()  # positions in the eval set (the gather may reorder samples)
        predictions = self.decode(outputs["generated"])
        sources = [self.eval_sources[i] for i in indices]
        references = [self.eval_references[i] for i in indices]
        metrics = self.score(predictions, references)
        order = sorted(range(len(predictions)), key=indices.__getitem__)
        self.last_predictions = [(sources[i], references[i], predictions[i]) for i in order]
        return metrics

    def write_artifacts(self, output_dir: Path) -> None:
        """predictions.txt: source, reference and prediction per eval sample, tab-separated, in eval order."""
        def clean(text: str) -> str:
            return " ".join(text.split())  # one sample per line, whatever the text holds

        with open(output_dir / PREDICTIONS_FILE, "w") as f:
            for row in self.last_predictions:
                f.write("\t".join(clean(t) for t in row) + "\n")
        # The baseline row (step 0) survives a resume in metrics.jsonl; the task's memory would not.
        rows = [r for r in reporting.read_jsonl(output_dir / reporting.EVAL_LOG) if self.main_metric in r]
        if len(rows) >= 2 and rows[0]["step"] == 0:
            print(f"{self.main_metric}: {rows[0][self.main_metric]:.2f} before fine-tuning -> "
                  f"{rows[-1][self.main_metric]:.2f} after {rows[-1]['step']} steps "
                  f"({rows[-1]['eval_samples']} eval samples)", flush=True)
