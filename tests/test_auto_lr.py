"""learning_rate: auto: the LR range test at the run's start picks the LR the run then trains at."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import image_argv
from safetensors.torch import load_file

from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask

SWEEP = ("--learning_rate", "auto", "--lr_find_steps", "30", "--lr_find_end", "10")


def run(argv: list[str]):
    return main(ImageTask, ImageArguments, argv)


def test_auto_trains_as_a_run_given_the_pick_and_counts_the_sweep_in_its_time(tmp_path, tiny_images, tiny_model,
                                                                              capsys):
    auto = tmp_path / "auto"
    # The recipe states its LR at batch 16 and trains at 8: the pick is stated at 16, as learning_rate is.
    final = run(image_argv(auto, tiny_images, tiny_model, *SWEEP, "--reference_batch_size", "16"))
    sweep = json.loads((auto / "lr_find.json").read_text())
    picked = sweep["suggested"]["valley"]
    assert sweep["lrs"][0] < picked < sweep["lrs"][-1]
    printed = capsys.readouterr().out
    assert f"learning_rate auto: training at {picked:.4g}" in printed
    assert final["learning_rate"] == pytest.approx(picked / 2)  # the real batch is half the reference
    assert 0 < final["lr_find_runtime_s"] <= final["train_runtime_s"]  # the sweep is part of the run's time
    assert (auto / "plots" / "lr_find.png").is_file() and (auto / "plots" / "lr_schedule.png").is_file()
    train_log = [json.loads(line) for line in (auto / "train_log.jsonl").read_text().splitlines()]
    assert train_log[0]["elapsed_s"] >= final["lr_find_runtime_s"]
    card = (auto / "README.md").read_text()
    assert "learning_rate auto: picked by the LR range test" in card and "LR picked by a range test" in card
    # The run was built afresh after the sweep: the same weights, data order and random state as a run
    # that states that LR itself.
    given = tmp_path / "given"
    same = run(image_argv(given, tiny_images, tiny_model, "--learning_rate", repr(picked),
                          "--reference_batch_size", "16"))
    a, b = load_file(auto / "model.safetensors"), load_file(given / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert final["eval_loss"] == same["eval_loss"] and same["lr_find_runtime_s"] is None
    assert not all(torch.equal(a[k], v) for k, v in load_file(tiny_model / "model.safetensors").items() if k in a)


def test_a_resumed_auto_run_keeps_its_pick_and_needs_it(tmp_path, tiny_images, tiny_model, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(image_argv(straight, tiny_images, tiny_model, *SWEEP))
    argv = image_argv(resumed, tiny_images, tiny_model, *SWEEP, "--checkpointing_steps", "4", "--save_total_limit", "5")
    run(argv)
    # Pretend the run died after step 8: later files never existed.
    shutil.rmtree(resumed / "checkpoint-12")
    for name in ("metrics.json", "model.safetensors"):
        (resumed / name).unlink()
    sweep = (resumed / "lr_find.json").read_text()
    capsys.readouterr()
    final = run(argv)
    assert "learning_rate auto: resuming at" in capsys.readouterr().out
    assert (resumed / "lr_find.json").read_text() == sweep  # no second sweep
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert final["lr_find_runtime_s"] == pytest.approx(json.loads(sweep)["runtime_s"], abs=1e-3)

    # Without its pick, a resume cannot know the LR it trained at: one line, and nothing is touched.
    shutil.rmtree(resumed / "checkpoint-12")
    for name in ("metrics.json", "model.safetensors"):
        (resumed / name).unlink()
    (resumed / "lr_find.json").unlink()
    files = sorted(p.name for p in resumed.rglob("*"))
    with pytest.raises(SystemExit) as stop:
        run(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "lr_find.json holds no LR range test pick" in error and "\n" not in error
    assert sorted(p.name for p in resumed.rglob("*")) == files
    # Another pick than the checkpoint's (a later --lr_find in the folder): the plan's LR differs, refused.
    changed = json.loads(sweep)
    changed["suggested"]["valley"] *= 2
    (resumed / "lr_find.json").write_text(json.dumps(changed))
    with pytest.raises(SystemExit):
        run(argv)
    assert "scaled_learning_rate" in capsys.readouterr().err


def test_auto_in_the_dry_run_and_a_sweep_too_short_to_pick(tmp_path, tiny_images, tiny_model, capsys):
    run(image_argv(tmp_path / "plan", tiny_images, tiny_model, *SWEEP, "--dry_run"))
    plan = capsys.readouterr().out
    assert "learning rate (scaled):     auto: the LR range test at the run's start picks it" in plan
    assert "x peak" in plan and "LR picked by a range test at the run's start" in plan
    assert not (tmp_path / "plan").exists()
    # An LR range that diverges at once leaves nothing to pick: one line that says what to change.
    out = tmp_path / "diverges"
    with pytest.raises(SystemExit):
        run(image_argv(out, tiny_images, tiny_model, "--learning_rate", "auto", "--lr_find_start", "1e6",
                       "--lr_find_end", "1e9", "--lr_find_steps", "5"))
    error = capsys.readouterr().err.strip()
    assert "too few to pick an LR" in error and "lr_find_start" in error and "\n" not in error
    assert not (out / "metrics.json").exists() and not list(out.glob("checkpoint-*"))
    with pytest.raises(SystemExit):
        run(image_argv(tmp_path / "bad", tiny_images, tiny_model, "--learning_rate", "fast"))
    assert "learning_rate in the command line must be a number (finite, not inf or nan) or auto, got 'fast'" in capsys.readouterr().err
