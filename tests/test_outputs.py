"""What a person reads after a run: the plots, the LR finder's suggestion, the model card, file modes."""
from __future__ import annotations

import os
from pathlib import Path

import datasets
import pytest
from conftest import REPO, image_argv

from fastft import reporting
from fastft.lr_find import lr_find_figure, suggestions, summary_line
from fastft.model_card import hyperparameters, results_table
from fastft.plots import ONE_EVALUATION, curve_figures, loss_text, target_line, write_plots
from fastft.tricks import TRICKS, plan_line, tricks_on
from fastft.schedules import Schedule
from fastft.tasks.common import describe_eval_split

TRAIN = [{"step": s, "epoch": s / 6, "elapsed_s": 0.5 * s, "loss": 2.0 / s} for s in (1, 2, 3, 6, 9, 12)]
EVALS = [{"step": 6, "epoch": 1.0, "elapsed_s": 3.4, "eval_loss": 0.9, "eval_accuracy": 0.6},
         {"step": 12, "epoch": 2.0, "elapsed_s": 6.8, "eval_loss": 0.5, "eval_accuracy": 0.8}]


def umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def notes(fig) -> list[str]:
    return [t.get_text() for t in fig.texts if t.get_gid() == "note"]


def dashed_at(ax) -> list[float]:
    return [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--"]


# -- plots ------------------------------------------------------------------------------------------------------

def test_metric_plot_is_drawn_against_steps_and_wall_time_with_the_target():
    figures = curve_figures(TRAIN, EVALS, "eval_accuracy", target_metric="eval_accuracy", target_value=0.75)
    steps, wall = figures["accuracy.png"].axes
    evals = [line for line in steps.lines if line.get_label() == "eval_accuracy"]
    assert list(evals[0].get_xdata()) == [6, 12]
    assert [list(line.get_xdata()) for line in wall.lines if line.get_label() == "eval_accuracy"] == [[3.4, 6.8]]
    assert "wall time" in wall.get_xlabel() and "step" in steps.get_xlabel()
    assert dashed_at(steps) == dashed_at(wall) == [0.75]
    assert not notes(figures["accuracy.png"])  # a real curve needs no apology
    assert not dashed_at(figures["loss.png"].axes[0])  # the target is accuracy's, not the loss's


def test_target_only_on_the_plot_of_the_target_metric():
    assert target_line("eval_accuracy", "eval_accuracy", 0.9) == 0.9
    assert target_line("eval_accuracy", "accuracy", 0.9) == 0.9
    assert target_line("eval_accuracy", "eval_loss", 0.3) is None
    assert target_line("eval_bleu", None, None) is None


def test_one_evaluation_is_a_marked_point_with_a_note_not_a_curve():
    fig = curve_figures(TRAIN, EVALS[-1:], "eval_accuracy")["accuracy.png"]
    assert notes(fig) == [ONE_EVALUATION]
    point = [line for line in fig.axes[0].lines if line.get_label() == "eval_accuracy"][0]
    assert list(point.get_xdata()) == [12] and point.get_marker() == "o"
    # The loss plot has its train curve: no note there.
    assert not notes(curve_figures(TRAIN, EVALS[-1:], "eval_accuracy")["loss.png"])


def test_loss_plot_says_what_the_train_loss_includes():
    assert loss_text() == ("loss", "train loss")
    title, label = loss_text(label_smoothing=0.1, soft_targets=True)
    assert "label smoothing 0.1" in title and "mixup/cutmix soft targets" in title and "eval loss does not" in title
    assert "label smoothing 0.1" in label
    fig = curve_figures(TRAIN, EVALS, "eval_accuracy", label_smoothing=0.1)["loss.png"]
    assert "label smoothing 0.1" in fig.get_suptitle()
    assert any("label smoothing" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert "mixup" not in fig.get_suptitle()


def test_write_plots_keeps_its_positional_call_and_writes_pngs(tmp_path):
    schedule = Schedule(kind="linear", total_steps=12)
    paths = write_plots(tmp_path, schedule, 0.01, TRAIN, EVALS, "eval_accuracy")
    paths += write_plots(tmp_path, schedule, 0.01, TRAIN, EVALS[:1], "eval_wer", target_metric="eval_wer",
                         target_value=20.0, label_smoothing=0.1, soft_targets=True)
    assert {p.name for p in paths} == {"lr_schedule.png", "loss.png", "accuracy.png", "wer.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


# -- lr_find ----------------------------------------------------------------------------------------------------

def test_lr_find_plot_marks_one_suggestion_on_the_curve():
    grid = [10 ** (-6 + i / 10) for i in range(50)]
    curve = [2.0] * 15 + [2.0 - 0.1 * i for i in range(1, 16)] + [0.5 + 0.5 * i for i in range(20)]
    valley = suggestions(grid, curve)["valley"]
    ax = lr_find_figure(grid, curve, valley, 8).axes[0]
    assert len(ax.lines) == 2  # the curve and one point: no vertical line per rule
    point = ax.lines[1]
    assert point.get_xdata()[0] == valley and point.get_ydata()[0] == curve[grid.index(valley)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"suggested (valley): {valley:.2e}"]


def test_lr_find_prints_the_valley_first():
    line = summary_line({"valley": 3e-3, "steepest": 1e-2, "minimum_div_10": 5e-4}, 60, "", Path("p.png"))
    assert "suggested maximum LR for one_cycle: 0.003 (valley rule)" in line
    assert line.index("valley") < line.index("steepest")
    assert "too few steps" in summary_line({}, 2, "", Path("p.png"))


# -- model card -------------------------------------------------------------------------------------------------

def test_results_table_pairs_each_evaluation_with_the_last_train_loss_logged():
    rows = [{"step": 0, "epoch": 0.0, "eval_loss": 2.3, "eval_wer": 90.0, "eval_cer": 60.0, "eval_samples": 9},
            {"step": 6, "epoch": 1.0, "eval_loss": 0.9, "eval_wer": 40.0, "eval_cer": 20.0, "eval_runtime_s": 0.1},
            {"step": 12, "epoch": 2.0, "eval_loss": 0.5, "eval_wer": 30.0, "eval_cer": 15.0}]
    train = [r for r in TRAIN if r["step"] != 12]  # the last step's loss was not logged
    lines = results_table(train, rows, "eval_wer", "WER").splitlines()
    assert lines[0] == "| Training Loss | Epoch | Step | Validation Loss | WER | Cer |"
    assert lines[2] == "| No log | 0.0 | 0 | 2.3000 | 90.0000 | 60.0000 |"  # the baseline before step 1
    assert lines[3].startswith("| 0.3333 | 1.0 | 6 | 0.9000 |")  # the loss logged at step 6
    assert lines[4].startswith("| 0.2222 | 2.0 | 12 |")  # step 9's: nothing logged at 12


def test_hyperparameters_follow_the_hf_trainer_card():
    recipe = {"learning_rate": 0.01, "reference_batch_size": 16, "lr_scaling": "linear", "seed": 3,
              "per_device_train_batch_size": 8, "per_device_eval_batch_size": 4, "optim": "adamw", "adam_beta1": 0.9,
              "adam_beta2": 0.98, "adam_epsilon": 1e-6, "max_steps": 100, "mixed_precision": "bf16",
              "label_smoothing_factor": 0.1, "lr_scheduler_type": "one_cycle"}
    derived = {"num_processes": 2, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2,
               "global_batch_size": 32, "total_steps": 100, "warmup_steps": 10, "scaled_learning_rate": 0.02,
               "lr_scheduler_type": "one_cycle"}
    lines = hyperparameters(recipe, derived, {"distributed_type": "MULTI_GPU", "num_processes": 2})
    for expected in ("- learning_rate: 0.02 (the recipe's 0.01 at batch 16, linear scaling)", "- train_batch_size: 8",
                     "- eval_batch_size: 4", "- seed: 3", "- distributed_type: multi-GPU", "- num_devices: 2",
                     "- gradient_accumulation_steps: 2", "- total_train_batch_size: 32", "- total_eval_batch_size: 8",
                     "- optimizer: adamw with betas=(0.9,0.98) and epsilon=1e-06", "- lr_scheduler_type: one_cycle",
                     "- lr_scheduler_warmup_steps: 10", "- training_steps: 100",
                     "- mixed_precision_training: Native AMP (bf16)", "- label_smoothing_factor: 0.1"):
        assert expected in lines, expected
    plain = hyperparameters({**recipe, "optim": "sgd", "momentum": 0.8, "max_steps": -1, "num_train_epochs": 3,
                             "mixed_precision": None, "label_smoothing_factor": 0.0, "reference_batch_size": None},
                            {"num_processes": 1, "global_batch_size": 8, "scaled_learning_rate": 0.01,
                             "num_epochs": 3.0}, {})
    assert "- optimizer: sgd with momentum=0.8" in plain and "- num_epochs: 3.0" in plain
    assert "- learning_rate: 0.01" in plain
    assert not any(line.startswith(("- num_devices", "- total_train", "- mixed", "- label", "- distributed"))
                   for line in plain)


def test_the_eval_split_is_named_as_it_was_chosen():
    ds = datasets.Dataset.from_dict({"x": [1, 2]})

    class Args:
        eval_split, train_split, train_val_split = None, "train", 0.15

    assert describe_eval_split(datasets.DatasetDict(train=ds, test=ds), Args) == "test"
    assert describe_eval_split(datasets.DatasetDict(train=ds, validation=ds, test=ds), Args) == "validation"
    assert describe_eval_split(datasets.DatasetDict(train=ds), Args) == "train (15% held out)"
    Args.eval_split = "test"
    assert describe_eval_split(datasets.DatasetDict(train=ds, validation=ds, test=ds), Args) == "test"


def test_finished_run_card_pipeline_and_file_modes(tmp_path, tiny_images, tiny_model):
    from PIL import Image
    from transformers import pipeline

    from fastft.run import main
    from fastft.tasks.image import ImageArguments, ImageTask

    out = tmp_path / "run"
    final = main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "epoch"))
    card = (out / "README.md").read_text()
    assert "split: test" in card and "Evaluated on the `test` split of `imagefolder` (21 examples)" in card
    for section in ("## Training procedure", "### Training hyperparameters", "### Training results",
                    "### Framework versions"):
        assert section in card, section
    assert "- train_batch_size: 8" in card and "- num_epochs: 2.0" in card
    assert "| Training Loss | Epoch | Step | Validation Loss | Accuracy |" in card
    assert card.count("| 2.0 | 12 |") == 1  # one row per line of metrics.jsonl
    import transformers

    assert f"- Transformers {transformers.__version__}" in card
    assert "fastft train image --config config.yaml" in card and "scripts/train_image.py --config config.yaml" in card
    assert f'pipeline("image-classification", model="{out.resolve()}")' in card
    # ...and that pipeline line works, offline, on the saved timm folder.
    classify = pipeline("image-classification", model=str(out.resolve()))
    images = sorted((tiny_images / "test").glob("*/*.png"))
    right = sum(classify(Image.open(p))[0]["label"] == p.parent.name for p in images)
    assert right / len(images) == pytest.approx(final["eval_accuracy"], abs=0.1) and right / len(images) >= 0.8
    # Weights are as readable as every other file, in the run and in its checkpoints.
    mode = umask_mode()
    for path in (out / "model.safetensors", out / "checkpoint-12" / "model.safetensors", out / "config.json"):
        assert path.stat().st_mode & 0o777 == mode, path


def test_held_out_eval_split_is_named_on_the_card(tmp_path, tiny_images, tiny_model):
    import shutil

    from fastft.run import main
    from fastft.tasks.image import ImageArguments, ImageTask

    data = tmp_path / "data"
    shutil.copytree(tiny_images / "train", data / "train")
    out = tmp_path / "run"
    main(ImageTask, ImageArguments, image_argv(out, data, tiny_model, "--max_steps", "2"))
    card = (out / "README.md").read_text()
    assert "split: train (15% held out)" in card and "Evaluated on the `train (15% held out)` split" in card


def test_usual_modes_undoes_safetensors_0600(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "notes.txt").write_text("x")
    os.chmod(tmp_path / "notes.txt", 0o600)  # not a weight file: not touched
    old = os.umask(0o027)
    try:
        changed = reporting.usual_modes(tmp_path)
    finally:
        os.umask(old)
    assert changed == [tmp_path / "model.safetensors"]
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "notes.txt").stat().st_mode & 0o777 == 0o600
    reporting.usual_modes(tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == umask_mode()


def test_license_comes_from_the_base_checkpoint_card_or_is_left_out(tmp_path):
    from fastft.model_card import base_license

    (tmp_path / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# a model\n")
    assert base_license(str(tmp_path)) == "mit"
    (tmp_path / "README.md").write_text("# a card without metadata\n")
    assert base_license(str(tmp_path)) is None
    assert base_license("org/some-hub-model") is None and base_license(None) is None


# -- the tricks: one table for the card, the plan and the README ----------------------------------------
def test_the_readme_names_the_field_of_every_trick_the_card_and_plan_know():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## The tricks"):readme.index("## Recipes")]
    missing = [t.name for t in TRICKS if f"`{t.fields[0]}" not in table]
    assert not missing, f"README's tricks table lacks {missing}"


def test_a_trick_is_on_only_when_its_field_turns_it_on():
    assert tricks_on({}) == [] and plan_line({"head_lr_scale": 1.0, "pretrained": True}) == "none"
    recipe = {"label_smoothing_factor": 0.1, "zero_init_head": True, "pretrained": False, "layer_decay": 0.65}
    assert [t.name for t in tricks_on(recipe)] == ["label smoothing", "layer-wise LR decay"]  # no new head from scratch
    assert plan_line(recipe) == "label smoothing (label_smoothing_factor=0.1); layer-wise LR decay (layer_decay=0.65)"
