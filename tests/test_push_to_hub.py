"""push_to_hub through the real huggingface_hub, timm and transformers clients, against tests/hub_server.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, image_argv
from hub_server import fake_hub, make_fake_hub  # noqa: F401  (fixtures)
from safetensors.torch import load_file

from fastft.run import main
from fastft.push_to_hub import main as push_main
from fastft.tasks.image import ImageArguments, ImageTask

PUBLISHED = {"model.safetensors", "config.json", "README.md", "config.yaml", "metrics.json", "metrics.jsonl",
             "plots/lr_schedule.png", "plots/loss.png", "plots/accuracy.png"}


def train(argv: list[str]) -> dict:
    return main(ImageTask, ImageArguments, argv)


def files(hub, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    return hub.repos[("model", repo_id)][revision]


def test_push_lands_one_commit_that_timm_reloads_with_the_same_predictions(tmp_path, tiny_images, tiny_model,
                                                                             fake_hub):
    from huggingface_hub import ModelCard
    import timm

    out = tmp_path / "run"
    train(image_argv(out, tiny_images, tiny_model, "--push_to_hub", "--hub_model_id", "alice/tiny-run",
                     "--checkpointing_steps", "6"))
    [commit] = fake_hub.commits("alice/tiny-run")  # once, as one commit
    pushed = files(fake_hub, "alice/tiny-run")
    assert PUBLISHED <= set(pushed)
    assert not any(path.startswith("checkpoint-") for path in pushed)  # resumable state stays local
    assert all(fake_hub.token.encode() not in data for data in pushed.values())  # no token in any file
    assert all(fake_hub.token not in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())

    model = timm.create_model("hf-hub:alice/tiny-run", pretrained=True).eval()
    local = load_file(out / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], local[k]) for k in local)
    x = torch.randn(2, 3, 32, 32)
    again = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert torch.equal(model(x), again(x))

    card = ModelCard.load("alice/tiny-run")
    assert card.data.library_name == "timm" and "fastft" in card.data.tags
    result = card.data.eval_results[0]
    assert result.metric_type == "accuracy" and 0 <= result.metric_value <= 1
    assert 'timm.create_model("hf-hub:alice/tiny-run", pretrained=True)' in card.text
    assert "![lr_schedule](plots/lr_schedule.png)" in card.text and "learning_rate: 0.01" in card.text


def test_transformers_model_reloads_with_from_pretrained(tmp_path, tiny_images, tiny_vit, fake_hub):
    from transformers import AutoModelForImageClassification

    out = tmp_path / "vit"
    train(image_argv(out, tiny_images, tiny_vit, "--push_to_hub", "--hub_model_id", "fastft-org/vit",
                     "--max_steps", "2", "--hub_revision", "exp-1"))
    assert "fastft-org/vit" in {repo for _, repo in fake_hub.repos}
    assert "model.safetensors" in files(fake_hub, "fastft-org/vit", "exp-1")
    model = AutoModelForImageClassification.from_pretrained("fastft-org/vit", revision="exp-1")
    local = AutoModelForImageClassification.from_pretrained(out)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), local.state_dict().values()))
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}


@pytest.mark.parametrize("case, expect", [
    ("bad_token", "token was rejected (401)"),
    ("foreign", "cannot write to namespace 'bob'"),
    ("invalid_name", "is not a valid Hub repo name"),
    ("no_token", "needs a Hub token"),
])
def test_bad_push_settings_fail_before_training(case, expect, tmp_path, tiny_images, tiny_model, fake_hub,
                                                monkeypatch, capsys):
    repo = {"foreign": "bob/model", "invalid_name": "alice/bad name!"}.get(case, "alice/ok")
    if case == "bad_token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    if case == "no_token":
        monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(SystemExit):
        train(image_argv(tmp_path / "run", tiny_images, tiny_model, "--push_to_hub", "--hub_model_id", repo))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and expect in err
    assert "hf_wrong" not in err and fake_hub.token not in err
    assert not (tmp_path / "run").exists()  # failed in seconds, before any training or output


def test_failed_push_keeps_the_output_and_the_printed_command_retries(tmp_path, tiny_images, tiny_model,
                                                                       fake_hub, capsys):
    out = tmp_path / "run"
    with fake_hub.failing(503, "commit"):
        with pytest.raises(SystemExit):
            train(image_argv(out, tiny_images, tiny_model, "--push_to_hub", "--hub_model_id", "alice/retry",
                             "--max_steps", "2"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "push to alice/retry failed" in err and f"fastft push {out} --hub_model_id alice/retry" in err
    assert {"metrics.json", "model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    assert fake_hub.commits("alice/retry") == []
    url = push_main([str(out), "--hub_model_id", "alice/retry"])  # the standalone command, as printed
    assert "alice/retry" in url and len(fake_hub.commits("alice/retry")) == 1


def test_every_save_pushes_each_checkpoint_then_the_final_model(tmp_path, tiny_images, tiny_model, fake_hub):
    train(image_argv(tmp_path / "run", tiny_images, tiny_model, "--push_to_hub", "--hub_model_id", "alice/saves",
                     "--hub_strategy", "every_save", "--checkpointing_steps", "2", "--max_steps", "4"))
    summaries = [c.summary for c in fake_hub.commits("alice/saves")]
    assert summaries[:2] == ["Training in progress, step 2", "Training in progress, step 4"]
    assert summaries[-1].startswith("fastft: eval_accuracy=") and len(summaries) == 3
    assert not list(tmp_path.glob(".tmp-push-*"))  # each background push's snapshot is gone once it landed


@pytest.mark.slow
def test_two_processes_push_exactly_once(tmp_path, tiny_images, tiny_model, fake_hub):
    env = {**os.environ, **fake_hub.client_env(tmp_path / "hf_child"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs/cpu_multi_process.yaml"), "scripts/train_image.py",
           *image_argv(tmp_path / "ddp", tiny_images, tiny_model, "--push_to_hub", "--hub_model_id", "alice/ddp",
                       "--max_steps", "2")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(fake_hub.commits("alice/ddp")) == 1
    assert fake_hub.requests["create_repo"] == 1 and fake_hub.requests["whoami"] == 1  # main process only
