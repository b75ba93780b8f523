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

from fastft.engine import main
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


def _recipe(tmp: Path, text: str) -> str:
    path = tmp / "recipe.yaml"
    path.write_text(text)
    return str(path)


# (case id, extra argv or a function of tmp_path returning argv, substrings the one line must contain)
CASES = [
    ("misspelt recipe key", lambda t: ["--config", _recipe(t, "learning_rat: 0.1\n")],
     ["unknown field 'learning_rat'", "recipe.yaml", "did you mean 'learning_rate'"]),
    ("misspelt flag", ["--lerning_rate", "0.1"], ["unknown command-line argument '--lerning_rate'", "learning_rate"]),
    ("wrong type in recipe", lambda t: ["--config", _recipe(t, "learning_rate: fast\n")],
     ["learning_rate in", "recipe.yaml", "must be a number", "'fast'"]),
    ("wrong type on the command line", ["--per_device_train_batch_size", "two"],
     ["per_device_train_batch_size", "command line", "must be an integer"]),
    ("fraction for an integer", ["--seed", "1.5"], ["seed", "must be an integer"]),
    ("negative learning rate", ["--learning_rate", "-0.1"], ["learning_rate", "must be > 0", "-0.1"]),
    ("zero learning rate in recipe", lambda t: ["--config", _recipe(t, "learning_rate: 0\n")],
     ["learning_rate", "must be > 0"]),
    ("invalid choice", ["--lr_scheduler_type", "cosine_annealing"], ["lr_scheduler_type", "one of", "cosine"]),
    ("missing recipe file", ["--config", "recipes/image/nope.yaml"], ["recipe file recipes/image/nope.yaml", "exist"]),
    ("invalid YAML", lambda t: ["--config", _recipe(t, "learning_rate: [0.1\n")], ["not valid YAML", "line"]),
    ("recipe that is a list", lambda t: ["--config", _recipe(t, "- learning_rate\n")], ["must be a mapping"]),
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
    ("unknown optimizer", ["--optim", "adamw_torch_fused"], ["optim 'adamw_torch_fused'", "timm"]),
    ("world_size outside a dry run", ["--world_size", "8"], ["world_size only applies with --dry_run"]),
    ("non-number milestone", ["--lr_decay_epochs", "30", "sixty"], ["lr_decay_epochs", "number"]),
    ("resume from a folder that does not exist", ["--resume_from_checkpoint", "/no/checkpoint-4"],
     ["resume_from_checkpoint /no/checkpoint-4", "not a folder"]),
]


@pytest.mark.parametrize("case, extra, expected", CASES, ids=[c[0] for c in CASES])
def test_mistake_gives_one_clear_line(case, extra, expected, tmp_path, tiny_images, tiny_model, unfinished_run,
                                      capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no_token"))
    extra = extra(tmp_path) if callable(extra) else extra
    before = snapshot(unfinished_run)
    # Without the mistake this command would resume the unfinished run (same plan).
    argv = image_argv(unfinished_run, tiny_images, tiny_model, "--max_steps", "4", "--checkpointing_steps", "4")
    if "--config" in extra:  # the command line would override the recipe's mistake
        recipe = Path(extra[extra.index("--config") + 1])
        keys = {line.split(":")[0].strip("- ") for line in recipe.read_text().splitlines()} if recipe.is_file() else set()
        for key in keys & {"learning_rate"}:
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
