"""Speech tasks: the recipe's ``task`` picks speech recognition (``asr``) or ``audio_classification``.

Both read the same kinds of data (``fastft.tasks.speech_data``) and models from
transformers; ``scripts/train_speech.py`` runs them on the shared engine.
"""
from __future__ import annotations

from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.tasks.base import Task
from fastft.task_fields import SpeechArguments


# Fields that belong to one kind only: set for the other, they are a mistake worth naming.
_ONLY = {"asr": ("text_column", "language", "text_normalization", "num_beams", "max_new_tokens",
                 "cache_encoder_outputs"),
         "audio_classification": ("label_column", "mixup_alpha")}


def speech_task(task_args: SpeechArguments, args: TrainingArguments) -> Task:
    """The task the recipe's ``task`` names (engine.main calls this like a Task class)."""
    defaults = SpeechArguments()
    for kind, names in _ONLY.items():
        for name in names:
            if kind != task_args.task and getattr(task_args, name) != getattr(defaults, name):
                raise UserError(f"{name} applies to task {kind}, but task is {task_args.task}: unset {name} or set "
                                f"task: {kind}")
    if task_args.task == "asr":
        from fastft.tasks.asr import AsrTask

        return AsrTask(task_args, args)
    from fastft.tasks.audio_classification import AudioClassificationTask

    return AudioClassificationTask(task_args, args)
