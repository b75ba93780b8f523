"""Text seq2seq models: a pretrained checkpoint, or an encoder-decoder warm-started from two.

``load_tokens`` reads the tokenizer, switched to the task's language codes (mBART,
NLLB), and the ids decoding starts and ends with, from the checkpoint's files: the
data is prepared with them before any weights load. ``load_seq2seq`` then builds the
model to agree with them: the decoder start / EOS / pad ids set where a warm start
leaves them unset, and the target language code forced first.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from fastft.errors import UserError
from fastft.offline import text as text_assets


@dataclasses.dataclass
class Seq2SeqTokens:
    tokenizer: Any
    decoder_start_token_id: int  # the decoder's first input
    eos_token_id: Optional[int] = None  # a warm start's end and padding of a target (a checkpoint has its own)
    pad_token_id: Optional[int] = None
    forced_bos_token_id: Optional[int] = None  # mBART-50, NLLB: the target language code, generated first


@dataclasses.dataclass
class LoadedSeq2Seq:
    model: nn.Module
    new_parameters: set[str]  # names (in model) of weights a warm start initialised anew


PATH_PREFIXES = ("/", "./", "../", "~")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def looks_local(name: str) -> bool:
    """Meant as a local path, not a Hub id: transformers would call a missing one a malformed repo id."""
    return name.startswith(PATH_PREFIXES) or Path(name).suffix in WEIGHT_SUFFIXES or name.count("/") > 1


def check_model_folder(field_name: str, name: str, valid: str, config: bool = True, weights: bool = True) -> None:
    """A UserError naming the path or file when ``name`` is a local model that cannot load; Hub ids pass.

    Done before transformers sees the folder: for a missing path it blames the repo id's form, for a
    truncated safetensors file it raises from deep inside its loader. ``valid`` says what else would do;
    ``config`` False allows a folder without config.json (a tokenizer's); ``weights`` False skips the weight
    files (a tokenizer, or a from-scratch architecture).
    """
    path = Path(name).expanduser()
    if not path.exists():
        if looks_local(name):
            raise UserError(f"{field_name} {name} does not exist; give an existing folder, {valid}")
        return
    if not path.is_dir():
        raise UserError(f"{field_name} {name} is a file; give the folder that holds it, with its config.json")
    for file in sorted(path.glob("*.json")):  # config, generation_config, tokenizer, preprocessor_config, ...
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            where = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            raise UserError(f"{file} is not valid JSON ({where}); download or save the model again") from None
        if file.name == "config.json" and not (isinstance(content, dict) and content.get("model_type")):
            raise UserError(f"{file} names no model_type, so transformers cannot tell which model it is; "
                            f"re-save the model with save_pretrained")
    if config and not (path / "config.json").is_file():
        raise UserError(f"{field_name} {name} has no config.json: not a transformers model folder (give the "
                        f"folder save_pretrained wrote, or {valid})")
    if weights:
        from safetensors import SafetensorError, safe_open

        for file in sorted(path.glob("*.safetensors")):
            try:  # reads the header and checks that the file holds every tensor it lists
                with safe_open(str(file), framework="pt"):
                    pass
            except (SafetensorError, OSError) as err:
                raise UserError(f"{file} is damaged or truncated ({err}); download or save the model "
                                f"again") from None


def resolve(name: str) -> str:
    """A ``fastft:`` text asset to its folder; anything else (Hub id, folder) as given."""
    return str(text_assets.model_asset(name)) if text_assets.is_asset(name) else name


def _valid() -> str:
    return f"a Hub id (online) or {', '.join(text_assets.MODEL_ASSETS)}"


def check_names(task_args: Any) -> None:
    """Every model and tokenizer path of the recipe exists and can load, before anything is loaded."""
    for field_name in ("model_name_or_path", "encoder_name_or_path", "decoder_name_or_path", "tokenizer_name"):
        name = getattr(task_args, field_name, None)
        if name and not text_assets.is_asset(name):
            model = field_name != "tokenizer_name"
            check_model_folder(field_name, name, _valid(), config=model, weights=model and task_args.pretrained)


def _quietly(load, *args, **kwargs):
    """transformers prints a long load report for every warm start; we print one line instead."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return load(*args, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _load(what: str, name: str, load, *args, **kwargs):
    try:
        return _quietly(load, resolve(name), *args, **kwargs)
    except (OSError, ValueError, KeyError) as err:  # offline, missing repo, not a model of that kind
        raise UserError(f"could not load {what} {name!r} ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                        f"give a local folder, {_valid()}") from None


def _drop_pooler(encoder: nn.Module | None) -> None:
    """BERT's pooler never reaches the loss: it would train nothing and stall DDP's gradient sync."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


def _model(what: str, name: str, auto: Any, pretrained: bool, **config: Any) -> tuple[nn.Module, list[str]]:
    """``auto``'s model for ``name`` in float32, and the names of the weights the checkpoint lacked.

    transformers 5 keeps a checkpoint's saved dtype; training keeps float32 master weights (accelerate's
    mixed precision autocasts), since bf16 weights lose updates below their resolution. Without
    ``pretrained`` only the config is read: no weights are downloaded to be discarded, all are new.
    """
    from transformers import AutoConfig

    if pretrained:
        model, info = _load(what, name, auto.from_pretrained, **config, output_loading_info=True, dtype=torch.float32)
        return model, info["missing_keys"]
    model = auto.from_config(_load(what, name, AutoConfig.from_pretrained, **config), dtype=torch.float32)
    return model, [key for key, _ in model.named_parameters()]


def _warm_start_ids(tokenizer: Any, encoder_name: str) -> tuple[int, int, int]:
    """(decoder start, EOS, pad) of a warm start, which its two checkpoints do not set."""
    # BERT has no BOS/EOS: [CLS] starts the decoder and [SEP] ends a target, as in Rothe et al.
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.cls_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if start is None or eos is None:
        raise UserError(f"the tokenizer of {encoder_name} has neither [CLS]/[SEP] nor BOS/EOS tokens to start "
                        f"and end a decoded sequence; set tokenizer_name to one that has")
    return start, eos, pad


def _warm_start(encoder_name: str, decoder_name: str, tokens: Seq2SeqTokens,
                pretrained: bool) -> tuple[nn.Module, set[str]]:
    """EncoderDecoderModel from two pretrained checkpoints (Rothe et al. 2020); the new weights' names.

    Without ``pretrained`` only the two configs are read: the same architecture with random weights.
    """
    from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel

    encoder, _ = _model("encoder_name_or_path", encoder_name, AutoModel, pretrained)
    decoder, missing = _model("decoder_name_or_path", decoder_name, AutoModelForCausalLM, pretrained,
                              is_decoder=True, add_cross_attention=True)
    _drop_pooler(encoder)
    if len(tokens.tokenizer) > decoder.config.vocab_size:
        raise UserError(f"the tokenizer has {len(tokens.tokenizer)} tokens, the decoder {decoder_name} only "
                        f"{decoder.config.vocab_size}: warm-start encoder and decoder that share the tokenizer")
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.eos_token_id = tokens.decoder_start_token_id, tokens.eos_token_id
        config.pad_token_id = tokens.pad_token_id
    model.config.vocab_size = decoder.config.vocab_size
    if not pretrained:
        return model, _scratch(model)
    new = {f"decoder.{key}" for key in missing}
    print(f"warm start: encoder {encoder_name}, decoder {decoder_name}; {len(new)} decoder tensors "
          f"initialised anew (cross-attention, LM-head transform)", flush=True)
    return model, new


def _set_language_codes(tokenizer: Any, source_code: str | None, target_code: str | None,
                        model_name: str) -> tuple[Optional[int], Optional[int]]:
    """mBART / NLLB: tag sources and targets with language codes; (the code to force first in generation, the
    code that starts the decoder when it closes every target), each None when it does not apply."""
    multilingual = hasattr(tokenizer, "src_lang")
    if not source_code:
        if multilingual:
            raise UserError(f"the tokenizer of {model_name} is multilingual: set source_lang_code and "
                            f"target_lang_code (e.g. en_XX/ro_RO for mBART, eng_Latn/ron_Latn for NLLB)")
        return None, None
    if not multilingual:
        raise UserError(f"source_lang_code/target_lang_code are for multilingual tokenizers (mBART, NLLB); "
                        f"the one of {model_name} is not: unset them")
    for name, code in (("source_lang_code", source_code), ("target_lang_code", target_code)):
        if tokenizer.convert_tokens_to_ids(code) in (None, tokenizer.unk_token_id):
            codes = [t for t in tokenizer.additional_special_tokens if "_" in t][:6]
            raise UserError(f"{name} {code!r} is not a language code of {model_name}'s tokenizer; "
                            f"valid ones look like {', '.join(codes)}")
    tokenizer.src_lang, tokenizer.tgt_lang = source_code, target_code
    code_id = tokenizer.convert_tokens_to_ids(target_code)
    labels = tokenizer(text_target="a")["input_ids"]
    if labels[0] == code_id:  # mBART-50, NLLB, M2M100: the first generated token names the language
        return code_id, None
    return None, code_id if labels[-1] == code_id else None  # mBART-cc25: the code closes a target


def _scratch(model: nn.Module) -> set[str]:
    """Every weight's name: all of them are new."""
    print(f"from scratch: {type(model).__name__} with random weights (pretrained: false)", flush=True)
    return {name for name, _ in model.named_parameters()}


def _checkpoint(name: str, pretrained: bool) -> tuple[nn.Module, set[str]]:
    """A seq2seq checkpoint's model; without ``pretrained`` its architecture only, weights never downloaded."""
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig

    model, _ = _model("model_name_or_path", name, AutoModelForSeq2SeqLM, pretrained)
    if pretrained:
        return model, set()
    try:  # the checkpoint's decoding defaults (forced tokens, bad words), as from_pretrained would set them
        model.generation_config = _quietly(GenerationConfig.from_pretrained, resolve(name))
    except OSError:  # no generation_config.json: the defaults from_config derived from the config stand
        pass
    return model, _scratch(model)


def load_tokens(task_args: Any) -> Seq2SeqTokens:
    """The tokenizer and decoding ids for TranslationArguments (pretrained checkpoint or warm start); configs and
    tokenizer files only, no weights."""
    from transformers import AutoConfig, AutoTokenizer

    a = task_args
    check_names(a)
    name = a.model_name_or_path or a.encoder_name_or_path
    field_name = "model_name_or_path" if a.model_name_or_path else "encoder_name_or_path"

    def tokenizer():
        return _load("tokenizer_name" if a.tokenizer_name else f"the tokenizer of {field_name}", a.tokenizer_name or name,
                     AutoTokenizer.from_pretrained)

    eos = pad = None
    if a.model_name_or_path:
        config = _load("model_name_or_path", name, AutoConfig.from_pretrained)
        if not getattr(config, "is_encoder_decoder", False):
            raise UserError(f"model_name_or_path {name} is a {config.model_type}, not an encoder-decoder; "
                            f"warm-start one from it with encoder_name_or_path and decoder_name_or_path")
        tok = tokenizer()
        start = config.decoder_start_token_id
        if config.model_type == "t5" and not a.source_prefix:
            warnings.warn(f"{name} is a T5 model: set source_prefix, e.g. 'translate English to German: '")
    else:
        tok = tokenizer()
        start, eos, pad = _warm_start_ids(tok, a.encoder_name_or_path)
    forced, closing = _set_language_codes(tok, a.source_lang_code, a.target_lang_code, name)
    start = closing if start is None else start
    if start is None:
        raise UserError(f"{name} sets no decoder_start_token_id (decoding cannot start); for mBART set "
                        f"source_lang_code and target_lang_code, which provide it")
    if tok.init_kwargs.get("do_lower_case") and not a.eval_lowercase:
        warnings.warn(f"the tokenizer of {name} lowercases, so generated text is lowercase: consider "
                      f"eval_lowercase: true for case-insensitive BLEU and chrF")
    return Seq2SeqTokens(tok, start, eos, pad, forced)


def load_seq2seq(task_args: Any, tokens: Optional[Seq2SeqTokens] = None) -> LoadedSeq2Seq:
    """The model for TranslationArguments (pretrained checkpoint or warm start), decoding as ``tokens`` (those the
    data was prepared with; unset: ``load_tokens``) say."""
    a = task_args
    tokens = tokens or load_tokens(a)
    if a.model_name_or_path:
        model, new = _checkpoint(a.model_name_or_path, a.pretrained)
    else:
        model, new = _warm_start(a.encoder_name_or_path, a.decoder_name_or_path, tokens, a.pretrained)
    if tokens.forced_bos_token_id is not None:
        model.generation_config.forced_bos_token_id = tokens.forced_bos_token_id
    if model.config.decoder_start_token_id is None:
        model.config.decoder_start_token_id = tokens.decoder_start_token_id
        model.generation_config.decoder_start_token_id = tokens.decoder_start_token_id
    return LoadedSeq2Seq(model, new)
