"""End-to-end runs of scripts/train_image.py's engine on a tiny timm model and tiny images."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import LAUNCH_ONE, REPO, copy_without_weights, image_argv
from safetensors.torch import load_file

from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask


def run(argv: list[str]) -> dict:
    return main(ImageTask, ImageArguments, argv)


def eval_accuracy_by_hand(model_dir, data_dir) -> float:
    """Reload the saved model with plain timm and score the test split with its saved preprocessing."""
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config(model=model), is_training=False)
    names = model.pretrained_cfg["label_names"]
    correct = total = 0
    for folder in sorted((data_dir / "test").iterdir()):
        for path in folder.iterdir():
            x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
            with torch.no_grad():
                correct += names[model(x).argmax().item()] == folder.name
            total += 1
    return correct / total


def test_run_writes_every_output_and_reloads_with_plain_timm(tmp_path, tiny_images, tiny_model):
    out = tmp_path / "run"
    final = run(image_argv(out, tiny_images, tiny_model, "--eval_crop_pct", "1.0"))
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "train_log.jsonl", "model.safetensors",
                 "config.json", "plots/lr_schedule.png", "plots/loss.png", "plots/accuracy.png"):
        assert (out / name).is_file(), name
    assert (out / "plots/loss.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("eval_accuracy", "eval_loss", "train_samples_per_second", "train_runtime_s", "time_to_target_s",
                "num_processes", "global_batch_size", "learning_rate"):
        assert key in metrics, key
    assert metrics == json.loads(json.dumps(final))
    assert metrics["num_processes"] == 1 and metrics["global_batch_size"] == 8
    assert metrics["eval_samples"] == 21  # every test image once
    assert metrics["eval_accuracy"] >= 0.9  # colour classes are easy: the model must learn them
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in lines] == [1.0, 2.0]  # one line per evaluation
    # The saved model, reloaded by plain timm with its saved preprocessing, scores what the run reported.
    assert eval_accuracy_by_hand(out, tiny_images) == pytest.approx(metrics["eval_accuracy"])
    # config.yaml is the resolved recipe: it loads back as --config and reproduces the plan.
    recipe = yaml.safe_load((out / "config.yaml").read_text())
    assert recipe["learning_rate"] == 0.01 and recipe["image_size"] == 32
    assert "# Derived for this run:" in (out / "config.yaml").read_text()


def test_resume_from_checkpoint_is_bit_exact(tmp_path, tiny_images, tiny_model):
    straight = tmp_path / "straight"
    run(image_argv(straight, tiny_images, tiny_model, "--mixup_alpha", "0.4"))
    resumed = tmp_path / "resumed"
    run(image_argv(resumed, tiny_images, tiny_model, "--mixup_alpha", "0.4", "--checkpointing_steps", "4",
                   "--save_total_limit", "5"))
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-4",
                                                                     "checkpoint-8"]
    # Pretend the run died after step 8, mid-epoch 2 (6 steps an epoch): later files never existed.
    shutil.rmtree(resumed / "checkpoint-12")
    for name in ("metrics.json", "model.safetensors"):
        (resumed / name).unlink()
    final = run(image_argv(resumed, tiny_images, tiny_model, "--mixup_alpha", "0.4",
                           "--checkpointing_steps", "4", "--save_total_limit", "5"))
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert final["eval_loss"] == json.loads((straight / "metrics.json").read_text())["eval_loss"]
    steps = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the log was cut back to the checkpoint, no step twice


def test_epoch_checkpoints_include_the_last_epoch(tmp_path, tiny_images, tiny_model):
    out = tmp_path / "run"
    final = run(image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "epoch", "--save_total_limit", "5"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    last = json.loads((out / "checkpoint-12" / "fastft_state.json").read_text())
    assert (last["step"], last["epoch"], last["batches_in_epoch"]) == (12, 2, 0)
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row["epoch"]) for row in evals] == [(6, 1.0), (12, 2.0)]  # the last one not repeated
    # Resuming the finished checkpoint trains nothing more and ends where the run ended.
    for name in ("metrics.json", "model.safetensors"):
        (out / name).unlink()
    again = run(image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "epoch", "--save_total_limit", "5"))
    assert again["total_steps"] == 12 and again["eval_accuracy"] == final["eval_accuracy"]


def test_incomplete_checkpoint_is_skipped(tmp_path, tiny_images, tiny_model):
    out = tmp_path / "run"
    run(image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "4", "--max_steps", "8"))
    (out / "metrics.json").unlink()
    (out / "checkpoint-8" / "fastft_state.json").unlink()  # as if killed while saving
    with pytest.warns(UserWarning, match="incomplete checkpoint"):
        final = run(image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "4", "--max_steps", "8"))
    assert final["total_steps"] == 8


def test_finished_output_dir_is_never_overwritten(tmp_path, tiny_images, tiny_model, capsys):
    out = tmp_path / "run"
    run(image_argv(out, tiny_images, tiny_model, "--max_steps", "2"))
    before = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(image_argv(out, tiny_images, tiny_model, "--max_steps", "3"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "finished run" in err[0]
    assert "--overwrite_output_dir" in err[0]
    assert (out / "model.safetensors").read_bytes() == before
    final = run(image_argv(out, tiny_images, tiny_model, "--max_steps", "3", "--overwrite_output_dir", "true"))
    assert final["total_steps"] == 3


def test_continue_fine_tuning_from_an_output_dir(tmp_path, tiny_images, tiny_model):
    from fastft.image_models import create_image_classifier

    first = tmp_path / "first"
    run(image_argv(first, tiny_images, tiny_model))
    # The saved head fits the data, so it is kept (not re-initialised) along with the body.
    reloaded = create_image_classifier(str(first), ["blue", "green", "red"], pretrained=True).state_dict()
    saved = load_file(first / "model.safetensors")
    assert reloaded.keys() == saved.keys() and all(torch.equal(reloaded[k], saved[k]) for k in saved)
    again = run(image_argv(tmp_path / "second", tiny_images, first, "--max_steps", "1", "--learning_rate", "1e-9"))
    assert again["eval_accuracy"] >= 0.9  # starts from the trained model, not from tiny_model


def test_freeze_epochs_trains_only_the_head_and_norms(tmp_path, tiny_images, tiny_model):
    out = tmp_path / "frozen"
    run(image_argv(out, tiny_images, tiny_model, "--freeze_epochs", "1", "--num_train_epochs", "1",
                   "--weight_decay", "0.1"))
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    conv = [k for k in after if k.endswith("conv_stem.weight") or (".conv" in k and k.endswith("weight"))]
    assert conv and all(torch.equal(before[k], after[k]) for k in conv)
    assert after["classifier.weight"].shape[0] == 3  # a new head sized from the data


def test_time_to_target(tmp_path, tiny_images, tiny_model):
    reached = run(image_argv(tmp_path / "a", tiny_images, tiny_model, "--target_metric", "eval_accuracy",
                             "--target_value", "0.0"))
    assert reached["time_to_target_s"] is not None
    assert 0 < reached["time_to_target_s"] <= reached["train_runtime_s"]
    never = run(image_argv(tmp_path / "b", tiny_images, tiny_model, "--target_metric", "eval_loss",
                           "--target_value", "0.0", "--max_steps", "2"))
    assert never["time_to_target_s"] is None


def test_stop_at_target_ends_at_the_first_evaluation_that_reaches_it_and_saves_that_model(tmp_path, tiny_images,
                                                                                          tiny_model, capsys):
    import json

    out = tmp_path / "stop"
    final = run(image_argv(out, tiny_images, tiny_model, "--stop_at_target", "--target_metric", "eval_loss",
                           "--target_value", "100", "--eval_strategy", "steps", "--eval_steps", "2"))
    assert final["stopped_at_target"] and final["total_steps"] == 2  # of the 12 the plan has
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2] and rows[0]["eval_loss"] == final["eval_loss"]  # no evaluation after it
    assert "stopping (stop_at_target)" in capsys.readouterr().out
    import timm
    import torch

    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():  # the saved weights are the stopped run's, not the pretrained ones
        assert not torch.equal(model.get_classifier().weight, torch.zeros_like(model.get_classifier().weight))
    never = run(image_argv(tmp_path / "never", tiny_images, tiny_model, "--stop_at_target", "--target_metric",
                           "eval_loss", "--target_value", "0", "--eval_strategy", "steps", "--eval_steps", "2"))
    assert not never["stopped_at_target"] and never["total_steps"] == 12


def test_channels_last_and_label_smoothing_run_and_save(tmp_path, tiny_images, tiny_model):
    final = run(image_argv(tmp_path / "cl", tiny_images, tiny_model, "--channels_last", "--cutmix_alpha", "1.0",
                           "--label_smoothing_factor", "0.1", "--per_device_train_batch_size", "7"))
    assert final["eval_samples"] == 21  # batch 7 leaves an odd last batch of 3: no crash
    assert (tmp_path / "cl" / "model.safetensors").is_file()


def test_no_eval_split_holds_out_a_deterministic_share(tmp_path, tiny_images, tiny_model):
    train_only = tmp_path / "train_only"
    shutil.copytree(tiny_images / "train", train_only / "train")
    a = run(image_argv(tmp_path / "a", train_only, tiny_model, "--max_steps", "1"))
    b = run(image_argv(tmp_path / "b", train_only, tiny_model, "--max_steps", "1", "--train_val_split", "0.2"))
    assert a["eval_samples"] == 7 and b["eval_samples"] == 9  # 15% and 20% of 45, stratified


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes/image").glob("*.yaml")), ids=lambda p: p.name)
def test_every_image_recipe_dry_runs(recipe, capsys):
    assert run(["--config", str(recipe), "--dry_run"]) is None
    printed = capsys.readouterr().out
    for line in ("world size", "global batch", "learning rate (scaled)", "warmup steps", "total optimizer steps",
                 "schedule"):
        assert line in printed


@pytest.mark.slow
def test_accelerate_launch_runs_the_script(tmp_path, tiny_images, tiny_model):
    out = tmp_path / "launched"
    cmd = [*LAUNCH_ONE, str(REPO / "scripts/train_image.py"),
           *image_argv(out, tiny_images, tiny_model, "--max_steps", "2")]
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=300)
    assert json.loads((out / "metrics.json").read_text())["num_processes"] == 1


def test_transformers_image_classifier_trains_and_reloads(tmp_path, tiny_images, tiny_vit):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    out = tmp_path / "vit"
    final = run(image_argv(out, tiny_images, tiny_vit, "--learning_rate", "0.003", "--num_train_epochs", "4",
                           "--freeze_epochs", "1"))
    assert final["eval_accuracy"] >= 0.9
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    image = Image.open(next((tiny_images / "test" / "green").iterdir())).convert("RGB")
    with torch.no_grad():
        logits = model(**processor(images=image, return_tensors="pt")).logits
    assert model.config.id2label[logits.argmax().item()] == "green"


def test_a_half_precision_transformers_checkpoint_loads_in_float32(tmp_path, tiny_vit):
    """transformers 5 loads the saved dtype; training needs float32 master weights (accelerate does the autocast)."""
    from transformers import AutoModelForImageClassification

    from fastft.image_models import create_image_classifier

    half = tmp_path / "vit_bf16"
    copy_without_weights(tiny_vit, half)
    AutoModelForImageClassification.from_pretrained(tiny_vit).to(torch.bfloat16).save_pretrained(half)
    assert AutoModelForImageClassification.from_pretrained(half).dtype == torch.bfloat16
    for pretrained in (True, False):
        model = create_image_classifier(str(half), ["a", "b", "c"], pretrained=pretrained)
        assert {p.dtype for p in model.parameters()} == {torch.float32}, pretrained


def test_layer_decay_on_a_transformers_model_is_refused_clearly(tmp_path, tiny_images, tiny_vit, capsys):
    with pytest.raises(SystemExit):
        run(image_argv(tmp_path / "x", tiny_images, tiny_vit, "--layer_decay", "0.7"))
    assert "layer_decay" in capsys.readouterr().err


def test_accumulation_matches_one_larger_batch_including_a_short_last_batch(tmp_path, tiny_images, tiny_vit):
    # A BatchNorm-free model (ViT) so batch composition is the only difference (SGD: Adam would
    # amplify float rounding in near-zero gradients); 45 images give
    # a short last batch, where a per-micro-batch mean would weight the lone sample up.
    big = run(image_argv(tmp_path / "big", tiny_images, tiny_vit, "--hflip", "0", "--optim", "sgd"))
    small = run(image_argv(tmp_path / "acc", tiny_images, tiny_vit, "--hflip", "0", "--optim", "sgd",
                           "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2"))
    assert big["total_steps"] == small["total_steps"] == 12
    a, b = load_file(tmp_path / "big" / "model.safetensors"), load_file(tmp_path / "acc" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert not all(torch.equal(a[k], load_file(tiny_vit / "model.safetensors")[k]) for k in a if k in
                   load_file(tiny_vit / "model.safetensors"))  # it did train


def test_lr_find_sweeps_plots_and_suggests_without_touching_a_run(tmp_path, tiny_images, tiny_model, capsys):
    from fastft.lr_find import suggestions

    out = tmp_path / "run"
    run(image_argv(out, tiny_images, tiny_model, "--max_steps", "2"))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    # The recipe states its LR at batch 16; the sweep runs at the real batch 8 (LR scaled by 0.5).
    result = run(image_argv(out, tiny_images, tiny_model, "--lr_find", "--lr_find_steps", "60",
                            "--lr_find_end", "100", "--reference_batch_size", "16"))
    lrs = result["lrs"]
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(lrs, lrs[1:]))  # exponential sweep
    assert result["steps_run"] < 60  # an LR of 100 diverges: the sweep stops early
    assert set(result["suggested"]) == {"valley", "steepest", "minimum_div_10"}
    assert (out / "plots" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    # ...so the suggestions go into learning_rate as they are: twice the LRs the sweep found best.
    for name, at_batch_8 in result["suggested_at_global_batch"].items():
        assert result["suggested"][name] == pytest.approx(2 * at_batch_8)
    printed = capsys.readouterr().out
    assert "suggested maximum LR for one_cycle" in printed and "at reference batch 16" in printed
    # One suggestion, named first: the valley rule's (the others are asides, and in lr_find.json).
    assert f"one_cycle: {result['suggested']['valley']:.3g} (valley rule)" in printed
    assert result["suggestion"] == "valley"
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name != "lr_find.json"}
    assert after == before  # the finished run's files are untouched
    # On a textbook curve (flat, falling, then exploding) the picks land on the falling part.
    grid = [10 ** (-6 + i / 10) for i in range(50)]
    curve = [2.0] * 15 + [2.0 - 0.1 * i for i in range(1, 16)] + [0.5 + 0.5 * i for i in range(20)]
    picks = suggestions(grid, curve)
    assert grid[15] <= picks["valley"] <= grid[30] and grid[14] <= picks["steepest"] <= grid[30]
    # The same with a start that drifts down by a hair, as a zero-initialised head does (measured:
    # 2.303 -> 2.299 over 1e-7..8e-5): the valley still lies on the real fall, not in the drift.
    drifting = [2.0 - 0.0001 * i for i in range(15)] + curve[15:]
    assert grid[15] <= suggestions(grid, drifting)["valley"] <= grid[30]
