"""The `fastft` command (train, eval, recipes, push), shipped recipes, HF aliases, the best model and the
notebook API, each run as a user would: from a clean folder, on a tiny timm model and tiny images."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, image_argv
from hub_server import fake_hub, make_fake_hub  # noqa: F401  (fixtures)

import fastft
from fastft.cli import TASKS, run_command, task_fields
from fastft.arguments import HELP_GROUPS, RECIPES, parse_args
from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.task_fields import ImageArguments

FASTFT = Path(sys.executable).with_name("fastft")  # the console script pip installed next to python


def command(*args: str, cwd: Path, extra_env: dict | None = None, launcher: list[str] | None = None
            ) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    env.pop("ACCELERATE_USE_CPU", None)
    return subprocess.run([*(launcher or [str(FASTFT)]), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def write_recipe(folder: Path, data: Path, model: Path, **fields) -> Path:
    recipe = {"model_name_or_path": str(model), "dataset_name": "imagefolder", "data_dir": str(data),
              "output_dir": "out", "image_size": 32, "per_device_train_batch_size": 8,
              "per_device_eval_batch_size": 8, "learning_rate": 0.01, "num_train_epochs": 2, "logging_steps": 1,
              "seed": 0, **fields}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def eval_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# -- the console command --------------------------------------------------------------------------------

def test_installed_command_trains_then_evaluates_the_saved_model_to_the_runs_own_numbers(tmp_path, tiny_images,
                                                                                       tiny_model):
    recipe = write_recipe(tmp_path, tiny_images, tiny_model)
    trained = command("train", "image", "--config", "recipe.yaml", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = tmp_path / "out"
    final = json.loads((out / "metrics.json").read_text())
    assert "Done: eval_accuracy=" in trained.stdout
    # Each evaluation line starts a line of its own, not glued behind the progress bar's \r.
    segments = (trained.stdout + trained.stderr).replace("\r", "\n").split("\n")
    lines = [s.strip() for s in segments if "eval_accuracy=" in s and "Done:" not in s]
    assert lines and all(s.startswith("step=") for s in lines), lines

    evaluated = command("eval", "out", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    result = json.loads((out / "eval_metrics.json").read_text())
    assert result["eval_accuracy"] == final["eval_accuracy"]
    assert result["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-6)
    assert result["eval_samples"] == 21 and result["model"] == "out"
    # A foreign model folder with the recipe, written where --output_dir says.
    again = command("eval", str(out), "--config", str(recipe), "--output_dir", "elsewhere", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "elsewhere" / "eval_metrics.json").read_text())["eval_accuracy"] == \
        final["eval_accuracy"]


def test_two_processes_train_through_accelerate_launch_m_fastft_and_eval_without_duplicates(tmp_path,
                                                                                          tiny_images, tiny_model):
    # 21 eval images over 2 processes at batch 8: the padding samples accelerate adds must not count.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(REPO / "accelerate_configs/cpu_multi_process.yaml"), "-m", "fastft"]
    out = tmp_path / "out"
    trained = command("train", "image", *image_argv(out, tiny_images, tiny_model, "--num_train_epochs", "1"),
                      cwd=tmp_path, launcher=launcher)
    assert trained.returncode == 0, trained.stderr[-3000:]
    final = json.loads((out / "metrics.json").read_text())
    assert final["num_processes"] == 2 and final["eval_samples"] == 21
    done = command("eval", str(out), "--output_dir", str(tmp_path / "two"), cwd=tmp_path, launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "eval_metrics.json").read_text())
    one = run_command(["eval", str(out), "--output_dir", str(tmp_path / "one")])
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    for result in (one, two):
        assert result["eval_samples"] == 21 and result["eval_accuracy"] == final["eval_accuracy"]
        assert result["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)


def test_shipped_recipe_by_name_from_any_folder_and_the_recipe_list(tmp_path):
    done = command("train", "image", "--config", "quickstart", "--dry_run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fastft:efficientnet_lite0" in done.stdout and "global batch" in done.stdout
    # every trick the recipe turns on, named once with its fields
    tricks = next(line for line in done.stdout.splitlines() if line.startswith("tricks:"))
    for on in ("LR scaled with the global batch, gradual warmup (reference_batch_size=64, lr_scaling=linear)",
               "label smoothing (label_smoothing_factor=0.1)", "channels_last memory format",
               "exponential moving average of the weights, evaluated and saved (model_ema=True"):
        assert on in tricks
    assert "weight EMA (evaluated, saved)" in done.stdout
    listed = command("recipes", cwd=tmp_path)
    assert listed.returncode == 0
    shipped = sorted(RECIPES.glob("*/*.yaml"))
    assert len(shipped) >= 10
    for path in shipped:  # one line each, named as --config takes it
        assert sum(line.startswith(f"{path.parent.name}/{path.stem} ") for line in listed.stdout.splitlines()) == 1
    wrong = command("train", "image", "--config", "quickstrat", cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert "quickstart" in wrong.stderr and "fastft recipes" in wrong.stderr


def test_command_mistakes_are_one_line(tmp_path):
    for args, words in [(["tran"], "did you mean train"), (["train", "imag"], "did you mean image"),
                        (["train"], "needs a task"), (["eval"], "one MODEL"),
                        (["eval", "no_such_folder"], "--config"),
                        (["push", "no_such_folder"], "is not a folder"),
                        (["predict"], "MODEL, FILES"), (["predict", "m", "no_such.png"], "does not exist"),
                        (["ablat"], "did you mean ablate"), (["ablate", "--config", "x.yaml"], "needs a task first"),
                        (["ablate", "image", "--config", "quickstart", "--tricks", "mixup_alpha"],
                         "does not turn that trick on")]:
        done = command(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and words in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_eval_refuses_a_classifier_of_other_classes(tmp_path, tiny_images, tiny_model):
    # tiny_model was saved with classes c0..c4; the data has blue, green, red.
    with pytest.raises(SystemExit) as exit_info:
        run_command(["eval", str(tiny_model), "--config", str(write_recipe(tmp_path, tiny_images, tiny_model)),
                     "--output_dir", str(tmp_path / "e")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "e").exists()


def test_help_is_grouped_and_imports_no_torch():
    probe = ("import sys\nfrom fastft.cli import run_command\ntry:\n    run_command(['train', 'image', '--help'])\n"
             "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().endswith("NO TORCH"), done.stdout[-500:] + done.stderr[-500:]
    for group in ("data:", "model:", "batch, optimizer and schedule:", "tricks:", "evaluation and checkpoints:",
                  "Hub:", "HF Trainer names:"):
        assert f"\n{group}" in done.stdout, group
    assert "\nother:" not in done.stdout


def test_every_field_of_every_task_is_in_one_help_group():
    grouped = [name for names in HELP_GROUPS.values() for name in names]
    assert len(grouped) == len(set(grouped))
    for task in TASKS:
        for f in dataclasses.fields(task_fields(task)) + dataclasses.fields(TrainingArguments):
            assert f.name in grouped, f"{task}: {f.name} is in no --help group"


# -- HF names ----------------------------------------------------------------------------------------------

def parse(*argv: str) -> TrainingArguments:
    return parse_args([ImageArguments, TrainingArguments], ["--output_dir", "o", *argv])[1]


def test_hf_trainer_flags_map_to_fastft_fields(tmp_path):
    assert parse("--bf16").mixed_precision == "bf16"
    assert parse("--fp16", "true").mixed_precision == "fp16"
    assert parse("--bf16", "false").mixed_precision is None
    assert parse("--save_steps", "50").checkpointing_steps == "50"
    assert parse("--with_tracking").report_to == "all"
    assert parse("--warmup_ratio", "0.1").warmup_steps == 0.1
    assert parse("--evaluation_strategy", "no").eval_strategy == "no"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("bf16: true\nwarmup_ratio: 0.06\nsave_steps: 10\n")
    args = parse("--config", str(recipe))
    assert (args.mixed_precision, args.warmup_steps, args.checkpointing_steps) == ("bf16", 0.06, "10")
    assert parse("--config", str(recipe), "--mixed_precision", "no").mixed_precision == "no"  # flags win


@pytest.mark.parametrize("argv, words", [
    (["--bf16", "--fp16"], ["fp16", "bf16", "keep one"]),
    (["--bf16", "--mixed_precision", "fp16"], ["bf16", "mixed_precision"]),
    (["--warmup_ratio", "1.5"], ["warmup_ratio", "< 1"]),
    (["--save_steps", "0"], ["save_steps", ">= 1"]),
    (["--save_strategy", "epoch"], ["checkpointing_steps"]),
])
def test_hf_flag_mistakes_say_what_to_do(argv, words):
    with pytest.raises(UserError) as err:
        parse(*argv)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_hf_optimizer_names(tiny_model):
    import timm
    import torch

    from fastft.optim import build_optimizer

    model = timm.create_model("test_efficientnet", num_classes=3)
    fused = build_optimizer(model, parse("--optim", "adamw_torch_fused"), 1e-3)
    assert isinstance(fused, torch.optim.AdamW) and fused.defaults["fused"]
    assert isinstance(build_optimizer(model, parse("--optim", "adamw_torch"), 1e-3), torch.optim.AdamW)
    with pytest.raises(UserError, match="bitsandbytes"):
        build_optimizer(model, parse("--optim", "adamw_8bit"), 1e-3)


# -- the best model ------------------------------------------------------------------------------------------

@pytest.fixture()
def shifted_images(tmp_path, tiny_images) -> Path:
    """tiny_images whose test classes are renamed in a cycle: the better the model learns the training
    classes, the worse it scores on this test split, so a run's last evaluation is worse than an earlier one."""
    data = tmp_path / "shifted"
    shutil.copytree(tiny_images / "train", data / "train")
    for source, target in (("red", "green"), ("green", "blue"), ("blue", "red")):
        shutil.copytree(tiny_images / "test" / source, data / "test" / target)
    return data


BEST_FLAGS = ["--num_train_epochs", "3", "--eval_strategy", "steps", "--eval_steps", "2"]


def test_load_best_model_at_end_saves_the_best_evaluation_not_the_last(tmp_path, shifted_images, tiny_model):
    out = tmp_path / "best"
    final = run_command(["train", "image", *image_argv(out, shifted_images, tiny_model, *BEST_FLAGS,
                                                        "--load_best_model_at_end", "--metric_for_best_model",
                                                        "accuracy")])
    rows = eval_rows(out)
    best = max(rows, key=lambda r: r["eval_accuracy"])  # max keeps the first of equals, as the engine does
    assert rows[-1]["eval_accuracy"] < best["eval_accuracy"], "the run must end worse than its best"
    assert final["best_model_step"] == best["step"] < final["total_steps"]
    assert final["metric_for_best_model"] == "eval_accuracy" and final["best_metric"] == best["eval_accuracy"]
    assert final["eval_accuracy"] == best["eval_accuracy"]
    assert final["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-6)
    assert not (out / "best_model.safetensors").exists() and not (out / "best_model.json").exists()
    assert f"best evaluation by eval_accuracy, at step {best['step']}" in (out / "README.md").read_text()
    evaluated = fastft.evaluate(str(out), "image")  # the saved model is the best one
    assert evaluated["eval_accuracy"] == best["eval_accuracy"]
    assert evaluated["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-6)
    # Control: the same run without it saves the last evaluation's weights.
    last = run_command(["train", "image", *image_argv(tmp_path / "last", shifted_images, tiny_model, *BEST_FLAGS)])
    assert last["eval_accuracy"] == rows[-1]["eval_accuracy"] and last["best_model_step"] is None


def test_best_model_by_a_lower_is_better_metric(tmp_path, shifted_images, tiny_model):
    final = run_command(["train", "image", *image_argv(tmp_path / "o", shifted_images, tiny_model, *BEST_FLAGS,
                                                        "--load_best_model_at_end", "--metric_for_best_model",
                                                        "loss")])
    rows = eval_rows(tmp_path / "o")
    best = min(rows, key=lambda r: r["eval_loss"])
    assert rows[-1]["eval_loss"] > best["eval_loss"]
    assert final["best_model_step"] == best["step"] and final["metric_for_best_model"] == "eval_loss"
    assert final["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-6)


def test_best_model_mistakes():
    with pytest.raises(UserError, match="eval_strategy"):
        from fastft.config import check_training_args

        check_training_args(parse("--load_best_model_at_end", "--eval_strategy", "no"))
    with pytest.raises(UserError, match="metric_for_best_model 'bleu'"):
        fastft.train("image", output_dir="o", model_name_or_path="x", metric_for_best_model="bleu")


def test_old_checkpoint_markers_without_best_step_still_load():
    from fastft.checkpoints import TrainState

    state = TrainState(step=7, best_metric=0.5)
    saved = state.state_dict()
    del saved["best_step"]
    loaded = TrainState()
    loaded.load_state_dict(saved)
    assert loaded.step == 7 and loaded.best_step is None


# -- the notebook API ------------------------------------------------------------------------------------------

def test_notebook_api_trains_and_raises_user_errors_instead_of_exiting(tmp_path, tiny_images, tiny_model):
    with pytest.raises(UserError, match="did you mean 'learning_rate'"):
        fastft.train("image", learnin_rate=0.1)
    with pytest.raises(UserError, match="task 'imag'"):
        fastft.train("imag")
    with pytest.raises(UserError, match="per_device_train_batch_size"):
        fastft.train("image", output_dir=str(tmp_path / "x"), per_device_train_batch_size=0)
    metrics = fastft.train("image", model_name_or_path=str(tiny_model), dataset_name="imagefolder",
                           data_dir=str(tiny_images), output_dir=str(tmp_path / "nb"), image_size=32,
                           per_device_train_batch_size=8, num_train_epochs=1, bf16=False)
    assert metrics == json.loads((tmp_path / "nb" / "metrics.json").read_text())
    assert fastft.evaluate(str(tmp_path / "nb"), "image")["eval_accuracy"] == metrics["eval_accuracy"]


def test_scripts_keep_working_with_shipped_recipe_names(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts/train_image.py"), "--config", "quickstart",
                           "--dry_run"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fastft:efficientnet_lite0" in done.stdout


def test_a_wheel_ships_the_recipes(tmp_path):
    had_build = (REPO / "build").exists()
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.fail(f"cannot build a wheel here: {built.stderr[-500:]}")
    assert built.returncode == 0, built.stderr[-2000:]
    import zipfile

    names = zipfile.ZipFile(next(tmp_path.glob("fastft-*.whl"))).namelist()
    for path in RECIPES.glob("*/*.yaml"):
        assert f"fastft/recipes/{path.parent.name}/{path.name}" in names
    assert {"fastft/offline/__init__.py", "fastft/offline/common.py", "fastft/offline/image.py"} <= set(names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fastft = fastft.cli:main" in zipfile.ZipFile(next(tmp_path.glob("fastft-*.whl"))).read(entry).decode()
    if not had_build:  # setuptools builds in the source tree
        shutil.rmtree(REPO / "build", ignore_errors=True)


def test_the_pushed_model_is_the_best_one_and_fastft_push_pushes_a_run_again(tmp_path, shifted_images, tiny_model,
                                                                            fake_hub):
    out = tmp_path / "pushed"
    final = run_command(["train", "image", *image_argv(out, shifted_images, tiny_model, *BEST_FLAGS,
                                                        "--load_best_model_at_end", "--push_to_hub",
                                                        "--hub_model_id", "alice/best")])
    files = fake_hub.commits("alice/best")[-1].files
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert not any(name.startswith("best_model") for name in files)
    assert f"at step {final['best_model_step']} of" in files["README.md"].decode()
    done = command("push", str(out), "--hub_model_id", "alice/again", cwd=tmp_path,
                   extra_env=fake_hub.client_env(tmp_path / "home"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alice/again" in done.stdout
    assert fake_hub.commits("alice/again")[-1].files["model.safetensors"] == files["model.safetensors"]
