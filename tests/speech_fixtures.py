"""Fixtures of the speech tests: spoken-word clips from espeak-ng and tiny models built from small configs.

Test modules import the fixtures they use by name (pytest finds them there).
"""
from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest

WORDS = ["yes", "no", "stop"]
TRAIN_VOICES = ["en-us+m1", "en-gb+f2", "en-us+f4", "en-gb-scotland+m3"]
TEST_VOICES = ["en-029+m3", "en-gb-x-rp+f4"]
SPEEDS = [140, 185]


def _say(text: str, voice: str, speed: int, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                   capture_output=True)


@pytest.fixture(scope="session")
def spoken_words(tmp_path_factory) -> Path:
    """audiofolder (train/<word>/*.wav, test/<word>/*.wav) plus train.csv / validation.csv of relative paths.

    Clips are 22,050 Hz espeak-ng speech, so every run also exercises resampling to 16 kHz.
    """
    if shutil.which("espeak-ng") is None:
        pytest.fail("the speech tests need espeak-ng: apt-get install espeak-ng (or make setup)")
    root = tmp_path_factory.mktemp("spoken_words")
    rows = {"train": [], "test": []}
    for split, voices in (("train", TRAIN_VOICES), ("test", TEST_VOICES)):
        for voice in voices:
            for speed in SPEEDS:
                for word in WORDS:
                    rel = Path(split) / word / f"{voice}-{speed}.wav"
                    _say(word, voice, speed, root / rel)
                    rows[split].append({"path": str(rel), "sentence": word, "label": word})
    for split, name in (("train", "train.csv"), ("test", "validation.csv")):
        with open(root / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "sentence", "label"])
            writer.writeheader()
            writer.writerows(rows[split])
    return root


def _whisper_tokenizer():
    from transformers import WhisperTokenizer

    from fastft.offline import speech as speech_assets

    return WhisperTokenizer.from_pretrained(speech_assets.model_asset("fastft:whisper_tiny_en"))


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    """A 2-second-window Whisper recogniser with random weights and whisper-tiny.en's tokenizer."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor)

    torch.manual_seed(0)
    tokenizer = _whisper_tokenizer()
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=100, max_target_positions=64,
                           suppress_tokens=[], begin_suppress_tokens=[220, 50256],
                           init_std=0.2)  # at 0.02 the fixed positions drown the audio: it learns the words' prior only
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=50257, bos_token_id=50257, eos_token_id=50256, pad_token_id=50256, max_length=64,
        no_timestamps_token_id=50362, is_multilingual=False, begin_suppress_tokens=[220, 50256])
    folder = tmp_path_factory.mktemp("tiny_whisper")
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80, chunk_length=2), tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_whisper_classifier(tmp_path_factory) -> Path:
    """A Whisper-encoder audio classifier (random weights, 5 labels), 2-second window, as on the Hub."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    torch.manual_seed(0)
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           num_mel_bins=80, max_source_positions=100, classifier_proj_size=16, num_labels=5,
                           init_std=0.2)  # at 0.02 the positions drown the audio in a random 32-wide encoder
    folder = tmp_path_factory.mktemp("tiny_whisper_classifier")
    WhisperForAudioClassification(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    """A tiny wav2vec2 audio classifier (random weights) with a feature extractor that returns attention masks."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, classifier_proj_size=16,
                            feat_extract_norm="layer", do_stable_layer_norm=True, num_labels=2)
    folder = tmp_path_factory.mktemp("tiny_wav2vec2")
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(folder)
    return folder


def asr_argv(out: Path, data: Path, model: Path, *extra: str) -> list[str]:
    return ["--task", "asr", "--model_name_or_path", str(model), "--train_file", str(data / "train.csv"),
            "--validation_file", str(data / "validation.csv"), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--learning_rate", "0.003",
            "--num_train_epochs", "2", "--logging_steps", "1", "--seed", "0", "--max_target_length", "32",
            "--max_new_tokens", "8", *extra]


def classification_argv(out: Path, data: Path, model: Path, *extra: str) -> list[str]:
    return ["--task", "audio_classification", "--model_name_or_path", str(model), "--dataset_name", "audiofolder",
            "--data_dir", str(data), "--output_dir", str(out), "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "8", "--learning_rate", "0.003", "--num_train_epochs", "4",
            "--logging_steps", "1", "--seed", "0", *extra]
