"""Data parallelism on CPU processes: 2 synchronised processes train like one with the global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, image_argv
from safetensors.torch import load_file

from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask


def launch_two_processes(argv: list[str], script: str = "tests/scripts/train_and_dump_ranks.py") -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # fastft itself must join the processes on a CPU-only machine
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs/cpu_multi_process.yaml"), str(REPO / script), *argv]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def lr_per_step(out) -> list[float]:
    return [json.loads(line)["learning_rate"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch_and_with_accumulation(tmp_path, tiny_images,
                                                                                      tiny_vit):
    # BatchNorm-free model and SGD, so only batch composition could differ. LR stated at batch 8,
    # scaled with the global batch of 16 whichever way it is made. 32 images: with several
    # processes accelerate completes a short last batch with images from the start (even_batches),
    # as DistributedSampler does, which one process would not see.
    common = ["--optim", "sgd", "--hflip", "0", "--reference_batch_size", "8", "--warmup_steps", "2",
              "--lr_scheduler_type", "cosine", "--max_train_samples", "32", "--num_train_epochs", "3"]
    ddp, big, accum = tmp_path / "ddp", tmp_path / "big", tmp_path / "accum"
    launch_two_processes(image_argv(ddp, tiny_images, tiny_vit, *common))
    main(ImageTask, ImageArguments, image_argv(big, tiny_images, tiny_vit, *common,
                                               "--per_device_train_batch_size", "16"))
    main(ImageTask, ImageArguments, image_argv(accum, tiny_images, tiny_vit, *common,
                                               "--gradient_accumulation_steps", "2"))

    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_batch_size"] == 16
    assert metrics["learning_rate"] == pytest.approx(0.02)  # 0.01 at batch 8, linear scaling
    assert metrics["eval_samples"] == 21  # odd eval set split over 2 processes: every image once

    rank0, rank1 = load_file(ddp / "rank0_of_2.safetensors"), load_file(ddp / "rank1_of_2.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # gradients really were synchronised
    for other in (big, accum):
        weights = load_file(other / "model.safetensors")
        saved = load_file(ddp / "model.safetensors")
        assert all(torch.allclose(saved[k], weights[k], atol=1e-5, rtol=1e-4) for k in weights), other.name
    # The LR is the same function of the optimizer step, however the global batch was made.
    assert lr_per_step(ddp) == lr_per_step(big) == lr_per_step(accum)
    assert len(lr_per_step(ddp)) == metrics["total_steps"] == 6  # 2 steps an epoch, not 2 x 2 processes

    # Only the main process wrote: one log line per step and per evaluation, one set of files.
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == 3
    produced = {p.name for p in ddp.iterdir()} - {"rank0_of_2.safetensors", "rank1_of_2.safetensors"}
    assert produced == {p.name for p in big.iterdir()}


@pytest.mark.slow
def test_two_process_dry_run_prints_the_plan_once(tmp_path, tiny_images, tiny_vit):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs/cpu_multi_process.yaml"), "scripts/train_image.py",
           *image_argv(tmp_path / "x", tiny_images, tiny_vit, "--reference_batch_size", "8", "--dry_run")]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600).stdout
    assert out.count("world size (processes):     2") == 1
    assert "global batch:               16" in out and "learning rate (scaled):     0.02" in out


def test_fp16_on_cpu_is_refused_with_one_line(tmp_path, tiny_images, tiny_model, capsys):
    with pytest.raises(SystemExit):
        main(ImageTask, ImageArguments, image_argv(tmp_path / "x", tiny_images, tiny_model,
                                                   "--mixed_precision", "fp16"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: mixed_precision fp16 on CPU") and "bf16" in err
    assert not (tmp_path / "x").exists()


def test_bf16_on_cpu_really_runs_under_autocast(tmp_path, tiny_images, tiny_model, monkeypatch):
    seen = []
    real_forward = torch.nn.Linear.forward

    def spy(self, x):
        out = real_forward(self, x)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    main(ImageTask, ImageArguments, image_argv(tmp_path / "bf16", tiny_images, tiny_model,
                                               "--mixed_precision", "bf16", "--max_steps", "2"))
    assert seen and torch.bfloat16 in seen


@pytest.mark.parametrize("config", sorted((REPO / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load_with_accelerate(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert loaded.num_processes >= 1 and loaded.mixed_precision in ("no", "fp16", "bf16")


def test_goyal_recipe_plans_for_256_gpus_as_the_paper(capsys):
    # Goyal et al. Table/Sec. 5: 8k batch on 256 GPUs, LR 0.1 x 8192/256 = 3.2, 5 warmup epochs from 0.1.
    main(ImageTask, ImageArguments, ["--config", str(REPO / "recipes/image/resnet50_imagenet_goyal.yaml"),
                                     "--dry_run", "--world_size", "256"])
    out = capsys.readouterr().out
    assert "global batch:               8192" in out
    assert "learning rate (scaled):     3.2" in out
    assert "warmup steps:               785 (from 0.1)" in out  # 5/90 of 14130 steps (156.4 per epoch)


def test_auto_find_batch_size_keeps_the_global_batch(tmp_path, tiny_images, tiny_model, monkeypatch, capsys):
    real = ImageTask.training_loss
    models = []

    def out_of_memory_above_4(self, model, batch):
        models.append(model)
        if len(batch["labels"]) > 4:  # what a too-large batch does on a GPU
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, model, batch)

    monkeypatch.setattr(ImageTask, "training_loss", out_of_memory_above_4)
    final = main(ImageTask, ImageArguments, image_argv(tmp_path / "auto", tiny_images, tiny_model,
                                                       "--per_device_train_batch_size", "16",
                                                       "--auto_find_batch_size", "--max_train_samples", "32",
                                                       "--reference_batch_size", "8"))
    assert final["global_batch_size"] == 16 and final["learning_rate"] == pytest.approx(0.02)
    assert "per-device batch 4 x 4 accumulation steps" in capsys.readouterr().out
    assert models[0] is not models[-1]  # the retry starts from fresh weights, not the failed attempt's
    recipe = (tmp_path / "auto" / "config.yaml").read_text()
    assert "per_device_train_batch_size: 4" in recipe and "gradient_accumulation_steps: 4" in recipe
