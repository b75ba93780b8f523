"""Audio classification (keyword spotting, ...): ``AutoModelForAudioClassification`` models, accuracy.

wav2vec2, HuBERT, AST or a Whisper encoder (a Whisper recogniser's checkpoint
gets a new head). Mixup on the model's input features and label smoothing, as
on images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import datasets
import torch
from torch import nn

from fastft import speech_models
from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.metrics import load_metric
from fastft.regularization import MixupCutmix, classification_loss
from fastft.task_fields import AudioClassificationArguments
from fastft.tasks.base import Task
from fastft.tasks.common import accuracy, classification_outputs, plan_lines
from fastft.tasks.speech_data import LABEL_COLUMNS, Clips, SpeechData


class AudioClassificationTask(Task):
    main_metric = "eval_accuracy"
    pipeline_tag = "audio-classification"

    def __init__(self, task_args: AudioClassificationArguments, args: TrainingArguments):
        super().__init__(task_args, args)
        self.data = SpeechData(task_args, args.seed, args.max_train_samples, args.max_eval_samples)
        self.label_names: Optional[list[str]] = None
        self.mixup: Optional[MixupCutmix] = None

    def evaluate_before_training(self) -> bool:
        return self.task_args.eval_before_training

    # -- data --------------------------------------------------------------------------
    def _max_duration(self) -> Optional[float]:
        """Longest clip kept: max_duration_s, and never more than a shortened Whisper window."""
        a = self.task_args
        if a.whisper_window_s and a.max_duration_s is not None and a.max_duration_s > a.whisper_window_s:
            raise UserError(f"max_duration_s {a.max_duration_s} exceeds whisper_window_s {a.whisper_window_s}: longer "
                            f"clips would be cut off; set max_duration_s to {a.whisper_window_s} or less")
        return a.max_duration_s if a.max_duration_s is not None else a.whisper_window_s

    def _splits(self) -> tuple[datasets.Dataset, datasets.Dataset]:
        return self.data.splits("label_column", LABEL_COLUMNS, self._max_duration())

    def num_train_samples(self) -> int:
        known = self.data.known_train_size()
        if known is not None:
            return known
        return len(self._splits()[0])

    def _labels(self, train: datasets.Dataset, evaluation: datasets.Dataset) -> tuple[list[str], Any]:
        """Class names and a function from a stored label to its id."""
        column = self.data.target_column
        feature = train.features[column]
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names), int
        values = sorted({v for v in train[column] if v is not None}, key=str)
        unseen = {v for v in evaluation[column] if v is not None} - set(values)
        if unseen:
            raise UserError(f"label_column {column!r}: evaluation labels {sorted(unseen, key=str)[:5]} never occur in "
                            f"training; a classifier cannot learn them")
        index = {v: i for i, v in enumerate(values)}
        return [str(v) for v in values], index.__getitem__

    def load_data(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        train, evaluation = self._splits()
        self.label_names, to_id = self._labels(train, evaluation)
        if len(self.label_names) < 2:
            raise UserError(f"label_column {self.data.target_column!r} holds {len(self.label_names)} class; a "
                            f"classifier needs at least 2")
        self._load_extractor()
        a = self.task_args
        if a.mixup_alpha > 0:  # no cutmix: cutting rectangles out of spectrograms is SpecAugment's job, not ours
            self.mixup = MixupCutmix(len(self.label_names), a.mixup_alpha, 0.0, a.mixup_prob, 0.0,
                                     self.args.label_smoothing_factor)
        self.metric = load_metric("accuracy")
        rate, column = self.extractor.sampling_rate, self.data.audio_column

        def encode(label: Any) -> dict[str, int]:
            return {"labels": to_id(label)}

        return (Clips(train, column, self.data.target_column, rate, encode),
                Clips(evaluation, column, self.data.target_column, rate, encode))

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = speech_models.extract_features(self.extractor, [e["audio"] for e in examples],
                                               self.extractor.sampling_rate)
        batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=torch.long)
        return batch

    def _load_extractor(self) -> None:
        """The checkpoint's feature extractor, padding to a shortened Whisper window if the recipe sets one."""
        a = self.task_args
        self.extractor = speech_models.load_feature_extractor(a.model_name_or_path)
        if a.whisper_window_s:
            config = speech_models.load_config(a.model_name_or_path)
            if not speech_models.is_whisper(config):
                raise UserError(f"whisper_window_s applies to Whisper models; {a.model_name_or_path} is a "
                                f"{config.model_type}: unset it")
            speech_models.check_whisper_window(config, a.whisper_window_s)
            speech_models.set_extractor_window(self.extractor, a.whisper_window_s)
        self.input_name = self.extractor.model_input_names[0]

    # -- model ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if self.label_names is None:
            raise RuntimeError("load_data() must run before build_model()")
        a = self.task_args
        model = speech_models.load_audio_classifier(a.model_name_or_path, self.label_names, a.zero_init_head)
        if a.whisper_window_s:
            speech_models.set_whisper_window(model, a.whisper_window_s)
        speech_models.freeze(model, a.freeze_encoder, a.freeze_feature_encoder, classifier=True)
        return model

    def head_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        head = speech_models.head_parameter_names(model)
        return [p for name, p in model.named_parameters() if name in head]

    def _inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch.items() if k != "labels"}

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs, targets = self._inputs(batch), batch["labels"]
        if self.mixup is not None:
            inputs[self.input_name], targets = self.mixup(inputs[self.input_name], targets)
            # A mixed clip is as long as the longer of its pair: let it attend to the whole padded batch
            # (padding is silence) rather than to its own, shorter mask.
            inputs.pop("attention_mask", None)
        logits = model(**inputs).logits
        return classification_loss(logits, targets, self.args.label_smoothing_factor) * len(targets)

    def evaluation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return classification_outputs(model(**self._inputs(batch)).logits, batch["labels"])

    def compute_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        return accuracy(self.metric, outputs)

    def save_model(self, model: nn.Module, output_dir: Path) -> None:
        # AutoModelForAudioClassification + AutoFeatureExtractor (and the pipeline) reload it.
        model.save_pretrained(output_dir)
        self.extractor.save_pretrained(output_dir)

    # -- reporting -----------------------------------------------------------------------
    def card_info(self) -> dict[str, Any]:
        return {**super().card_info(), "tags": ["audio-classification"], "metric_name": "Accuracy",
                "task_name": "speech", "eval_split": self.data.eval_split_used,
                "load": 'from transformers import AutoFeatureExtractor, AutoModelForAudioClassification\n\n'
                        'model = AutoModelForAudioClassification.from_pretrained("{repo_id}")\n'
                        'extractor = AutoFeatureExtractor.from_pretrained("{repo_id}")',
                "pipeline": 'from transformers import pipeline\n\n'
                            'classifier = pipeline("audio-classification", model="{repo_id}")'}

    def check_sources(self) -> None:
        speech_models.resolve(self.task_args.model_name_or_path)

    def describe(self) -> list[str]:
        a = self.task_args
        longest = "any length" if self._max_duration() is None else f"{self._max_duration():g} s"
        return plan_lines({
            "task": "audio_classification",
            "model": a.model_name_or_path,
            "dataset": self.data.describe(),
            "clips": f"{a.min_duration_s:g} s to {longest}"})
