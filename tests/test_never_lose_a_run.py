"""Kills, signals, damaged checkpoints and numerical faults: a run is never lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, image_argv
from safetensors.torch import load_file

from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask

LONG = ["--max_steps", "60", "--eval_strategy", "no", "--checkpointing_steps", "8", "--save_total_limit", "3",
        "--mixup_alpha", "0.4"]


def start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every run: bit-exact floats
    return subprocess.Popen([sys.executable, "scripts/train_image.py", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``path`` exists and is not empty (train_log.jsonl is created empty before training starts)."""
    deadline = time.time() + timeout
    while not (path.exists() and (path.is_dir() or path.stat().st_size > 0)):
        assert proc.poll() is None, f"run ended before {path} appeared: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.05)


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_same_command_finishes_bit_exact(tmp_path, tiny_images, tiny_model):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = start(image_argv(straight, tiny_images, tiny_model, *LONG))
    assert done.wait(timeout=600) == 0, done.stderr.read()[-2000:]
    run = start(image_argv(killed, tiny_images, tiny_model, *LONG))
    wait_for(killed / "checkpoint-16", run)  # step 16 is mid-epoch (6 steps an epoch)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (killed / "metrics.json").exists()
    again = start(image_argv(killed, tiny_images, tiny_model, *LONG))  # the same command
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert "Resuming from" in out
    assert same_weights(straight, killed)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert a["eval_loss"] == b["eval_loss"] and a["eval_accuracy"] == b["eval_accuracy"]
    assert len(list(killed.glob("checkpoint-*"))) <= 4  # save_total_limit (3) plus the best


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path, tiny_images, tiny_model):
    out = tmp_path / "run"
    run = start(image_argv(out, tiny_images, tiny_model, *LONG, "--checkpointing_steps", "1000"))
    wait_for(out / "train_log.jsonl", run)  # a logged step: the loop, and so the signal handler, is running
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    [line] = [x for x in stdout.splitlines() if x.startswith("Stopped by SIGTERM")]
    step = int(line.split("after optimizer step ")[1].split(";")[0])
    assert (out / f"checkpoint-{step}" / "fastft_state.json").is_file() and f"checkpoint-{step}" in line
    assert "Resume with: accelerate launch scripts/train_image.py" in line
    resumed = start(image_argv(out, tiny_images, tiny_model, *LONG, "--checkpointing_steps", "1000"))
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["total_steps"] == 60


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, tiny_images, tiny_model):
    out = tmp_path / "run"
    argv = image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "4", "--max_steps", "8",
                      "--save_total_limit", "5")
    main(ImageTask, ImageArguments, argv)
    (out / "metrics.json").unlink()
    weights = next((out / "checkpoint-8").glob("model*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as a full disk would leave it
    (out / ".tmp-checkpoint-12").mkdir()  # and a save a kill interrupted
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*checkpoint-8"):
        final = main(ImageTask, ImageArguments, argv)
    assert final["total_steps"] == 8
    assert not (out / ".tmp-checkpoint-12").exists()


def test_best_checkpoint_is_kept_beyond_save_total_limit(tmp_path, tiny_images, tiny_model):
    out = tmp_path / "run"
    # Evaluate and save every 2 steps, keep 1: the newest stays, and so does the best-scoring one.
    main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--eval_strategy", "steps",
                                               "--eval_steps", "2", "--checkpointing_steps", "2",
                                               "--save_total_limit", "1", "--max_steps", "8"))
    kept = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    scores = {json.loads(line)["step"]: json.loads(line)["eval_accuracy"]
              for line in (out / "metrics.jsonl").read_text().splitlines()}
    best = max(scores, key=lambda s: (scores[s], -s))  # the first step that reached the best score
    assert 8 in kept and best in kept and len(kept) <= 2


def test_non_finite_loss_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path, tiny_images, tiny_model,
                                                                         monkeypatch, capsys):
    real = ImageTask.training_loss
    calls = {"n": 0}

    def nan_at_step_5(self, model, batch):
        calls["n"] += 1
        loss = real(self, model, batch)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(ImageTask, "training_loss", nan_at_step_5)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "2"))
    assert exit_.value.code == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")][0]
    assert "not finite at optimizer step 5" in err and "learning rate too high" in err
    assert f"last good checkpoint: {out / 'checkpoint-4'}" in err
    state = load_file(next((out / "checkpoint-4").glob("model*.safetensors")))
    assert all(torch.isfinite(t).all() for t in state.values())
