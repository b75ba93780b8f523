"""Resume never unpickles; a damaged or changed checkpoint gets one clear line and is left as it was."""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import image_argv
from safetensors.torch import load_file

from fastft.checkpoints import TrainState
from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask

SHORT = ["--max_steps", "2", "--checkpointing_steps", "2", "--model_ema", "true", "--model_ema_decay", "0.9"]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Payload:
    """Unpickling this creates ``flag``: what a planted checkpoint file could do instead."""

    def __init__(self, flag: Path):
        self.flag = str(flag)

    def __reduce__(self):
        return open, (self.flag, "w")


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_images, tiny_model) -> Path:
    """An unfinished run with one checkpoint (checkpoint-2, with a weight average); tests work on copies."""
    out = tmp_path_factory.mktemp("made") / "run"
    main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, *SHORT))
    (out / "metrics.json").unlink()
    return out


@pytest.fixture
def run_dir(made, tmp_path) -> Path:
    return Path(shutil.copytree(made, tmp_path / "run"))


def argv(out: Path, tiny_images: Path, tiny_model: Path, *extra: str) -> list[str]:
    return image_argv(out, tiny_images, tiny_model, *SHORT, *extra)


def refused(out: Path, args: list[str], capsys) -> str:
    """Run ``args``: exit 2, one ``error:`` line (returned), no traceback, ``out`` byte for byte as before."""
    before = snapshot(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(ImageTask, ImageArguments, args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    assert snapshot(out) == before
    return errors[0]


def plant(checkpoint: Path, flag: Path) -> None:
    torch.save(Payload(flag), checkpoint / "custom_checkpoint_0.pkl")


def test_the_planted_payload_is_live(tmp_path):
    """The test payload does run when unpickled as accelerate loads registered objects (weights_only=False)."""
    plant(tmp_path, tmp_path / "ran")
    torch.load(tmp_path / "custom_checkpoint_0.pkl", weights_only=False)
    assert (tmp_path / "ran").exists()


def test_a_planted_pickle_named_for_resume_is_refused_unread(run_dir, tmp_path, tiny_images, tiny_model, capsys):
    flag = tmp_path / "ran"
    plant(run_dir / "checkpoint-2", flag)
    line = refused(run_dir, argv(run_dir, tiny_images, tiny_model, "--resume_from_checkpoint",
                                 str(run_dir / "checkpoint-2")), capsys)
    assert "checkpoint-2" in line and "custom_checkpoint_0.pkl" in line and "does not load pickles" in line
    assert "--overwrite_output_dir true" in line
    assert not flag.exists()


def test_a_planted_pickle_in_output_dir_is_skipped_unread(run_dir, tmp_path, tiny_images, tiny_model, capsys):
    flag = tmp_path / "ran"
    plant(run_dir / "checkpoint-2", flag)
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*checkpoint-2.*custom_checkpoint_0.pkl"):
        line = refused(run_dir, argv(run_dir, tiny_images, tiny_model), capsys)
    assert "no checkpoint in" in line and "custom_checkpoint_0.pkl" in line and "--overwrite_output_dir true" in line
    assert not flag.exists()


def test_a_planted_pickle_falls_back_to_the_older_checkpoint(tmp_path, tiny_images, tiny_model, capsys):
    out, flag = tmp_path / "run", tmp_path / "ran"
    args = image_argv(out, tiny_images, tiny_model, "--max_steps", "4", "--checkpointing_steps", "2",
                      "--save_total_limit", "5")
    main(ImageTask, ImageArguments, args)
    (out / "metrics.json").unlink()
    plant(out / "checkpoint-4", flag)
    capsys.readouterr()
    with pytest.warns(UserWarning, match="custom_checkpoint_0.pkl"):
        final = main(ImageTask, ImageArguments, args)
    assert f"Resuming from {out / 'checkpoint-2'}" in capsys.readouterr().out
    assert final["total_steps"] == 4 and not flag.exists()
    assert not (out / "checkpoint-4" / "custom_checkpoint_0.pkl").exists()  # saved anew, the pickle gone


DAMAGES = [  # (id, how the marker is damaged, what the line says)
    ("not JSON", lambda m: "{not json", "not readable JSON"),
    ("not an object", lambda m: "[1, 2]", "holds list, not a JSON object"),
    ("binary", lambda m: b"\xff\xfe\x00", "not readable JSON"),
    ("wrong type", lambda m: json.dumps({**m, "step": "2"}), "step must be a whole number"),
    ("bool for a number", lambda m: json.dumps({**m, "elapsed_s": True}), "elapsed_s must be a number"),
    ("missing key", lambda m: json.dumps({k: v for k, v in m.items() if k != "batches_in_epoch"}),
     "missing batches_in_epoch"),
    ("no scheduler", lambda m: json.dumps({k: v for k, v in m.items() if k != "scheduler"}), "scheduler must be"),
    ("plan not an object", lambda m: json.dumps({**m, "plan": 3}), "plan must be a JSON object"),
]


def _damage(checkpoint: Path, how) -> None:
    marker = checkpoint / "fastft_state.json"
    text = how(json.loads(marker.read_text()))
    marker.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize("case, how, says", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_marker_named_for_resume_is_refused(case, how, says, run_dir, tiny_images, tiny_model, capsys):
    _damage(run_dir / "checkpoint-2", how)
    line = refused(run_dir, argv(run_dir, tiny_images, tiny_model, "--resume_from_checkpoint",
                                 str(run_dir / "checkpoint-2")), capsys)
    assert "checkpoint-2" in line and "fastft_state.json" in line and says in line


@pytest.mark.parametrize("case, how, says", DAMAGES[::3], ids=[d[0] for d in DAMAGES[::3]])
def test_a_damaged_marker_in_output_dir_is_skipped(case, how, says, run_dir, tiny_images, tiny_model, capsys):
    _damage(run_dir / "checkpoint-2", how)
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*fastft_state.json"):
        line = refused(run_dir, argv(run_dir, tiny_images, tiny_model), capsys)
    assert "no checkpoint in" in line and "fastft_state.json" in line and says in line


@pytest.mark.parametrize("name", ["ema.safetensors", "model.safetensors"])
@pytest.mark.parametrize("explicit", [True, False], ids=["named", "in output_dir"])
def test_truncated_weights_are_refused_by_name(name, explicit, run_dir, tiny_images, tiny_model, capsys):
    weights = run_dir / "checkpoint-2" / name
    weights.write_bytes(weights.read_bytes()[:-100])  # as a full disk would leave it
    extra = ["--resume_from_checkpoint", str(run_dir / "checkpoint-2")] if explicit else []
    skipped = pytest.warns(UserWarning, match=f"skipping unreadable checkpoint .*{name}")
    with contextlib.nullcontext() if explicit else skipped:
        line = refused(run_dir, argv(run_dir, tiny_images, tiny_model, *extra), capsys)
    assert f"{name} is damaged" in line and "checkpoint-2" in line


@pytest.mark.parametrize("flag, value, says", [("--seed", "1", "seed 0 -> 1"),
                                               ("--weight_decay", "0.05", "weight_decay 0.0 -> 0.05"),
                                               ("--optim", "sgd", "optim adamw -> sgd"),
                                               ("--label_smoothing_factor", "0.1", "label_smoothing_factor 0.0 -> 0.1"),
                                               ("--lr_scheduler_type", "cosine", "lr_scheduler_type linear -> cosine"),
                                               # the task's own fields are training values too
                                               ("--image_size", "48", "image_size 32 -> 48"),
                                               ("--hflip", "0", "hflip 0.5 -> 0.0")])
def test_a_changed_training_value_is_refused_by_name(flag, value, says, run_dir, tiny_images, tiny_model, capsys):
    line = refused(run_dir, argv(run_dir, tiny_images, tiny_model, flag, value), capsys)
    assert says in line and "checkpoint-2" in line and "--overwrite_output_dir true" in line


def test_changed_batch_split_is_refused_though_the_global_batch_is_the_same(run_dir, tiny_images, tiny_model, capsys):
    # batches_in_epoch counts micro-batches: 4 x 2 would skip the wrong share of the epoch.
    line = refused(run_dir, argv(run_dir, tiny_images, tiny_model, "--per_device_train_batch_size", "4",
                                 "--gradient_accumulation_steps", "2"), capsys)
    assert "per_device_train_batch_size 8 -> 4" in line and "gradient_accumulation_steps 1 -> 2" in line
    assert "global_batch_size" not in line


def test_reporting_values_may_change_on_resume(run_dir, tiny_images, tiny_model, capsys):
    capsys.readouterr()
    final = main(ImageTask, ImageArguments, argv(run_dir, tiny_images, tiny_model, "--logging_steps", "7",
                                                 "--eval_strategy", "no", "--save_total_limit", "3",
                                                 "--per_device_eval_batch_size", "4"))
    assert "Resuming from" in capsys.readouterr().out and final["total_steps"] == 2
    assert "logging_steps: 7" in (run_dir / "config.yaml").read_text()  # config.yaml says what this launch used


def test_a_moved_data_folder_is_said_and_resumed(run_dir, tiny_images, tiny_model, tmp_path, capsys):
    moved = Path(shutil.copytree(tiny_images, tmp_path / "moved"))
    with pytest.warns(UserWarning, match=f"with data_dir {tiny_images} -> {moved}"):
        final = main(ImageTask, ImageArguments, argv(run_dir, moved, tiny_model, "--eval_crop_pct", "0.9"))
    assert final["total_steps"] == 2  # eval_crop_pct changes only the evaluation: not even said


def test_a_marker_of_an_older_fastft_checks_only_what_it_recorded(run_dir, tiny_images, tiny_model, capsys):
    marker = run_dir / "checkpoint-2" / "fastft_state.json"
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "recipe"}))
    capsys.readouterr()
    final = main(ImageTask, ImageArguments, argv(run_dir, tiny_images, tiny_model, "--seed", "1"))
    assert "Resuming from" in capsys.readouterr().out and final["total_steps"] == 2


def test_resume_with_ema_is_bit_exact_and_saves_no_pickle(tmp_path, tiny_images, tiny_model):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ema = ["--model_ema", "true", "--model_ema_decay", "0.9", "--max_steps", "4", "--save_total_limit", "5"]
    main(ImageTask, ImageArguments, image_argv(straight, tiny_images, tiny_model, *ema, "--checkpointing_steps", "4"))
    args = image_argv(resumed, tiny_images, tiny_model, *ema, "--checkpointing_steps", "2")
    main(ImageTask, ImageArguments, args)
    shutil.rmtree(resumed / "checkpoint-4")  # as if the run died after step 2
    for name in ("metrics.json", "model.safetensors"):
        (resumed / name).unlink()
    main(ImageTask, ImageArguments, args)
    assert not list(resumed.rglob("custom_checkpoint_*"))
    for name in ("model.safetensors", "checkpoint-4/ema.safetensors", "checkpoint-4/model.safetensors"):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, b = (json.loads((d / "checkpoint-4" / "fastft_state.json").read_text()) for d in (straight, resumed))
    assert a["scheduler"] == b["scheduler"] == {"step_count": 4}
    assert {k: v for k, v in a.items() if k != "elapsed_s"} == {k: v for k, v in b.items() if k != "elapsed_s"}
    rates = [[json.loads(line)["learning_rate"] for line in (d / "train_log.jsonl").read_text().splitlines()]
             for d in (straight, resumed)]
    assert rates[0] == rates[1]


def test_train_state_accepts_only_its_fields_well_typed():
    good = TrainState(step=3, elapsed_s=1.5).state_dict()
    state = TrainState()
    state.load_state_dict({**good, "elapsed_s": 2})
    assert state.step == 3 and isinstance(state.elapsed_s, float)
    for bad, says in [({**good, "code": "x"}, "unknown code"), ({**good, "step": 1.0}, "step must be a whole"),
                      ({**good, "best_metric": "0.9"}, "best_metric must be a number or null"),
                      ({**good, "step": None}, "step must be"), ({**good, "skipped_steps": False}, "skipped_steps")]:
        with pytest.raises(ValueError, match=says):
            TrainState().load_state_dict(bad)
    untouched = TrainState()
    with pytest.raises(ValueError):
        untouched.load_state_dict({**good, "step": 9, "epoch": "1"})
    assert untouched == TrainState()  # nothing set from a state that fails
