"""Speech recognition: Whisper and other ``AutoModelForSpeechSeq2Seq`` models, scored by WER and CER (%).

The token loss, label smoothing, generation and predictions.txt come from
``Seq2SeqTask``; this module brings audio in, transcripts as labels, Whisper's
language/task prompt and the text normalisation that WER is computed on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from fastft import speech_models
from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.metrics import load_metric
from fastft.task_fields import AsrArguments
from fastft.tasks.common import plan_lines
from fastft.tasks.seq2seq import Seq2SeqTask
from fastft.tasks.speech_data import TEXT_COLUMNS, Clips, SpeechData


def text_normalizer(kind: str, tokenizer: Any = None) -> Callable[[str], str]:
    """How predictions and references are normalised before WER/CER (transformers' Whisper normalisers)."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if kind == "none":
        return lambda text: " ".join(text.split())
    if kind == "basic":
        return BasicTextNormalizer()  # lowercase, punctuation and bracketed/parenthesised spans removed
    # British -> American spellings ship with Hub Whisper tokenizers (normalizer.json); numbers etc. need nothing.
    return EnglishTextNormalizer(getattr(tokenizer, "english_spelling_normalizer", None) or {})


class AsrTask(Seq2SeqTask):
    main_metric = "eval_wer"
    greater_is_better = False
    pipeline_tag = "automatic-speech-recognition"

    def __init__(self, task_args: AsrArguments, args: TrainingArguments):
        super().__init__(task_args, args)
        if args.freeze_epochs:
            raise UserError("freeze_epochs trains only a new head, which a speech recogniser has none of: unset it "
                            "(freeze_encoder trains the decoder alone)")
        if task_args.cache_encoder_outputs and not task_args.freeze_encoder:
            raise UserError("cache_encoder_outputs needs freeze_encoder: a trained encoder's outputs change every "
                            "step")
        self.data = SpeechData(task_args, args.seed, args.max_train_samples, args.max_eval_samples)
        # clip key -> frozen encoder output; emptied by each build_model
        self._encoded: Optional[dict[int, torch.Tensor]] = {} if task_args.cache_encoder_outputs else None

    # -- the checkpoint's config and processor (no weights) ---------------------------------
    def _config(self) -> Any:
        """The checkpoint's config, checked against the recipe."""
        a = self.task_args
        config = speech_models.load_config(a.model_name_or_path)
        whisper = speech_models.is_whisper(config)
        if not whisper and (a.whisper_window_s or a.language):
            raise UserError(f"whisper_window_s and language apply to Whisper models; {a.model_name_or_path} is a "
                            f"{config.model_type}: unset them")
        if whisper and a.whisper_window_s:
            speech_models.check_whisper_window(config, a.whisper_window_s)
        limit = getattr(config, "max_target_positions", None)
        if limit and a.max_target_length + 4 > limit:  # room for Whisper's prompt tokens
            raise UserError(f"max_target_length {a.max_target_length} does not fit the decoder's {limit} positions; "
                            f"set it to {limit - 4} or less")
        if a.cache_encoder_outputs and not whisper:
            raise UserError(f"cache_encoder_outputs applies to Whisper models; {a.model_name_or_path} is a "
                            f"{config.model_type}: unset it")
        return config

    def _load_processor(self, config: Any) -> None:
        """The processor as the recipe sets it: Whisper's language/task prompt, its shortened window."""
        a = self.task_args
        self.processor = speech_models.load_speech_processor(a.model_name_or_path)
        self.tokenizer, self.extractor = self.processor.tokenizer, self.processor.feature_extractor
        self.whisper = speech_models.is_whisper(config)
        self.multilingual = self.whisper and speech_models.is_multilingual(a.model_name_or_path)
        if self.whisper:
            self._set_whisper_prompt()
            if a.whisper_window_s:
                speech_models.set_extractor_window(self.extractor, a.whisper_window_s)
        self.set_decoder_start(config.decoder_start_token_id)

    def _set_whisper_prompt(self) -> None:
        a = self.task_args
        if not self.multilingual:
            if a.language not in (None, "en", "english") or a.asr_task != "transcribe":
                raise UserError(f"{a.model_name_or_path} is an English-only Whisper: unset language and asr_task, or "
                                f"use a multilingual checkpoint (e.g. openai/whisper-small)")
            self.tokenizer.set_prefix_tokens(predict_timestamps=False)
            return
        if a.language is None:
            raise UserError("language is required with a multilingual Whisper (e.g. language: hindi); without it "
                            "the model would guess the language of every clip")
        try:
            self.tokenizer.set_prefix_tokens(language=a.language, task=a.asr_task, predict_timestamps=False)
        except ValueError as err:
            raise UserError(f"language {a.language!r}: {str(err).splitlines()[0][:200]}") from None

    # -- model ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        a = self.task_args
        model = speech_models.load_speech_seq2seq(a.model_name_or_path)
        whisper = speech_models.is_whisper(model.config)
        if whisper and getattr(model.generation_config, "is_multilingual", False):
            # Saved with the model, so the fine-tuned checkpoint generates in this language by default.
            gen = model.generation_config
            gen.language, gen.task = a.language, a.asr_task
            gen.forced_decoder_ids = None
            model.config.forced_decoder_ids = None
        if whisper and a.whisper_window_s:
            speech_models.set_whisper_window(model, a.whisper_window_s)
        speech_models.freeze(model, a.freeze_encoder, a.freeze_feature_encoder)
        if self._encoded is not None:
            self._encoded = {}  # outputs of an earlier attempt's encoder
        return model

    def generation_kwargs(self) -> dict[str, Any]:
        kwargs = super().generation_kwargs()
        if self.multilingual:
            kwargs.update(language=self.task_args.language, task=self.task_args.asr_task)
        return kwargs

    def model_inputs(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        if self._encoded is not None:
            return {"encoder_outputs": self._cached_encoder_outputs(model, batch)}
        return {k: v for k, v in batch.items() if k not in ("labels", "index", "key")}

    def _is_cached(self, key: int) -> bool:
        return key in self._encoded

    def _cached_encoder_outputs(self, model: nn.Module, batch: dict[str, Any]) -> Any:
        """The frozen encoder's outputs, computed once per clip (the encoder is most of Whisper's cost).

        Computed in eval mode and kept on the CPU; the same as running the encoder every
        step as long as it is frozen and has no dropout or layerdrop (Whisper's are 0).
        """
        from transformers.modeling_outputs import BaseModelOutput

        if "input_features" in batch:
            encoded_keys = batch["feature_keys"].tolist()
            new = [i for i, key in enumerate(encoded_keys) if key not in self._encoded]
            if new:
                encoder = extract_model_from_parallel(model).get_encoder()
                training = encoder.training
                encoder.eval()
                with torch.no_grad():
                    hidden = encoder(batch["input_features"][new]).last_hidden_state.cpu()
                encoder.train(training)
                self._encoded.update({encoded_keys[i]: h for i, h in zip(new, hidden)})
        keys = batch["key"].tolist()
        device = batch["labels"].device
        return BaseModelOutput(last_hidden_state=torch.stack([self._encoded[key] for key in keys]).to(device))

    def evaluation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.whisper and self._encoded is None:
            # The encoder is most of Whisper's cost: run it once for both the teacher-forced loss and generation.
            encoded = extract_model_from_parallel(model).get_encoder()(batch["input_features"])
            batch = {"encoder_outputs": encoded, **{k: v for k, v in batch.items() if k != "input_features"}}
        return super().evaluation_step(model, batch)

    def head_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return []

    def save_model(self, model: nn.Module, output_dir: Path) -> None:
        # AutoModelForSpeechSeq2Seq + AutoProcessor (and the ASR pipeline) reload it, and so does this script.
        model.save_pretrained(output_dir)
        self.processor.save_pretrained(output_dir)

    # -- data --------------------------------------------------------------------------
    def _max_duration(self, config: Any) -> Optional[float]:
        """Longest clip kept: max_duration_s, and never more than Whisper's window (longer would be cut)."""
        a = self.task_args
        window = None
        if speech_models.is_whisper(config):
            window = float(a.whisper_window_s or speech_models.whisper_window_s(config))
        if a.max_duration_s is not None and window is not None and a.max_duration_s > window:
            raise UserError(f"max_duration_s {a.max_duration_s} exceeds Whisper's {window:g} s input window: longer "
                            f"clips would be cut off; set max_duration_s to {window:g} or less")
        return a.max_duration_s if a.max_duration_s is not None else window

    def num_train_samples(self) -> int:
        known = self.data.known_train_size()
        if known is not None:
            return known
        return len(self.data.splits("text_column", TEXT_COLUMNS, self._max_duration(self._config()))[0])

    def load_data(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        config = self._config()
        self._load_processor(config)
        train, evaluation = self.data.splits("text_column", TEXT_COLUMNS, self._max_duration(config))
        column = self.data.audio_column
        self.eval_sources = [x if isinstance(x, str) else str(x.get("path") or i)
                             for i, x in enumerate(evaluation[column])]
        self.eval_references = [t or "" for t in evaluation[self.data.target_column]]
        self.normalize = text_normalizer(self.task_args.text_normalization, self.tokenizer)
        self.wer, self.cer = load_metric("wer"), load_metric("cer")
        rate = self.extractor.sampling_rate
        skip = self._is_cached if self._encoded is not None else None  # cached clips need no decoding
        return (Clips(train, column, self.data.target_column, rate, self.encode, skip_audio=skip),
                Clips(evaluation, column, self.data.target_column, rate, self.encode, key_offset=len(train),
                      skip_audio=skip))

    def encode(self, text: Optional[str]) -> dict[str, list[int]]:
        """Label ids of a transcript: Whisper's prompt tokens, the text, end of text."""
        text = (text or "").strip()
        if self.whisper and text:
            # Whisper writes every transcript with a leading space (" Please", as its generations start):
            # targets without it would first have to teach the model a new first token (loss x2 measured).
            text = " " + text
        return {"labels": self.target_ids(text)}

    def collate_inputs(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"key": torch.tensor([e["key"] for e in examples])}
        # With cache_encoder_outputs, clips already encoded come without audio: features of the others only.
        decoded = [e for e in examples if e["audio"] is not None]
        if decoded:
            batch.update(speech_models.extract_features(self.extractor, [e["audio"] for e in decoded],
                                                        self.extractor.sampling_rate))
            if self._encoded is not None:
                batch["feature_keys"] = torch.tensor([e["key"] for e in decoded])
        return batch

    # -- metrics -----------------------------------------------------------------------
    def score(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        predictions = [self.normalize(p) for p in predictions]
        references = [self.normalize(r) for r in references]
        # In percent, as the Whisper papers and the HF fine-tuning blog report them.
        return {"eval_wer": 100 * self.wer.compute(predictions=predictions, references=references)["wer"],
                "eval_cer": 100 * self.cer.compute(predictions=predictions, references=references)["cer"]}

    # -- reporting -----------------------------------------------------------------------
    def metric_names(self) -> set[str]:
        return {"eval_wer", "eval_cer", "eval_loss"}

    def card_info(self) -> dict[str, Any]:
        return {**super().card_info(), "tags": ["automatic-speech-recognition", "whisper" if self.whisper else "asr"],
                "metric_type": "wer", "metric_name": "WER", "task_name": "speech",
                "eval_split": self.data.eval_split_used,
                "load": 'from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor\n\n'
                        'model = AutoModelForSpeechSeq2Seq.from_pretrained("{repo_id}")\n'
                        'processor = AutoProcessor.from_pretrained("{repo_id}")',
                "pipeline": 'from transformers import pipeline\n\n'
                            # the pipeline's default beam search would not decode as the evaluation did
                            'asr = pipeline("automatic-speech-recognition", model="{repo_id}", '
                            f'generate_kwargs={{{{"num_beams": {self.task_args.num_beams}}}}})'}

    def _cache_mb_per_clip(self) -> float:
        """Size of one clip's cached encoder output: positions x d_model float32."""
        config = self._config()
        window = self.task_args.whisper_window_s or speech_models.whisper_window_s(config)
        return window * speech_models.FRAMES_PER_SECOND // 2 * config.d_model * 4 / 2**20

    def check_sources(self) -> None:
        speech_models.resolve(self.task_args.model_name_or_path)

    def describe(self) -> list[str]:
        a = self.task_args
        clips = "the model window" if a.max_duration_s is None else f"{a.max_duration_s:g} s"
        return plan_lines({
            "task": f"asr ({a.language or 'model language'}, {a.asr_task})",
            "model": a.model_name_or_path,
            "dataset": self.data.describe(),
            "clips": f"{a.min_duration_s:g} s to {clips}",
            "evaluation": f"generate (num_beams={a.num_beams}, max_new_tokens={a.max_new_tokens or a.max_target_length}"
                          f"); WER, CER after {a.text_normalization} normalisation"
                          + ("; also before training" if a.eval_before_training else ""),
            **({"encoder output cache": f"{self._cache_mb_per_clip():.1f} MB of memory a clip"}
               if a.cache_encoder_outputs else {})})
