"""Speech datasets for both speech tasks: Hub names, audiofolder, csv/json files or fastft: assets.

Audio columns stay undecoded (paths or ``{"bytes", "path"}``); ``fastft.audio``
decodes and resamples one example at a time in the data loader. Local data files
are read once with the stdlib first (``fastft.data_files``).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import datasets
import numpy as np
import torch

from fastft.audio import AUDIO_SUFFIXES, duration_s, load_audio
from fastft.errors import UserError
from fastft.data_files import check_same_columns, file_builder, load_local, local_files, scan_data_file
from fastft.offline import speech as speech_assets
from fastft.offline.common import is_asset
from fastft.tasks.common import (describe_eval_split, find_column, known_train_size, load_hub_dataset, named_split,
                                 with_eval_split)

AUDIO_COLUMNS = ("audio", "path", "file", "file_name", "filename", "audio_path", "audio_filepath")
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_transcription")
LABEL_COLUMNS = ("label", "labels", "class", "keyword", "command", "intent")
SPLIT_FOLDERS = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev"),
                 "test": ("test", "testing", "eval", "evaluation")}


class SpeechData:
    """Loads, splits and filters the recipe's dataset; shared by the ASR and audio-classification tasks."""

    def __init__(self, task_args: Any, seed: int, max_train: Optional[int], max_eval: Optional[int]):
        self.a, self.seed, self.max_train, self.max_eval = task_args, seed, max_train, max_eval
        self.eval_split_used: Optional[str] = None  # set by splits(), for the model card

    # -- where the data comes from -------------------------------------------------------
    def files(self) -> dict[str, Path]:
        files = local_files(self.a, {"train": "train_file", "validation": "validation_file"},
                            "give a csv or json/jsonl file (for a folder of audio, use dataset_name audiofolder with "
                            "data_dir)",
                            "give a csv or json/jsonl file with an audio path column and a text or label column")
        if files and "train" not in files:
            raise UserError("train_file is required with local files (validation_file is for evaluation)")
        return files

    def name(self) -> str:
        files = self.files()
        if not files:
            if not self.a.dataset_name:
                raise UserError("dataset_name is required: a Hub name, audiofolder (with data_dir), a fastft: "
                                f"asset ({', '.join(speech_assets.DATASET_ASSETS)}), or set train_file")
            return self.a.dataset_name
        builder = file_builder(self.a.dataset_name, files)
        if builder is None:
            raise UserError(f"train_file/validation_file must end in .csv, .json or .jsonl (or set dataset_name csv "
                            f"or json); got {', '.join(map(str, files.values()))}")
        return builder

    def known_train_size(self) -> Optional[int]:
        """Train-set size of a well-known Hub dataset (cut to max_train_samples), so a dry run needs no download."""
        return None if self.files() else known_train_size(self.a.dataset_name, self.a.dataset_config_name,
                                                           self.max_train)

    def describe(self) -> str:
        """The data, for the dry-run plan: the local files, or the dataset's name and configuration."""
        config = self.a.dataset_config_name
        return ", ".join(map(str, self.files().values())) or self.name() + (f" ({config})" if config else "")

    def _load_raw(self) -> datasets.DatasetDict:
        a, name, files = self.a, self.name(), self.files()
        if is_asset(name):
            return speech_assets.dataset_asset(name)
        if files:
            check_same_columns({f"{split}_file {path}": scan_data_file(f"{split}_file", path, name)
                                for split, path in files.items()})
            raw = load_local(name, files)
            # Paths in a file are relative to that file's folder, wherever the script runs from.
            return datasets.DatasetDict({k: _absolute_paths(ds, a.audio_column, files[k].parent)
                                         for k, ds in raw.items()})
        if name == "audiofolder":
            if not a.data_dir or not Path(a.data_dir).is_dir():
                raise UserError(f"dataset_name audiofolder needs data_dir, a folder with train/ and test/ (class "
                                f"folders, or audio with a metadata.csv); got {a.data_dir!r}")
            return load_audiofolder(Path(a.data_dir))
        return load_hub_dataset(name, a.dataset_config_name, a.data_dir, "a Hub dataset (online), audiofolder with "
                                "data_dir, csv/json files, or a fastft: asset")

    # -- splits ------------------------------------------------------------------------------
    def splits(self, target_field: str, target_candidates: tuple,
               max_duration: Optional[float]) -> tuple[datasets.Dataset, datasets.Dataset]:
        """Train and eval splits with undecoded audio, cut to max_*_samples and filtered by duration."""
        a, raw = self.a, self._load_raw()
        self.max_duration = max_duration
        train = named_split(raw, a, "train_split", self.name())
        self.audio_column = find_column(train, a.audio_column, AUDIO_COLUMNS, "audio_column")
        self.target_column = find_column(train, getattr(a, target_field), target_candidates, target_field)
        feature = train.features[self.target_column]
        if target_field == "text_column" and not (isinstance(feature, datasets.Value) and "string" in feature.dtype):
            raise UserError(f"text_column {self.target_column!r} holds {getattr(feature, 'dtype', feature)}, not "
                            f"transcripts; set text_column to the column of texts")
        # Cut to max_*_samples before the duration filter, as HF's scripts do: filtering a whole Hub
        # split would read every header.
        self.eval_split_used = describe_eval_split(raw, a)
        train, evaluation = with_eval_split(raw, train, a, self.seed, self.name(), (self.max_train, self.max_eval),
                                            self.target_column)
        return self._prepare(train, "training"), self._prepare(evaluation, "evaluation")

    def _origin(self, which: str) -> str:
        """Where the ``which`` (training or evaluation) clips come from, for messages."""
        files = self.files()
        if not files:
            return f"dataset {self.name()}" + (f" {self.a.data_dir}" if self.a.data_dir else "")
        if which == "training" or "validation" not in files:
            return f"train_file {files['train']}" + ("" if which == "training" else " (held out)")
        return f"validation_file {files['validation']}"

    def _prepare(self, ds: datasets.Dataset, which: str) -> datasets.Dataset:
        if self.target_column not in ds.column_names or self.audio_column not in ds.column_names:
            raise UserError(f"the {which} split lacks column {self.audio_column!r} or {self.target_column!r}; "
                            f"it has {', '.join(ds.column_names)}")
        feature = ds.features[self.audio_column]
        paths = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
        if isinstance(feature, datasets.Audio):
            # datasets' own decoder needs torchcodec + FFmpeg; fastft.audio reads the bytes instead.
            ds = ds.cast_column(self.audio_column, datasets.Audio(decode=False))
        elif not paths:
            raise UserError(f"audio_column {self.audio_column!r} of {self._origin(which)} holds {feature}, not audio "
                            f"or paths of audio files; set audio_column")
        ds = self._drop_empty_targets(ds, which)
        low, high = self.a.min_duration_s, self.max_duration
        # Local files are all checked now, not one by one mid-training after output_dir was written.
        durations = self._local_durations(ds[self.audio_column], which) if paths else None
        if low > 0 or high is not None:
            if durations is not None:
                keep = ds.select([i for i, d in enumerate(durations) if low <= d <= (high or np.inf)])
            else:
                column = self.audio_column
                keep = ds.filter(lambda batch: [low <= _seconds(x, column, low) <= (high or np.inf)
                                                for x in batch[column]], batched=True, batch_size=256,
                                 desc="duration filter")
            if len(ds) and not len(keep):
                raise UserError(f"no {which} clip lasts between min_duration_s {low} and max_duration_s {high}; "
                                f"widen them")
            ds = keep
        if not len(ds):
            raise UserError(f"the {which} split of {self.name()} is empty")
        return ds

    def _drop_empty_targets(self, ds: datasets.Dataset, which: str) -> datasets.Dataset:
        """Without the clips whose transcript or label is missing or blank, with a warning that counts them.

        An empty transcript trains the model to stop at once, and a missing label has no class to learn.
        """
        column = self.target_column
        missing = -1 if isinstance(ds.features[column], datasets.ClassLabel) else None  # datasets' "no label"
        keep = [i for i, t in enumerate(ds[column])
                if t is not None and t != missing and not (isinstance(t, str) and not t.strip())]
        if len(keep) == len(ds):
            return ds
        origin = self._origin(which)
        if not keep:
            raise UserError(f"every {which} clip of {origin} has an empty {column!r}; check the column "
                            f"(text_column or label_column)")
        warnings.warn(f"dropping {len(ds) - len(keep)} of {len(ds)} {which} clips of {origin} whose {column!r} is "
                      f"empty", stacklevel=2)
        return ds.select(keep)

    def _local_durations(self, paths: list[Optional[str]], which: str) -> list[float]:
        """Seconds of each clip; one error naming the first missing, unreadable or empty one, and how many."""
        durations, bad, first = [], 0, ""
        for path in paths:
            try:
                seconds = _seconds(path, self.audio_column, self.a.min_duration_s)
            except UserError as err:
                bad, first, seconds = bad + 1, first or str(err), 0.0
            durations.append(seconds)
        if bad:
            relative = " (paths are relative to the file's folder)" if self.files() else ""
            raise UserError(f"{first}; {bad} of {len(paths)} {which} clips of {self._origin(which)} cannot be "
                            f"used: fix or remove them{relative}")
        return durations


def _seconds(clip: Any, column: str, min_duration_s: float) -> float:
    """Seconds of a clip (a path or datasets' audio dict); a UserError for one that cannot be trained on."""
    if not clip:
        raise UserError(f"a row has no audio path in column {column!r}")
    seconds = duration_s(clip)
    if seconds == 0 and min_duration_s == 0:  # else the duration filter drops it
        name = (clip.get("path") or "<audio bytes>") if isinstance(clip, dict) else clip
        raise UserError(f"audio {name} has no samples (0 frames)")
    return seconds


def _split_name(folder: str) -> Optional[str]:
    for split, names in SPLIT_FOLDERS.items():
        if folder.lower() in names:
            return split
    return None


def load_audiofolder(root: Path) -> datasets.DatasetDict:
    """HF's ``audiofolder`` layout without its builder, which needs torchcodec just to store paths.

    Split folders (train/, validation/, test/; else the whole folder is train) hold
    either a metadata.csv/.jsonl with a ``file_name`` column, or audio files in
    class folders, whose names become a ``label`` ClassLabel.
    """
    splits = {_split_name(d.name): d for d in sorted(root.iterdir()) if d.is_dir() and _split_name(d.name)}
    splits = splits or {"train": root}
    tables: dict[str, dict[str, list]] = {}
    by_folder = set()  # splits labelled by their class folders
    for split, folder in splits.items():
        metadata = next((folder / m for m in ("metadata.csv", "metadata.jsonl") if (folder / m).is_file()), None)
        if metadata is not None:
            builder = "csv" if metadata.suffix == ".csv" else "json"
            scan_data_file("metadata file", metadata, builder)
            table = load_local(builder, {"train": metadata})["train"]
            if "file_name" not in table.column_names:
                raise UserError(f"{metadata} needs a file_name column with the audio paths (relative to it)")
            rows = table.to_dict()
            rows["audio"] = [str(folder / f) for f in rows.pop("file_name")]
        else:
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            rows = {"audio": [str(p) for p in files], "label": [p.parent.name for p in files]}
            by_folder.add(split)
        tables[split] = rows
    if not any(t["audio"] for t in tables.values()):
        raise UserError(f"audiofolder {root} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    # One ClassLabel over every split's class folders, so ids agree between train and eval.
    classes = datasets.Features({"audio": datasets.Value("string"), "label": datasets.ClassLabel(
        names=sorted({label for split in by_folder for label in tables[split]["label"]}))})
    out = {split: datasets.Dataset.from_dict(rows, features=classes if split in by_folder else None, split=split)
           for split, rows in tables.items()}
    return datasets.DatasetDict(out)


def _absolute_paths(ds: datasets.Dataset, column: Optional[str], base: Path) -> datasets.Dataset:
    column = find_column(ds, column, AUDIO_COLUMNS, "audio_column")
    if ds.features[column] not in (datasets.Value("string"), datasets.Value("large_string")):
        return ds  # audio, or not paths at all (SpeechData._prepare names that)

    def absolute(batch: dict[str, list]) -> dict[str, list]:
        return {column: [p if p is None or Path(p).is_absolute() else str(base / p) for p in batch[column]]}

    return ds.map(absolute, batched=True, desc="audio paths")


class Clips(torch.utils.data.Dataset):
    """One example = the decoded clip at the model's rate plus what ``encode`` makes of its target.

    ``skip_audio(key)`` true means the task no longer needs the clip's samples (it
    keeps what it computed from them): the example then comes with ``audio`` None.
    """

    def __init__(self, ds: datasets.Dataset, audio_column: str, target_column: str, sampling_rate: int,
                 encode: Callable[[Any], dict[str, Any]], key_offset: int = 0,
                 skip_audio: Optional[Callable[[int], bool]] = None):
        self.ds, self.audio_column, self.target_column = ds, audio_column, target_column
        self.sampling_rate, self.encode, self.key_offset = sampling_rate, encode, key_offset
        self.skip_audio = skip_audio

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        # index: position in this split (finds the reference text); key: unique across splits (caches)
        row, key = self.ds[i], self.key_offset + i
        skip = self.skip_audio is not None and self.skip_audio(key)
        audio = None if skip else load_audio(row[self.audio_column], self.sampling_rate)
        return {"audio": audio, **self.encode(row[self.target_column]), "index": i, "key": key}

    def token_lengths(self) -> list[int]:
        """Label tokens of every clip (group_by_length), read from the text column without decoding audio."""
        return [len(self.encode(text)["labels"]) for text in self.ds[self.target_column]]
