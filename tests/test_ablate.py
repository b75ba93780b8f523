"""``fastft ablate``: the recipe against itself without each trick it turns on, by time to its target."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from fastft import comparison
from fastft.ablate import RECIPE, ablate, configurations, flags, markdown
from fastft.arguments import shipped_recipes
from fastft.errors import UserError
from fastft.tricks import TRICKS


def test_the_image_quickstart_is_ablated_trick_by_trick_with_valid_recipes():
    recipe = REPO / "fastft/recipes/image/quickstart.yaml"
    runs, kept, args = configurations("image", recipe, [], [])
    assert runs[0] == (RECIPE, {})
    assert dict(runs[1:]) == {
        "without LR scaled with the global batch": {"reference_batch_size": None},
        "without label smoothing": {"label_smoothing_factor": 0.0},
        "without zero-initialised new head": {"zero_init_head": False},
        "without exponential moving average of the weights": {"model_ema": False},
        "without channels_last memory format": {"channels_last": False}}
    assert kept == [] and args.target_metric == "eval_accuracy" and args.target_value == 0.85


def test_lp_ft_with_a_restarted_schedule_is_ablated_phase_by_phase():
    """Without the head-only epochs nothing is left to cache or restart; without the restart the probe and
    the fine-tuning share one schedule; each is a valid recipe."""
    lp_ft = ["--freeze_epochs", "1", "--num_train_epochs", "2", "--cache_frozen_features", "true",
             "--restart_schedule_at_unfreeze", "true", "--warmup_steps", "0.1"]
    runs, _, _ = configurations("image", REPO / "fastft/recipes/image/quickstart.yaml", lp_ft, [])
    ablated = dict(runs[1:])
    assert ablated["without head-only epochs before unfreezing"] == {
        "freeze_epochs": 0, "cache_frozen_features": False, "restart_schedule_at_unfreeze": False}
    assert ablated["without LR schedule restarted at the unfreezing"] == {"restart_schedule_at_unfreeze": False}
    assert ablated["without head-only epochs as a linear probe on features computed once (LP-FT)"] == {
        "cache_frozen_features": False}


@pytest.mark.parametrize("recipe", shipped_recipes(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_recipe_minus_each_of_its_tricks_is_a_valid_recipe(recipe):
    """A trick's off values must make a recipe that parses, passes the cross-field checks and has the trick
    off (configurations asserts it): else an ablation would fail hours in, or measure nothing."""
    task = recipe.parent.name
    fields = yaml.safe_load(recipe.read_text())
    extra = [] if "target_metric" in fields else ["--target_metric", "eval_loss", "--target_value", "1.0"]
    if fields.get("eval_strategy", "no") == "no":
        extra += ["--eval_strategy", "epoch"]
    try:
        runs, _, _ = configurations(task, recipe, extra, [])
    except UserError as err:
        assert "turns on no trick that can be ablated" in str(err)
        return
    assert len({tuple(flags(sets)) for _, sets in runs}) == len(runs)


def test_the_off_values_of_every_trick_turn_it_off():
    for trick in TRICKS:
        if trick.off is not None:
            assert not trick.on(dict(trick.off)), trick.name


def test_the_verdict_counts_a_trick_only_where_every_seed_agrees_and_a_few_percent_as_a_tie():
    def reached(seconds):  # one seed's evaluations: reaching accuracy 0.9 after these training seconds
        return [{"step": 10, "elapsed_s": seconds, "eval_accuracy": 0.9}] if seconds else [
            {"step": 10, "elapsed_s": 100.0, "eval_accuracy": 0.5}]

    def row(name, *seconds):
        return {**comparison.summarise(name, [reached(s) for s in seconds], 0.9, "eval_accuracy"), "sets": {}}

    results = [row(RECIPE, 50.0, 50.0, 50.0), row("a", 60.0, 70.0, 55.0), row("b", 40.0, 45.0, 49.9),
               row("c", 40.0, 60.0, 50.0), row("d", 56.0, 45.0, 51.0), row("e", 60.0, None, 50.5),
               row("f", 40.0, 49.0, 50.5)]
    meta = {"recipe": "r", "task": "image", "metric": "eval_accuracy", "higher": True, "target": 0.9,
            "seeds": "0-2", "host": "h", "date": "d", "command": "c", "kept": []}
    verdicts = {line.split(" | ")[0][2:]: line.rstrip(" |").rsplit(" | ", 1)[1]
                for line in markdown(results, meta).splitlines() if line.startswith("| ") and "---" not in line}
    assert verdicts["a"] == "shortens the time on every seed"  # without it, every seed is slower
    assert verdicts["b"] == "lengthens the time on 2 seed(s) of 3, within 3 % on the others"  # 49.9 against 50
    assert verdicts["c"] == "no effect beyond the seeds' spread"
    assert verdicts["d"] == "no effect beyond the seeds' spread"
    assert verdicts["e"] == "shortens the time on 2 seed(s) of 3, within 3 % on the others"  # never = slowest
    assert verdicts["f"] == "lengthens the time on 1 seed(s) of 3, within 3 % on the others"


@pytest.mark.parametrize("argv, says", [
    (["image", "--config", "quickstart", "--tricks", "mixup_alpha"], "does not turn that trick on"),
    (["image", "--config", "quickstart", "--tricks", "model_emma"], "did you mean 'model_ema'"),
    (["image", "--config", "quickstart", "--target_metric", "none", "--target_value", "none"],
     "needs target_metric, target_value"),
    (["image", "--config", "quickstart", "--lr_find", "true"], "drop --lr_find"),
    (["--config", "quickstart"], "fastft ablate needs a task first"),
    (["image", "--config", "quickstart", "--seeds", "0"], "--seeds, --workers and --threads must be 1 or more"),
    (["image", "--config", "quickstart", "--learning_rat", "1"], "did you mean 'learning_rate'"),
])
def test_a_mistake_is_one_line_before_anything_runs(argv, says, tmp_path):
    with pytest.raises(UserError, match=says):
        ablate([*argv, "--output_dir", str(tmp_path / "ablation")])
    assert not (tmp_path / "ablation").exists()


def test_a_shipped_recipe_path_names_its_task(tmp_path):
    """`fastft ablate --config recipes/image/quickstart.yaml` needs no TASK: the recipe's folder says it."""
    with pytest.raises(UserError, match="holds files that fastft ablate did not write"):
        (tmp_path / "mine.txt").write_text("keep me")
        ablate(["--config", str(REPO / "recipes/image/quickstart.yaml"), "--output_dir", str(tmp_path)])
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def tiny_recipe(tmp_path, tiny_images, tiny_model, **fields) -> str:
    recipe = {"model_name_or_path": str(tiny_model), "dataset_name": "imagefolder", "data_dir": str(tiny_images),
              "output_dir": str(tmp_path / "run"), "image_size": 32, "per_device_train_batch_size": 8,
              "per_device_eval_batch_size": 32, "learning_rate": 0.01, "num_train_epochs": 2, "eval_strategy": "steps",
              "eval_steps": 2, "logging_steps": 1, "label_smoothing_factor": 0.1, "channels_last": True,
              "zero_init_head": False, "target_metric": "eval_accuracy", "target_value": 0.6, "seed": 3, **fields}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_a_failed_run_stops_the_ablation_with_its_error_line(tmp_path, tiny_images, tiny_model):
    config = tiny_recipe(tmp_path, tiny_images / "nowhere", tiny_model)
    with pytest.raises(UserError) as err:
        ablate(["image", "--config", config, "--seeds", "1"])  # threads as the environment says
    message = str(err.value)
    assert "the run 'the recipe', seed 3, failed: error: " in message and "nowhere" in message
    assert not (tmp_path / "run-ablate").exists()  # nothing half-written


@pytest.mark.slow
def test_ablation_trains_each_configuration_on_the_same_seeds_and_pairs_them(tmp_path, tiny_images, tiny_model):
    config = tiny_recipe(tmp_path, tiny_images, tiny_model)
    out = tmp_path / "ablation"
    cmd = [sys.executable, "-m", "fastft", "ablate", "image", "--config", config, "--seeds", "2", "--workers", "2",
           "--threads", "1", "--output_dir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    names = [RECIPE, "without label smoothing", "without channels_last memory format"]
    assert f"3 configurations x 2 seeds ({', '.join(names)})" in done.stdout
    saved = json.loads((out / "ablation.json").read_text())
    assert [r["config"] for r in saved["results"]] == names
    assert saved["meta"]["seeds"] == "3-4" and saved["meta"]["metric"] == "eval_accuracy"
    for r, folder in zip(saved["results"], ["the-recipe", "without-label-smoothing",
                                            "without-channels-last-memory-format"]):
        for i, seed in enumerate((3, 4)):
            rows = [json.loads(line) for line in (out / "runs" / folder / f"seed-{seed}.jsonl").read_text().splitlines()]
            # the figures come from the runs' own evaluations, each stopped at its first one at the target
            assert r["times_s"][i] == comparison.time_to_target(rows, 0.6, "eval_accuracy")
            assert r["finals"][i] == rows[-1]["eval_accuracy"]
            if r["times_s"][i] is not None:
                assert rows[-1]["eval_accuracy"] >= 0.6 and all(row["eval_accuracy"] < 0.6 for row in rows[:-1])
            resolved = yaml.safe_load((out / "runs" / folder / f"seed-{seed}.config.yaml").read_text())
            assert resolved["seed"] == seed and resolved["stop_at_target"] is True
            assert resolved["push_to_hub"] is False
            assert resolved["label_smoothing_factor"] == (0.0 if "smoothing" in folder else 0.1)
            assert resolved["channels_last"] is ("channels" not in folder)
    table = (out / "ablation.md").read_text()
    assert "| without label smoothing | `--label_smoothing_factor 0.0` | " in table
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob("*.safetensors"))  # figures, not models
    # Asked again, the ablation is refused rather than replaced; with --overwrite_output_dir it is replaced.
    before = (out / "ablation.json").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 2 and "holds an ablation already" in again.stderr
    assert (out / "ablation.json").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize("stop, code, name", [("group", 130, "Ctrl-C"), ("parent", 143, "SIGTERM")])
def test_a_stop_signal_ends_every_run_and_leaves_the_folder_as_it_was(stop, code, name, tmp_path, tiny_images,
                                                                      tiny_model):
    """Ctrl-C reaches the whole foreground group; a SIGTERM (a scheduler's) reaches fastft ablate alone, which
    then ends its runs itself."""
    import os
    import signal
    import time

    config = tiny_recipe(tmp_path, tiny_images, tiny_model, num_train_epochs=50, target_metric="eval_loss",
                         target_value=0.0)  # never reached: the runs go on until stopped
    out = tmp_path / "ablation"
    # as from a terminal: a suite started in the background would hand its children SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "fastft", "ablate", "image", "--config", config, "--seeds", "1",
                             "--workers", "2", "--threads", "1", "--output_dir", str(out)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().startswith("fastft ablate: 3 configurations x 1 seeds")
    time.sleep(8)  # the runs are training
    if stop == "group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert err.strip().splitlines()[-1] == f"error: stopped by {name}; the runs ended and {out} is as it was"
    assert not out.exists()
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", config], capture_output=True, text=True).stdout.split()
    assert not left, "a run outlived fastft ablate"
