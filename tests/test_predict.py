"""``fastft predict``: each task's saved model predicts what its own forward pass / generate() and the
matching transformers pipeline give, what the run's own evaluation gave, and mistakes are one-line errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import image_argv
from hub_server import fake_hub, make_fake_hub  # noqa: F401  (fixtures)
from PIL import Image
from speech_fixtures import (asr_argv, classification_argv, spoken_words, tiny_wav2vec2,  # noqa: F401
                             tiny_whisper, tiny_whisper_classifier)
from test_translation import tiny_bert, tiny_marian, toy_argv, toy_data  # noqa: F401

from fastft.audio import load_audio
from fastft.run import main as train
from fastft.errors import UserError
from fastft.predict import ASR, AUDIO_CLASSIFICATION, IMAGE_CLASSIFICATION, TRANSLATION, _task_of_config, main, \
    predict
from fastft.task_fields import ImageArguments, SpeechArguments, TranslationArguments
from fastft.tasks.image import ImageTask
from fastft.tasks.speech import speech_task
from fastft.tasks.translation import TranslationTask

PREFIX = "dog dog "  # a source_prefix the toy model notices: predictions without it differ


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


# -- short real runs, one per task --------------------------------------------------------------
def trained(tmp_path_factory, name: str, task, fields, argv) -> Path:
    """A finished run in a fresh folder; ``argv(out)`` is its command line."""
    out = tmp_path_factory.mktemp(f"predict_{name}") / "run"
    train(task, fields, argv(out))
    return out


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, tiny_images, tiny_model):
    return trained(tmp_path_factory, "image", ImageTask, ImageArguments,
                   lambda out: image_argv(out, tiny_images, tiny_model, "--max_steps", "6", "--eval_crop_pct", "0.8"))


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, tiny_images, tiny_vit):
    return trained(tmp_path_factory, "vit", ImageTask, ImageArguments,
                   lambda out: image_argv(out, tiny_images, tiny_vit, "--max_steps", "2"))


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory, toy_data, tiny_marian):
    return trained(tmp_path_factory, "translation", TranslationTask, TranslationArguments,
                   lambda out: toy_argv(out, toy_data, tiny_marian, "--max_steps", "40", "--num_beams", "2",
                                        "--max_new_tokens", "6", "--source_prefix", PREFIX))


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory, spoken_words, tiny_whisper):
    return trained(tmp_path_factory, "asr", speech_task, SpeechArguments,
                   lambda out: asr_argv(out, spoken_words, tiny_whisper, "--max_steps", "6"))


@pytest.fixture(scope="module")
def keyword_run(tmp_path_factory, spoken_words, tiny_whisper_classifier):
    return trained(tmp_path_factory, "keywords", speech_task, SpeechArguments,
                   lambda out: classification_argv(out, spoken_words, tiny_whisper_classifier, "--max_steps", "6"))


def image_files(tiny_images) -> list[str]:
    return [str(p) for p in sorted((tiny_images / "test").rglob("*.png"))]


def clip_files(spoken_words) -> list[str]:
    with open(spoken_words / "validation.csv") as f:
        return [str(spoken_words / row["path"]) for row in csv.DictReader(f)]


def pairs(rows: list[dict]) -> list[list[tuple[str, float]]]:
    return [[(x["label"], x["score"]) for x in row["labels"]] for row in rows]


def assert_same_labels(got: list[list[tuple[str, float]]], expected: list[list[tuple[str, float]]]) -> None:
    assert [[label for label, _ in row] for row in got] == [[label for label, _ in row] for row in expected]
    np.testing.assert_allclose([[s for _, s in row] for row in got], [[s for _, s in row] for row in expected],
                               atol=1e-5)


def run_metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


# -- images ---------------------------------------------------------------------------------------
def test_timm_run_matches_its_forward_pass_its_evaluation_and_the_pipeline(image_run, tiny_images):
    import timm
    from timm.data import create_transform, resolve_data_config
    from transformers import pipeline

    files = image_files(tiny_images)
    rows = predict(str(image_run), files, top_k=3, batch_size=4)
    assert [r["file"] for r in rows] == files
    # The model's own forward pass on timm's preprocessing from the saved data config (crop 0.8, 32 px).
    model = timm.create_model(f"local-dir:{image_run}", pretrained=True).eval()
    config = resolve_data_config(model=model)
    assert config["crop_pct"] == 0.8 and config["input_size"] == (3, 32, 32)
    transform = create_transform(**config, is_training=False)
    names = model.pretrained_cfg["label_names"]
    with torch.no_grad():
        probabilities = model(torch.stack([transform(Image.open(f).convert("RGB")) for f in files])).softmax(-1)
    scores, indices = probabilities.topk(3)
    expected = [[(names[i], s) for s, i in zip(ss.tolist(), ii.tolist())] for ss, ii in zip(scores, indices)]
    assert_same_labels(pairs(rows), expected)
    assert all(abs(sum(s for _, s in row) - 1) < 1e-5 for row in pairs(rows))  # 3 classes, top 3: all of them
    # Top-1 over the test split is the accuracy the run's evaluation reported.
    correct = sum(row["labels"][0]["label"] in f.split("/")[-2] for row, f in zip(rows, files))
    assert correct / len(files) == pytest.approx(run_metrics(image_run)["eval_accuracy"])
    # Batches do not change an image's answer.
    assert_same_labels(pairs(predict(str(image_run), files, top_k=3, batch_size=8)), pairs(rows))
    # transformers' pipeline loads the run's folder (TimmWrapper) and agrees.
    classify = pipeline("image-classification", model=str(image_run))
    piped = [[(x["label"], x["score"]) for x in classify(f, top_k=3)] for f in files]
    assert_same_labels(pairs(rows), piped)


def test_transformers_classifier_run_uses_its_processor_and_agrees_with_the_pipeline(vit_run, tiny_images):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    files = image_files(tiny_images)[::4]
    rows = predict(str(vit_run), files, top_k=2)
    model = AutoModelForImageClassification.from_pretrained(vit_run).eval()
    processor = AutoImageProcessor.from_pretrained(vit_run)
    with torch.no_grad():
        logits = model(**processor(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")).logits
    scores, indices = logits.softmax(-1).topk(2)
    expected = [[(model.config.id2label[i], s) for s, i in zip(ss.tolist(), ii.tolist())]
                for ss, ii in zip(scores, indices)]
    assert {label for row in expected for label, _ in row} <= {"blue", "green", "red"}
    assert_same_labels(pairs(rows), expected)
    classify = pipeline("image-classification", model=str(vit_run))
    assert_same_labels(pairs(rows), [[(x["label"], x["score"]) for x in classify(f, top_k=2)] for f in files])


# -- translation ------------------------------------------------------------------------------------
def test_translation_run_generates_as_its_evaluation_did(translation_run, toy_data, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    sources = [json.loads(line)["translation"]["en"] for line in (toy_data / "validation.jsonl").open()]
    text = tmp_path / "sources.txt"
    text.write_text("\n".join(sources[:20]) + "\n\n" + "\n".join(sources[20:]) + "\n")  # a blank line is skipped
    rows = predict(str(translation_run), [str(text)], batch_size=8)
    assert [r["line"] for r in rows] == list(range(1, 21)) + list(range(22, 42))
    assert [r["source"] for r in rows] == sources
    # What the run generated at its last evaluation (source prefix, 2 beams, 6 new tokens from config.yaml).
    evaluated = [line.split("\t")[2] for line in (translation_run / "predictions.txt").read_text().splitlines()]
    assert [r["text"] for r in rows] == evaluated
    # And what generate() gives on the prefixed source, one sentence at a time.
    model = AutoModelForSeq2SeqLM.from_pretrained(translation_run).eval()
    tokenizer = AutoTokenizer.from_pretrained(translation_run)

    def generate(source: str, **kwargs) -> str:
        inputs = tokenizer([source], return_tensors="pt", return_token_type_ids=False)
        with torch.no_grad():
            return tokenizer.decode(model.generate(**inputs, **kwargs)[0], skip_special_tokens=True).strip()

    assert [generate(PREFIX + s, num_beams=2, max_new_tokens=6) for s in sources[:8]] == evaluated[:8]
    assert [generate(s, num_beams=2, max_new_tokens=6) for s in sources[:8]] != evaluated[:8]  # the prefix matters
    # Flags override the run's generation settings.
    short = predict(str(translation_run), [str(text)], max_new_tokens=2, num_beams=1)
    assert [r["text"] for r in short[:8]] == [generate(PREFIX + s, num_beams=1, max_new_tokens=2) for s in sources[:8]]


def test_transformers_5_has_no_translation_pipeline_for_the_run_to_load(translation_run):
    import transformers
    from transformers import pipeline

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4 still has the translation pipeline")
    # Not a saving problem: the task itself is gone (REMOVED_TASKS); the model card shows generate() instead.
    for task in ("translation", "text2text-generation"):
        with pytest.raises(KeyError, match="removed"):
            pipeline(task, model=str(translation_run))


# -- speech -------------------------------------------------------------------------------------------
def test_asr_run_transcribes_as_its_evaluation_generate_and_the_pipeline(asr_run, spoken_words):
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

    files = clip_files(spoken_words)
    rows = predict(str(asr_run), files, batch_size=5)
    assert [r["file"] for r in rows] == files
    evaluated = [line.split("\t")[2] for line in (asr_run / "predictions.txt").read_text().splitlines()]
    assert [" ".join(r["text"].split()) for r in rows] == evaluated
    assert any(r["text"] for r in rows)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(asr_run).eval()
    processor = AutoProcessor.from_pretrained(asr_run)
    clips = [load_audio(f, 16000) for f in files[:4]]  # 22,050 Hz espeak-ng clips resampled
    with torch.no_grad():
        ids = model.generate(processor.feature_extractor(clips, sampling_rate=16000, return_tensors="pt")
                             .input_features, max_new_tokens=8)  # the run's max_new_tokens
    assert [r["text"] for r in rows[:4]] == [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    # The pipeline reads files with ffmpeg (absent here): it gets the same samples as arrays. Unless a model's
    # generation_config sets num_beams, the ASR pipeline decodes with 5 beams; the run evaluated greedily, and a
    # saved num_beams of 1 is a default that generation_config.json leaves out, so the call says it.
    asr = pipeline("automatic-speech-recognition", model=str(asr_run))
    piped = [asr({"raw": clip, "sampling_rate": 16000}, generate_kwargs={"num_beams": 1, "max_new_tokens": 8})
             ["text"].strip() for clip in clips]
    assert [r["text"] for r in rows[:4]] == piped


def test_asr_warns_when_a_clip_is_longer_than_the_whisper_window(asr_run, tmp_path):
    long = tmp_path / "long.flac"
    soundfile.write(long, np.zeros(16000 * 3, np.float32), 16000)  # the tiny Whisper's window is 2 s
    with pytest.warns(UserWarning, match="long.flac lasts 3.0 s, longer than the model's 2 s window"):
        [row] = predict(str(asr_run), [str(long)])
    assert set(row) == {"file", "text"}


def test_audio_classifier_run_matches_its_forward_pass_its_evaluation_and_the_pipeline(keyword_run, spoken_words):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    files = clip_files(spoken_words)
    rows = predict(str(keyword_run), files, top_k=3)
    model = AutoModelForAudioClassification.from_pretrained(keyword_run).eval()
    extractor = AutoFeatureExtractor.from_pretrained(keyword_run)
    clips = [load_audio(f, 16000) for f in files]
    with torch.no_grad():
        logits = model(**extractor(clips, sampling_rate=16000, return_tensors="pt")).logits
    scores, indices = logits.softmax(-1).topk(3)
    expected = [[(model.config.id2label[i], s) for s, i in zip(ss.tolist(), ii.tolist())]
                for ss, ii in zip(scores, indices)]
    assert_same_labels(pairs(rows), expected)
    correct = sum(row["labels"][0]["label"] == f.split("/")[-2] for row, f in zip(rows, files))
    assert correct / len(files) == pytest.approx(run_metrics(keyword_run)["eval_accuracy"])
    classify = pipeline("audio-classification", model=str(keyword_run))
    piped = [[(x["label"], x["score"]) for x in classify({"raw": c, "sampling_rate": 16000}, top_k=3)] for c in clips]
    assert_same_labels(pairs(rows), piped)


def test_a_clip_gets_the_answer_it_gets_alone_whatever_else_is_in_the_batch(tiny_wav2vec2, spoken_words, tmp_path):
    import shutil

    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    files = clip_files(spoken_words)[::2]  # 0.6 to 0.9 s: padded to the longest in a batch
    clips = [load_audio(f, 16000) for f in files]
    assert len({len(c) for c in clips}) > 1
    # The fixture's extractor returns attention masks; a copy without them pads with bare zeros (wav2vec2-base).
    unmasked = shutil.copytree(tiny_wav2vec2, tmp_path / "unmasked")
    config = json.loads((unmasked / "preprocessor_config.json").read_text())
    (unmasked / "preprocessor_config.json").write_text(json.dumps({**config, "return_attention_mask": False}))
    model = AutoModelForAudioClassification.from_pretrained(tiny_wav2vec2).eval()
    for folder in (tiny_wav2vec2, unmasked):
        extractor = AutoFeatureExtractor.from_pretrained(folder)
        with torch.no_grad():
            alone = torch.cat([model(**extractor(c, sampling_rate=16000, return_tensors="pt")).logits for c in clips])
            padded = model(**extractor(clips, sampling_rate=16000, return_tensors="pt", padding=True)).logits
        if folder == unmasked:  # so batching these clips naively would change their answers
            assert (padded.softmax(-1) - alone.softmax(-1)).abs().max() > 1e-4
        scores, indices = alone.softmax(-1).topk(2)
        expected = [[(model.config.id2label[i], s) for s, i in zip(ss.tolist(), ii.tolist())]
                    for ss, ii in zip(scores, indices)]
        rows = predict(str(folder), files, top_k=2, batch_size=8)
        assert_same_labels(pairs(rows), expected)
        assert {r["labels"][0]["label"] for r in rows} <= {"LABEL_0", "LABEL_1"}  # transformers' default names
        classify = pipeline("audio-classification", model=str(folder))
        assert_same_labels(pairs(rows), [[(x["label"], x["score"]) for x in classify(
            {"raw": c, "sampling_rate": 16000}, top_k=2)] for c in clips])


# -- the command ----------------------------------------------------------------------------------------
def test_json_is_one_document_and_the_table_has_a_line_per_file(image_run, tiny_images, capsys):
    files = image_files(tiny_images)[:3]
    rows = main([str(image_run), *files, "--top_k", "2", "--json"])
    assert json.loads(capsys.readouterr().out) == rows
    assert len(rows) == 3 and all(len(r["labels"]) == 2 for r in rows)
    main([str(image_run), *files, "--top_k", "2"])
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["file", "labels", "(probability)"]
    assert len(lines) == 3
    for line, row in zip(lines, rows):
        assert line.startswith(row["file"])
        assert line.split()[1:] == [row["labels"][0]["label"], f"{row['labels'][0]['score']:.3f}",
                                    row["labels"][1]["label"], f"{row['labels'][1]['score']:.3f}"]


def test_translation_table_names_file_and_line(translation_run, tmp_path, capsys):
    (tmp_path / "two.txt").write_text("red cat\n\nblue dog\n")
    rows = main([str(translation_run), str(tmp_path / "two.txt")])
    _, first, second = capsys.readouterr().out.strip().splitlines()
    assert first.startswith(f"{tmp_path / 'two.txt'}:1  red cat -> {rows[0]['text']}".rstrip())
    assert second.startswith(f"{tmp_path / 'two.txt'}:3  blue dog ->")


def test_hub_ids_load_as_the_local_folders_do_recipe_included(image_run, translation_run, tiny_images, tmp_path,
                                                              fake_hub):
    from huggingface_hub import HfApi

    for repo, folder in (("alice/image-run", image_run), ("alice/translation-run", translation_run)):
        HfApi().create_repo(repo)
        HfApi().upload_folder(repo_id=repo, folder_path=folder)
    images = image_files(tiny_images)[:4]
    local = predict(str(image_run), images, top_k=2)
    assert_same_labels(pairs(predict("alice/image-run", images, top_k=2)), pairs(local))
    assert_same_labels(pairs(predict("hf-hub:alice/image-run", images, top_k=2)), pairs(local))
    (tmp_path / "s.txt").write_text("red cat sees blue dog\none two three\n")
    # the pushed config.yaml brings the run's source prefix, beams and length along
    assert predict("alice/translation-run", [str(tmp_path / "s.txt")]) == predict(str(translation_run),
                                                                                  [str(tmp_path / "s.txt")])


def test_task_comes_from_config_json_when_there_is_no_run():
    def config(*architectures, model_type="x"):
        return {"architectures": list(architectures), "model_type": model_type}

    assert _task_of_config({"architecture": "resnet50", "num_classes": 10}, "m") == IMAGE_CLASSIFICATION
    assert _task_of_config(config("ViTForImageClassification"), "m") == IMAGE_CLASSIFICATION
    assert _task_of_config(config("WhisperForConditionalGeneration"), "m") == ASR
    assert _task_of_config(config("WhisperForAudioClassification"), "m") == AUDIO_CLASSIFICATION
    assert _task_of_config(config("Wav2Vec2ForSequenceClassification"), "m") == AUDIO_CLASSIFICATION
    assert _task_of_config(config("MarianMTModel"), "m") == TRANSLATION
    assert _task_of_config(config("EncoderDecoderModel"), "m") == TRANSLATION
    assert _task_of_config(config(model_type="t5"), "m") == TRANSLATION  # no architectures saved: the type decides
    with pytest.raises(UserError, match="whisper"):  # recogniser or classifier: the type alone cannot tell
        _task_of_config(config(model_type="whisper"), "m")
    with pytest.raises(UserError, match="BertModel, which fastft predict does not run"):
        _task_of_config(config("BertModel", model_type="bert"), "m")


def one_line_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_mistakes_are_one_line_errors_naming_the_file_and_what_is_valid(image_run, translation_run, asr_run,
                                                                         tiny_bert, tiny_images, spoken_words,
                                                                         tmp_path, capsys):
    image = image_files(tiny_images)[0]
    (tmp_path / "notes.docx").write_bytes(b"PK")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "broken.wav").write_bytes(b"not a wav")
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "sentences.txt").write_text("red cat\n")
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "weights.txt").write_text("x")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((image_run / "config.yaml").read_text())
    cases = [
        ([str(image_run), str(tmp_path / "missing.jpg")], ["missing.jpg does not exist"]),
        ([str(image_run), str(tmp_path / "notes.docx")], ["notes.docx", "unknown file type .docx", ".jpg", ".wav",
                                                           ".txt"]),
        ([str(image_run), str(tmp_path)], ["is a folder"]),
        ([str(tmp_path / "not_a_model"), image], ["not_a_model is not a model folder", "no config.json",
                                                   "fastft output_dir"]),
        ([str(unfinished), image], ["without a saved model", "has not finished"]),
        ([str(tmp_path / "nowhere"), image], ["nowhere does not exist"]),
        (["nobody/no-such-model", image], ["nobody/no-such-model", "Hub", "config.json"]),
        ([str(tiny_bert), str(tmp_path / "sentences.txt")], ["BertModel", "does not run"]),
        ([str(translation_run), image], [image, "is an image", "translation model", ".txt"]),
        ([str(image_run), str(tmp_path / "sentences.txt")], ["sentences.txt is a text file", "image classifier",
                                                             ".png"]),
        ([str(asr_run), image], ["is an image", "speech recogniser", ".wav"]),
        ([str(image_run), str(tmp_path / "broken.png")], ["cannot read image", "broken.png"]),
        ([str(asr_run), str(tmp_path / "broken.wav")], ["cannot read audio", "broken.wav"]),
        ([str(translation_run), str(tmp_path / "empty.txt")], ["empty.txt holds no sentences"]),
        ([str(translation_run), str(tmp_path / "latin1.txt")], ["latin1.txt is not UTF-8"]),
        ([str(image_run), image, "--topk", "3"], ["--topk", "top_k"]),
        ([str(image_run), image, "--top_k", "0"], ["--top_k", "at least 1", "'0'"]),
        ([str(image_run), image, "--num_beams", "2"], ["--num_beams applies to", "image classifier"]),
        ([str(image_run), image, "--device", "tpu"], ["--device", "tpu"]),
        ([str(asr_run), clip_files(spoken_words)[0], "--max_new_tokens", "500"], ["max_new_tokens", "500"]),
    ]
    if not torch.cuda.is_available():
        cases.append(([str(image_run), image, "--device", "cuda"], ["--device cuda", "no CUDA GPU"]))
    for argv, expected in cases:
        line = one_line_error(argv, capsys)
        assert all(part in line for part in expected), (argv, line)


def test_library_function_raises_user_errors(image_run):
    with pytest.raises(UserError, match="give files"):
        predict(str(image_run), [])
    with pytest.raises(UserError, match="batch_size must be a whole number of at least 1, got 0"):
        predict(str(image_run), ["x.png"], batch_size=0)


# -- real pretrained models (fastft assets) --------------------------------------------------------------
def test_pretrained_assets_name_a_real_photo_and_transcribe_real_speech(tmp_path):
    from skimage import data

    from fastft.offline.speech import ASTERISK_DIR

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.jpg")
    [row] = predict("fastft:efficientnet_lite0", [str(tmp_path / "coffee.jpg")], top_k=3)
    assert row["labels"][0]["label"] == "espresso"  # the ImageNet word, not the synset id label_names hold
    # 8 kHz telephone speech of a real speaker, resampled to Whisper's 16 kHz
    clips = [str(ASTERISK_DIR / "hello-world.wav"), str(ASTERISK_DIR / "agent-pass.wav")]
    rows = predict("fastft:whisper_tiny_en", clips)
    assert [r["text"] for r in rows] == ["Hello world!", "Please enter your password, followed by the pound key."]


@pytest.mark.parametrize("run_name", ["translation_run", "asr_run", "keyword_run", "vit_run"])
def test_fastft_eval_of_each_tasks_run_equals_its_final_evaluation(run_name, request, tmp_path):
    from fastft.cli import run_command

    run = request.getfixturevalue(run_name)
    final = run_metrics(run)
    result = run_command(["eval", str(run), "--output_dir", str(tmp_path / "eval")])
    assert result == json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    main = next(k for k in ("eval_bleu", "eval_wer", "eval_accuracy") if k in final)
    assert result[main] == pytest.approx(final[main], rel=1e-9, abs=1e-9)
    assert result["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)
    assert result["eval_samples"] == final["eval_samples"]
