"""Mistakes in translation and speech data and models: one line naming the culprit, exit 2, output_dir untouched.

Each error case runs the command that would resume an unfinished run, plus one mistake; the run's folder must
stay byte for byte. Rows with empty targets are dropped with a warning, and training goes on.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import datasets
import numpy as np
import pytest
import soundfile
from speech_fixtures import (asr_argv, classification_argv, spoken_words, tiny_whisper,  # noqa: F401 (fixtures)
                             tiny_whisper_classifier)
from test_translation import tiny_marian, toy_argv, toy_data  # noqa: F401 (fixtures)

from fastft.run import main
from fastft.tasks.speech import SpeechArguments, speech_task
from fastft.tasks.translation import TranslationArguments, TranslationTask

RUN = {"translation": lambda argv: main(TranslationTask, TranslationArguments, argv),
       "speech": lambda argv: main(speech_task, SpeechArguments, argv)}
FAST = ("--max_steps", "2", "--checkpointing_steps", "2", "--eval_strategy", "no", "--max_eval_samples", "8")


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _jsonl(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def _csv(rows: list[list]) -> str:
    return "".join(",".join(map(str, row)) + "\n" for row in rows)


def _model_copy(root: Path, model: Path, name: str, change: Callable[[Path], None]) -> Path:
    folder = root / name
    shutil.copytree(model, folder)
    change(folder)
    return folder


def _truncate(file: str) -> Callable[[Path], None]:
    return lambda folder: (folder / file).write_bytes((folder / file).read_bytes()[:100])


def _write(file: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / file).write_text(text)


def _drop_model_type(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))


def _wav(frames: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(frames, np.float32), 16000, format="WAV")
    return buffer.getvalue()


def _zero_rate(folder: Path) -> None:
    config = json.loads((folder / "processor_config.json").read_text())
    config["feature_extractor"]["sampling_rate"] = 0
    (folder / "processor_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def bad(tmp_path_factory, toy_data, tiny_marian, spoken_words, tiny_whisper, tiny_whisper_classifier):
    """Broken data files and model folders, two unfinished runs, and the commands that would resume them."""
    root = tmp_path_factory.mktemp("bad_text_speech")
    pairs = [json.loads(line) for line in (toy_data / "small.jsonl").read_text().splitlines()]

    def text(name: str, content: str | bytes) -> str:
        path = root / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return str(path)

    def with_row(name: str, row, at: int = 20) -> str:  # the bad row lands on line at + 1
        return text(name, _jsonl(pairs[:at] + [row] + pairs[at:]))

    # Speech rows: absolute audio paths, so the csv files may live anywhere.
    clips = {split: [[str(spoken_words / r["path"]), r["sentence"], r["label"]]
                     for r in csv.DictReader((spoken_words / f"{split}.csv").read_text().splitlines())]
             for split in ("train", "validation")}
    header = ["path", "sentence", "label"]
    (root / "zero_bytes.wav").write_bytes(b"")
    soundfile.write(root / "no_samples.wav", np.zeros(0, np.float32), 16000)

    def clip_csv(name: str, *extra: list, rows: list | None = None) -> str:
        return text(name, _csv([header] + (clips["train"] if rows is None else rows) + list(extra)))

    parquet = root / "parquet"  # audio bytes in an Audio column, as Hub datasets hold them
    parquet.mkdir()
    for split, frames in (("train", [8000] * 5 + [0]), ("test", [8000] * 3)):
        rows = {"audio": [{"bytes": _wav(n), "path": f"clip{i}.wav"} for i, n in enumerate(frames)],
                "sentence": ["yes"] * len(frames)}
        datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False)).to_parquet(
            parquet / f"{split}.parquet")
    (root / "metadata_folder" / "train").mkdir(parents=True)
    (root / "metadata_folder" / "train" / "metadata.csv").write_bytes(b"")
    out = SimpleNamespace(root=root, with_row=with_row, text=text, clip_csv=clip_csv, clips=clips,
                          valid_clips=str(spoken_words / "validation.csv"), marian=tiny_marian)
    for name, change in (("bad_config", _write("config.json", "{not json")), ("no_model_type", _drop_model_type),
                         ("truncated", _truncate("model.safetensors")),
                         ("bad_tokenizer_config", _write("tokenizer_config.json", "{")),
                         ("truncated_tokenizer", _truncate("tokenizer.json")),
                         ("no_config", lambda folder: (folder / "config.json").unlink())):
        setattr(out, f"marian_{name}", str(_model_copy(root, tiny_marian, f"marian_{name}", change)))
    for name, change in (("bad_config", _write("config.json", "nope")), ("truncated", _truncate("model.safetensors")),
                         ("zero_rate", _zero_rate)):
        setattr(out, f"whisper_{name}", str(_model_copy(root, tiny_whisper, f"whisper_{name}", change)))

    # Without the mistake, these commands would resume the unfinished runs (the same plan).
    out.text_run, out.speech_run = root / "text_run", root / "speech_run"
    RUN["translation"](toy_argv(out.text_run, toy_data, tiny_marian, *FAST))
    RUN["speech"](asr_argv(out.speech_run, spoken_words, tiny_whisper, *FAST))
    for run in (out.text_run, out.speech_run):
        (run / "metrics.json").unlink()
    out.translation = lambda *extra: toy_argv(out.text_run, toy_data, tiny_marian, *FAST, *extra)
    out.asr = lambda *extra: asr_argv(out.speech_run, spoken_words, tiny_whisper, *FAST, *extra)
    out.parquet = lambda *extra: [a for a in asr_argv(out.speech_run, spoken_words, tiny_whisper, *FAST)
                                  if not a.endswith(".csv") and a not in ("--train_file", "--validation_file")] + [
        "--dataset_name", "parquet", "--data_dir", str(parquet), *extra]
    out.audiofolder = lambda *extra: classification_argv(out.speech_run, spoken_words, tiny_whisper_classifier,
                                                         *FAST, *extra)
    out.classify = lambda *extra: out.audiofolder("--dataset_name", "csv", "--validation_file", out.valid_clips, *extra)
    return out


def _warm_start(b, encoder: str, decoder: str) -> list[str]:
    argv = b.translation()
    i = argv.index("--model_name_or_path")
    return argv[:i] + argv[i + 2:] + ["--encoder_name_or_path", encoder, "--decoder_name_or_path", decoder]


NO_FR = {"translation": {"en": "one cat"}}
ONE = {"translation": {"en": "one", "fr": "un"}}

# (case id, kind, argv builder of the `bad` fixture, substrings the one error line must hold)
CASES = [
    # translation data
    ("row without the target language", "translation",
     lambda b: b.translation("--train_file", b.with_row("no_fr.jsonl", NO_FR)),
     ["train_file", "no_fr.jsonl line 21", "no target_lang 'fr'", "it has en"]),
    ("row without a translation", "translation",
     lambda b: b.translation("--train_file", b.with_row("no_translation.jsonl", {"text": "one"})),
     ["no_translation.jsonl line 21", "no translation", "it has text"]),
    ("null translation", "translation",
     lambda b: b.translation("--train_file", b.with_row("null.jsonl", {"translation": None})),
     ["null.jsonl line 21", "translation is null"]),
    ("number as a target", "translation",
     lambda b: b.translation("--train_file", b.with_row("number.jsonl", {"translation": {"en": "one", "fr": 1}})),
     ["number.jsonl line 21", "a number as 'fr'", "not text"]),
    ("translation that is a string", "translation",
     lambda b: b.translation("--train_file", b.text("strings.jsonl", _jsonl([{"translation": "un"}] * 30))),
     ["strings.jsonl line 1", "translation is text", "30 of 30 rows"]),
    ("validation row without the target language", "translation",
     lambda b: b.translation("--validation_file", b.text("valid_no_fr.jsonl", _jsonl([ONE, ONE, NO_FR]))),
     ["validation_file", "valid_no_fr.jsonl line 3", "target_lang 'fr'"]),
    ("0-byte train_file", "translation", lambda b: b.translation("--train_file", b.text("empty.jsonl", "")),
     ["train_file", "empty.jsonl is empty"]),
    ("0-byte validation_file", "translation",
     lambda b: b.translation("--validation_file", b.text("empty_valid.jsonl", "")),
     ["validation_file", "empty_valid.jsonl is empty"]),
    ("malformed JSON line", "translation",
     lambda b: b.translation("--train_file", b.with_row("broken.jsonl", '{"translation": {"en": "one",', at=6)),
     ["train_file", "broken.jsonl line 7 is not valid JSON"]),
    ("json file that is not rows", "translation",
     lambda b: b.translation("--train_file", b.text("scalar.json", '"one cat"'),
                             "--validation_file", b.text("list.json", json.dumps([ONE]))),
     ["scalar.json holds text, not rows"]),
    ("every target empty", "translation",
     lambda b: b.translation("--train_file", b.text("no_targets.jsonl", _jsonl(
         [{"translation": {"en": "one", "fr": t}} for t in ("", " ", None) * 10]))),
     ["every training pair", "no_targets.jsonl", "empty"]),
    ("train_file that is a folder", "translation", lambda b: b.translation("--train_file", str(b.root)),
     ["train_file", "is a folder"]),
    ("train_file that is not UTF-8", "translation",
     lambda b: b.translation("--train_file", b.text("latin1.jsonl", _jsonl(
         [ONE] * 5 + [{"translation": {"en": "coffee", "fr": "café"}}]).encode("latin-1"))),
     ["latin1.jsonl line 6 is not UTF-8", "0xe9"]),
    ("csv row with too many fields", "translation",
     lambda b: b.translation("--train_file", b.text("ragged.csv", "en,fr\none,un\ntwo,deux,trois\n"),
                             "--validation_file", b.text("pairs.csv", "en,fr\none,un\n")),
     ["ragged.csv line 3 has 3 fields but the header 2"]),
    ("csv without the target column", "translation",
     lambda b: b.translation("--train_file", b.text("no_fr.csv", "en,de\none,eins\n"),
                             "--validation_file", b.text("no_fr_valid.csv", "en,de\ntwo,zwei\n")),
     ["no_fr.csv line 2", "'fr'", "it has en, de"]),
    ("csv with a column twice", "translation",
     lambda b: b.translation("--train_file", b.text("twice.csv", "en,fr,en\none,un,one\n"),
                             "--validation_file", b.text("pairs2.csv", "en,fr\none,un\n")),
     ["twice.csv", "column 'en' appears twice"]),
    ("csv with only a header", "translation",
     lambda b: b.translation("--train_file", b.text("header.csv", "en,fr\n"),
                             "--validation_file", b.text("pairs3.csv", "en,fr\none,un\n")),
     ["header.csv holds no rows"]),
    ("files with different columns", "translation",
     lambda b: b.translation("--validation_file", b.text("columns.jsonl", _jsonl([{"en": "one", "fr": "un"}]))),
     ["validation_file", "columns.jsonl has columns en, fr", "train.jsonl has translation"]),
    # translation models
    ("relative model path that does not exist", "translation",
     lambda b: b.translation("--model_name_or_path", "./no/such/model"),
     ["model_name_or_path ./no/such/model does not exist"]),
    ("absolute model path that does not exist", "translation",
     lambda b: b.translation("--model_name_or_path", "/abs/missing"),
     ["model_name_or_path /abs/missing does not exist"]),
    ("encoder path that does not exist", "translation", lambda b: _warm_start(b, "./no/encoder", str(b.marian)),
     ["encoder_name_or_path ./no/encoder does not exist"]),
    ("decoder path that does not exist", "translation", lambda b: _warm_start(b, str(b.marian), "../no/decoder"),
     ["decoder_name_or_path ../no/decoder does not exist"]),
    ("tokenizer path that does not exist", "translation", lambda b: b.translation("--tokenizer_name", "~/no/tokenizer"),
     ["tokenizer_name ~/no/tokenizer does not exist"]),
    ("weights file as the model", "translation",
     lambda b: b.translation("--model_name_or_path", str(b.marian / "model.safetensors")),
     ["model.safetensors is a file", "give the folder"]),
    ("config.json that is not JSON", "translation",
     lambda b: b.translation("--model_name_or_path", b.marian_bad_config),
     ["marian_bad_config/config.json is not valid JSON", "line 1"]),
    ("config.json without model_type", "translation",
     lambda b: b.translation("--model_name_or_path", b.marian_no_model_type),
     ["marian_no_model_type/config.json names no model_type"]),
    ("truncated model.safetensors", "translation", lambda b: b.translation("--model_name_or_path", b.marian_truncated),
     ["marian_truncated/model.safetensors is damaged or truncated"]),
    ("tokenizer_config.json that is not JSON", "translation",
     lambda b: b.translation("--model_name_or_path", b.marian_bad_tokenizer_config),
     ["marian_bad_tokenizer_config/tokenizer_config.json is not valid JSON"]),
    ("truncated tokenizer.json", "translation",
     lambda b: b.translation("--model_name_or_path", b.marian_truncated_tokenizer),
     ["marian_truncated_tokenizer/tokenizer.json is not valid JSON"]),
    ("model folder without config.json", "translation",
     lambda b: b.translation("--model_name_or_path", b.marian_no_config), ["marian_no_config has no config.json"]),
    ("dry run with a model path that does not exist", "translation",
     lambda b: b.translation("--dry_run", "--model_name_or_path", "./no/such/model"),
     ["model_name_or_path ./no/such/model does not exist"]),
    ("dry run with a truncated model", "translation",
     lambda b: b.translation("--dry_run", "--model_name_or_path", b.marian_truncated), ["damaged or truncated"]),
    ("dry run with a speech model path that does not exist", "speech",
     lambda b: b.asr("--dry_run", "--model_name_or_path", "/no/whisper"), ["/no/whisper does not exist"]),
    # speech data
    ("0-byte speech csv", "speech", lambda b: b.asr("--train_file", b.text("empty.csv", "")),
     ["train_file", "empty.csv is empty"]),
    ("malformed speech jsonl", "speech",
     lambda b: b.asr("--train_file", b.text("clips.jsonl", '{"path": "a.wav", "sentence": "yes"}\n\n{oops\n'),
                     "--validation_file", b.text("clips_valid.jsonl", '{"path": "a.wav", "sentence": "yes"}\n')),
     ["train_file", "clips.jsonl line 3 is not valid JSON"]),
    ("csv listing a missing audio file", "speech",
     lambda b: b.asr("--train_file", b.clip_csv("missing_audio.csv", ["nowhere/gone.wav", "yes", "yes"])),
     ["gone.wav does not exist", "1 of 25 training clips", "train_file", "missing_audio.csv"]),
    ("missing audio file, audio classification", "speech",
     lambda b: b.classify("--train_file", b.clip_csv("missing_audio2.csv", ["nowhere/gone.wav", "yes", "yes"])),
     ["gone.wav does not exist", "missing_audio2.csv"]),
    ("0-byte audio file", "speech",
     lambda b: b.asr("--train_file", b.clip_csv("zero.csv", ["zero_bytes.wav", "yes", "yes"])),
     ["zero_bytes.wav is empty (0 bytes)", "zero.csv"]),
    ("WAV with zero frames", "speech",
     lambda b: b.asr("--train_file", b.clip_csv("no_samples.csv", ["no_samples.wav", "yes", "yes"])),
     ["no_samples.wav has no samples (0 frames)", "no_samples.csv"]),
    ("WAV with zero frames, audio classification", "speech",
     lambda b: b.classify("--train_file", b.clip_csv("no_samples2.csv", ["no_samples.wav", "yes", "yes"])),
     ["no_samples.wav has no samples (0 frames)"]),
    ("zero frames in audio bytes", "speech", lambda b: b.parquet(),
     ["audio clip5.wav has no samples (0 frames)"]),
    ("row without an audio path", "speech",
     lambda b: b.asr("--train_file", b.clip_csv("no_path.csv", ["", "yes", "yes"])),
     ["has no audio path", "'path'", "no_path.csv"]),
    ("every transcript empty", "speech",
     lambda b: b.asr("--train_file", b.clip_csv("silent.csv", rows=[[p, " ", w] for p, _, w in b.clips["train"]])),
     ["every training clip", "silent.csv", "empty 'sentence'"]),
    ("speech files with different columns", "speech",
     lambda b: b.asr("--train_file", b.text("no_audio.csv", _csv([["sentence", "label"], ["yes", "yes"]]))),
     ["validation_file", "has columns path, sentence, label", "no_audio.csv has sentence, label"]),
    ("csv without a text column", "speech",
     lambda b: b.asr("--train_file", b.text("labels.csv", _csv([["path", "label"]] + [[p, w] for p, _, w in
                                                                                        b.clips["train"]])),
                     "--validation_file", b.text("labels_valid.csv", _csv([["path", "label"], [b.clips["train"][0][0],
                                                                                               "yes"]]))),
     ["no text column found among path, label", "set text_column"]),
    ("transcripts that are numbers", "speech",
     lambda b: b.asr("--train_file", b.clip_csv("digits.csv", rows=[[p, i, w] for i, (p, _, w) in
                                                                     enumerate(b.clips["train"])]),
                     "--validation_file", b.clip_csv("digits_valid.csv", rows=[[b.clips["train"][0][0], 1, "yes"]])),
     ["text_column 'sentence' holds int64, not transcripts"]),
    ("column types that differ between files", "speech",
     lambda b: b.asr("--train_file", b.clip_csv("digits2.csv", rows=[[p, i, w] for i, (p, _, w) in
                                                                      enumerate(b.clips["train"])])),
     ["datasets could not read", "digits2.csv", "validation.csv", "'stop'"]),
    ("audio column of numbers", "speech",
     lambda b: b.asr("--train_file", b.text("numbers.csv", _csv([["path", "sentence"], [1, "yes"], [2, "no"]])),
                     "--validation_file", b.text("numbers_valid.csv", _csv([["path", "sentence"], [3, "yes"]]))),
     ["audio_column 'path'", "not audio or paths of audio files"]),
    ("speech train_file that is a folder", "speech", lambda b: b.asr("--train_file", str(b.root)),
     ["train_file", "is a folder", "audiofolder"]),
    ("speech csv that is not UTF-8", "speech",
     lambda b: b.asr("--train_file", b.text("latin1.csv", "path,sentence,label\nx.wav,café,yes\n".encode("latin-1"))),
     ["latin1.csv line 2 is not UTF-8"]),
    ("0-byte audiofolder metadata", "speech",
     lambda b: b.audiofolder("--data_dir", str(b.root / "metadata_folder")),
     ["metadata file", "metadata.csv is empty"]),
    # speech models
    ("speech model path that does not exist", "speech", lambda b: b.asr("--model_name_or_path", "./no/such/model"),
     ["model_name_or_path ./no/such/model does not exist"]),
    ("truncated Whisper weights", "speech", lambda b: b.asr("--model_name_or_path", b.whisper_truncated),
     ["whisper_truncated/model.safetensors is damaged or truncated"]),
    ("Whisper config.json that is not JSON", "speech", lambda b: b.asr("--model_name_or_path", b.whisper_bad_config),
     ["whisper_bad_config/config.json is not valid JSON"]),
    ("feature extractor at 0 Hz", "speech", lambda b: b.asr("--model_name_or_path", b.whisper_zero_rate),
     ["sampling_rate 0", "whisper_zero_rate", "positive"]),
]


@pytest.mark.parametrize("case, kind, build, expected", CASES, ids=[c[0] for c in CASES])
def test_mistake_gives_one_clear_line(case, kind, build, expected, bad, capsys):
    argv = build(bad)
    runs = (bad.text_run, bad.speech_run)
    before = [snapshot(run) for run in runs]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        RUN[kind](argv)
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for part in expected:
        assert part in errors[0], (part, errors[0])
    assert "Traceback" not in stderr
    assert [snapshot(run) for run in runs] == before  # both unfinished runs untouched, still resumable


EXTRA = {"translation": {"en": "two", "fr": "deux", "de": "zwei"}}  # rows of other languages: a Json column
EMPTY = [{"translation": {"en": "one", "fr": "  "}}, {"translation": {"en": "two", "fr": None}},
         {"translation": {"en": "", "fr": "trois"}}]

# (case id, kind, argv builder of (bad, output_dir), the warning, training pairs or clips left, eval samples)
WARNINGS = [
    ("empty translation targets and sources are dropped", "translation",
     lambda b, out: b.translation("--output_dir", out,
                                  "--train_file", b.text("gaps.jsonl", _jsonl([ONE] * 20 + [EXTRA] + EMPTY)),
                                  "--validation_file", b.text("gaps_valid.jsonl", _jsonl([ONE] * 7 + EMPTY[:1]))),
     [r"dropping 3 of 24 training pairs of train_file \S+gaps.jsonl whose source or target text is empty",
      r"dropping 1 of 8 evaluation pairs of validation_file \S+gaps_valid.jsonl"], 21, 7),
    ("empty transcripts are dropped", "speech",
     lambda b, out: b.asr("--output_dir", out, "--train_file", b.clip_csv(
         "gaps.csv", [b.clips["train"][0][0], "", "yes"], [b.clips["train"][1][0], "  ", "yes"])),
     [r"dropping 2 of 26 training clips of train_file \S+gaps.csv whose 'sentence' is empty"], 24, 8),
    ("clips without a label are dropped", "speech",
     lambda b, out: b.classify("--output_dir", out, "--train_file", b.clip_csv("no_label.csv",
                                                                               [b.clips["train"][0][0], "yes", ""])),
     [r"dropping 1 of 25 training clips of train_file \S+no_label.csv whose 'label' is empty"], 24, 8),
]


@pytest.mark.parametrize("case, kind, build, warned, kept, evaluated", WARNINGS, ids=[c[0] for c in WARNINGS])
def test_empty_targets_are_dropped_with_a_warning(case, kind, build, warned, kept, evaluated, bad, tmp_path):
    out = tmp_path / "run"
    with pytest.warns(UserWarning) as record:
        final = RUN[kind](build(bad, str(out)))
    messages = [str(w.message) for w in record]
    for pattern in warned:
        assert any(re.search(pattern, m) for m in messages), (pattern, messages)
    assert final["total_steps"] == 2 and final["eval_samples"] == evaluated
    assert f"num_train_samples: {kept}\n" in (out / "config.yaml").read_text()
