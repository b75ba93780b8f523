"""The notebook API: ``fastft.train("image", config="quickstart", learning_rate=1e-3)`` and ``fastft.evaluate``.

The same fields, checks and engine as the command; a mistake raises ``UserError``
(one line, no exit), so a notebook cell shows it and the kernel lives on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def _args(task: str, config: Optional[str], fields: dict[str, Any]) -> tuple[Any, Any]:
    from fastft.cli import task_fields
    from fastft.arguments import ALIASES, all_fields, build_args, load_recipe, map_aliases, resolve_recipe, \
        unknown_field
    from fastft.config import TrainingArguments, coerce

    classes = [task_fields(task), TrainingArguments]
    known = all_fields(classes)
    where = "the keyword arguments"
    for key in fields:
        if key not in known and key not in ALIASES:
            raise unknown_field(key, where, list(known))
    overrides = {k: coerce(k, v, known[k].type, where) for k, v in fields.items() if k in known}
    overrides.update(map_aliases({k: v for k, v in fields.items() if k in ALIASES}, overrides, where))
    recipe = resolve_recipe(config, task) if config else None
    return tuple(build_args(classes, load_recipe(recipe, known) if recipe else {}, overrides, str(recipe), where))


def train(task: str, config: Optional[str] = None, **fields: Any) -> Optional[dict[str, Any]]:
    """Train ``task`` (image, translation or speech) from a recipe (path or shipped name) and/or fields;
    return the final metrics (metrics.json), or None for a dry run."""
    from fastft.cli import task_factory
    from fastft.run import run as run_task

    task_args, args = _args(task, config, fields)
    return run_task(task_factory(task), task_args, args)


def evaluate(model: str, task: str, config: Optional[str] = None, **fields: Any) -> dict[str, Any]:
    """Evaluate a saved model (fastft output_dir, folder or Hub id) on a recipe's eval split; return
    eval_metrics.json's content. A fastft output_dir needs no ``config``: its config.yaml is used."""
    from fastft import reporting
    from fastft.evaluation import evaluate_model

    run = Path(model).expanduser()
    is_run = reporting.written_by_fastft(run)
    if config is None and is_run:
        config = str(run / reporting.CONFIG)
    task_args, args = _args(task, config, fields)
    out = Path(fields["output_dir"]) if "output_dir" in fields else run if is_run else Path(args.output_dir)
    return evaluate_model(task, model, task_args, args, out)
