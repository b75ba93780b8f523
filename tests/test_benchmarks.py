"""The benchmarks' bookkeeping: what they report must mean what RESULTS.md says (no timing here)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("time_to_accuracy", REPO / "benchmarks" / "time_to_accuracy.py")
tta = importlib.util.module_from_spec(spec)
sys.modules["time_to_accuracy"] = tta  # its dataclass looks its module up there
spec.loader.exec_module(tta)


def rows(*points):
    return [{"step": s, "elapsed_s": e, "eval_runtime_s": r, "eval_accuracy": acc} for s, e, r, acc in points]


def test_time_to_target_is_training_time_without_the_evaluations():
    # Three evaluations of 5 s each; the target is reached at the second: 40 s elapsed, 10 s of it evaluating.
    log = rows((10, 20.0, 5.0, 0.70), (20, 40.0, 5.0, 0.86), (30, 60.0, 5.0, 0.90))
    assert tta.time_to_target(log, 0.85, "eval_accuracy") == 30.0
    assert tta.steps_to_target(log, 0.85, "eval_accuracy") == 20
    assert tta.time_to_target(log, 0.95, "eval_accuracy") is None


def test_a_seed_that_never_reaches_the_target_counts_against_the_median():
    reach = rows((10, 20.0, 0.0, 0.9))
    never = rows((10, 20.0, 0.0, 0.5))
    two_of_three = tta.summarise("x", 1e-3, [reach, reach, never], 0.85, "eval_accuracy")
    assert (two_of_three["reached"], two_of_three["median_s"], two_of_three["max_s"]) == (2, 20.0, 20.0)
    one_of_three = tta.summarise("y", 1e-3, [reach, never, never], 0.85, "eval_accuracy")
    assert one_of_three["median_s"] == float("inf")
    table = tta.markdown([two_of_three | {"config": "baseline"}, one_of_three],
                         {"metric": "eval_accuracy", "eval_data": "images", "target": 0.85, "eval_samples": 10,
                          "train_samples": 10, "epochs": 1, "batch": 64, "image_size": 64, "threads": 1, "workers": 1,
                          "seeds": 3, "machine": "m", "date": "d"})
    assert "| baseline | 0.001 | 2/3 | 20 | 20-20 | 1.00x | 10 |" in table and "| y | 0.001 | 1/3 | never |" in table


@pytest.mark.parametrize("task", ["image", "translation"])
def test_every_benchmark_configuration_is_a_valid_recipe(task, capsys):
    """Each configuration's flags parse as fields of the task's script (a typo would waste a long run)."""
    from fastft.engine import main
    from fastft.tasks.image import ImageArguments, ImageTask
    from fastft.tasks.translation import TranslationArguments, TranslationTask

    bench = tta.BENCHES[task]
    task_cls, args_cls = {"image": (ImageTask, ImageArguments), "translation": (TranslationTask, TranslationArguments)}[task]
    for extra in [bench.no_trainer + flags for flags in bench.tricks.values()] + [bench.recommended]:
        argv = [*bench.common, *extra, "--learning_rate", "1e-3", "--num_train_epochs", "1", "--eval_steps", "5",
                "--max_train_samples", "1024", "--output_dir", "unused", "--dry_run"]
        assert main(task_cls, args_cls, argv) is None, extra
    assert "global batch" in capsys.readouterr().out
