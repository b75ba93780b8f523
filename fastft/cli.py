"""The ``fastft`` command: ``train``, ``eval``, ``predict``, ``push``, ``ablate`` and ``recipes``.

Arguments are parsed before torch is imported, so ``--help`` and a typo answer at once.
``accelerate launch -m fastft train ...`` runs it on several processes; the scripts in
``scripts/`` call ``train_task`` and keep working as they did.
"""
from __future__ import annotations

import difflib
import importlib
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from fastft.errors import UserError, exit_on_user_error

# task name -> (the fields its recipes parse as, what makes its Task from (task fields, training fields), the
# script that trains it). Speech's maker picks the Task of the recipe's task (fastft.tasks.speech.SPEECH_TASKS).
TASKS: dict[str, tuple[str, str, str]] = {
    "image": ("fastft.task_fields:ImageArguments", "fastft.tasks.image:ImageTask", "scripts/train_image.py"),
    "translation": ("fastft.task_fields:TranslationArguments", "fastft.tasks.translation:TranslationTask",
                    "scripts/train_translation.py"),
    "speech": ("fastft.task_fields:SpeechArguments", "fastft.tasks.speech:speech_task", "scripts/train_speech.py"),
}

USAGE = """usage: fastft COMMAND ...

commands:
  train TASK --config RECIPE [--FIELD VALUE ...]   fine-tune (TASK: image, translation or speech)
  eval MODEL [--config RECIPE] [--FIELD VALUE ...]  evaluate a saved model on the recipe's eval split
  predict MODEL FILES... [--top_k K] [--json]       run a saved model on images, audio or a text file
  push OUTPUT_DIR [--hub_model_id ID]               push a finished run to the Hugging Face Hub
  ablate TASK --config RECIPE [--seeds N] ...       time to the recipe's target without each of its tricks
  recipes [TASK]                                    list the shipped recipes

RECIPE is a YAML path or a shipped recipe's name (quickstart); `fastft COMMAND --help` lists the fields.
Several processes: accelerate launch -m fastft train TASK --config RECIPE"""


def _load(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def task_fields(task: str) -> type:
    """The dataclass of a task's own recipe fields (importing no torch)."""
    return _load(TASKS[_task_name(task)][0])


def task_factory(task: str) -> Callable[..., Any]:
    """What makes a task's Task from (task fields, training fields): its class, or speech's ``speech_task``;
    importing its heavy modules."""
    return _load(TASKS[_task_name(task)][1])


def _task_name(task: Optional[str]) -> str:
    if task not in TASKS:
        close = difflib.get_close_matches(str(task), TASKS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UserError(f"task {task!r} is not one of {', '.join(TASKS)}{hint}")
    return task


def train_task(task: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> Optional[dict]:
    """``fastft train TASK ...`` and ``scripts/train_TASK.py ...``: parse, then (and only then) import torch."""

    def run() -> Optional[dict]:
        from fastft.arguments import parse_args
        from fastft.config import TrainingArguments

        task_args, args = parse_args([task_fields(task), TrainingArguments], argv, prog=prog or f"fastft train {task}",
                                     task=task)
        from fastft.run import run as run_task

        return run_task(task_factory(task), task_args, args)

    return exit_on_user_error(run)()


def _train(argv: list[str]) -> Optional[dict]:
    if not argv or argv[0].startswith("-"):
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: fastft train TASK --config RECIPE [--FIELD VALUE ...]\n\nTASK: {', '.join(TASKS)}; "
                  f"`fastft train TASK --help` lists its fields.")
            return None
        return exit_on_user_error(_raise)(f"fastft train needs a task first: fastft train "
                                          f"{'|'.join(TASKS)} --config RECIPE")
    if argv[0] not in TASKS:
        return exit_on_user_error(_task_name)(argv[0])
    return train_task(argv[0], argv[1:])


def _raise(message: str) -> None:
    raise UserError(message)


def _recipes(argv: list[str]) -> list[str]:
    """One line per shipped recipe: its --config name and the first sentence of its header comment."""
    from fastft.arguments import RECIPES, shipped_recipes

    task = argv[0] if argv else None
    if task is not None and task not in TASKS:
        exit_on_user_error(_task_name)(task)
    paths = shipped_recipes(task)
    width = max(len(f"{p.parent.name}/{p.stem}") for p in paths)
    lines = []
    for path in paths:
        header = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        # the first sentence: a period before a capital, not the one of "et al. 2017"
        summary = re.split(r"(?<! al)\. (?=[A-Z])", " ".join(header))[0].rstrip(".")
        if len(summary) > 100:
            summary = summary[:99].rsplit(" ", 1)[0] + " ..."
        lines.append(f"{f'{path.parent.name}/{path.stem}':<{width}}  {summary}")
    print("\n".join(lines))
    print(f"\nUse: fastft train TASK --config NAME (e.g. fastft train image --config quickstart); files in {RECIPES}")
    return lines


def main() -> None:
    """The ``fastft`` console command (it returns nothing: a console script exits with what main returns)."""
    run_command()


def run_command(argv: Optional[Sequence[str]] = None) -> Any:
    """Run one ``fastft`` command line; returns what the command made (metrics, rows, lines) for tests."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return None
    command, rest = argv[0], argv[1:]
    if command == "train":
        return _train(rest)
    if command == "eval":
        from fastft.evaluation import main as evaluate_main

        return evaluate_main(rest)
    if command == "predict":
        from fastft.predict import main as predict_main

        return predict_main(rest)
    if command == "push":
        from fastft.push_to_hub import main as push_main

        return push_main(rest, prog="fastft push")
    if command == "ablate":
        from fastft.ablate import main as ablate_main

        return ablate_main(rest)
    if command == "recipes":
        return _recipes(rest)
    commands = ["train", "eval", "predict", "push", "ablate", "recipes"]
    close = difflib.get_close_matches(command, commands, n=1)
    return exit_on_user_error(_raise)(f"unknown command {command!r}" + (f"; did you mean {close[0]}?" if close else
                                                                         f"; use {', '.join(commands[:-1])} or recipes"))


def script_main(task: str) -> None:
    """What ``scripts/train_TASK.py`` runs."""
    train_task(task, prog=Path(sys.argv[0]).name)
