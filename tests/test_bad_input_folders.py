"""Mistakes about folders, the Hub and signals: one line, exit 2 (or 130/143), and no file fastft did not write
is touched. Warnings for what is legal but likely unintended."""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from conftest import image_argv
from hub_server import fake_hub, make_fake_hub  # noqa: F401  (fixtures)
from test_bad_input import snapshot

from fastft.run import main
from fastft.push_to_hub import main as push_main
from fastft.tasks.image import ImageArguments, ImageTask


def one_error_line(capsys) -> str:
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return line


def _model_folder(tmp: Path, images: Path, model: Path) -> Path:
    """The model a user fine-tunes from, given as output_dir too."""
    folder = tmp / "model"
    shutil.copytree(model, folder)
    return folder


def _foreign(tmp: Path, images: Path, model: Path) -> Path:
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    return folder


# (case id, function (tmp, images, model) -> output_dir that must stay as it was, extra flags, the line's parts)
FOLDERS = [
    ("output_dir is the model folder", _model_folder, [], ["did not write", "config.json", "model.safetensors"]),
    ("output_dir is the model folder, overwrite", _model_folder, ["--overwrite_output_dir", "true"],
     ["did not write", "not even with overwrite_output_dir"]),
    ("output_dir holds someone's files", _foreign, [], ["did not write", "notes.txt"]),
    ("output_dir is the data folder", lambda tmp, images, model: images, [], ["did not write", "test, train"]),
]


@pytest.mark.parametrize("case, make, extra, expected", FOLDERS, ids=[c[0] for c in FOLDERS])
def test_a_folder_fastft_did_not_write_is_never_written_over(case, make, extra, expected, tmp_path, tiny_images,
                                                             tiny_model, capsys):
    out = make(tmp_path, tiny_images, tiny_model)
    model = tmp_path / "model" if make is _model_folder else tiny_model
    before = snapshot(out)
    with pytest.raises(SystemExit) as exit_:
        main(ImageTask, ImageArguments, image_argv(out, tiny_images, model, "--max_steps", "2", *extra))
    assert exit_.value.code == 2
    line = one_error_line(capsys)
    assert all(part in line for part in expected), line
    assert snapshot(out) == before


@pytest.mark.parametrize("out, expected", [
    ("/sys/fastft-read-only/run", ["not writable", "/sys"]),  # sysfs refuses new folders, even to root
    ("{images}/train/red/0.png/run", ["cannot be made", "0.png is a file"]),
    ("{images}/train/red/0.png", ["exists and is not a folder"]),
], ids=["read-only location", "below a file", "a file"])
def test_an_output_dir_that_cannot_be_written_fails_before_training(out, expected, tmp_path, tiny_images,
                                                                    tiny_model, capsys):
    out = Path(out.format(images=tiny_images))
    before = snapshot(tiny_images)
    with pytest.raises(SystemExit) as exit_:
        main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--max_steps", "2"))
    assert exit_.value.code == 2
    line = one_error_line(capsys)
    assert all(part in line for part in expected), line
    assert snapshot(tiny_images) == before and not Path("/sys/fastft-read-only").exists()


def test_lr_find_refuses_a_foreign_folder_and_its_own_folder_can_then_train(tmp_path, tiny_images, tiny_model,
                                                                          capsys):
    foreign = _foreign(tmp_path, tiny_images, tiny_model)
    with pytest.raises(SystemExit):
        main(ImageTask, ImageArguments, image_argv(foreign, tiny_images, tiny_model, "--lr_find", "--lr_find_steps", "5"))
    assert "notes.txt" in one_error_line(capsys) and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    out = tmp_path / "sweep_then_train"
    main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--lr_find", "--lr_find_steps", "5"))
    final = main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--max_steps", "2"))
    assert final["total_steps"] == 2 and (out / "lr_find.json").is_file()


def test_a_fastft_run_folder_with_a_users_extra_file_is_resumed_and_the_file_kept(tmp_path, tiny_images,
                                                                                 tiny_model):
    out = tmp_path / "run"
    main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--max_steps", "2"))
    (out / "my_notes.txt").write_text("mine")
    main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--max_steps", "2",
                                               "--overwrite_output_dir", "true"))
    assert (out / "my_notes.txt").read_text() == "mine"


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stop_signal_while_loading_exits_with_one_line_and_touches_nothing(signum, code, name, tmp_path,
                                                                            tiny_images, tiny_model, monkeypatch,
                                                                            capsys):
    def interrupted(self):
        signal.raise_signal(signum)  # as a user's Ctrl-C or a scheduler's preemption would, mid-load
        raise AssertionError("the signal should have stopped the run")

    monkeypatch.setattr(ImageTask, "load_data", interrupted)
    out, handler = tmp_path / "run", signal.getsignal(signal.SIGTERM)
    # Python's own Ctrl-C handler, as in a terminal: a process started in the background of a
    # non-interactive shell inherits SIGINT ignored, and then no Ctrl-C could reach it at all.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as exit_:
            main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exit_.value.code == code
    line = one_error_line(capsys)
    assert f"stopped by {name} outside the training loop" in line
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) is handler  # put back for whoever called main


@pytest.mark.parametrize("extra, warning", [
    (["--freeze_epochs", "2", "--num_train_epochs", "2"], "freeze_epochs \\(2\\) covers the whole run"),
    (["--eval_split", "train"], "the eval split is the training split \\(train\\)"),
], ids=["freeze covers the run", "eval on the training split"])
def test_legal_but_likely_unintended_settings_warn_and_train(extra, warning, tmp_path, tiny_images, tiny_model):
    with pytest.warns(UserWarning, match=warning):
        final = main(ImageTask, ImageArguments, image_argv(tmp_path / "run", tiny_images, tiny_model, *extra))
    assert final["total_steps"] > 0


def test_eval_classes_that_training_never_saw_are_named(tmp_path, tiny_images, tiny_model):
    data = tmp_path / "data"
    shutil.copytree(tiny_images, data)
    shutil.rmtree(data / "train" / "blue")
    with pytest.warns(UserWarning, match="7 evaluation images are of classes no training image has \\(blue\\)"):
        main(ImageTask, ImageArguments, image_argv(tmp_path / "run", data, tiny_model, "--max_steps", "2"))


@pytest.fixture
def finished_run(tmp_path, tiny_images, tiny_model) -> Path:
    out = tmp_path / "finished"
    main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--max_steps", "2"))
    return out


@pytest.mark.parametrize("argv, expected", [
    (["{run}", "--hub_modle_id", "alice/x"], ["'--hub_modle_id'", "did you mean 'hub_model_id'"]),
    (["{run}", "--hub_token", "hf_abc"], ["'hub_token'", "HF_TOKEN"]),
    (["{run}", "{run}"], ["flags look like --field value"]),
    (["{run}/nope"], ["nope is not a folder"]),
    (["{run}", "--damage"], ["config.yaml is damaged"]),
    ([], ["required: output_dir"]),
], ids=["misspelt flag", "token flag", "two folders", "missing folder", "damaged config.yaml", "no folder"])
def test_push_command_mistakes(argv, expected, finished_run, capsys):
    if "--damage" in argv:
        argv.remove("--damage")
        (finished_run / "config.yaml").write_text("hub_model_id: [unclosed\n")
    before = snapshot(finished_run)
    with pytest.raises(SystemExit) as exit_:
        push_main([a.format(run=finished_run) for a in argv])
    assert exit_.value.code == 2
    line = one_error_line(capsys)
    assert all(part in line for part in expected), line
    assert snapshot(finished_run) == before


def test_a_derived_hub_name_is_not_blamed_on_hub_model_id(tmp_path, tiny_images, tiny_model, fake_hub, capsys):
    out = tmp_path / "my run!"
    with pytest.raises(SystemExit):
        main(ImageTask, ImageArguments, image_argv(out, tiny_images, tiny_model, "--push_to_hub"))
    line = one_error_line(capsys)
    assert "derived from output_dir ('alice/my run!')" in line and "set hub_model_id" in line
    assert not out.exists() and not fake_hub.repos
