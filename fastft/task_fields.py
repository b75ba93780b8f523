"""The recipe fields of each task, apart from the tasks so that parsing and ``--help`` import no torch.

``fastft.config.TrainingArguments`` holds the fields every task shares; ``DatasetFields`` the dataset
and its splits, which every task reads alike. Speech has two kinds of task with fields of their own:
``SpeechArguments`` parses a recipe of either, ``speech_kind_arguments`` keeps the fields of its kind.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional, Union

from fastft.config import field
from fastft.errors import UserError


def _held_out_share(default: float) -> Any:
    return field(default, "Share of train held out for evaluation when there is no eval split.",
                 min=0, max=1, exclusive_min=True, exclusive_max=True)


@dataclasses.dataclass
class DatasetFields:
    """The dataset and its splits; each task says in ``dataset_name`` which sources it reads."""

    dataset_name: Optional[str] = field(None, "HF dataset: Hub name or fastft: asset.")
    dataset_config_name: Optional[str] = field(None, "Configuration of the Hub dataset, if it has several (e.g. "
                                                     "ro-en for wmt16, hi for Common Voice).")
    train_split: str = field("train", "Split to train on.")
    eval_split: Optional[str] = field(None, "Split to evaluate on; unset: validation, else test, else held out.")
    train_val_split: float = _held_out_share(0.15)


@dataclasses.dataclass
class BaselineFields:
    """The baseline evaluation, which the translation and speech tasks offer."""

    eval_before_training: bool = field(False, "Evaluate once before the first optimizer step (a baseline in "
                                              "metrics.jsonl).")


@dataclasses.dataclass
class ImageArguments(DatasetFields):
    """Fields of the image-classification task."""

    model_name_or_path: str = field(None, "timm name, Hub id (timm or transformers), local folder or fastft: asset.")
    pretrained: bool = field(True, "Load pretrained weights; false trains the same architecture from scratch.")
    zero_init_head: bool = field(True, "Start a new head at zero on pretrained weights (BiT, Kolesnikov et al. 2020).")
    dataset_name: str = field("fastft:fashion_mnist", "HF dataset: Hub name, 'imagefolder' (with data_dir) or fastft: asset.")
    data_dir: Optional[str] = field(None, "Local folder for imagefolder: train/ and test/ or validation/ class folders.")
    image_column: Optional[str] = field(None, "Column holding the images; unset: detected.")
    label_column: Optional[str] = field(None, "Column holding the class labels; unset: detected.")
    image_size: Optional[int] = field(None, "Input resolution; unset: the model's pretrained size.", min=8)
    eval_crop_pct: Optional[float] = field(None, "Center-crop share at evaluation; unset: the model's.",
                                           min=0, max=1, exclusive_min=True)
    train_crop_scale_min: float = field(0.08, "Smallest area share of RandomResizedCrop in training.",
                                        min=0, max=1, exclusive_min=True)
    hflip: float = field(0.5, "Probability of a horizontal flip in training.", min=0, max=1)
    auto_augment: Optional[str] = field(None, "timm auto-augment policy, e.g. rand-m9-mstd0.5; unset: none.")
    mixup_alpha: float = field(0.0, "Mixup Beta(alpha, alpha); 0 turns mixup off (Zhang et al. 2018).", min=0)
    cutmix_alpha: float = field(0.0, "CutMix Beta(alpha, alpha); 0 turns cutmix off (Yun et al. 2019).", min=0)
    mixup_prob: float = field(1.0, "Probability of mixing a batch.", min=0, max=1)
    on_bad_image: Literal["error", "skip"] = field("error", "An unreadable image stops the run, or is skipped "
                                                   "with a warning.")
    mixup_switch_prob: float = field(0.5, "Probability of cutmix instead of mixup when both are on.", min=0, max=1)
    cache_frozen_features: bool = field(False, "During freeze_epochs, train the head on each image's features "
                                               "computed once, un-augmented (a linear probe, LP-FT).")


@dataclasses.dataclass
class Seq2SeqArguments(BaselineFields):
    """Fields every sequence-to-sequence task shares."""

    model_name_or_path: Optional[str] = field(None, "Seq2seq checkpoint: Hub id, local folder or fastft: asset.")
    max_target_length: int = field(128, "Longest tokenized target in training; longer ones are truncated.", min=1)
    num_beams: int = field(1, "Beam width when generating at evaluation; 1 is greedy.", min=1)
    max_new_tokens: Optional[int] = field(None, "Most tokens generated per sample at evaluation; unset: "
                                                "max_target_length.", min=1)


@dataclasses.dataclass
class TranslationArguments(Seq2SeqArguments, DatasetFields):
    """Fields of the translation task."""

    encoder_name_or_path: Optional[str] = field(None, "Warm-start the encoder from this checkpoint (BERT2BERT, "
                                                      "Rothe et al. 2020), with decoder_name_or_path.")
    decoder_name_or_path: Optional[str] = field(None, "Warm-start the decoder from this checkpoint (it gains "
                                                      "new cross-attention).")
    tokenizer_name: Optional[str] = field(None, "Tokenizer to use; unset: the model's (or the encoder's).")
    pretrained: bool = field(True, "Load pretrained weights; false trains the same architecture from scratch.")
    source_lang: Optional[str] = field(None, "Source language: its key in the translation column, e.g. en.")
    target_lang: Optional[str] = field(None, "Target language: its key in the translation column, e.g. de.")
    source_lang_code: Optional[str] = field(None, "Source language code of a multilingual tokenizer (mBART en_XX, "
                                                  "NLLB eng_Latn).")
    target_lang_code: Optional[str] = field(None, "Target language code of a multilingual tokenizer (mBART ro_RO, "
                                                  "NLLB ron_Latn); generation is forced to start with it.")
    source_prefix: str = field("", "Text put before every source, e.g. 'translate English to German: ' for T5.")
    max_source_length: int = field(1024, "Longest tokenized source; longer ones are truncated.", min=1)
    dataset_name: Optional[str] = field(None, "HF dataset: Hub name, json or csv (with train_file), or fastft: "
                                              "asset; unset: the files' type, else fastft:gettext_en_de.")
    train_file: Optional[str] = field(None, "Local json/jsonl/csv file of training pairs.")
    validation_file: Optional[str] = field(None, "Local json/jsonl/csv file of evaluation pairs.")
    test_file: Optional[str] = field(None, "Local json/jsonl/csv file of test pairs (evaluated if no validation).")
    train_val_split: float = _held_out_share(0.05)
    source_column: Optional[str] = field(None, "Column of source texts, for data without a translation column; "
                                               "unset: the column named source_lang.")
    target_column: Optional[str] = field(None, "Column of target texts, for data without a translation column; "
                                               "unset: the column named target_lang.")
    freeze_embeddings: bool = field(False, "Keep the token embeddings and the output layer tied to them fixed: "
                                           "faster steps, pretrained vectors for rare words.")
    eval_lowercase: bool = field(False, "Case-insensitive BLEU and chrF (sacrebleu --lowercase), e.g. for an "
                                        "uncased target tokenizer.")


_SPEECH_TASK_HELP = ("asr: speech recognition (AutoModelForSpeechSeq2Seq); audio_classification: "
                     "AutoModelForAudioClassification.")


@dataclasses.dataclass
class SpeechDataFields(DatasetFields):
    """Fields both speech tasks share: the clips, where they come from, and the encoder."""

    task: Literal["asr", "audio_classification"] = field("asr", _SPEECH_TASK_HELP)
    model_name_or_path: Optional[str] = field(None, "Hub id, local folder or fastft:whisper_tiny_en.")
    dataset_name: Optional[str] = field(None, "HF dataset: Hub name, audiofolder (with data_dir), csv/json (with "
                                              "train_file) or fastft: asset; unset with train_file: its type.")
    data_dir: Optional[str] = field(None, "Local folder for audiofolder: train/ and test/ with class folders or a "
                                          "metadata.csv.")
    train_file: Optional[str] = field(None, "Local csv/json/jsonl: an audio path column (relative to the file) and "
                                            "a text or label column.")
    validation_file: Optional[str] = field(None, "Local csv/json/jsonl of evaluation clips, like train_file.")
    audio_column: Optional[str] = field(None, "Column holding the audio (datasets Audio or a file path); unset: "
                                              "detected.")
    max_duration_s: Optional[float] = field(None, "Drop clips longer than this (seconds); unset: the model's window "
                                                  "(Whisper), else no limit.", min=0, exclusive_min=True)
    min_duration_s: float = field(0.0, "Drop clips shorter than this (seconds).", min=0)
    whisper_window_s: Optional[int] = field(None, "Whisper: input window in seconds (30 native); shorter runs "
                                                  "faster on short clips but must be learnt by fine-tuning.",
                                            min=1, max=30)
    freeze_encoder: bool = field(False, "Keep the whole encoder frozen (trains the decoder or the head only).")
    freeze_feature_encoder: bool = field(False, "Keep the CNN feature encoder of wav2vec2/HuBERT frozen.")


@dataclasses.dataclass
class AsrArguments(SpeechDataFields, Seq2SeqArguments):
    """Fields of speech recognition (task: asr)."""

    text_column: Optional[str] = field(None, "asr: column holding the transcripts; unset: detected.")
    language: Optional[str] = field(None, "asr, multilingual Whisper: language of the speech, e.g. hindi or hi.")
    asr_task: Literal["transcribe", "translate"] = field(
        "transcribe", "asr, multilingual Whisper: transcribe, or translate into English.")
    cache_encoder_outputs: bool = field(False, "asr, Whisper with freeze_encoder: keep each clip's encoder output in "
                                               "memory, so later epochs and evaluations skip the encoder and the "
                                               "audio.")
    text_normalization: Literal["none", "basic", "whisper_english"] = field(
        "basic", "asr: text normalisation before WER/CER: none, basic (lowercase, no punctuation), whisper_english "
                 "(also numbers, spellings).")


@dataclasses.dataclass
class AudioClassificationArguments(SpeechDataFields, BaselineFields):
    """Fields of audio classification (task: audio_classification)."""

    task: Literal["asr", "audio_classification"] = field("audio_classification", _SPEECH_TASK_HELP)
    label_column: Optional[str] = field(None, "audio_classification: column holding the labels; unset: detected.")
    zero_init_head: bool = field(True, "audio_classification: start a new head's output layer at zero.")
    mixup_alpha: float = field(0.0, "audio_classification: mixup Beta(alpha, alpha) on the input features; 0 is off.",
                               min=0)
    mixup_prob: float = field(1.0, "audio_classification: probability of mixing a batch.", min=0, max=1)


@dataclasses.dataclass
class SpeechArguments(AsrArguments, AudioClassificationArguments):
    """What a speech recipe may hold: the fields of both kinds (AsrArguments first, so task defaults to asr)."""


SPEECH_KINDS: dict[str, type] = {"asr": AsrArguments, "audio_classification": AudioClassificationArguments}


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def speech_kind_arguments(parsed: Any) -> Union[AsrArguments, AudioClassificationArguments]:
    """The fields of the kind the recipe's ``task`` names; one of the other kind, set, is a mistake named."""
    kind = SPEECH_KINDS[parsed.task]
    own, defaults = _names(kind), SpeechArguments()
    for name in _names(type(parsed)) - own:
        if getattr(parsed, name) != getattr(defaults, name):
            other = next(k for k, cls in SPEECH_KINDS.items() if name in _names(cls))
            raise UserError(f"{name} applies to task {other}, but task is {parsed.task}: unset {name} or set "
                            f"task: {other}")
    return kind(**{name: getattr(parsed, name) for name in own})
