"""Speech tasks: the recipe's ``task`` picks speech recognition (``asr``) or ``audio_classification``.

Both read the same kinds of data (``fastft.tasks.speech_data``) and models from
transformers; ``scripts/train_speech.py`` and ``fastft train speech`` run them on the
shared engine. A speech recipe parses as ``SpeechArguments`` (either kind's fields);
each task gets the fields of its own kind only.
"""
from __future__ import annotations

from fastft.config import TrainingArguments
from fastft.task_fields import SpeechArguments, speech_kind_arguments
from fastft.tasks.asr import AsrTask
from fastft.tasks.audio_classification import AudioClassificationTask
from fastft.tasks.base import Task

# The recipe's task -> the Task class that runs it (its fields: fastft.task_fields.SPEECH_KINDS).
SPEECH_TASKS: dict[str, type[Task]] = {"asr": AsrTask, "audio_classification": AudioClassificationTask}


def speech_task(task_args: SpeechArguments, args: TrainingArguments) -> Task:
    """The Task the recipe's ``task`` names, given the fields of its kind (fastft.cli.TASKS points here)."""
    return SPEECH_TASKS[task_args.task](speech_kind_arguments(task_args), args)
