"""The model card (README.md) written into output_dir at the end of every run.

It is built only from files in output_dir (config.yaml, metrics.json, metrics.jsonl,
train_log.jsonl, plots/) plus what the task states about itself, and has the
sections of the card HF's Trainer writes (training hyperparameters, a training
results table, framework versions), so it reads like the cards users know.
"""
from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from fastft import reporting
from fastft.metrics import higher_is_better
from fastft.tricks import tricks_on

# (name on the card, distribution) as HF's Trainer lists them, plus the libraries fastft trains with
FRAMEWORKS = [("fastft", "fastft"), ("Transformers", "transformers"), ("Pytorch", "torch"), ("Datasets", "datasets"),
              ("Tokenizers", "tokenizers"), ("timm", "timm"), ("Accelerate", "accelerate")]
DISTRIBUTED = {"MULTI_GPU": "multi-GPU", "MULTI_CPU": "multi-CPU", "MULTI_XPU": "multi-XPU", "FSDP": "FSDP",
               "DEEPSPEED": "DeepSpeed", "MULTI_NPU": "multi-NPU", "MULTI_MLU": "multi-MLU"}
NOT_EVAL_METRICS = {"eval_loss", "eval_runtime_s", "eval_samples"}


def _is_hub_id(name: Any) -> bool:
    return isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~")) \
        and not Path(name).expanduser().exists()


def _derived(config_text: str) -> dict[str, Any]:
    """The commented 'Derived for this run' block of config.yaml (the plan: batches, steps, scaled LR)."""
    _, found, rest = config_text.partition("# Derived for this run:\n")
    if not found:
        return {}
    lines = [line.removeprefix("#   ") for line in rest.splitlines() if line.startswith("#   ")]
    return yaml.safe_load("\n".join(lines)) or {}


def base_license(base: Any) -> Optional[str]:
    """The license a local base checkpoint's own card states; None otherwise (never guessed)."""
    if not isinstance(base, str) or not (Path(base).expanduser() / "README.md").is_file():
        return None
    from huggingface_hub import metadata_load

    try:
        license_ = (metadata_load(Path(base).expanduser() / "README.md") or {}).get("license")
    except (ValueError, yaml.YAMLError, UnicodeDecodeError, OSError):
        return None
    return license_ if isinstance(license_, str) else None


def _optimizer(recipe: dict[str, Any]) -> str:
    name = recipe.get("optim", "adamw")
    try:
        import timm.optim

        info = timm.optim.get_optimizer_info(name)
        has_betas, has_eps, has_momentum = info.has_betas, info.has_eps, info.has_momentum
    except Exception:  # noqa: BLE001 - an optimizer timm no longer knows: name it alone
        has_betas = has_eps = has_momentum = False
    parts = ([f"betas=({recipe.get('adam_beta1')},{recipe.get('adam_beta2')})"] if has_betas else []) + \
            ([f"epsilon={recipe.get('adam_epsilon')}"] if has_eps else []) + \
            ([f"momentum={recipe.get('momentum')}"] if has_momentum else []) + \
            ([f"weight_decay={recipe.get('weight_decay')}"] if recipe.get("weight_decay") else [])
    return name + (f" with {' and '.join(parts)}" if parts else "")


def hyperparameters(recipe: dict[str, Any], derived: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """The HF Trainer card's "Training hyperparameters" bullets, from what this run really used."""
    processes = derived.get("num_processes") or metrics.get("num_processes") or 1
    per_device = derived.get("per_device_train_batch_size", recipe.get("per_device_train_batch_size"))
    accumulation = derived.get("gradient_accumulation_steps", recipe.get("gradient_accumulation_steps", 1))
    lr = derived.get("scaled_learning_rate", metrics.get("learning_rate", recipe.get("learning_rate")))
    stated = recipe.get("learning_rate")
    rows: list[tuple[str, Any]] = [("learning_rate", lr)]
    if isinstance(lr, float) and isinstance(stated, float) and lr != stated:  # scaled with the global batch
        rows[0] = ("learning_rate", f"{lr:g} (the recipe's {stated:g} at batch {recipe.get('reference_batch_size')}, "
                                    f"{recipe.get('lr_scaling')} scaling)")
    if stated == "auto" and isinstance(lr, float):
        rows[0] = ("learning_rate", f"{lr:g} (learning_rate auto: picked by the LR range test at the run's start, "
                                    f"lr_find.json)")
    rows += [("train_batch_size", per_device), ("eval_batch_size", recipe.get("per_device_eval_batch_size")),
             ("seed", recipe.get("seed"))]
    kind = DISTRIBUTED.get(str(metrics.get("distributed_type")))
    if kind:
        rows.append(("distributed_type", kind))
    if processes > 1:
        rows.append(("num_devices", processes))
    if accumulation and accumulation > 1:
        rows.append(("gradient_accumulation_steps", accumulation))
    total = derived.get("global_batch_size", metrics.get("global_batch_size"))
    if total is not None and total != per_device:
        rows.append(("total_train_batch_size", total))
    if processes > 1 and recipe.get("per_device_eval_batch_size"):
        rows.append(("total_eval_batch_size", recipe["per_device_eval_batch_size"] * processes))
    rows += [("optimizer", _optimizer(recipe)),
             ("lr_scheduler_type", derived.get("lr_scheduler_type", recipe.get("lr_scheduler_type")))]
    if derived.get("warmup_steps"):
        rows.append(("lr_scheduler_warmup_steps", derived["warmup_steps"]))
    if (recipe.get("max_steps") or -1) > 0:
        rows.append(("training_steps", derived.get("total_steps", recipe["max_steps"])))
    else:
        rows.append(("num_epochs", derived.get("num_epochs", recipe.get("num_train_epochs"))))
    if recipe.get("mixed_precision") in ("fp16", "bf16"):
        rows.append(("mixed_precision_training", f"Native AMP ({recipe['mixed_precision']})"))
    if recipe.get("label_smoothing_factor"):
        rows.append(("label_smoothing_factor", recipe["label_smoothing_factor"]))
    return [f"- {key}: {value}" for key, value in rows]


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def results_table(train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], main_metric: str,
                  metric_name: str) -> str:
    """One row per evaluation, as HF's Trainer tabulates them; the training loss is the last one logged at
    or before that step ("No log" before the first)."""
    others = sorted({k for r in eval_rows for k in r if k.startswith("eval_")} - NOT_EVAL_METRICS - {main_metric})
    names = [metric_name] + [k.removeprefix("eval_").replace("_", " ").title() for k in others]
    lines = ["| " + " | ".join(["Training Loss", "Epoch", "Step", "Validation Loss", *names]) + " |",
             "|" + ":---:|" * (4 + len(names))]
    logged = sorted((r["step"], r["loss"]) for r in train_rows if r.get("loss") is not None and "step" in r)
    for row in eval_rows:
        before = [loss for step, loss in logged if step <= row.get("step", -1)]
        epoch = row.get("epoch")
        cells = [before[-1] if before else "No log", None if epoch is None else str(round(epoch, 4)), row.get("step"),
                 row.get("eval_loss"),
                 *(row.get(k) for k in [main_metric, *others])]
        lines.append("| " + " | ".join("-" if c is None else _cell(c) for c in cells) + " |")
    return "\n".join(lines)


def framework_versions() -> list[str]:
    found = []
    for shown, dist in FRAMEWORKS:
        try:
            found.append(f"- {shown} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def rerun_commands(task_name: Optional[str]) -> str:
    """How to train this again from config.yaml, with the task's real command and script."""
    if task_name is None:
        return "Re-run with `fastft train TASK --config config.yaml --output_dir NEW_FOLDER`."
    from fastft.cli import TASKS

    script = TASKS[task_name][2]
    return (f"Re-run with `fastft train {task_name} --config config.yaml --output_dir NEW_FOLDER`, or from a "
            f"fastft checkout `accelerate launch {script} --config config.yaml --output_dir NEW_FOLDER` "
            f"(config.yaml's output_dir holds this finished run, which fastft will not overwrite).")


def build_card(output_dir: Path, info: dict[str, Any], repo_id: str | None = None) -> str:
    """Card text: Hub metadata (with a model-index of the eval results) and a readable body.

    ``info`` is the task's ``card_info()``: library_name, pipeline_tag, tags, metric_type, metric_name,
    main_metric, load (a code snippet with {repo_id}); optional: pipeline (the transformers pipeline
    snippet), eval_split (the split evaluated on, in words), task_name (as ``fastft train`` names it).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    recipe_text = (output_dir / reporting.CONFIG).read_text()
    recipe = yaml.safe_load(recipe_text) or {}
    metrics = json.loads((output_dir / reporting.FINAL).read_text())
    base = recipe.get("model_name_or_path")
    warm_start = None if base else " + ".join(str(recipe[k]) for k in ("encoder_name_or_path", "decoder_name_or_path")
                                              if recipe.get(k))
    dataset = recipe.get("dataset_name") or recipe.get("train_file")  # local files may name no dataset
    main = info["main_metric"]
    value = metrics.get(main)
    split = info.get("eval_split") or recipe.get("eval_split") or "eval"
    name = repo_id or output_dir.resolve().name
    data = ModelCardData(
        library_name=info["library_name"], pipeline_tag=info["pipeline_tag"],
        tags=["fastft", *info.get("tags", [])], model_name=name, license=base_license(base),
        base_model=base if _is_hub_id(base) else None,
        datasets=[dataset] if _is_hub_id(dataset) else None,
        metrics=[info["metric_type"]],
        eval_results=None if value is None else [EvalResult(
            task_type=info["pipeline_tag"], dataset_type=str(dataset), dataset_name=str(dataset),
            metric_type=info["metric_type"], metric_name=info["metric_name"], metric_value=value,
            dataset_split=split)],
    )
    used = [f"- {t.name}" + (f": {t.paper}" if t.paper else "") for t in tricks_on(recipe)]
    results = "\n".join(f"| {k} | {round(v, 4) if isinstance(v, float) else v} |"
                        for k, v in metrics.items() if v is not None)
    ttt = metrics.get("time_to_target_s")
    reached = ">=" if higher_is_better(str(metrics.get("target_metric"))) else "<="
    target = (f"Reached {metrics.get('target_metric')} {reached} {metrics.get('target_value')} after {ttt:.0f} s of "
              f"training." if ttt is not None else "The run's target was not set or not reached.")
    if metrics.get("best_model_step") is not None:  # load_best_model_at_end
        target += (f" The weights are those of the best evaluation by {metrics.get('metric_for_best_model')}, at "
                   f"step {metrics['best_model_step']} of {metrics.get('total_steps')}.")
    plots = "\n".join(f"![{p.stem}](plots/{p.name})" for p in sorted((output_dir / "plots").glob("*.png")))
    where = repo_id or str(output_dir.resolve())
    load = info["load"].format(repo_id=where)
    if repo_id is None:  # not pushed (yet): timm reads a local folder through local-dir:
        load = load.replace("hf-hub:", "local-dir:")
    if recipe.get("peft") == "lora":
        load = _lora_load(load, recipe, where, base or "<the base model>")
    pipe = f"\n\nWith the transformers pipeline:\n\n```python\n{info['pipeline'].format(repo_id=where)}\n```" \
        if info.get("pipeline") else ""
    examples = f" ({metrics['eval_samples']} examples)" if metrics.get("eval_samples") else ""
    table = results_table(reporting.read_jsonl(output_dir / reporting.TRAIN_LOG),
                          reporting.read_jsonl(output_dir / reporting.EVAL_LOG), main, info["metric_name"])
    body = f"""
# {name}

Fine-tuned from {f"`{base}`" if base else f"a warm start of `{warm_start}`"} on `{dataset}` with fastft on {metrics.get('num_processes')} process(es), global batch {metrics.get('global_batch_size')}, peak LR {metrics.get('learning_rate')}.
Evaluated on the `{split}` split of `{dataset}`{examples}.

## Results

| metric | value |
|---|---|
{results}

{target}

## How to load

```python
{load}
```{pipe}

## Training procedure

### Training hyperparameters

The following hyperparameters were used during training:
{chr(10).join(hyperparameters(recipe, _derived(recipe_text), metrics))}

### Tricks used

{chr(10).join(used) or "- none beyond the plain recipe"}

### Training results

{table}

### Framework versions

{chr(10).join(framework_versions())}

## Training curves and LR schedule

{plots}

## Recipe

{rerun_commands(info.get("task_name"))}

```yaml
{recipe_text.strip()}
```
"""
    # Assembled by hand, not through from_template: its Jinja would interpret braces in the recipe.
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def _lora_load(load: str, recipe: dict[str, Any], where: str, base: str) -> str:
    """How to load a LoRA run: the merged model as any other (unless merge_lora was off), and the adapter."""
    adapter = (f"# The LoRA adapter alone (r={recipe.get('lora_r')}, alpha={recipe.get('lora_alpha')}), on its base "
               f"model:\nfrom peft import PeftModel\n\n"
               f"model = PeftModel.from_pretrained(base_model, \"{where}\", subfolder=\"adapter\")  "
               f"# base_model: {base}, loaded as above")
    if recipe.get("merge_lora", True):
        return f"# The adapters are merged into these weights: no peft needed.\n{load}\n\n{adapter}"
    return f"# Only the LoRA adapter was saved (merge_lora: false).\n{adapter}"


def write_card(output_dir: Path, info: dict[str, Any], repo_id: str | None = None) -> Path:
    path = output_dir / "README.md"
    path.write_text(build_card(output_dir, info, repo_id))
    return path
