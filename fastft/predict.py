"""``fastft predict MODEL FILES...``: a saved model on images, audio clips or text files of sentences.

MODEL is a finished fastft output_dir, a folder saved by timm or transformers, a fastft: model
asset or a Hub id. What the model does comes from the run's config.yaml when there is one (its
task, and the generation and language settings the run evaluated with), else from config.json.
Images go to an image classifier (top-k labels), audio to a speech recogniser (a transcript) or
an audio classifier (top-k labels), a .txt file to a translation model (one translation a line).
Each model gets its own evaluation preprocessing: timm's data config, or the saved processor.
A LoRA run saved with merge_lora: false (its adapter alone) is merged into its base model first,
as ``fastft eval`` merges it, in a temporary folder; the run's folder is only read.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from fastft import reporting
from fastft.audio import AUDIO_SUFFIXES
from fastft.arguments import OneLineParser, unknown_flag
from fastft.errors import UserError, exit_on_user_error

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
                  ".pbm", ".pnm", ".tga", ".ico")
TEXT_SUFFIXES = (".txt",)

# The tasks predict runs, by their pipeline names.
IMAGE_CLASSIFICATION = "image-classification"
ASR = "automatic-speech-recognition"
AUDIO_CLASSIFICATION = "audio-classification"
TRANSLATION = "translation"
TAKES = {IMAGE_CLASSIFICATION: "image", ASR: "audio", AUDIO_CLASSIFICATION: "audio", TRANSLATION: "text"}
WHAT = {IMAGE_CLASSIFICATION: "an image classifier", ASR: "a speech recogniser", AUDIO_CLASSIFICATION:
        "an audio classifier", TRANSLATION: "a translation model"}
INPUTS = {"image": f"images ({', '.join(IMAGE_SUFFIXES[:8])}, ...)",
          "audio": f"audio files ({', '.join(sorted(AUDIO_SUFFIXES))})",
          "text": "a .txt file of sentences, one a line"}
IS = {"image": "an image", "audio": "audio", "text": "a text file"}
GENERATING = (ASR, TRANSLATION)
SAVE_AGAIN = "save or download the model again"


@dataclasses.dataclass
class ModelSource:
    """Where a MODEL argument's weights are and what they are, known before any weight is read."""

    name: str  # as the user gave it
    location: str  # a local folder or a Hub id: what timm and from_pretrained take
    config: dict[str, Any]  # config.json
    recipe: dict[str, Any]  # the fastft run's config.yaml; empty when MODEL is no fastft run
    task: str  # one of TAKES
    adapter: Optional[Path] = None  # a LoRA adapter saved alone (merge_lora: false), merged when predict runs


# -- files -------------------------------------------------------------------------------------
def kind_of_file(file: str) -> str:
    """'image', 'audio' or 'text' for an existing file; a UserError naming it otherwise."""
    path = Path(file).expanduser()
    if path.is_dir():
        raise UserError(f"{file} is a folder; give the files themselves: {_all_inputs()}")
    if not path.is_file():
        raise UserError(f"file {file} does not exist")
    suffix = path.suffix.lower()
    for kind, suffixes in (("image", IMAGE_SUFFIXES), ("audio", AUDIO_SUFFIXES), ("text", TEXT_SUFFIXES)):
        if suffix in suffixes:
            return kind
    raise UserError(f"{file}: unknown file type {suffix or '(no suffix)'}; give {_all_inputs()}")


def _all_inputs() -> str:
    return f"{INPUTS['image']}, {INPUTS['audio']} or {INPUTS['text']}"


# -- what MODEL is ------------------------------------------------------------------------------
def _read_recipe(file: Path) -> dict[str, Any]:
    import yaml

    try:
        recipe = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{file} is damaged ({type(err).__name__}); restore the run's config.yaml") from None
    if not isinstance(recipe, dict):
        raise UserError(f"{file} is not a recipe mapping; restore the run's config.yaml")
    return recipe


def _asset_folder(name: str) -> Path:
    from fastft.offline import image as image_assets, speech as speech_assets, text as text_assets

    for module in (image_assets, speech_assets, text_assets):
        if name in module.MODEL_ASSETS:
            return Path(module.model_asset(name))
    known = [*image_assets.MODEL_ASSETS, *speech_assets.MODEL_ASSETS, *text_assets.MODEL_ASSETS]
    raise UserError(f"MODEL {name} is not a fastft model asset; known ones: {', '.join(known)}")


def _hub_file(repo: str, filename: str, required: bool) -> Optional[Path]:
    """A file of a Hub repo (cached or downloaded); None when the repo has none and it is optional."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as err:  # offline, no such repo, gated, no such file: the same for the user
        if not required:
            return None
        raise UserError(f"MODEL {repo} is no local folder, and its {filename} could not be read from the Hub "
                        f"({type(err).__name__}); check the path, or the Hub id and the network") from None


def resolve_model(name: str) -> ModelSource:
    """Where MODEL's weights are, its config.json, its run's recipe and its task; no weights are read."""
    from fastft.offline.common import is_asset

    folder: Optional[Path] = _asset_folder(name) if is_asset(name) else None
    path = Path(name).expanduser()
    if folder is None and path.exists():
        if not path.is_dir():
            raise UserError(f"MODEL {name} is a file; give the folder that holds it and its config.json")
        folder = path
    if folder is not None:
        is_run = reporting.written_by_fastft(folder)
        from fastft.lora import adapter_folder

        adapter = adapter_folder(folder)
        if adapter is not None:
            return _adapter_source(name, folder, adapter)
        if not (folder / "config.json").is_file():
            if is_run:
                raise UserError(f"MODEL {name} is a fastft output_dir without a saved model (config.json): the run "
                                f"has not finished; let it finish or resume it, then predict")
            raise UserError(f"MODEL {name} is not a model folder (it has no config.json); give a finished fastft "
                            f"output_dir, a folder saved by timm or transformers, or a Hub id")
        config = reporting.read_json_object(folder / "config.json", SAVE_AGAIN)
        recipe = _read_recipe(folder / reporting.CONFIG) if is_run else {}
        location = str(folder)
    elif name.startswith(("/", "./", "../", "~")) or name.removeprefix("hf-hub:").count("/") != 1:
        raise UserError(f"MODEL {name} does not exist; give a fastft output_dir, a model folder, a Hub id "
                        f"(org/name) or a fastft: model asset")
    else:
        location = name.removeprefix("hf-hub:")
        config = reporting.read_json_object(_hub_file(location, "config.json", required=True), SAVE_AGAIN)
        pushed = _hub_file(location, reporting.CONFIG, required=False)  # fastft pushes the whole output_dir
        recipe = _read_recipe(pushed) if pushed is not None and reporting.written_by_fastft(pushed.parent) else {}
    task = _task_of_recipe(recipe) or _task_of_config(config, name)
    return ModelSource(name, location, config, recipe, task)


def _adapter_source(name: str, folder: Path, adapter: Path) -> ModelSource:
    """A LoRA adapter saved without its merged model: the run it came from gives the task, base model and data."""
    run = folder if reporting.written_by_fastft(folder) else folder.parent
    if not reporting.written_by_fastft(run):
        raise UserError(f"MODEL {name} is a LoRA adapter outside the fastft run that trained it, whose config.yaml "
                        f"names its task, base model and labels: predict from that run's output_dir")
    recipe = _read_recipe(run / reporting.CONFIG)
    task = _task_of_recipe(recipe)
    if task is None:
        raise UserError(f"{run / reporting.CONFIG} is no image, speech or translation run; restore the run's "
                        f"config.yaml")
    return ModelSource(name, str(run), {}, recipe, task, adapter)


def _merge_adapter(source: ModelSource, into: Path) -> ModelSource:
    """The adapter merged into its base model as ``fastft eval`` does it (the recipe's data gives a classifier
    its labels), saved in ``into`` in the task's usual layout; predicting goes on from there as for any model."""
    import sys

    from fastft import evaluation

    print(f"MODEL {source.name} is a LoRA adapter saved alone (merge_lora: false): merging it into its base "
          f"model for this prediction", file=sys.stderr, flush=True)
    task, model, task_args, args, _ = evaluation.parse(
        [str(source.adapter), "--config", str(Path(source.location) / reporting.CONFIG), "--output_dir", str(into)])
    the_task, network, _ = evaluation.load_model(task, model, task_args, args)
    the_task.save_model(network, into)
    config = reporting.read_json_object(into / "config.json", SAVE_AGAIN)
    return dataclasses.replace(source, location=str(into), config=config, adapter=None)


def _task_of_recipe(recipe: dict[str, Any]) -> Optional[str]:
    """The task of a run from its config.yaml, which lists every field of its task (a few are its own)."""
    if "audio_column" in recipe:  # the speech script: its `task` field picks one of two
        return AUDIO_CLASSIFICATION if recipe.get("task") == "audio_classification" else ASR
    if "source_lang" in recipe:
        return TRANSLATION
    if "image_column" in recipe:
        return IMAGE_CLASSIFICATION
    return None


def _task_of_config(config: dict[str, Any], name: str) -> str:
    """The task of a model from its config.json: timm's, or the transformers Auto class its architecture is in."""
    if "architecture" in config:  # timm writes the singular, transformers a list of class names
        return IMAGE_CLASSIFICATION
    from transformers.models.auto import modeling_auto as auto

    mappings = {IMAGE_CLASSIFICATION: auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
                ASR: auto.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES,
                AUDIO_CLASSIFICATION: auto.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES,
                TRANSLATION: auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES}

    def classes(mapping: dict[str, Any]) -> set[str]:
        return {c for value in mapping.values() for c in ((value,) if isinstance(value, str) else value)}

    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    for task, mapping in mappings.items():
        if set(architectures) & classes(mapping):
            return task
    # No architecture saved: the model type alone decides when only one of the tasks has it (Whisper has two).
    model_type = config.get("model_type")
    fits = [task for task, mapping in mappings.items() if model_type in mapping]
    if not architectures and len(fits) == 1:
        return fits[0]
    what = architectures[0] if architectures else f"model_type {model_type!r}"
    raise UserError(f"MODEL {name} is a {what}, which fastft predict does not run; it runs image classifiers, "
                    f"speech recognisers (Whisper, ...), audio classifiers and seq2seq translation models")


# -- running ------------------------------------------------------------------------------------
def _device(device: str) -> Any:
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device {device!r} is not one of auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU here; use --device cpu (or auto)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _quiet(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """transformers' load reports, progress bars and generation notes would bury the answer."""
    from fastft.text_models import _quietly

    return _quietly(call, *args, **kwargs)


def _generate(model: Any, inputs: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    import torch

    try:
        with torch.inference_mode():
            return _quiet(model.generate, **inputs, **kwargs)
    except ValueError as err:  # e.g. max_new_tokens beyond the decoder's positions
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if len(first) > 300:  # transformers' long explanations: whole sentences only
            first = first[:300].rsplit(". ", 1)[0] + "."
        settings = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "the model's defaults"
        raise UserError(f"generating with {settings} failed: {first.rstrip('.')}; lower --max_new_tokens or "
                        f"--num_beams") from None


def _generation_kwargs(recipe: dict[str, Any], num_beams: Optional[int], max_new_tokens: Optional[int]) -> dict:
    """Beam width and length as the run evaluated (Seq2SeqTask.generation_kwargs); flags override; neither
    set: the model's own generation_config decides."""
    kwargs: dict[str, Any] = {}
    beams = num_beams if num_beams is not None else recipe.get("num_beams")
    length = max_new_tokens if max_new_tokens is not None else (recipe.get("max_new_tokens")
                                                                 or recipe.get("max_target_length"))
    if beams:
        kwargs["num_beams"] = int(beams)
    if length:
        kwargs["max_new_tokens"] = int(length)
    return kwargs


def _top_labels(logits: Any, names: list[str], top_k: int) -> list[list[dict[str, Any]]]:
    probabilities = logits.float().softmax(-1)
    scores, indices = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    return [[{"label": names[i] if i < len(names) else str(i), "score": float(s)}
             for s, i in zip(row_scores.tolist(), row_indices.tolist())]
            for row_scores, row_indices in zip(scores, indices)]


def _read_image(file: str) -> Any:
    from PIL import Image

    try:
        with Image.open(Path(file).expanduser()) as image:
            return image.convert("RGB")  # the first frame of a GIF; grey and RGBA images as the training saw them
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's ways of saying "no"
        raise UserError(f"cannot read image {file} ({type(err).__name__}); give a readable image "
                        f"({', '.join(IMAGE_SUFFIXES[:8])}, ...)") from None


def _timm_label_names(config: dict[str, Any]) -> Optional[list[str]]:
    """Class names a timm config.json holds (fastft saves them as label_names), in words when it has them."""
    names = config.get("label_names")
    if not isinstance(names, list) or not names:
        return None
    descriptions = config.get("label_descriptions")  # ImageNet synsets (n07920052) -> words (espresso)
    return [str(descriptions.get(n, n)) if isinstance(descriptions, dict) else str(n) for n in names]


def _transformers_label_names(source: ModelSource) -> list[str]:
    """id2label as transformers reads it: config.json leaves out the default one (LABEL_0, LABEL_1, ...)."""
    from transformers import AutoConfig

    try:
        config = _quiet(AutoConfig.from_pretrained, source.location)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"could not read the config of MODEL {source.name} ({type(err).__name__}: {first}); save or "
                        f"download the model again") from None
    return [str(config.id2label.get(i, i)) for i in range(config.num_labels)]


def _classify_images(source: ModelSource, files: list[str], top_k: int, batch_size: int, device: Any
                     ) -> list[dict[str, Any]]:
    import torch
    from timm.data import create_transform

    from fastft.image_models import create_image_classifier, image_data_config

    timm_model = "architecture" in source.config
    names = _timm_label_names(source.config) if timm_model else _transformers_label_names(source)
    count = len(names) if names else int(source.config.get("num_classes") or 0)
    if not count:
        raise UserError(f"MODEL {source.name}: its config.json gives neither label names nor a number of classes")
    model = _quiet(create_image_classifier, source.location, names or [str(i) for i in range(count)],
                   pretrained=True, zero_init_head=False)
    if names is None:
        names = _imagenet_names(model, count)
    processor = getattr(model, "processor", None)  # a transformers classifier keeps its image processor
    if processor is None:
        # The evaluation transform of fastft's image task (ImageTask._transforms) from the saved data config.
        data = image_data_config(source.location)
        transform = create_transform(input_size=data["input_size"], mean=data["mean"], std=data["std"],
                                     interpolation=data.get("interpolation", "bilinear"), is_training=False,
                                     crop_pct=data.get("crop_pct", 0.875), crop_mode=data.get("crop_mode", "center"))
    model = model.eval().to(device)
    rows = []
    for batch in _batches(files, batch_size):
        images = [_read_image(f) for f in batch]
        if processor is not None:
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        else:
            pixels = torch.stack([transform(image) for image in images])
        with torch.inference_mode():
            logits = model(pixels.to(device))
        rows += [{"file": f, "labels": labels} for f, labels in zip(batch, _top_labels(logits, names, top_k))]
    return rows


def _imagenet_names(model: Any, count: int) -> list[str]:
    """ImageNet words for a timm model saved without label names (timm ships the lists), else class ids."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model) if count >= 1000 else None
    if subset:
        info = ImageNetInfo(subset)
        return [info.index_to_description(i) for i in range(count)]
    return [str(i) for i in range(count)]


def _audio(files: list[str], rate: int) -> list[Any]:
    from fastft.audio import load_audio

    return [load_audio(f, rate) for f in files]


def _audio_batches(extractor: Any, files: list[str], batch_size: int) -> list[list[str]]:
    """Batches of clips, when a clip's answer cannot depend on the others: a fixed input window (Whisper) pads
    every clip alike, and an attention mask hides the padding. Without one (wav2vec2-base and other group-norm
    models) the zeros padding a clip to the longest of its batch change its answer, so clips go one by one."""
    alike = hasattr(extractor, "nb_max_frames") or getattr(extractor, "return_attention_mask", False)
    return _batches(files, batch_size if alike else 1)


def _transcribe(source: ModelSource, files: list[str], batch_size: int, device: Any, num_beams: Optional[int],
                max_new_tokens: Optional[int]) -> list[dict[str, Any]]:
    from fastft import speech_models

    processor = _quiet(speech_models.load_speech_processor, source.location)
    model = _quiet(speech_models.load_speech_seq2seq, source.location)
    extractor, tokenizer, recipe = processor.feature_extractor, processor.tokenizer, source.recipe
    kwargs = _generation_kwargs(recipe, num_beams, max_new_tokens)
    window = None
    if speech_models.is_whisper(model.config):
        window = speech_models.whisper_window_s(model.config)
        if getattr(model.generation_config, "is_multilingual", False) and recipe.get("language"):
            kwargs.update(language=recipe["language"], task=recipe.get("asr_task") or "transcribe")  # as AsrTask
    model = model.eval().to(device)
    rate = extractor.sampling_rate
    rows = []
    for batch in _audio_batches(extractor, files, batch_size):
        clips = _audio(batch, rate)
        for file, clip in zip(batch, clips):
            if window is not None and len(clip) / rate > window + 1e-3:
                warnings.warn(f"{file} lasts {len(clip) / rate:.1f} s, longer than the model's {window:g} s window: "
                              f"only its first {window:g} s are transcribed", stacklevel=2)
        inputs = speech_models.extract_features(extractor, clips, rate)
        ids = _generate(model, {k: v.to(device) for k, v in inputs.items()}, kwargs)
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        rows += [{"file": f, "text": t.strip()} for f, t in zip(batch, texts)]
    return rows


def _classify_audio(source: ModelSource, files: list[str], top_k: int, batch_size: int, device: Any
                    ) -> list[dict[str, Any]]:
    import torch

    from fastft import speech_models

    speech_models.resolve(source.location)  # its checks of the folder come before transformers reads it
    names = _transformers_label_names(source)
    extractor = _quiet(speech_models.load_feature_extractor, source.location)
    model = _quiet(speech_models.load_audio_classifier, source.location, names, zero_init_head=False)
    model = model.eval().to(device)
    rate = extractor.sampling_rate
    rows = []
    for batch in _audio_batches(extractor, files, batch_size):
        inputs = speech_models.extract_features(extractor, _audio(batch, rate), rate)
        with torch.inference_mode():
            logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits
        rows += [{"file": f, "labels": labels} for f, labels in zip(batch, _top_labels(logits, names, top_k))]
    return rows


def _sentences(file: str) -> list[tuple[int, str]]:
    """(line number, sentence) of every line of a text file that holds any text."""
    try:
        text = Path(file).expanduser().read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{file} is not UTF-8 text (byte {err.start}); save it as UTF-8, one sentence a line") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise UserError(f"{file} holds no sentences; give one source sentence a line")
    return lines


def _translate(source: ModelSource, files: list[str], batch_size: int, device: Any, num_beams: Optional[int],
               max_new_tokens: Optional[int]) -> list[dict[str, Any]]:
    from fastft.task_fields import TranslationArguments
    from fastft.text_models import load_seq2seq, load_tokens

    known = {f.name for f in dataclasses.fields(TranslationArguments)}
    # The run's prefix, language codes and source length; its own folder holds model and tokenizer. eval_lowercase
    # only silences load_tokens's advice on scoring an uncased tokenizer, which predicting has no use for.
    fields = {**{k: v for k, v in source.recipe.items() if k in known}, "model_name_or_path": source.location,
              "encoder_name_or_path": None, "decoder_name_or_path": None, "tokenizer_name": None, "pretrained": True,
              "eval_lowercase": True}
    a = TranslationArguments(**fields)
    tokens = load_tokens(a)
    model, tok = load_seq2seq(a, tokens).model.eval().to(device), tokens.tokenizer
    kwargs = _generation_kwargs(source.recipe, num_beams, max_new_tokens)
    # As TranslationTask.encode and collate_inputs: prefix, truncate to the source length, pad the batch.
    length = min(a.max_source_length, getattr(tok, "model_max_length", a.max_source_length))
    items = [(file, n, line) for file in files for n, line in _sentences(file)]
    rows = []
    for batch in _batches(items, batch_size):
        ids = [tok(a.source_prefix + line, max_length=length, truncation=True)["input_ids"] for _, _, line in batch]
        inputs = dict(tok.pad({"input_ids": ids}, return_tensors="pt"))
        generated = _generate(model, {k: v.to(device) for k, v in inputs.items()}, kwargs)
        texts = tok.batch_decode(generated, skip_special_tokens=True)
        rows += [{"file": f, "line": n, "source": line, "text": t.strip()} for (f, n, line), t in zip(batch, texts)]
    return rows


def _check_count(name: str, value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"{name} must be a whole number of at least 1, got {value!r}")


def predict(model: str, files: list[str], top_k: int = 5, batch_size: int = 8, num_beams: Optional[int] = None,
            max_new_tokens: Optional[int] = None, device: str = "auto") -> list[dict[str, Any]]:
    """MODEL's predictions for FILES, one row per image or clip and one per line of a text file.

    Rows: ``{"file", "labels": [{"label", "score"}, ...]}`` (top_k, probabilities, best first) from a
    classifier, ``{"file", "text"}`` from a speech recogniser, ``{"file", "line", "source", "text"}``
    from a translation model. ``num_beams`` and ``max_new_tokens`` default to the run's recipe, else
    to the model's generation_config. Mistakes (missing or unreadable files, a file type the model
    does not take, a folder that is no model) raise ``UserError``.
    """
    for name, value in (("top_k", top_k), ("batch_size", batch_size), ("num_beams", num_beams),
                        ("max_new_tokens", max_new_tokens)):
        _check_count(name, value)
    if not files:
        raise UserError(f"give files to predict on: {_all_inputs()}")
    files = [str(f) for f in files]
    kinds = [kind_of_file(f) for f in files]  # before the model: a typo costs no loading
    source = resolve_model(model)
    takes = TAKES[source.task]
    for file, kind in zip(files, kinds):
        if kind != takes:
            raise UserError(f"{file} is {IS[kind]}, but MODEL {model} is {WHAT[source.task]}: it takes "
                            f"{INPUTS[takes]}")
    if source.task not in GENERATING:
        for name, value in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens)):
            if value is not None:
                raise UserError(f"--{name} applies to speech recognition and translation; MODEL {model} is "
                                f"{WHAT[source.task]}: drop it")
    where = _device(device)
    with tempfile.TemporaryDirectory(prefix="fastft-predict-") as merged:
        if source.adapter is not None:
            source = _merge_adapter(source, Path(merged))
        if source.task == IMAGE_CLASSIFICATION:
            return _classify_images(source, files, top_k, batch_size, where)
        if source.task == AUDIO_CLASSIFICATION:
            return _classify_audio(source, files, top_k, batch_size, where)
        if source.task == ASR:
            return _transcribe(source, files, batch_size, where, num_beams, max_new_tokens)
        return _translate(source, files, batch_size, where, num_beams, max_new_tokens)


# -- the command --------------------------------------------------------------------------------
def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text: file, then its labels with probabilities, its transcript or its translation."""
    if not rows:
        return ""
    where = [f"{r['file']}:{r['line']}" if "line" in r else r["file"] for r in rows]
    width = max(len(w) for w in where)
    if "labels" in rows[0]:
        header, body = "labels (probability)", ["  ".join(f"{x['label']} {x['score']:.3f}" for x in r["labels"])
                                                for r in rows]
    elif "source" in rows[0]:
        header, body = "source -> translation", [f"{r['source']} -> {r['text']}" for r in rows]
    else:
        header, body = "transcript", [r["text"] for r in rows]
    return "\n".join([f"{'file':<{width}}  {header}"] + [f"{w:<{width}}  {b}" for w, b in zip(where, body)])


def _count(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    parser = OneLineParser(prog="fastft predict", description=__doc__.splitlines()[0].replace("``", ""),
                           allow_abbrev=False)
    parser.add_argument("model", metavar="MODEL", help="A finished fastft output_dir, a timm or transformers "
                                                       "model folder, a fastft: model asset or a Hub id.")
    parser.add_argument("files", metavar="FILES", nargs="+", help=f"{_all_inputs()}.")
    parser.add_argument("--top_k", type=_count, default=5, help="Labels per file from a classifier (default 5).")
    parser.add_argument("--json", action="store_true", help="Print one JSON document (a list of rows).")
    parser.add_argument("--batch_size", type=_count, default=8, help="Files (or lines) per forward pass.")
    parser.add_argument("--num_beams", type=_count, help="Beam width; default: the run's, else the model's.")
    parser.add_argument("--max_new_tokens", type=_count, help="Longest output; default: the run's, else the "
                                                              "model's generation_config.")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="Where to run (auto: a GPU when there is one).")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise unknown_flag(unknown, [a.dest for a in parser._actions if a.option_strings])
    rows = predict(args.model, args.files, top_k=args.top_k, batch_size=args.batch_size, num_beams=args.num_beams,
                   max_new_tokens=args.max_new_tokens, device=args.device)
    print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else format_table(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
