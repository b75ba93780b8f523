"""CTranslate2 (faster-whisper) Whisper models to transformers ``WhisperForConditionalGeneration`` checkpoints.

CTranslate2's ``model.bin`` holds every tensor under a path-like name; this module
reads that file (no ctranslate2 needed) and renames, splits and casts the tensors
into the transformers layout, next to the tokenizer, feature extractor and
generation config that transformers needs to transcribe with it.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from fastft.errors import UserError

# CTranslate2 dtype codes (ctranslate2/src/types.cc): i8/i16/i32 hold quantised weights or scalars.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise UserError(f"{self.path} is truncated (CTranslate2 model.bin ends at byte {len(self.data)})")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        (length,) = self.take("H")  # the length counts a trailing NUL
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        return raw.rstrip(b"\0").decode("utf-8")

    def array(self, shape: tuple[int, ...], dtype: np.dtype, nbytes: int) -> np.ndarray:
        raw = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return np.frombuffer(raw, dtype=dtype).reshape(shape)


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name (e.g. ``WhisperSpec``) and every variable of a CTranslate2 ``model.bin``, aliases resolved."""
    path = Path(path)
    reader = _Reader(path.read_bytes(), path)
    (version,) = reader.take("I")
    if not 1 <= version <= 6:
        raise UserError(f"{path} is not a CTranslate2 model.bin this reader knows (format version {version})")
    spec = reader.string() if version >= 2 else ""
    if version >= 2:
        reader.take("I")  # spec revision
    (count,) = reader.take("I")
    variables = {}
    for _ in range(count):
        name = reader.string()
        (rank,) = reader.take("B")
        shape = reader.take("I" * rank)
        (code,) = reader.take("B")
        (nbytes,) = reader.take("I")
        if code not in _DTYPES:
            raise UserError(f"{path}: variable {name} has dtype code {code}; this reader knows {sorted(_DTYPES)}")
        variables[name] = reader.array(shape, _DTYPES[code], nbytes)
    if version >= 3:
        (aliases,) = reader.take("I")
        for _ in range(aliases):
            alias, target = reader.string(), reader.string()
            variables[alias] = variables[target]
    return spec, variables


def _layers(variables: dict[str, np.ndarray], stack: str) -> int:
    found = {int(m.group(1)) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    return max(found) + 1 if found else 0


def _linear(v: dict, src: str, dst: str, out: dict, bias: bool = True) -> None:
    out[f"{dst}.weight"] = v[f"{src}/weight"]
    if bias:
        out[f"{dst}.bias"] = v[f"{src}/bias"]


def _norm(v: dict, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _split(v: dict, src: str, dsts: list[str], out: dict) -> None:
    """A fused projection (q,k,v or k,v stacked on rows) into separate ones; k has no bias in Whisper."""
    weights = np.split(v[f"{src}/weight"], len(dsts))
    biases = np.split(v[f"{src}/bias"], len(dsts))
    for dst, weight, bias in zip(dsts, weights, biases):
        out[f"{dst}.weight"] = weight
        if not dst.endswith("k_proj"):
            out[f"{dst}.bias"] = bias


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 WhisperSpec variables renamed to ``WhisperForConditionalGeneration`` keys."""
    v, out = variables, {}
    for conv in ("conv1", "conv2"):
        _linear(v, f"encoder/{conv}", f"model.encoder.{conv}", out)
    out["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(_layers(v, "encoder")):
        _layer(v, f"encoder/layer_{i}", f"model.encoder.layers.{i}", out)
    _norm(v, "encoder/layer_norm", "model.encoder.layer_norm", out)
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(_layers(v, "decoder")):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _layer(v, src, dst, out)
        _linear(v, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj", out)
        _split(v, f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"], out)
        _linear(v, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj", out)
        _norm(v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", out)
    _norm(v, "decoder/layer_norm", "model.decoder.layer_norm", out)
    return out


def _layer(v: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    """What encoder and decoder layers share: self-attention (fused q,k,v) and the feed-forward block."""
    _split(v, f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"], out)
    _linear(v, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj", out)
    _norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out)
    _linear(v, f"{src}/ffn/linear_0", f"{dst}.fc1", out)
    _linear(v, f"{src}/ffn/linear_1", f"{dst}.fc2", out)
    _norm(v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", out)


def _whisper_config(v: dict[str, np.ndarray], ct2_config: dict[str, Any]) -> Any:
    from transformers import WhisperConfig

    vocab, d_model = v["decoder/embeddings/weight"].shape
    heads = {stack: int(v[f"{stack}/num_heads"]) if f"{stack}/num_heads" in v else d_model // 64
             for stack in ("encoder", "decoder")}
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=v["encoder/conv1/weight"].shape[1], d_model=d_model,
        encoder_layers=_layers(v, "encoder"), decoder_layers=_layers(v, "decoder"),
        encoder_attention_heads=heads["encoder"], decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        # Token ids are the same for every Whisper vocabulary (OpenAI's tokenizer layout).
        bos_token_id=50257, eos_token_id=50256, pad_token_id=50256, decoder_start_token_id=50257,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, 50256]),
        tie_word_embeddings=True,
    )


def _generation_config(config: Any, ct2_config: dict[str, Any], tokenizer: Any) -> Any:
    from transformers import GenerationConfig

    # OpenAI's rule: multilingual vocabularies have 51865+ tokens (tiny.en etc. have 51864).
    multilingual = config.vocab_size >= 51865
    ids = tokenizer.convert_tokens_to_ids
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, max_length=config.max_target_positions,
        suppress_tokens=config.suppress_tokens, begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=multilingual, return_timestamps=False, max_initial_timestamp_index=50,
        alignment_heads=ct2_config.get("alignment_heads"),
    )
    if multilingual:
        gen.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config.get("lang_ids", [])}
        gen.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    return gen


def _tokenizer(source: Path, work: Path) -> Any:
    """transformers' WhisperTokenizer from the tokenizer.json faster-whisper copied from the Hub repo."""
    from transformers import WhisperTokenizer

    work.mkdir(parents=True, exist_ok=True)
    (work / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    (work / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "WhisperTokenizer", "model_max_length": 1024, "add_prefix_space": False,
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "errors": "replace"}))
    return WhisperTokenizer.from_pretrained(str(work))


def convert_ct2_whisper(source: str | Path, dest: str | Path) -> None:
    """Write a transformers Whisper checkpoint (model, processor, generation config) for a CTranslate2 folder.

    ``source`` holds ``model.bin``, ``config.json`` and ``tokenizer.json`` as
    ``ct2-transformers-converter`` writes them; ``dest`` must exist and be empty.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    source, dest = Path(source), Path(dest)
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (source / name).is_file():
            raise UserError(f"{source} is not a CTranslate2 Whisper model folder: {name} is missing")
    spec, variables = read_ct2_model(source / "model.bin")
    if spec != "WhisperSpec":
        raise UserError(f"{source / 'model.bin'} holds a {spec or 'pre-v2'} model, not a WhisperSpec")
    if any(a.dtype == np.int8 for a in variables.values() if a.ndim == 2):
        raise UserError(f"{source / 'model.bin'} is int8-quantised; convert a float16/float32 model")
    ct2_config = json.loads((source / "config.json").read_text())
    config = _whisper_config(variables, ct2_config)
    tokenizer = _tokenizer(source, dest / ".tokenizer-src")
    model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in whisper_state_dict(variables).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # proj_out is tied to the token embeddings, so it is the one key the state dict may lack.
    if [k for k in missing if k != "proj_out.weight"] or unexpected:
        raise UserError(f"{source / 'model.bin'} does not map onto WhisperForConditionalGeneration "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.generation_config = _generation_config(config, ct2_config, tokenizer)
    model.save_pretrained(dest)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer)
    processor.save_pretrained(dest)
    for leftover in (dest / ".tokenizer-src").iterdir():
        leftover.unlink()
    (dest / ".tokenizer-src").rmdir()
