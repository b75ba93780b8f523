"""Speech models from transformers: seq2seq recognisers and audio classifiers, and their processors.

Names are Hub ids, local folders (e.g. a previous fastft output_dir) or fastft:
assets. A checkpoint's config and processor load apart from its weights, so the
data is prepared before a model is built. Also here: freezing encoders and
shortening Whisper's 30 s input window.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from fastft.errors import UserError
from fastft.offline import speech as speech_assets
from fastft.offline.common import is_asset
from fastft.text_models import check_model_folder, looks_local

FRAMES_PER_SECOND = 100  # Whisper's log-mel hop: 160 samples at 16 kHz


def resolve(name: str) -> str:
    """What ``from_pretrained`` takes: an asset's converted folder, a local folder or a Hub id."""
    if not name:
        raise UserError("model_name_or_path is required: a Hub id, a local folder or a fastft: asset "
                        f"({', '.join(speech_assets.MODEL_ASSETS)})")
    if is_asset(name):
        return str(speech_assets.model_asset(name))
    assets = f"a fastft: asset ({', '.join(speech_assets.MODEL_ASSETS)})"
    path = Path(name).expanduser()
    if path.exists():
        check_model_folder("model_name_or_path", name, f"a Hub id (org/name) or {assets}")
        return str(path)
    if looks_local(name) or name.count("/") != 1:
        what = f"{name} does not exist: it is" if looks_local(name) else f"{name!r} is"
        raise UserError(f"model_name_or_path {what} neither a local folder, a Hub id (org/name) nor {assets}")
    return name


def _check_rate(extractor: Any, name: str) -> None:
    """Clips are resampled to the extractor's rate: a nonsense one fails only inside the data loader."""
    rate = getattr(extractor, "sampling_rate", None)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0 or not float(rate).is_integer():
        raise UserError(f"the feature extractor of {name} has sampling_rate {rate!r}; it must be a positive whole "
                        f"number of Hz, e.g. 16000 (fix it in the folder's preprocessor/processor config)")


@contextlib.contextmanager
def _loading(name: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError, KeyError) as err:  # offline, missing files, a config of another kind of model
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UserError(f"could not load model {name!r} ({type(err).__name__}: {first}); offline, use a local "
                        f"folder or a fastft: asset") from None


def load_config(name: str) -> Any:
    """The checkpoint's config (``AutoConfig``): its kind of model, sizes and special tokens; no weights read."""
    from transformers import AutoConfig

    source = resolve(name)
    with _loading(name):
        return AutoConfig.from_pretrained(source)


def is_multilingual(name: str) -> bool:
    """Whether a Whisper checkpoint's generation config says it knows several languages."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(resolve(name))
    except OSError:  # none saved: from_pretrained would derive one from the config, which never says so
        return False
    return bool(getattr(generation, "is_multilingual", False))


def load_speech_processor(name: str) -> Any:
    """The processor (feature extractor + tokenizer) of a speech recogniser."""
    from transformers import AutoProcessor

    source = resolve(name)
    with _loading(name):
        processor = AutoProcessor.from_pretrained(source)
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "feature_extractor"):
        raise UserError(f"model {name!r} has no speech processor (feature extractor + tokenizer) saved with it")
    _check_rate(processor.feature_extractor, name)
    return processor


def load_feature_extractor(name: str) -> Any:
    """The feature extractor of an audio model."""
    from transformers import AutoFeatureExtractor

    source = resolve(name)
    with _loading(name):
        extractor = AutoFeatureExtractor.from_pretrained(source)
    _check_rate(extractor, name)
    return extractor


def load_speech_seq2seq(name: str) -> nn.Module:
    """An ``AutoModelForSpeechSeq2Seq`` in float32."""
    from transformers import AutoModelForSpeechSeq2Seq

    source = resolve(name)
    with _loading(name):
        return AutoModelForSpeechSeq2Seq.from_pretrained(source, dtype=torch.float32)


def load_audio_classifier(name: str, label_names: list[str], zero_init_head: bool) -> nn.Module:
    """An ``AutoModelForAudioClassification`` in float32, sized for the labels.

    A checkpoint of another task (a Whisper recogniser, a wav2vec2 pretrained
    model) keeps its encoder and gets a new head; on pretrained features the
    head's output layer starts at zero (BiT, Kolesnikov et al. 2020).
    """
    from transformers import AutoModelForAudioClassification

    source = resolve(name)
    # id2label alone sizes the head (num_labels too would clash with a checkpoint's own id2label).
    labels = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    with _loading(name):
        model, info = AutoModelForAudioClassification.from_pretrained(
            source, ignore_mismatched_sizes=True, output_loading_info=True, dtype=torch.float32, **labels)
    mismatched = {m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys", ())}
    new = set(info.get("missing_keys", ())) | mismatched
    if zero_init_head:
        for module_name, module in model.named_modules():
            if isinstance(module, nn.Linear) and f"{module_name}.weight" in new and \
                    module.out_features == len(label_names):
                nn.init.zeros_(module.weight)  # only the output layer: zero layers in a row get no gradient
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return model


def is_whisper(config: Any) -> bool:
    """Whether a model's config (``model.config``, or ``load_config``'s) is Whisper's."""
    return getattr(config, "model_type", "") == "whisper"


def _whisper_encoder(model: nn.Module) -> nn.Module:
    return model.model.encoder if hasattr(model, "model") else model.encoder


def whisper_window_s(config: Any) -> float:
    """Seconds of audio a Whisper encoder of this config takes (30 unless shortened)."""
    return config.max_source_positions * 2 / FRAMES_PER_SECOND


def check_whisper_window(config: Any, seconds: int) -> None:
    """A window can be shortened, not lengthened: there are no position embeddings beyond the model's."""
    if seconds * FRAMES_PER_SECOND // 2 > config.max_source_positions:
        raise UserError(f"whisper_window_s {seconds} is longer than the model's window of "
                        f"{config.max_source_positions * 2 // FRAMES_PER_SECOND} s")


def set_extractor_window(extractor: Any, seconds: int) -> None:
    """Pad clips to a ``seconds`` window, the extractor's half of ``set_whisper_window``; it saves the window, so
    it reloads consistently with the model."""
    extractor.chunk_length = seconds
    extractor.n_samples = seconds * extractor.sampling_rate
    extractor.nb_max_frames = extractor.n_samples // extractor.hop_length


def set_whisper_window(model: nn.Module, seconds: int) -> None:
    """Shorten Whisper's input window to ``seconds``: keep the first position embeddings.

    The encoder's cost grows with the window (attention quadratically) and every
    clip is padded to it (``set_extractor_window``), so short clips train many
    times faster.
    """
    check_whisper_window(model.config, seconds)
    encoder = _whisper_encoder(model)
    positions = seconds * FRAMES_PER_SECOND // 2  # conv2 has stride 2
    old = encoder.embed_positions
    new = nn.Embedding(positions, old.embedding_dim)
    new.weight.data.copy_(old.weight.data[:positions])
    new.requires_grad_(False)
    encoder.embed_positions = new
    encoder.max_source_positions = model.config.max_source_positions = positions
    encoder.config.max_source_positions = positions


# What audio classifiers stack on their encoder (wav2vec2, HuBERT, Whisper: projector + classifier; AST: classifier).
HEAD_MODULES = ("projector.", "classifier.")


def head_parameter_names(model: nn.Module) -> set[str]:
    """Parameters of an audio classifier's head: what freeze_encoder leaves trainable and freeze_epochs trains."""
    return {name for name, _ in model.named_parameters() if name.startswith(HEAD_MODULES)}


def freeze(model: nn.Module, encoder: bool, feature_encoder: bool, classifier: bool = False) -> None:
    """Freeze the encoder (a classifier: everything below its head) or only the CNN feature encoder."""
    if feature_encoder:
        if not hasattr(model, "freeze_feature_encoder"):
            raise UserError(f"freeze_feature_encoder needs a model with a CNN feature encoder (wav2vec2, HuBERT); "
                            f"{type(model).__name__} has none: unset it")
        model.freeze_feature_encoder()
    if not encoder:
        return
    if classifier:
        head = head_parameter_names(model)
        if not head:
            raise UserError(f"freeze_encoder: no projector/classifier head found in {type(model).__name__}; unset it")
        for name, param in model.named_parameters():
            param.requires_grad_(name in head)
    elif hasattr(model, "freeze_encoder"):  # Whisper
        model.freeze_encoder()
    else:
        found = model.get_encoder() if hasattr(model, "get_encoder") else None
        if found is None or found is model:  # get_encoder() falls back to the model itself
            raise UserError(f"freeze_encoder: {type(model).__name__} has no separate encoder to freeze; unset it")
        found.requires_grad_(False)


def extract_features(extractor: Any, audios: list, sampling_rate: int) -> dict[str, torch.Tensor]:
    """A batch of model inputs from clips at the extractor's rate.

    Whisper pads every clip to its fixed window by itself; the others pad to the
    longest clip of the batch (with an attention mask when the model wants one).
    """
    kwargs: dict[str, Any] = {} if hasattr(extractor, "nb_max_frames") else {"padding": True}
    return dict(extractor(audios, sampling_rate=sampling_rate, return_tensors="pt", **kwargs))
