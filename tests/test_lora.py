"""LoRA through peft: what trains, what is saved, that the merged model is the adapted one, resume, processes."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import image_argv
from safetensors.torch import load_file
from speech_fixtures import asr_argv, spoken_words, tiny_whisper  # noqa: F401 (fixtures)
from test_scale_out import launch_two_processes
from test_translation import tiny_bert, toy_argv, toy_data  # noqa: F401 (fixtures)

from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask
from fastft.tasks.speech import SpeechArguments, speech_task
from fastft.tasks.translation import TranslationArguments, TranslationTask

pytestmark = pytest.mark.usefixtures("one_thread")

LORA = ["--peft", "lora", "--lora_r", "4", "--lora_alpha", "8"]


def image_run(out, data, model, *extra: str) -> dict:
    return main(ImageTask, ImageArguments, image_argv(out, data, model, *LORA, *extra))


def test_lora_trains_adapters_and_head_and_the_merged_model_is_the_adapted_one(tmp_path, tiny_images, tiny_vit,
                                                                               capsys):
    from peft import PeftModel
    from transformers import ViTForImageClassification

    out = tmp_path / "run"
    final = image_run(out, tiny_images, tiny_vit, "--learning_rate", "0.05", "--num_train_epochs", "3")
    assert final["eval_accuracy"] >= 0.9  # colour classes: the adapters and the new head learn them
    summary = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("LoRA r=4"))
    assert "on 4 layers (q_proj, v_proj)" in summary and "trained whole: classifier" in summary

    adapter = out / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_vit) and config["modules_to_save"] == ["classifier"]
    saved = load_file(adapter / "adapter_model.safetensors")
    assert saved and all("lora_" in k or ".classifier." in k for k in saved)  # peft's names: base_model.model...

    # The merged model loads as a plain transformers model; every weight LoRA does not adapt is as pretrained.
    merged = ViTForImageClassification.from_pretrained(out).eval()
    base = ViTForImageClassification.from_pretrained(tiny_vit, num_labels=3, ignore_mismatched_sizes=True).eval()
    start = {k: v.clone() for k, v in base.state_dict().items()}  # names as in memory (the file may differ)
    weights = merged.state_dict()
    adapted = [k for k in start if k.endswith(("q_proj.weight", "v_proj.weight"))]
    assert len(adapted) == 4 and not any(torch.equal(weights[k], start[k]) for k in adapted)
    assert all(torch.equal(weights[k], v) for k, v in start.items()
               if k not in adapted and not k.startswith("classifier."))
    assert weights["classifier.weight"].abs().sum() > 0  # the new 3-class head, zero-initialised, trained

    # ... and computes what the base model with the adapter applied by peft computes.
    applied = PeftModel.from_pretrained(base, str(adapter)).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=x).logits, applied(pixel_values=x).logits,
                                   atol=1e-5, rtol=1e-5)
    card = (out / "README.md").read_text()
    assert "LoRA" in card and "Hu et al. 2021" in card


def test_lora_resume_is_bit_exact(tmp_path, tiny_images, tiny_vit):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    image_run(straight, tiny_images, tiny_vit, "--model_ema", "true")
    image_run(resumed, tiny_images, tiny_vit, "--model_ema", "true", "--checkpointing_steps", "4",
              "--save_total_limit", "5")
    # The run died after step 8 of 12: later files never existed.
    shutil.rmtree(resumed / "checkpoint-12")
    shutil.rmtree(resumed / "adapter")
    for name in ("metrics.json", "model.safetensors"):
        (resumed / name).unlink()
    final = image_run(resumed, tiny_images, tiny_vit, "--model_ema", "true", "--checkpointing_steps", "4",
                      "--save_total_limit", "5")
    assert final["total_steps"] == 12
    # The average holds what LoRA trains (adapters, head copy), not a float32 copy of the frozen base model.
    averaged = load_file(resumed / "checkpoint-8" / "ema.safetensors")
    assert averaged and all("lora_" in k or ".modules_to_save." in k for k in averaged)
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_convnet_gets_adapters_only_on_the_layers_named(tmp_path, tiny_images, tiny_model, capsys):
    import timm

    with pytest.raises(SystemExit) as exit_:
        image_run(tmp_path / "refused", tiny_images, tiny_model)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: peft lora:") and "no trainable attention projections" in err
    assert "lora_target_modules" in err and "conv_pw" in err  # names layers it could adapt
    assert not (tmp_path / "refused").exists()

    with pytest.raises(SystemExit):
        image_run(tmp_path / "typo", tiny_images, tiny_model, "--lora_target_modules", "conv_pww")
    assert "lora_target_modules conv_pww matches no Linear, Conv or Embedding layer" in capsys.readouterr().err

    out = tmp_path / "pointwise"
    final = image_run(out, tiny_images, tiny_model, "--lora_target_modules", "conv_pw", "conv_pwl")
    assert final["eval_accuracy"] > 0.5
    # timm reloads the merged model, which scores what the run reported
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    start = load_file(tiny_model / "model.safetensors")
    # Weights, not BatchNorm statistics (those follow the data in training mode, as in any fine-tuning).
    changed = {k for k, v in model.named_parameters() if not k.startswith("classifier.") and not torch.equal(v, start[k])}
    assert changed and all(".conv_pw" in k for k in changed), sorted(changed)  # and conv_pwl


def test_lora_on_whisper_keeps_a_frozen_encoder_and_its_cache_valid(tmp_path, spoken_words, tiny_whisper):
    from transformers import WhisperForConditionalGeneration

    out = tmp_path / "asr"
    final = main(speech_task, SpeechArguments,
                 asr_argv(out, spoken_words, tiny_whisper, *LORA, "--freeze_encoder", "true",
                          "--cache_encoder_outputs", "true", "--learning_rate", "0.01", "--num_train_epochs", "3"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]  # it learns
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    assert saved and all(k.startswith("base_model.model.model.decoder.") for k in saved)  # none in the frozen encoder
    merged = WhisperForConditionalGeneration.from_pretrained(out).state_dict()
    start = WhisperForConditionalGeneration.from_pretrained(tiny_whisper).state_dict()
    assert all(torch.equal(merged[k], v) for k, v in start.items() if k.startswith("model.encoder."))
    assert not torch.equal(merged["model.decoder.layers.0.encoder_attn.q_proj.weight"],
                           start["model.decoder.layers.0.encoder_attn.q_proj.weight"])
    assert final["eval_wer"] == rows[-1]["eval_wer"]


def test_a_warm_start_trains_its_new_cross_attention_whole(tmp_path, toy_data, tiny_bert, capsys):
    from transformers import AutoModelForSeq2SeqLM

    out = tmp_path / "bert2bert"
    main(TranslationTask, TranslationArguments,
         ["--encoder_name_or_path", str(tiny_bert), "--decoder_name_or_path", str(tiny_bert),
          *toy_argv(out, toy_data, "unused", *LORA, "--max_steps", "6", "--max_eval_samples", "4")[2:]])
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert "decoder.bert.encoder.layer.0.crossattention" in config["modules_to_save"]
    assert "keep their initial values" in capsys.readouterr().out  # the output bias, beside the tied embeddings
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    start = load_file(tiny_bert / "model.safetensors")
    weights = model.state_dict()
    assert not torch.equal(weights["encoder.encoder.layer.0.attention.self.query.weight"],
                           start["encoder.layer.0.attention.self.query.weight"])  # adapted
    assert torch.equal(weights["encoder.encoder.layer.0.intermediate.dense.weight"],
                       start["encoder.layer.0.intermediate.dense.weight"])  # frozen


@pytest.mark.slow
def test_two_processes_train_lora_like_one_with_the_global_batch(tmp_path, tiny_images, tiny_vit):
    common = [*LORA, "--optim", "sgd", "--hflip", "0", "--reference_batch_size", "8", "--max_train_samples", "32",
              "--num_train_epochs", "2"]
    ddp, big = tmp_path / "ddp", tmp_path / "big"
    launch_two_processes(image_argv(ddp, tiny_images, tiny_vit, *common), script="scripts/train_image.py")
    main(ImageTask, ImageArguments, image_argv(big, tiny_images, tiny_vit, *common,
                                               "--per_device_train_batch_size", "16"))
    assert json.loads((ddp / "metrics.json").read_text())["num_processes"] == 2
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(ddp / name), load_file(big / name)
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a), name


def test_an_adapter_alone_evaluates_and_predicts_on_its_base_model_as_the_run_did(tmp_path, tiny_images, tiny_vit, capsys):
    from fastft import evaluation

    out = tmp_path / "adapter_only"
    final = image_run(out, tiny_images, tiny_vit, "--merge_lora", "false", "--max_steps", "4")
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    assert "Only the LoRA adapter was saved" in (out / "README.md").read_text()
    for model in (out, out / "adapter"):  # the run folder, or its adapter folder with the run's recipe
        extra = [] if model == out else ["--config", str(out / "config.yaml"), "--output_dir", str(tmp_path / "e")]
        result = evaluation.main([str(model), *extra])
        assert result["eval_accuracy"] == final["eval_accuracy"]
        assert result["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)

    # fastft predict merges the adapter as eval does: the same labels as the merged run's own prediction.
    from fastft.predict import main as predict

    images = sorted(str(p) for p in (tiny_images / "test").rglob("*.png"))[:3]
    before = sorted(p.name for p in out.rglob("*"))
    rows = predict([str(out), *images, "--json", "--top_k", "3"])
    assert "merging it into its base model" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before  # the run's folder is only read
    merged = tmp_path / "merged"
    image_run(merged, tiny_images, tiny_vit, "--max_steps", "4")  # the same run, saved merged
    expected = predict([str(merged), *images, "--json", "--top_k", "3"])
    for got, want in zip(rows, expected, strict=True):
        scores = lambda row: {x["label"]: x["score"] for x in row["labels"]}  # noqa: E731
        assert scores(got) == pytest.approx(scores(want), abs=1e-5)
    assert predict([str(out / "adapter"), *images, "--json", "--top_k", "3"]) == rows  # its adapter folder alike

    stray = tmp_path / "stray"  # an adapter without the run that trained it names what predict needs
    shutil.copytree(out / "adapter", stray)
    with pytest.raises(SystemExit):
        predict([str(stray), images[0]])
    assert "outside the fastft run that trained it" in capsys.readouterr().err


def test_fields_that_need_peft(tmp_path, tiny_images, tiny_vit, capsys):
    with pytest.raises(SystemExit):
        main(ImageTask, ImageArguments, image_argv(tmp_path / "x", tiny_images, tiny_vit,
                                                   "--lora_target_modules", "q_proj"))
    assert "lora_target_modules applies with peft: lora" in capsys.readouterr().err
