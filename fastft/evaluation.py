"""``fastft eval MODEL [--config RECIPE]``: a saved model on the recipe's eval split, without training.

MODEL is a finished fastft output_dir (its config.yaml is then the default recipe),
any local model folder or a Hub id. The evaluation is the training loop's own
(``fastft.engine.evaluate``): the same preprocessing, metrics and, launched on several
processes, the same sharding without duplicate samples. The metrics go to
``eval_metrics.json`` in ``--output_dir``, else in MODEL when it is a fastft run,
else in the recipe's output_dir.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from fastft import reporting
from fastft.errors import UserError, exit_on_user_error

EVAL_FILE = "eval_metrics.json"
# Fields of a training recipe that would build another model than MODEL.
_MODEL_SOURCES = ("encoder_name_or_path", "decoder_name_or_path")


def task_of_recipe(recipe: Path) -> str:
    """Which task a recipe is for: its shipped folder, else the only task whose fields hold all its keys."""
    import yaml

    from fastft.cli import TASKS, task_fields
    from fastft.arguments import ALIASES, RECIPES
    from fastft.config import TrainingArguments

    if recipe.resolve().parent.parent == RECIPES.resolve() and recipe.resolve().parent.name in TASKS:
        return recipe.resolve().parent.name
    try:
        keys = set(yaml.safe_load(recipe.read_text(encoding="utf-8")) or {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError):
        keys = set()  # the recipe loader says what is wrong with it, once the task is known
    common = {f.name for f in dataclasses.fields(TrainingArguments)} | set(ALIASES)
    fits = [t for t in TASKS if keys - common <= {f.name for f in dataclasses.fields(task_fields(t))}]
    if len(fits) == 1:
        return fits[0]
    raise UserError(f"cannot tell the task of recipe {recipe} ({'its fields fit ' + ', '.join(fits) if fits else 'no task has all its fields'}); "
                    f"name it first: fastft eval {'|'.join(TASKS)} MODEL --config {recipe}")


def _split_argv(argv: list[str]) -> tuple[Optional[str], Optional[str], list[str]]:
    """(task or None, MODEL, the recipe flags) from ``[TASK] MODEL [--FIELD VALUE ...]``."""
    from fastft.cli import TASKS

    positional = []
    while argv and not argv[0].startswith("-") and len(positional) < 2:
        positional.append(argv.pop(0))
    task = positional.pop(0) if len(positional) == 2 and positional[0] in TASKS else None
    if len(positional) != 1:
        raise UserError("fastft eval takes one MODEL: a fastft output_dir, a model folder or a Hub id, then "
                        "[--config RECIPE] [--FIELD VALUE ...]" + (f"; got {' '.join(positional)}" if positional else ""))
    return task, positional[0], argv


def _config_flag(argv: list[str]) -> Optional[str]:
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--config="):
            return token.split("=", 1)[1]
    return None


def parse(argv: Sequence[str]) -> tuple[str, str, Any, Any, Path]:
    """(task, MODEL, task fields, training fields, where eval_metrics.json goes) of an eval command line."""
    from fastft.cli import task_fields
    from fastft.arguments import parse_args, resolve_recipe
    from fastft.config import TrainingArguments

    argv = list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0].strip("`\n") + "\n\nusage: fastft eval [TASK] MODEL [--config RECIPE] "
              "[--FIELD VALUE ...]; `fastft eval TASK MODEL --help` lists the fields.")
        raise SystemExit(0)
    task, model, flags = _split_argv(argv)
    run_folder = Path(model).expanduser()
    is_run = reporting.written_by_fastft(run_folder)
    config = _config_flag(flags)
    if config is None:
        if not is_run:
            raise UserError(f"fastft eval {model}: give --config RECIPE (the recipe names the data and its eval "
                            f"split); only a fastft output_dir brings its own (config.yaml)")
        flags = ["--config", str(run_folder / reporting.CONFIG), *flags]
        config = str(run_folder / reporting.CONFIG)
    if task is None:
        task = task_of_recipe(resolve_recipe(config)) if Path(config).exists() or "/" in config else None
        if task is None:
            raise UserError(f"recipe name {config!r} needs its task: fastft eval image|translation|speech {model} "
                            f"--config {config}")
    explicit_out = any(f == "--output_dir" or f.startswith("--output_dir=") for f in flags)
    task_args, args = parse_args([task_fields(task), TrainingArguments], flags, prog=f"fastft eval {task} MODEL",
                                 task=task)
    out = Path(args.output_dir) if explicit_out or not is_run else run_folder
    if not args.output_dir and not is_run:
        raise UserError("fastft eval needs a folder for eval_metrics.json: pass --output_dir DIR")
    return task, model, task_args, args, out


def load_model(task: str, model: str, task_args: Any, args: Any) -> tuple[Any, Any, Any]:
    """The task with the recipe's data loaded, its eval split, and MODEL's network: MODEL's own weights, or
    an adapter (a folder, or a run saved with merge_lora: false) merged into its base model."""
    from fastft import lora
    from fastft.cli import task_factory

    adapter = lora.adapter_folder(model)
    changes: dict[str, Any] = {"model_name_or_path": lora.adapter_base(adapter) if adapter else model}
    changes.update({name: None for name in _MODEL_SOURCES if hasattr(task_args, name)})
    if hasattr(task_args, "pretrained"):
        changes["pretrained"] = True  # the recipe may train from scratch; evaluating means MODEL's weights
    the_task = task_factory(task)(dataclasses.replace(task_args, **changes), args)
    _, eval_set = the_task.load_data()
    network = the_task.build_model()
    if adapter:
        network = lora.load_adapter(network, adapter)
    _check_head(the_task, model)
    return the_task, network, eval_set


def evaluate_model(task: str, model: str, task_args: Any, args: Any, out: Path) -> dict[str, Any]:
    """Evaluate MODEL with the recipe's data and preprocessing; write and return eval_metrics.json's content."""
    from torch.utils.data import DataLoader

    from fastft import engine, launch, output_folder

    args = dataclasses.replace(args, report_to="none", output_dir=str(out), push_to_hub=False)
    output_folder.check(out)
    accelerator = launch.make_accelerator(args)
    the_task, network, eval_set = load_model(task, model, task_args, args)
    loader = DataLoader(eval_set, batch_size=args.per_device_eval_batch_size, collate_fn=the_task.collate,
                        num_workers=args.dataloader_num_workers)
    network, loader = accelerator.prepare(network, loader)
    started = time.perf_counter()
    metrics = engine.evaluate(accelerator, the_task, network, loader)
    result = {"model": model, "task": task, **metrics, "eval_runtime_s": round(time.perf_counter() - started, 3),
              "num_processes": accelerator.num_processes, "per_device_eval_batch_size": args.per_device_eval_batch_size}
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        reporting.write_json_atomic(out / EVAL_FILE, result)
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(f"{shown}\nWrote {out / EVAL_FILE}", flush=True)
    accelerator.end_training()
    return result


def _saved_labels(model: str) -> Optional[list[str]]:
    """The class names a local model folder was saved with (fastft/timm ``label_names``, transformers id2label)."""
    file = Path(model).expanduser() / "config.json"
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(config.get("label_names"), list):
        return [str(n) for n in config["label_names"]]
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return [str(id2label[k]) for k in sorted(id2label, key=int)]
    return None


def _check_head(task: Any, model: str) -> None:
    """A classifier evaluated on other classes than it was trained on would score a fresh head."""
    names = getattr(task, "label_names", None)
    saved = _saved_labels(model) if names is not None else None
    if saved is not None and saved != list(names):
        shown = lambda labels: ", ".join(labels[:6]) + (", ..." if len(labels) > 6 else "")  # noqa: E731
        raise UserError(f"model {model} was trained on the classes [{shown(saved)}] ({len(saved)}) and the "
                        f"recipe's data has [{shown(list(names))}] ({len(names)}); evaluate it on the data it "
                        f"was trained for")


def main(argv: Optional[Sequence[str]] = None) -> Optional[dict[str, Any]]:
    """``fastft eval``: errors as one line."""
    import sys

    return exit_on_user_error(lambda: evaluate_model(*parse(list(sys.argv[1:] if argv is None else argv))))()
