"""User mistakes: each exits 2 with one line naming the problem and the fix, no traceback, nothing touched."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, image_argv

from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory, tiny_images, tiny_model) -> Path:
    """An output_dir holding a resumable, unfinished run: a mistake must leave it byte for byte."""
    out = tmp_path_factory.mktemp("unfinished") / "run"
    main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "4",
                                               "--max_steps", "4"))
    (out / "metrics.json").unlink()
    return out


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, tiny_images) -> Path:
    """The tiny image folder plus one file that is not an image, and labels with a -1."""
    root = tmp_path_factory.mktemp("bad_data")
    shutil.copytree(tiny_images, root / "corrupt")
    (root / "corrupt" / "train" / "red" / "broken.png").write_bytes(b"not a png at all")
    for split in ("train", "test"):  # imagefolder reads extra columns from metadata.jsonl
        folder = root / "labels" / split
        shutil.copytree(tiny_images / split / "red", folder)
        rows = [{"file_name": p.name, "target": -1 if i == 0 else 1} for i, p in enumerate(sorted(folder.iterdir()))]
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


class Fixtures:
    """What a case's argv builder may use: a fresh folder and the tiny data and model."""

    def __init__(self, tmp: Path, images: Path, model: Path, run: Path):
        self.tmp, self.images, self.model, self.run = tmp, images, model, run

    def recipe(self, text: str | bytes, name: str = "recipe.yaml") -> str:
        path = self.tmp / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return str(path)

    def model_copy(self, name: str, change=None) -> str:
        """A copy of the tiny model folder, with ``change(folder)`` applied (a damaged file, ...)."""
        folder = self.tmp / name
        shutil.copytree(self.model, folder)
        if change:
            change(folder)
        return str(folder)

    def images_copy(self, name: str, change) -> str:
        folder = self.tmp / name
        shutil.copytree(self.images, folder)
        change(folder)
        return str(folder)


def _truncate(file: Path, keep: int = 200) -> None:
    file.write_bytes(file.read_bytes()[:keep])


def _flatten(folder: Path) -> None:  # images right in train/ and test/, no class folders
    for split in ("train", "test"):
        for cls in list((folder / split).iterdir()):
            for image in cls.iterdir():
                image.rename(folder / split / f"{cls.name}-{image.name}")
            cls.rmdir()


def _keep_classes(*names: str, split: str = "train"):
    def change(folder: Path) -> None:
        for cls in (folder / split).iterdir():
            if cls.name not in names:
                shutil.rmtree(cls)
    return change


def _string_labels(folder: Path) -> None:
    for split in ("train", "test"):
        rows = [{"file_name": f"{cls.name}/{p.name}", "kind": cls.name}
                for cls in (folder / split).iterdir() for p in cls.iterdir()]
        (folder / split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _edit_config(**changes):
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return change


# (case id, extra argv or a function of Fixtures returning argv, substrings the one line must contain)
CASES = [
    ("misspelt recipe key", lambda f: ["--config", f.recipe("learning_rat: 0.1\n")],
     ["unknown field 'learning_rat'", "recipe.yaml", "did you mean 'learning_rate'"]),
    ("misspelt flag", ["--lerning_rate", "0.1"], ["unknown command-line argument '--lerning_rate'", "learning_rate"]),
    ("wrong type in recipe", lambda f: ["--config", f.recipe("learning_rate: fast\n")],
     ["learning_rate in", "recipe.yaml", "must be a number", "'fast'"]),
    ("wrong type on the command line", ["--per_device_train_batch_size", "two"],
     ["per_device_train_batch_size", "command line", "must be an integer"]),
    ("fraction for an integer", ["--seed", "1.5"], ["seed", "must be an integer"]),
    ("negative learning rate", ["--learning_rate", "-0.1"], ["learning_rate", "must be > 0", "-0.1"]),
    ("zero learning rate in recipe", lambda f: ["--config", f.recipe("learning_rate: 0\n")],
     ["learning_rate", "must be > 0"]),
    ("invalid choice", ["--lr_scheduler_type", "cosine_annealing"], ["lr_scheduler_type", "one of", "cosine"]),
    ("missing recipe file", ["--config", "recipes/image/nope.yaml"], ["recipe file recipes/image/nope.yaml", "exist"]),
    ("invalid YAML", lambda f: ["--config", f.recipe("learning_rate: [0.1\n")], ["not valid YAML", "line"]),
    ("recipe that is a list", lambda f: ["--config", f.recipe("- learning_rate\n")], ["must be a mapping"]),
    ("not a model", ["--model_name_or_path", "not a model!!"], ["neither a local folder", "Hub id"]),
    ("missing model folder", ["--model_name_or_path", "./no/such/model"], ["does not exist"]),
    ("imagefolder without data_dir", [], ["dataset_name imagefolder needs data_dir"]),
    ("data_dir that does not exist", ["--data_dir", "/no/such/folder"], ["needs data_dir", "/no/such/folder"]),
    ("image column not in the data", ["--image_column", "photo"], ["image_column 'photo'", "it has image, label"]),
    ("label column not in the data", ["--label_column", "kind"], ["label_column 'kind'", "it has"]),
    ("eval split that does not exist", ["--eval_split", "validation"], ["eval_split 'validation'", "train, test"]),
    ("train split that does not exist", ["--train_split", "training"], ["train_split 'training'"]),
    ("batch larger than the dataset", ["--per_device_train_batch_size", "64"], ["larger than the 45 training"]),
    ("warmup longer than training", ["--warmup_steps", "50", "--max_steps", "10"], ["warmup_steps (50)", "(10)"]),
    ("fp16 on CPU", ["--mixed_precision", "fp16"], ["fp16 on CPU", "bf16"]),
    ("push without a token", ["--push_to_hub"], ["needs a Hub token", "HF_TOKEN"]),
    ("unknown target metric", ["--target_metric", "eval_f1", "--target_value", "0.9"],
     ["target_metric 'eval_f1'", "eval_accuracy"]),
    ("target metric without value", ["--target_metric", "eval_accuracy"], ["target_metric and target_value"]),
    ("bad checkpointing_steps", ["--checkpointing_steps", "sometimes"], ["checkpointing_steps", "'epoch'"]),
    ("steps evaluation without eval_steps", ["--eval_strategy", "steps"], ["eval_steps"]),
    ("unknown optimizer", ["--optim", "adamw_apex_fused"], ["optim 'adamw_apex_fused'", "timm", "apex"]),
    ("world_size outside a dry run", ["--world_size", "8"], ["world_size only applies with --dry_run"]),
    ("non-number milestone", ["--lr_decay_epochs", "30", "sixty"], ["lr_decay_epochs", "number"]),
    ("resume from a folder that does not exist", ["--resume_from_checkpoint", "/no/checkpoint-4"],
     ["resume_from_checkpoint /no/checkpoint-4", "not a folder"]),
    # -- recipe files --
    ("recipe not UTF-8", lambda f: ["--config", f.recipe("learning_rate: 0.01\n# caf\xe9\n".encode("latin-1"))],
     ["recipe.yaml", "not UTF-8", "0xe9"]),
    ("folder given as --config", lambda f: ["--config", str(f.tmp)], ["is a folder", "YAML file"]),
    ("recipe sets a key twice", lambda f: ["--config", f.recipe("seed: 1\nseed: 2\n")],
     ["recipe.yaml", "'seed' twice", "lines 1 and 2"]),
    ("recipe with two YAML documents", lambda f: ["--config", f.recipe("seed: 1\n---\nseed: 2\n")],
     ["not valid YAML", "another document"]),
    ("a list as a recipe key", lambda f: ["--config", f.recipe("[seed, learning_rate]: 1\n")],
     ["not valid YAML", "unhashable key"]),
    ("nested mapping for a number", lambda f: ["--config", f.recipe("weight_decay: {peak: 1}\n")],
     ["weight_decay", "must be a number"]),
    ("not a boolean", ["--channels_last", "maybe"], ["channels_last", "true or false", "'maybe'"]),
    ("cli-only flag in a recipe", lambda f: ["--config", f.recipe("dry_run: true\n")],
     ["dry_run", "command-line flag only"]),
    ("hub_token in a recipe", lambda f: ["--config", f.recipe("hub_token: hf_abc\n")],
     ["'hub_token'", "HF_TOKEN", "hf auth login"]),
    ("hub_token on the command line", ["--hub_token", "hf_abc"], ["'hub_token'", "HF_TOKEN"]),
    # -- values --
    ("infinite learning rate in recipe", lambda f: ["--config", f.recipe("learning_rate: .inf\n")],
     ["learning_rate", "finite"]),
    ("infinite learning rate on the command line", ["--learning_rate", "inf"], ["learning_rate", "finite"]),
    ("learning rate that overflows", lambda f: ["--config", f.recipe("learning_rate: 1e400\n")],
     ["learning_rate", "finite"]),
    ("max_steps 0", ["--max_steps", "0"], ["max_steps", "-1", "got 0"]),
    ("negative max_steps", ["--max_steps", "-5"], ["max_steps", "got -5"]),
    ("eval_steps without steps evaluation", ["--eval_steps", "5"], ["eval_steps 5", "eval_strategy", "'epoch'"]),
    ("checkpointing_steps 0", ["--checkpointing_steps", "0"], ["checkpointing_steps", "'0'"]),
    ("label smoothing of 1", ["--label_smoothing_factor", "1"], ["label_smoothing_factor", "< 1"]),
    ("fractional warmup above 1", ["--warmup_steps", "1.5"], ["warmup_steps", "whole number", "1.5"]),
    ("multistep without milestones", ["--lr_scheduler_type", "multistep"], ["multistep needs lr_decay_epochs"]),
    ("milestones without multistep", ["--lr_decay_epochs", "1"], ["lr_decay_epochs only applies", "'linear'"]),
    ("negative milestone", ["--lr_scheduler_type", "multistep", "--lr_decay_epochs", "-1"],
     ["lr_decay_epochs", "> 0"]),
    ("reference batch without scaling", ["--reference_batch_size", "256", "--lr_scaling", "none"],
     ["reference_batch_size", "lr_scaling none"]),
    ("accuracy target in percent", ["--target_metric", "eval_accuracy", "--target_value", "85"],
     ["target_value 85", "never be reached", "did you mean 0.85?"]),
    ("negative accuracy target", ["--target_metric", "eval_accuracy", "--target_value", "-0.1"],
     ["target_value -0.1", "fraction"]),
    ("every_save push without checkpoints", ["--push_to_hub", "--hub_strategy", "every_save", "--checkpointing_steps", "none"],
     ["every_save", "checkpointing_steps"]),
    ("empty output_dir", ["--output_dir", ""], ["output_dir is required"]),
    ("stop_at_target without a target", ["--stop_at_target"], ["stop_at_target", "target_metric"]),
    # -- trackers --
    ("unknown tracker", ["--report_to", "bogus"], ["report_to 'bogus'", "tensorboard"]),
    ("tracker not installed", ["--report_to", "wandb"], ["report_to 'wandb'", "not installed", "pip install wandb"]),
    ("one bad tracker in a list", ["--report_to", "tensorboard,bogus"], ["report_to 'bogus'"]),
    # -- image task --
    ("unknown auto_augment policy", ["--auto_augment", "foo-bar"], ["auto_augment 'foo-bar'", "rand-m9-mstd0.5"]),
    ("image column holds labels", ["--image_column", "label"], ["image_column 'label'", "int64", "not images"]),
    ("label column holds images", ["--label_column", "image"], ["label_column 'image'", "not class ids"]),
    ("held-out share of 1", lambda f: ["--data_dir", f.images_copy("only_train", lambda d: shutil.rmtree(d / "test")),
                                       "--train_val_split", "1"], ["train_val_split", "< 1"]),
    ("empty imagefolder", lambda f: ["--data_dir", f.images_copy("empty", lambda d: [
        shutil.rmtree(c) for s in ("train", "test") for c in (d / s).iterdir()])], ["holds no image files"]),
    ("images without class folders", lambda f: ["--data_dir", f.images_copy("flat", _flatten)],
     ["label_column 'label'", "no class for", "data_dir/train/<class>/"]),
    ("one class folder", lambda f: ["--data_dir", f.images_copy("one", lambda d: [
        _keep_classes("red", split=s)(d) for s in ("train", "test")])], ["fewer than 2 class folders"]),
    ("string labels from metadata", lambda f: ["--data_dir", f.images_copy("strings", _string_labels),
                                               "--label_column", "kind"], ["label_column 'kind'", "string"]),
    ("data_dir that is a file", lambda f: ["--data_dir", f.recipe("x", "a_file")], ["needs data_dir", "a_file"]),
    ("unknown dataset asset", ["--dataset_name", "fastft:nope"], ["fastft:nope", "fastft:fashion_mnist"]),
    # -- models --
    ("truncated model weights", lambda f: ["--model_name_or_path", f.model_copy(
        "trunc", lambda d: _truncate(d / "model.safetensors"))], ["trunc", "damaged or truncated"]),
    ("model config that is not JSON", lambda f: ["--model_name_or_path", f.model_copy(
        "badcfg", lambda d: (d / "config.json").write_text("{not json"))], ["config.json", "not valid JSON"]),
    ("model config that is a list", lambda f: ["--model_name_or_path", f.model_copy(
        "listcfg", lambda d: (d / "config.json").write_text("[1, 2]"))], ["config.json", "JSON object"]),
    ("model folder without weights", lambda f: ["--model_name_or_path", f.model_copy(
        "noweights", lambda d: (d / "model.safetensors").unlink())], ["noweights", "No suitable checkpoints"]),
    ("weights of another architecture", lambda f: ["--model_name_or_path", f.model_copy(
        "otherarch", _edit_config(architecture="test_resnet"))], ["otherarch", "could not create model"]),
    ("weights file instead of the folder", lambda f: ["--model_name_or_path", str(f.model / "model.safetensors")],
     ["is a file", "config.json"]),
    ("misspelt timm name", ["--model_name_or_path", "resnet5000"], ["'resnet5000'", "did you mean timm's 'resnet50'"]),
    ("resume from an output_dir", lambda f: ["--resume_from_checkpoint", str(f.run)],
     ["is an output_dir", "checkpoint-4"]),
    # -- dry run checks what it can without training --
    ("dry run with a missing model", ["--dry_run", "--model_name_or_path", "/no/such/model"],
     ["/no/such/model does not exist"]),
    ("dry run with an unknown optimizer", ["--dry_run", "--optim", "nope"], ["optim 'nope'"]),
    ("dry run with a missing data_dir", ["--dry_run", "--data_dir", "/no/such/data"], ["/no/such/data"]),
]


@pytest.mark.parametrize("case, extra, expected", CASES, ids=[c[0] for c in CASES])
def test_mistake_gives_one_clear_line(case, extra, expected, tmp_path, tiny_images, tiny_model, unfinished_run,
                                      capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no_token"))
    extra = extra(Fixtures(tmp_path, tiny_images, tiny_model, unfinished_run)) if callable(extra) else extra
    before = snapshot(unfinished_run)
    # Without the mistake this command would resume the unfinished run (same plan).
    argv = image_argv(unfinished_run, tiny_images, tiny_model, "--max_steps", "4", "--checkpointing_steps", "4")
    if "--config" in extra:  # the command line would override the recipe's mistake
        recipe = Path(extra[extra.index("--config") + 1])
        keys = {line.split(":")[0].strip("- ") for line in recipe.read_text(errors="replace").splitlines()} if recipe.is_file() else set()
        for key in keys & {"learning_rate", "seed"}:
            i = argv.index(f"--{key}")
            del argv[i:i + 2]
    argv += extra
    if case == "imagefolder without data_dir":
        i = argv.index("--data_dir")
        del argv[i:i + 2]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(ImageTask, ImageArguments, argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    for part in expected:
        assert part in errors[0], (part, errors[0])
    assert "Traceback" not in "\n".join(lines)
    assert snapshot(unfinished_run) == before  # the unfinished run is untouched, still resumable


def test_data_mistakes(tmp_path, tiny_model, bad_data, capsys):
    cases = [  # (argv, found before training starts?, what the line says)
        (image_argv(tmp_path / "a", bad_data / "corrupt", tiny_model), False, "cannot read image", "broken.png",
         "on_bad_image: skip"),
        (image_argv(tmp_path / "b", bad_data / "labels", tiny_model, "--label_column", "target"), True,
         "label_column 'target' must hold class ids", "-1"),
    ]
    for argv, early, *expected in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(ImageTask, ImageArguments, argv)
        assert exit_.value.code == 2
        stderr = capsys.readouterr().err
        [err] = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert all(part in err for part in expected), err
        assert "Traceback" not in stderr
        assert Path(argv[argv.index("--output_dir") + 1]).exists() != early


def test_unreadable_image_is_skipped_when_the_recipe_says_so(tmp_path, tiny_model, bad_data):
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.png"):
        final = main(ImageTask, ImageArguments, image_argv(tmp_path / "skip", bad_data / "corrupt", tiny_model,
                                                           "--on_bad_image", "skip", "--max_steps", "6"))
    assert final["total_steps"] == 6


def test_resume_from_a_checkpoint_of_another_model_is_refused(tmp_path, tiny_images, tiny_model, tiny_vit, capsys):
    out = tmp_path / "run"
    main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "2",
                                               "--max_steps", "2"))
    (out / "metrics.json").unlink()
    before = snapshot(out)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_vit, "--max_steps", "2"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not fit this model" in err and "checkpoint-2" in err
    assert snapshot(out) == before


def test_the_real_script_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: fastft:efficientnet_lite0\noutput_dir: x\nnum_train_epoch: 3\n")
    done = subprocess.run([sys.executable, "scripts/train_image.py", "--config", str(bad)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (f"error: unknown field 'num_train_epoch' in {bad}; "
                                                     f"did you mean 'num_train_epochs'?")
    assert "Traceback" not in done.stderr


def test_the_real_script_prints_a_warning_as_one_line(tmp_path, tiny_images, tiny_model):
    argv = image_argv(tmp_path / "run", tiny_images, tiny_model, "--eval_split", "train", "--dry_run")
    done = subprocess.run([sys.executable, "scripts/train_image.py", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "eval split is the training split" in line]
    assert line.startswith("warning: the eval split is the training split (train)")
    assert "warnings.warn" not in done.stderr and "UserWarning" not in done.stderr
