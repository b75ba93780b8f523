"""Tests for fastft.config: precedence, clear one-line errors, types, ranges and --help."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else sys.executable


def _start_script_with_bad_recipe() -> tuple[subprocess.Popen, Path]:
    bad = Path(tempfile.mkdtemp(prefix="fastft-test-")) / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    proc = subprocess.Popen([PYTHON, "scripts/train_image.py", "--config", str(bad)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, bad


# Started before the imports below: the script spends ~10 s importing, which then overlaps ours.
_SCRIPT, _BAD_RECIPE = _start_script_with_bad_recipe()

import pytest  # noqa: E402
import yaml  # noqa: E402

from fastft.arguments import load_recipe, parse_args  # noqa: E402
from fastft.config import TrainingArguments, coerce, to_dict  # noqa: E402
from fastft.errors import UserError  # noqa: E402
from fastft.tasks.image import ImageArguments  # noqa: E402

CLASSES = [ImageArguments, TrainingArguments]


def parse(*argv: str):
    return parse_args(CLASSES, list(argv), prog="train_image.py")


def recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for cls in CLASSES for f in dataclasses.fields(cls)}


def user_error(*argv: str) -> str:
    with pytest.raises(UserError) as info:
        parse(*argv)
    return str(info.value)


# -- precedence ------------------------------------------------------------------------------

def test_defaults_without_recipe_or_flags():
    image, train = parse()
    assert train.learning_rate == 1e-3 and train.per_device_train_batch_size == 32
    assert train.lr_decay_epochs == [] and train.channels_last is False
    assert image.dataset_name == "fastft:fashion_mnist" and image.pretrained is True


def test_precedence_default_then_recipe_then_command_line(tmp_path):
    path = recipe(tmp_path, """
        learning_rate: 0.02
        seed: 7
        model_name_or_path: resnet18
        lr_scheduler_type: cosine
    """)
    image, train = parse("--config", str(path), "--seed", "3", "--lr_scheduler_type", "one_cycle")
    assert train.seed == 3  # flag beats recipe
    assert train.lr_scheduler_type == "one_cycle"
    assert train.learning_rate == 0.02  # recipe beats default
    assert image.model_name_or_path == "resnet18"
    assert train.weight_decay == 0.0  # default kept
    # the flag may also come before --config
    _, train = parse("--seed", "5", "--config", str(path))
    assert train.seed == 5


def test_recipe_scientific_notation_without_dot_is_a_float(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string; a recipe must still accept it.
    path = recipe(tmp_path, "learning_rate: 1e-3\nadam_epsilon: 1e-6\n")
    _, train = parse("--config", str(path))
    assert train.learning_rate == pytest.approx(1e-3) and isinstance(train.learning_rate, float)
    assert train.adam_epsilon == pytest.approx(1e-6)


def test_yaml_no_for_a_literal_choice(tmp_path):
    # YAML 1.1 reads an unquoted `no` as False; `mixed_precision: no` is what accelerate's docs write.
    path = recipe(tmp_path, "mixed_precision: no\n")
    _, train = parse("--config", str(path))
    assert train.mixed_precision == "no"


# -- unknown names ---------------------------------------------------------------------------

def test_unknown_recipe_key_names_key_file_and_closest(tmp_path):
    path = recipe(tmp_path, "learning_rat: 0.1\n", name="my_recipe.yaml")
    message = user_error("--config", str(path))
    assert "learning_rat" in message and str(path) in message
    assert "'learning_rate'" in message
    assert "\n" not in message


def test_unknown_recipe_key_without_close_match_points_to_help(tmp_path):
    path = recipe(tmp_path, "zzzzqqqq: 1\n")
    message = user_error("--config", str(path))
    assert "zzzzqqqq" in message and "--help" in message


def test_config_and_cli_only_fields_are_not_recipe_keys(tmp_path):
    for key in ("dry_run: true", "config: other.yaml"):
        path = recipe(tmp_path, key + "\n")
        assert key.split(":")[0] in user_error("--config", str(path))


def test_unknown_flag_names_closest_field():
    message = user_error("--learning_rat", "0.1")
    assert "--learning_rat" in message and "'learning_rate'" in message
    message = user_error("--per_device_batch_size=8")
    assert "'--per_device_batch_size=8'" in message and "did you mean 'per_device_" in message


def test_abbreviated_flag_is_not_accepted():
    # allow_abbrev=False: --learning would otherwise silently mean --learning_rate
    assert "'learning_rate'" in user_error("--learning", "0.1")


def test_stray_positional_argument():
    assert "foo" in user_error("foo")


# -- types -----------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, expected", [
    ("learning_rate", "fast", "a number"),
    ("learning_rate", "nan", "a number"),  # nan compares false with every bound
    ("seed", "abc", "an integer"),
    ("seed", "2.5", "an integer"),
    ("channels_last", "maybe", "true or false"),
    ("lr_scheduler_type", "triangle", "one of"),
])
def test_wrong_type_on_command_line(flag, value, expected):
    message = user_error(f"--{flag}", value)
    assert flag in message and "command line" in message and expected in message and value in message


@pytest.mark.parametrize("line, name, expected", [
    ("learning_rate: fast", "learning_rate", "a number"),
    ("per_device_train_batch_size: 2.5", "per_device_train_batch_size", "an integer"),
    ("seed: abc", "seed", "an integer"),
    ("seed: true", "seed", "an integer"),  # a bool is not an int, although Python thinks so
    ("learning_rate: [1, 2]", "learning_rate", "a number"),
    ("weight_decay: .nan", "weight_decay", "a number"),
    ("cyclic_mode: sawtooth", "cyclic_mode", "one of triangular, triangular2, exp_range"),
    ("channels_last: 3", "channels_last", "true or false"),
    ("lr_decay_epochs: 30", "lr_decay_epochs", "a list"),
    ("output_dir: null", "output_dir", "null"),  # not Optional
])
def test_wrong_type_in_recipe(tmp_path, line, name, expected):
    path = recipe(tmp_path, line + "\n")
    message = user_error("--config", str(path))
    assert name in message and str(path) in message and expected in message


def test_whole_float_is_accepted_for_int(tmp_path):
    path = recipe(tmp_path, "per_device_train_batch_size: 16.0\n")
    _, train = parse("--config", str(path))
    assert train.per_device_train_batch_size == 16 and isinstance(train.per_device_train_batch_size, int)


def test_coerce_directly():
    assert coerce("x", "0.5", float, "here") == 0.5
    assert coerce("x", 3, float, "here") == 3.0 and isinstance(coerce("x", 3, float, "here"), float)
    assert coerce("x", "12", int, "here") == 12
    assert coerce("x", "null", Optional[int], "here") is None
    assert coerce("x", "None", Optional[float], "here") is None
    assert coerce("x", "Off", bool, "here") is False
    assert coerce("x", "YES", bool, "here") is True
    assert coerce("x", 7, str, "here") == "7"
    assert coerce("x", "1, 2 3", list, "here") == [1, 2, 3]
    with pytest.raises(UserError, match=r"x in somewhere must be an integer, got 2\.5"):
        coerce("x", 2.5, int, "somewhere")
    with pytest.raises(UserError, match="cannot be null"):
        coerce("x", None, int, "somewhere")
    with pytest.raises(UserError, match="a string"):
        coerce("x", True, str, "somewhere")


# -- ranges ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, bound", [
    ("learning_rate", "0", "> 0"),
    ("learning_rate", "-0.1", "> 0"),
    ("gradient_accumulation_steps", "0", ">= 1"),
    ("per_device_train_batch_size", "-4", ">= 1"),
    ("adam_beta1", "1.5", "<= 1"),
    ("layer_decay", "0", "> 0"),
    ("train_val_split", "0", "> 0"),  # an ImageArguments field is checked too
])
def test_out_of_range_on_command_line(flag, value, bound):
    message = user_error(f"--{flag}", value)
    assert flag in message and "command line" in message and bound in message


def test_out_of_range_in_recipe_names_file(tmp_path):
    path = recipe(tmp_path, "gradient_accumulation_steps: 0\n")
    message = user_error("--config", str(path))
    assert "gradient_accumulation_steps" in message and str(path) in message and ">= 1" in message


def test_range_error_blames_the_flag_that_overrode_the_recipe(tmp_path):
    path = recipe(tmp_path, "learning_rate: 0.1\n")
    message = user_error("--config", str(path), "--learning_rate", "0")
    assert "command line" in message and str(path) not in message


def test_boundary_values_are_accepted():
    _, train = parse("--weight_decay", "0", "--adam_beta1", "1", "--max_grad_norm", "0",
                     "--gradient_accumulation_steps", "1", "--max_steps", "-1")
    assert train.weight_decay == 0 and train.adam_beta1 == 1 and train.max_steps == -1


# -- files -----------------------------------------------------------------------------------

def test_missing_recipe_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = user_error("--config", str(path))
    assert str(path) in message and "does not exist" in message


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = recipe(tmp_path, "learning_rate: 0.1\nseed: [1, 2\n")
    message = user_error("--config", str(path))
    assert str(path) in message and "YAML" in message and "\n" not in message


def test_recipe_that_is_not_a_mapping(tmp_path):
    path = recipe(tmp_path, "- learning_rate\n- 0.1\n")
    assert str(path) in user_error("--config", str(path))


def test_empty_recipe_means_defaults(tmp_path):
    path = recipe(tmp_path, "# nothing yet\n")
    assert parse("--config", str(path)) == parse()


def test_load_recipe_returns_coerced_values(tmp_path):
    path = recipe(tmp_path, "learning_rate: '0.5'\nseed: 3\nreference_batch_size: null\n")
    values = load_recipe(path, {f.name: f for f in dataclasses.fields(TrainingArguments)})
    assert values == {"learning_rate": 0.5, "seed": 3, "reference_batch_size": None}


# -- bools, lists, null ----------------------------------------------------------------------

def test_bool_flag_alone_means_true_and_takes_a_value():
    assert parse("--channels_last")[1].channels_last is True
    assert parse("--channels_last", "false")[1].channels_last is False
    assert parse("--channels_last", "true", "--seed", "1")[1].channels_last is True
    # a bare bool flag followed by another flag does not swallow it
    _, train = parse("--channels_last", "--seed", "4")
    assert train.channels_last is True and train.seed == 4
    assert parse("--pretrained", "no")[0].pretrained is False


def test_bool_from_recipe_overridden_on_command_line(tmp_path):
    path = recipe(tmp_path, "channels_last: true\ncycle_momentum: false\n")
    _, train = parse("--config", str(path))
    assert train.channels_last is True and train.cycle_momentum is False
    assert parse("--config", str(path), "--channels_last", "false")[1].channels_last is False


def test_list_field_from_recipe_and_command_line(tmp_path):
    path = recipe(tmp_path, "lr_decay_epochs: [30, 60, 80.5]\n")
    _, train = parse("--config", str(path))
    assert train.lr_decay_epochs == [30, 60, 80.5]
    _, train = parse("--config", str(path), "--lr_decay_epochs", "10", "20")
    assert train.lr_decay_epochs == [10, 20]
    assert parse("--lr_decay_epochs", "5,15")[1].lr_decay_epochs == [5, 15]
    assert parse("--lr_decay_epochs")[1].lr_decay_epochs == []  # clears a recipe's list


def test_list_default_is_not_shared_between_instances():
    a, b = TrainingArguments(), TrainingArguments()
    a.lr_decay_epochs.append(1)
    assert b.lr_decay_epochs == []


def test_list_field_rejects_non_numbers(tmp_path):
    # lr_decay_epochs are epochs: a word there must fail in the parser, not as a traceback in make_plan
    path = recipe(tmp_path, "lr_decay_epochs: [30, sixty]\n")
    message = user_error("--config", str(path))
    assert "lr_decay_epochs" in message and "sixty" in message
    assert "lr_decay_epochs" in user_error("--lr_decay_epochs", "30", "x")


def test_null_for_optional_fields(tmp_path):
    path = recipe(tmp_path, "reference_batch_size: 256\nlayer_decay: 0.75\nmixed_precision: bf16\n")
    _, train = parse("--config", str(path))
    assert (train.reference_batch_size, train.layer_decay, train.mixed_precision) == (256, 0.75, "bf16")
    path = recipe(tmp_path, "reference_batch_size: null\nlayer_decay: ~\nmixed_precision: null\n", "n.yaml")
    _, train = parse("--config", str(path))
    assert (train.reference_batch_size, train.layer_decay, train.mixed_precision) == (None, None, None)
    _, train = parse("--reference_batch_size", "null", "--layer_decay", "None", "--eval_steps", "none")
    assert train.reference_batch_size is None and train.layer_decay is None and train.eval_steps is None


def test_none_is_a_choice_not_null_for_a_required_literal():
    assert parse("--lr_scaling", "none")[1].lr_scaling == "none"


# -- help ------------------------------------------------------------------------------------

def test_help_lists_every_field_with_its_help(capsys):
    with pytest.raises(SystemExit) as info:
        parse("--help")
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--config" in out
    for name, f in fields().items():
        assert f"--{name} " in out, name
        assert " ".join(f.metadata["help"].split()) in out, name


def test_every_field_has_a_one_line_help_and_no_name_clash():
    names = [f.name for cls in CLASSES for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names))
    for name, f in fields().items():
        text = f.metadata.get("help", "")
        assert text.strip() and "\n" not in text, name
        assert "%" not in text, name  # argparse would try to format it


def test_saved_recipe_parses_back(tmp_path):
    """The engine saves to_dict(...) as config.yaml; feeding it back must reproduce the run."""
    image, train = parse("--model_name_or_path", "resnet18", "--output_dir", "out", "--mixed_precision", "no",
                         "--lr_decay_epochs", "3", "6", "--reference_batch_size", "256", "--dry_run")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(image, train)))
    again_image, again_train = parse("--config", str(path))
    assert again_image == image
    assert again_train == dataclasses.replace(train, dry_run=False)  # cli_only is not saved


# -- the script ------------------------------------------------------------------------------

def test_script_exits_2_with_one_line_error():
    try:
        stdout, stderr = _SCRIPT.communicate(timeout=120)
    finally:
        _BAD_RECIPE.unlink()
        _BAD_RECIPE.parent.rmdir()
    assert _SCRIPT.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "learning_rat" in lines[0] and "'learning_rate'" in lines[0] and str(_BAD_RECIPE) in lines[0]
    assert "Traceback" not in stderr + stdout
