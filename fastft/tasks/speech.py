"""Speech tasks: the recipe's ``task`` picks speech recognition (``asr``) or ``audio_classification``.

Both read the same kinds of data (``fastft.tasks.speech_data``) and models from
transformers; ``scripts/train_speech.py`` runs them on the shared engine.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from fastft.config import TrainingArguments, field
from fastft.errors import UserError
from fastft.tasks.base import Task
from fastft.tasks.seq2seq import Seq2SeqArguments


@dataclasses.dataclass
class SpeechArguments(Seq2SeqArguments):
    """Fields of the speech tasks (the seq2seq ones apply to asr)."""

    task: Literal["asr", "audio_classification"] = field(
        "asr", "asr: speech recognition (AutoModelForSpeechSeq2Seq); audio_classification: "
               "AutoModelForAudioClassification.")
    model_name_or_path: Optional[str] = field(None, "Hub id, local folder or fastft:whisper_tiny_en.")
    dataset_name: Optional[str] = field(None, "HF dataset: Hub name, audiofolder (with data_dir), csv/json (with "
                                              "train_file) or fastft: asset; unset with train_file: its type.")
    dataset_config_name: Optional[str] = field(None, "Configuration of the Hub dataset, e.g. hi for Common Voice.")
    data_dir: Optional[str] = field(None, "Local folder for audiofolder: train/ and test/ with class folders or a "
                                          "metadata.csv.")
    train_file: Optional[str] = field(None, "Local csv/json/jsonl: an audio path column (relative to the file) and "
                                            "a text or label column.")
    validation_file: Optional[str] = field(None, "Local csv/json/jsonl of evaluation clips, like train_file.")
    train_split: str = field("train", "Split to train on.")
    eval_split: Optional[str] = field(None, "Split to evaluate on; unset: validation, else test, else held out.")
    train_val_split: float = field(0.15, "Share of train held out for evaluation when there is no eval split.",
                                   min=0, max=1, exclusive_min=True, exclusive_max=True)
    audio_column: Optional[str] = field(None, "Column holding the audio (datasets Audio or a file path); unset: "
                                              "detected.")
    text_column: Optional[str] = field(None, "asr: column holding the transcripts; unset: detected.")
    label_column: Optional[str] = field(None, "audio_classification: column holding the labels; unset: detected.")
    max_duration_s: Optional[float] = field(None, "Drop clips longer than this (seconds); unset: the model's window "
                                                  "(Whisper), else no limit.", min=0, exclusive_min=True)
    min_duration_s: float = field(0.0, "Drop clips shorter than this (seconds).", min=0)
    whisper_window_s: Optional[int] = field(None, "Whisper: input window in seconds (30 native); shorter runs "
                                                  "faster on short clips but must be learnt by fine-tuning.",
                                            min=1, max=30)
    language: Optional[str] = field(None, "asr, multilingual Whisper: language of the speech, e.g. hindi or hi.")
    asr_task: Literal["transcribe", "translate"] = field(
        "transcribe", "asr, multilingual Whisper: transcribe, or translate into English.")
    freeze_encoder: bool = field(False, "Keep the whole encoder frozen (trains the decoder or the head only).")
    cache_encoder_outputs: bool = field(False, "asr, Whisper with freeze_encoder: keep each clip's encoder output in "
                                               "memory, so later epochs and evaluations skip the encoder and the "
                                               "audio.")
    freeze_feature_encoder: bool = field(False, "Keep the CNN feature encoder of wav2vec2/HuBERT frozen.")
    text_normalization: Literal["none", "basic", "whisper_english"] = field(
        "basic", "asr: text normalisation before WER/CER: none, basic (lowercase, no punctuation), whisper_english "
                 "(also numbers, spellings).")
    zero_init_head: bool = field(True, "audio_classification: start a new head's output layer at zero.")
    mixup_alpha: float = field(0.0, "audio_classification: mixup Beta(alpha, alpha) on the input features; 0 is off.",
                               min=0)
    mixup_prob: float = field(1.0, "audio_classification: probability of mixing a batch.", min=0, max=1)


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
