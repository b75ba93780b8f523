"""Speech building blocks: audio reading and resampling, feature shapes, token loss, WER/CER, recipe checks."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from speech_fixtures import asr_argv, spoken_words, tiny_whisper  # noqa: F401  (fixtures)

from fastft.audio import duration_s, load_audio, read_audio, resample
from fastft.config import TrainingArguments
from fastft.run import main
from fastft.errors import UserError
from fastft.metrics import load_metric
from fastft.tasks.speech import SpeechArguments, speech_task


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("orig,target", [(8000, 16000), (22050, 16000), (44100, 16000), (16000, 16000)])
def test_resampling_keeps_pitch_length_and_level(orig, target):
    out = resample(tone(440, orig), orig, target)
    assert out.dtype == np.float32
    assert len(out) == pytest.approx(target, abs=1)  # one second stays one second
    assert peak_hz(out, target) == pytest.approx(440, abs=2)
    assert np.abs(out[target // 4:-target // 4]).max() == pytest.approx(0.5, abs=0.02)


def test_resampling_filters_what_the_new_rate_cannot_hold():
    # 7 kHz is above the 4 kHz Nyquist limit of 8 kHz audio: it must vanish, not fold back to 1 kHz.
    out = resample(tone(7000, 22050), 22050, 8000)
    assert np.abs(out[2000:-2000]).max() < 0.01


def test_read_audio_from_paths_bytes_and_arrays_mixes_channels_to_mono(tmp_path):
    stereo = np.stack([tone(440, 8000), np.zeros(8000, np.float32)], axis=1)
    soundfile.write(tmp_path / "stereo.wav", stereo, 8000)
    samples, rate = read_audio(tmp_path / "stereo.wav")
    assert rate == 8000 and samples.shape == (8000,)
    np.testing.assert_allclose(samples, stereo.mean(1), atol=1e-4)  # 16-bit WAV rounding
    raw = (tmp_path / "stereo.wav").read_bytes()
    from_bytes = load_audio({"bytes": raw, "path": "x.wav"}, 16000)  # datasets.Audio(decode=False)
    from_path = load_audio("stereo.wav", 16000, base_dir=tmp_path)  # relative to a csv's folder
    assert from_bytes.shape == (16000,) and np.array_equal(from_bytes, from_path)
    decoded = load_audio({"array": tone(440, 8000), "sampling_rate": 8000}, 16000)
    assert decoded.shape == (16000,)
    assert duration_s({"bytes": raw, "path": None}) == pytest.approx(1.0)


def test_unreadable_audio_is_a_user_error_naming_the_file(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(UserError, match="bad.wav"):
        load_audio(tmp_path / "bad.wav", 16000)
    with pytest.raises(UserError, match="missing.flac"):
        duration_s(str(tmp_path / "missing.flac"))


def test_feature_shapes_whisper_window_and_wav2vec2_padding(tiny_whisper):
    from transformers import AutoProcessor, Wav2Vec2FeatureExtractor, WhisperForConditionalGeneration

    from fastft.speech_models import extract_features, set_extractor_window, set_whisper_window, whisper_window_s

    clips = [tone(300, 16000, 0.5), tone(600, 16000, 1.5)]
    processor = AutoProcessor.from_pretrained(tiny_whisper)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    features = extract_features(processor.feature_extractor, clips, 16000)
    assert features["input_features"].shape == (2, 80, 200)  # 2 s window, 100 frames a second
    assert whisper_window_s(model.config) == 2
    set_whisper_window(model, 1)
    set_extractor_window(processor.feature_extractor, 1)
    short = extract_features(processor.feature_extractor, clips, 16000)["input_features"]
    assert short.shape == (2, 80, 100)
    with torch.no_grad():
        assert model.model.encoder(short).last_hidden_state.shape == (2, 50, 32)  # conv2 halves the frames
    with pytest.raises(UserError, match="whisper_window_s"):
        set_whisper_window(model, 5)
    wav2vec2 = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    batch = extract_features(wav2vec2, clips, 16000)
    assert batch["input_values"].shape == (2, 24000)  # padded to the longest clip
    assert batch["attention_mask"].sum(1).tolist() == [8000, 24000]


def test_wer_and_cer_of_known_strings():
    wer, cer = load_metric("wer"), load_metric("cer")
    # one substitution (sat/sit) and one deletion (the) over 6 reference words; corpus-level, not a mean
    result = wer.compute(predictions=["the cat sit on mat", "hello world"],
                         references=["the cat sat on the mat", "hello world"])
    assert result["wer"] == pytest.approx(2 / 8)
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (1, 1, 0)
    assert wer.compute(predictions=["a b c d"], references=["a b"])["wer"] == pytest.approx(1.0)  # insertions
    assert cer.compute(predictions=["helo"], references=["hello"])["cer"] == pytest.approx(1 / 5)


def test_text_normalisation_changes_what_counts_as_an_error():
    from fastft.tasks.asr import text_normalizer

    ref, hyp = "Please press 1, then the pound key.", "please press one then the pound key"
    wer = load_metric("wer")

    def score(kind: str) -> float:
        norm = text_normalizer(kind)
        return wer.compute(predictions=[norm(hyp)], references=[norm(ref)])["wer"]

    assert score("none") == pytest.approx(3 / 7)  # Please, "1," and "key." all differ
    assert score("basic") == pytest.approx(1 / 7)  # only 1 vs one is left
    assert score("whisper_english") == 0.0  # spoken numbers become digits


def _asr_task(tiny_whisper, spoken_words, tmp_path, smoothing: float, *extra: str, train_set: bool = False):
    from fastft.arguments import parse_args

    task_args, args = parse_args([SpeechArguments, TrainingArguments],
                                 asr_argv(tmp_path, spoken_words, tiny_whisper, "--label_smoothing_factor",
                                          str(smoothing), *extra))
    task = speech_task(task_args, args)
    train, _ = task.load_data()
    return task, train if train_set else [train[i] for i in range(3)]


def test_cached_encoder_outputs_skip_decoding_and_give_the_same_loss(tiny_whisper, spoken_words, tmp_path):
    plain, train = _asr_task(tiny_whisper, spoken_words, tmp_path, 0.1, "--freeze_encoder", train_set=True)
    cached, cached_train = _asr_task(tiny_whisper, spoken_words, tmp_path, 0.1, "--freeze_encoder",
                                     "--cache_encoder_outputs", train_set=True)
    model = cached.build_model().train()  # the same checkpoint as plain's model
    plain.build_model().train()
    batch = plain.collate([train[i] for i in (0, 5, 9)])
    # The first time a clip is seen it is decoded and encoded; half a batch may be new.
    first = cached.collate([cached_train[i] for i in (0, 5)])
    assert first["input_features"].shape[0] == 2 and first["feature_keys"].tolist() == [0, 5]
    cached.training_loss(model, first)
    mixed = [cached_train[i] for i in (0, 5, 9)]
    assert [e["audio"] is None for e in mixed] == [True, True, False]  # cached clips are not even read
    mixed_batch = cached.collate(mixed)
    assert mixed_batch["feature_keys"].tolist() == [9]
    expected = plain.training_loss(plain.build_model(), batch)
    assert cached.training_loss(model, mixed_batch).item() == pytest.approx(expected.item(), rel=1e-5)
    again = cached.collate([cached_train[i] for i in (0, 5, 9)])
    assert "input_features" not in again  # all cached: no audio, no features
    assert cached.training_loss(model, again).item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():
        reference = model.get_encoder()(batch["input_features"]).last_hidden_state
    torch.testing.assert_close(cached.model_inputs(model, again)["encoder_outputs"].last_hidden_state, reference)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_token_loss_ignores_padding_and_smooths_only_real_tokens(tiny_whisper, spoken_words, tmp_path, smoothing):
    from fastft.tasks.seq2seq import IGNORE_INDEX, decoder_input_ids

    task, examples = _asr_task(tiny_whisper, spoken_words, tmp_path, smoothing)
    examples[0]["labels"] = examples[0]["labels"] + [50256] * 3  # sequences of different lengths
    model = task.build_model().eval()
    batch = task.collate(examples)
    assert (batch["labels"] == IGNORE_INDEX).any() and task.count_items(batch) == sum(
        len(e["labels"]) for e in examples)
    loss = task.training_loss(model, batch)
    # More padding changes nothing: -100 positions add neither likelihood nor smoothing terms.
    wider = dict(batch, labels=torch.nn.functional.pad(batch["labels"], (0, 4), value=IGNORE_INDEX))
    assert task.training_loss(model, wider).item() == pytest.approx(loss.item(), rel=1e-5)
    # By hand: per real token, (1 - eps) * NLL + eps * mean over the vocabulary of -log p.
    expected = 0.0
    for example in examples:
        one = task.collate([example])
        with torch.no_grad():
            logits = model(input_features=one["input_features"],
                           decoder_input_ids=decoder_input_ids(model, one["labels"])).logits
        logp = logits.float().log_softmax(-1)[0]
        labels = torch.tensor(example["labels"])
        nll = -logp[torch.arange(len(labels)), labels]
        expected += ((1 - smoothing) * nll + smoothing * -logp.mean(-1)).sum().item()
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_labels_hold_the_prompt_but_not_the_start_token(tiny_whisper, spoken_words, tmp_path):
    task, examples = _asr_task(tiny_whisper, spoken_words, tmp_path, 0.0)
    labels = examples[0]["labels"]
    assert labels[0] == 50362 and labels[-1] == 50256  # <|notimestamps|> ... <|endoftext|>
    assert 50257 not in labels  # <|startoftranscript|> is the decoder start token, prepended by the shift
    assert task.tokenizer.decode(labels, skip_special_tokens=True).strip() in ("yes", "no", "stop")
    # The text starts with a space token, as Whisper's own transcripts (and generations) do.
    assert task.tokenizer.convert_ids_to_tokens(labels[1]).startswith("Ġ")


@pytest.mark.parametrize("extra,message", [
    (["--mixup_alpha", "0.2"], "mixup_alpha applies to task audio_classification"),
    (["--language", "french"], "English-only Whisper"),
    (["--max_duration_s", "5"], "exceeds Whisper's 2 s input window"),
    (["--text_column", "nope"], "text_column 'nope' is not a column"),
    (["--freeze_epochs", "1"], "freeze_epochs"),
    (["--freeze_feature_encoder"], "freeze_feature_encoder needs a model with a CNN feature encoder"),
    (["--target_metric", "eval_accuracy", "--target_value", "1"], "target_metric 'eval_accuracy'"),
])
def test_recipe_mistakes_are_one_line_errors(tmp_path, spoken_words, tiny_whisper, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        main(speech_task, SpeechArguments, asr_argv(tmp_path / "x", spoken_words, tiny_whisper, *extra))
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], errors  # one line (after any loading progress bars)


def test_unknown_model_and_dataset_names_are_user_errors(tmp_path, capsys):
    for argv, message in ((["--model_name_or_path", "fastft:nope", "--dataset_name", "fastft:asterisk_en"],
                           "unknown speech model asset"),
                          (["--model_name_or_path", "./missing-folder", "--dataset_name", "fastft:asterisk_en"],
                           "neither a local folder"),
                          (["--model_name_or_path", "fastft:whisper_tiny_en", "--dataset_name", "fastft:nope"],
                           "unknown speech dataset asset")):
        with pytest.raises(SystemExit):
            main(speech_task, SpeechArguments, [*argv, "--output_dir", str(tmp_path), "--max_steps", "1"])
        assert message in capsys.readouterr().err
