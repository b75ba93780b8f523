"""Translation: HF datasets or local files in, any ``AutoModelForSeq2SeqLM`` (or a warm-started pair) out.

Models: Marian, T5 (``source_prefix``), mBART / NLLB (``source_lang_code``,
``target_lang_code``), or an encoder-decoder warm-started from two pretrained
checkpoints (``encoder_name_or_path``, ``decoder_name_or_path``; BERT2BERT,
Rothe et al. 2020). Scored by generation on sacreBLEU (main) and chrF.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import datasets
import torch
from torch import nn

from fastft.data_files import check_same_columns, file_builder, json_kind, load_local, local_files, scan_data_file
from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.metrics import load_metric
from fastft.offline import text as text_assets
from fastft.tasks.common import (describe_eval_split, eval_split_name, known_train_size, load_hub_dataset,
                                 named_split, plan_lines, with_eval_split)
from fastft.task_fields import TranslationArguments
from fastft.tasks.seq2seq import Seq2SeqTask
from fastft.text_models import Seq2SeqTokens, check_names, load_seq2seq, load_tokens

DEFAULT_DATASET = "fastft:gettext_en_de"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class _Pairs(torch.utils.data.Dataset):
    """Tokenizes one pair at a time, so a large dataset stays in its Arrow table."""

    def __init__(self, ds: datasets.Dataset, pair: Callable[[dict], tuple[str, str]],
                 encode: Callable[[str, str], dict[str, list[int]]]):
        self.ds, self.pair, self.encode = ds, pair, encode

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.encode(*self.pair(self.ds[i])), "index": i}

    def token_lengths(self) -> list[int]:
        """Source plus target tokens of every pair (group_by_length)."""
        return [len(e["input_ids"]) + len(e["labels"]) for e in (self.encode(*self.pair(row)) for row in self.ds)]


def freeze_embeddings(model: nn.Module, vocab_size: int) -> int:
    """Stop training every token-embedding table and the output projection; how many weights froze.

    An encoder-decoder has up to three vocabulary-sized matrices (encoder, decoder,
    LM head; often tied): on a CPU their gradients and optimizer updates are a
    large share of a step, and a short fine-tuning run barely moves them anyway.
    """
    frozen = 0
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings >= vocab_size]
    output = model.get_output_embeddings()
    for weight in {id(w): w for w in tables + ([output.weight] if output is not None else [])}.values():
        weight.requires_grad_(False)
        frozen += weight.numel()
    return frozen


class TranslationTask(Seq2SeqTask):
    main_metric = "eval_bleu"
    pipeline_tag = "translation"
    cost_follows_tokens = True

    def __init__(self, task_args: TranslationArguments, args: TrainingArguments):
        super().__init__(task_args, args)
        a = task_args
        warm = a.encoder_name_or_path or a.decoder_name_or_path
        if bool(a.model_name_or_path) == bool(warm):
            raise UserError("set either model_name_or_path (a seq2seq checkpoint) or encoder_name_or_path and "
                            "decoder_name_or_path (warm start, e.g. fastft:minilm_l6 for both)")
        if warm and not (a.encoder_name_or_path and a.decoder_name_or_path):
            raise UserError("encoder_name_or_path and decoder_name_or_path go together: set both "
                            "(the same checkpoint twice gives BERT2BERT)")
        for name, column in (("source_lang", a.source_column), ("target_lang", a.target_column)):
            if not getattr(a, name) and not column:
                raise UserError(f"{name} is required: the language's key in the translation column "
                                f"(e.g. en, de, ro), or set {name.split('_')[0]}_column")
        if bool(a.source_lang_code) != bool(a.target_lang_code):
            raise UserError("source_lang_code and target_lang_code go together (e.g. en_XX and ro_RO for mBART)")
        if args.freeze_epochs and not warm:
            raise UserError("freeze_epochs trains only newly initialised weights, which a pretrained seq2seq "
                            "model has none of: unset freeze_epochs, or warm-start with encoder_/decoder_name_or_path")
        self.new_parameters: set[str] = set()
        self.tokens: Optional[Seq2SeqTokens] = None  # the tokenizer and decoding ids, once load_data has read them

    # -- data --------------------------------------------------------------------------
    def _files(self) -> dict[str, Path]:
        hint = "give a json, jsonl or csv file of pairs"
        return local_files(self.task_args, {"train": "train_file", "validation": "validation_file",
                                            "test": "test_file"}, hint, hint)

    def _dataset(self) -> str:
        a, files = self.task_args, self._files()
        if not files:
            return a.dataset_name or DEFAULT_DATASET
        builder = file_builder(a.dataset_name, files)
        if builder is None:
            raise UserError(f"train_file/validation_file/test_file need dataset_name json or csv (or files ending "
                            f"in .json, .jsonl or .csv); got dataset_name {a.dataset_name!r} and files "
                            f"{', '.join(map(str, files.values()))}")
        return builder

    def _load_raw(self) -> datasets.DatasetDict:
        a, name, files = self.task_args, self._dataset(), self._files()
        if files:
            if "train" not in files:
                raise UserError("train_file is required with local files (validation_file/test_file are for eval)")
            scanned = {f"{split}_file {path}": scan_data_file(f"{split}_file", path, name, self._row_problem)
                       for split, path in files.items()}
            check_same_columns(scanned)
            # As text: pandas would read a column of digits as numbers, which a tokenizer refuses.
            features = datasets.Features({c: datasets.Value("string") for c in next(iter(scanned.values()))}) \
                if name == "csv" else None
            return load_local(name, files, features=features)
        if text_assets.is_asset(name):
            return text_assets.dataset_asset(name)
        if name in ("json", "csv"):
            raise UserError(f"dataset_name {name} needs train_file (and validation_file or test_file)")
        return load_hub_dataset(name, a.dataset_config_name, None,
                                f"a Hub dataset (online), json/csv files, or {DEFAULT_DATASET}")

    def _splits(self) -> tuple[datasets.Dataset, datasets.Dataset]:
        a, raw, name = self.task_args, self._load_raw(), self._dataset()
        train, evaluation = with_eval_split(raw, named_split(raw, a, "train_split", name), a, self.args.seed, name,
                                            (self.args.max_train_samples, self.args.max_eval_samples))
        eval_split = eval_split_name(raw, a)
        self.eval_split_used = describe_eval_split(raw, a)
        train = self._drop_empty(train, "training", self._origin(a.train_split))
        evaluation = self._drop_empty(evaluation, "evaluation", self._origin(eval_split) if eval_split else
                                      f"{self._origin(a.train_split)} (held out)")
        if not len(train) or not len(evaluation):
            raise UserError(f"dataset {name} gives {len(train)} training and {len(evaluation)} evaluation "
                            f"pairs; both need at least one")
        return train, evaluation

    def _origin(self, split: str) -> str:
        """What a split was read from, for messages."""
        files = self._files()
        return f"{split}_file {files[split]}" if split in files else f"the {split} split of {self._dataset()}"

    def _drop_empty(self, ds: datasets.Dataset, which: str, origin: str) -> datasets.Dataset:
        """Without the pairs whose source or target is empty, with a warning that counts them.

        An empty target teaches the model to stop at once; an empty source, to make a translation up.
        """
        if not len(ds):
            return ds
        columns, read = self._reader(ds)
        kept = ds.filter(lambda *values: [all(t.strip() for t in read(*row)) for row in zip(*values)],
                         input_columns=columns, batched=True, desc="empty pairs")
        if not len(kept):
            raise UserError(f"every {which} pair of {origin} has an empty source or target text")
        if len(kept) < len(ds):
            warnings.warn(f"dropping {len(ds) - len(kept)} of {len(ds)} {which} pairs of {origin} whose source or "
                          f"target text is empty", stacklevel=2)
        return kept

    def _row_problem(self, row: dict) -> Optional[str]:
        """What keeps a row of a local file from being a pair, or None; empty texts are dropped later."""
        a = self.task_args
        named = a.source_column or a.target_column
        if not named and "translation" in row:
            pair, where = row["translation"], "its translation"
            if not isinstance(pair, dict):
                return f"its translation is {json_kind(pair)}, not an object of language: text"
            keys = (("source_lang", a.source_lang), ("target_lang", a.target_lang))
        else:
            pair, where = row, "it"
            keys = (("source_column", a.source_column or a.source_lang),
                    ("target_column", a.target_column or a.target_lang))
        for field_name, key in keys:
            if key not in pair:
                # Unless columns are named, a row without a translation object must hold the languages as columns.
                wanted = f"{field_name} {key!r}" if named or pair is not row else f"translation (nor a column {key!r})"
                return f"{where} has no {wanted}; it has {', '.join(map(str, pair)) or 'nothing'}"
            if pair[key] is not None and not isinstance(pair[key], str):
                return f"{where} holds {json_kind(pair[key])} as {key!r}, not text"
        return None

    def _reader(self, ds: datasets.Dataset) -> tuple[list[str], Callable[..., tuple[str, str]]]:
        """The columns a pair is read from, and (source, target) from their values: a translation column of
        language: text, or two text columns. A missing text reads as empty."""
        a, columns = self.task_args, ds.column_names
        if a.source_column or a.target_column or "translation" not in columns:
            source = a.source_column or a.source_lang
            target = a.target_column or a.target_lang
            for name, column in (("source_column", source), ("target_column", target)):
                if column not in columns:
                    raise UserError(f"{name} {column!r} is not a column of the dataset (no translation column "
                                    f"either); it has {', '.join(columns)}")
            return [source, target], lambda s, t: (_text(s), _text(t))
        feature = ds.features["translation"]
        if isinstance(feature, datasets.Value):
            raise UserError(f"the translation column holds {feature.dtype}, not language: text pairs; set "
                            f"source_column and target_column")
        # A Json feature (rows with different languages) has no language list: each row is read as it is.
        langs = list(feature.languages) if isinstance(feature, datasets.Translation) else \
            list(feature) if isinstance(feature, dict) else None
        for name in ("source_lang", "target_lang"):
            if langs is not None and getattr(a, name) not in langs:
                raise UserError(f"{name} {getattr(a, name)!r} is not a language of the translation column; "
                                f"it has {', '.join(map(str, langs))}")
        src, tgt = a.source_lang, a.target_lang

        def read(pair: Any) -> tuple[str, str]:
            pair = pair if isinstance(pair, dict) else {}
            return _text(pair.get(src)), _text(pair.get(tgt))

        return ["translation"], read

    def _pair_reader(self, ds: datasets.Dataset) -> Callable[[dict], tuple[str, str]]:
        """How to read (source, target) from a row."""
        columns, read = self._reader(ds)
        return lambda row: read(*(row[c] for c in columns))

    def num_train_samples(self) -> int:
        a = self.task_args
        known = None if self._files() else known_train_size(a.dataset_name, a.dataset_config_name,
                                                            self.args.max_train_samples)
        return known if known is not None else len(self._splits()[0])

    def load_data(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        train, evaluation = self._splits()
        self.tokens = load_tokens(self.task_args)
        self.tokenizer = self.tokens.tokenizer
        self.set_decoder_start(self.tokens.decoder_start_token_id)
        read = self._pair_reader(train)
        eval_read = self._pair_reader(evaluation)
        pairs = [eval_read(row) for row in evaluation]
        # Scored against the untokenized references: sacreBLEU's point is detokenized, comparable text.
        self.eval_sources, self.eval_references = [p[0] for p in pairs], [p[1] for p in pairs]
        self.bleu, self.chrf = load_metric("sacrebleu"), load_metric("chrf")
        return _Pairs(train, read, self.encode), _Pairs(evaluation, eval_read, self.encode)

    def encode(self, source: str, target: str) -> dict[str, list[int]]:
        """Token ids of a pair; the labels end with EOS and do not repeat the decoder start token."""
        a, tok = self.task_args, self.tokenizer
        source_length = min(a.max_source_length, getattr(tok, "model_max_length", a.max_source_length))
        input_ids = tok(a.source_prefix + source, max_length=source_length, truncation=True)["input_ids"]
        return {"input_ids": input_ids, "labels": self.target_ids(target)}

    def collate_inputs(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer.pad({"input_ids": [e["input_ids"] for e in examples]}, return_tensors="pt"))

    def score(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        lower = self.task_args.eval_lowercase
        return {"eval_bleu": self.bleu.compute(predictions=predictions, references=references,
                                               lowercase=lower)["score"],
                "eval_chrf": self.chrf.compute(predictions=predictions, references=references,
                                               lowercase=lower)["score"]}

    # -- model ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if self.tokens is None:
            raise RuntimeError("load_data() must run before build_model()")
        loaded = load_seq2seq(self.task_args, self.tokens)
        self.new_parameters = loaded.new_parameters
        if self.task_args.freeze_embeddings:
            freeze_embeddings(loaded.model, len(self.tokenizer))
        return loaded.model

    def check_sources(self) -> None:
        check_names(self.task_args)
        self._files()

    def head_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        """The weights a warm start initialised anew (cross-attention, LM-head transform)."""
        return [p for name, p in model.named_parameters() if name in self.new_parameters]

    def save_model(self, model: nn.Module, output_dir: Path) -> None:
        # AutoModelForSeq2SeqLM + AutoTokenizer reload it, and so does model_name_or_path.
        model.save_pretrained(output_dir)
        self.tokenizer.save_pretrained(output_dir)

    def metric_names(self) -> set[str]:
        return {"eval_bleu", "eval_chrf", "eval_loss"}

    def card_info(self) -> dict[str, Any]:
        example = ((self.task_args.source_prefix or "") + "Hello world").replace("{", "{{").replace("}", "}}")
        # transformers 5 dropped the translation and text2text-generation pipelines: generate() it is.
        return {**super().card_info(), "tags": ["translation"], "metric_type": "bleu", "metric_name": "sacreBLEU",
                "task_name": "translation", "pipeline": None,
                "load": 'from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n'
                        'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                        'model = AutoModelForSeq2SeqLM.from_pretrained("{repo_id}")\n'
                        f'inputs = tokenizer([{example!r}], return_tensors="pt", return_token_type_ids=False)\n'
                        'print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))'}

    def describe(self) -> list[str]:
        a, files = self.task_args, self._files()
        model = a.model_name_or_path or f"warm start: encoder {a.encoder_name_or_path}, decoder {a.decoder_name_or_path}"
        if not a.pretrained:
            model = f"{model.removeprefix('warm start: ')}, its architecture from scratch (pretrained=False)"
        data = ", ".join(map(str, files.values())) if files else f"{self._dataset()}" + (
            f" ({a.dataset_config_name})" if a.dataset_config_name else "")
        langs = f"{a.source_column or a.source_lang} -> {a.target_column or a.target_lang}"
        if a.source_lang_code:
            langs += f" (codes {a.source_lang_code} -> {a.target_lang_code})"
        return plan_lines({
            "model": model,
            "dataset": data,
            "languages": langs + (f", prefix {a.source_prefix!r}" if a.source_prefix else ""),
            "max lengths (tokens)": f"source {a.max_source_length}, target {a.max_target_length}",
            "evaluation": f"generate (num_beams={a.num_beams}, max_new_tokens={a.max_new_tokens or a.max_target_length}"
                          f"); sacreBLEU, chrF" + (" lowercased" if a.eval_lowercase else "")
                          + ("; also before training" if a.eval_before_training else "")})
