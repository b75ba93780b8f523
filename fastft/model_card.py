"""The model card (README.md) written into output_dir at the end of every run.

It is built only from files in output_dir (config.yaml, metrics.json, plots/)
plus what the task states about itself, so ``python -m fastft.push`` can
rebuild it for an old run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import yaml

from fastft import reporting

# (is it on in this recipe?, what it is, paper)
TRICKS: list[tuple[Callable[[dict], bool], str, str]] = [
    (lambda r: bool(r.get("reference_batch_size")) and r.get("lr_scaling") != "none",
     "LR scaled with the global batch, gradual warmup", "[Goyal et al. 2017](https://arxiv.org/abs/1706.02677)"),
    (lambda r: r.get("lr_scheduler_type") == "one_cycle", "one-cycle LR with inverse momentum",
     "[Smith & Topin 2018](https://arxiv.org/abs/1708.07120)"),
    (lambda r: r.get("lr_scheduler_type") == "cyclic", "cyclical LR",
     "[Smith 2017](https://arxiv.org/abs/1506.01186)"),
    (lambda r: r.get("lr_scheduler_type") == "inverse_sqrt", "inverse square-root LR with warmup",
     "[Vaswani et al. 2017](https://arxiv.org/abs/1706.03762)"),
    (lambda r: (r.get("mixup_alpha") or 0) > 0, "mixup", "[Zhang et al. 2018](https://arxiv.org/abs/1710.09412)"),
    (lambda r: (r.get("cutmix_alpha") or 0) > 0, "CutMix", "[Yun et al. 2019](https://arxiv.org/abs/1905.04899)"),
    (lambda r: (r.get("label_smoothing_factor") or 0) > 0, "label smoothing",
     "[Szegedy et al. 2016](https://arxiv.org/abs/1512.00567)"),
    (lambda r: bool(r.get("zero_init_head")) and bool(r.get("pretrained", True)), "zero-initialised new head",
     "[Kolesnikov et al. 2020](https://arxiv.org/abs/1912.11370)"),
    (lambda r: (r.get("freeze_epochs") or 0) > 0, "head-only epochs before unfreezing",
     "[Howard & Ruder 2018](https://arxiv.org/abs/1801.06146)"),
    (lambda r: r.get("layer_decay") is not None, "layer-wise LR decay",
     "[Clark et al. 2020](https://arxiv.org/abs/2003.10555)"),
    (lambda r: bool(r.get("model_ema")), "exponential moving average of the weights (the model saved here)",
     "[Polyak & Juditsky 1992](https://doi.org/10.1137/0330046)"),
    (lambda r: bool(r.get("channels_last")), "channels_last memory format", ""),
    (lambda r: r.get("mixed_precision") in ("fp16", "bf16"), "mixed precision",
     "[Micikevicius et al. 2018](https://arxiv.org/abs/1710.03740)"),
]


def _is_hub_id(name: Any) -> bool:
    return isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~"))


def build_card(output_dir: Path, info: dict[str, Any], repo_id: str | None = None) -> str:
    """Card text: Hub metadata (with a model-index of the eval results) and a readable body.

    ``info`` is the task's ``card_info()``: library_name, pipeline_tag, tags, metric_type,
    metric_name, main_metric, load (a code snippet with {repo_id}).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    recipe = yaml.safe_load((output_dir / reporting.CONFIG).read_text()) or {}
    metrics = json.loads((output_dir / reporting.FINAL).read_text())
    base = recipe.get("model_name_or_path")
    dataset = recipe.get("dataset_name")
    value = metrics.get(info["main_metric"])
    name = repo_id or output_dir.resolve().name
    data = ModelCardData(
        library_name=info["library_name"], pipeline_tag=info["pipeline_tag"],
        tags=["fastft", *info.get("tags", [])], model_name=name,
        base_model=base if _is_hub_id(base) else None,
        datasets=[dataset] if _is_hub_id(dataset) else None,
        metrics=[info["metric_type"]],
        eval_results=None if value is None else [EvalResult(
            task_type=info["pipeline_tag"], dataset_type=str(dataset), dataset_name=str(dataset),
            metric_type=info["metric_type"], metric_name=info["metric_name"], metric_value=value,
            dataset_split=recipe.get("eval_split") or "eval")],
    )
    used = [f"- {what}" + (f": {paper}" if paper else "") for on, what, paper in TRICKS if on(recipe)]
    results = "\n".join(f"| {k} | {round(v, 4) if isinstance(v, float) else v} |"
                        for k, v in metrics.items() if v is not None)
    ttt = metrics.get("time_to_target_s")
    target = (f"Reached {metrics.get('target_metric')} >= {metrics.get('target_value')} after {ttt:.0f} s of "
              f"training." if ttt is not None else "The run's target was not set or not reached.")
    plots = "\n".join(f"![{p.stem}](plots/{p.name})" for p in sorted((output_dir / "plots").glob("*.png")))
    load = info["load"].format(repo_id=repo_id or str(output_dir.resolve()))
    if repo_id is None:  # not pushed (yet): timm reads a local folder through local-dir:
        load = load.replace("hf-hub:", "local-dir:")
    recipe_text = (output_dir / reporting.CONFIG).read_text()
    body = f"""
# {name}

Fine-tuned from `{base}` on `{dataset}` with fastft on {metrics.get('num_processes')} process(es), global batch {metrics.get('global_batch_size')}, peak LR {metrics.get('learning_rate')}.

## Results

| metric | value |
|---|---|
{results}

{target}

## How to load

```python
{load}
```

## Tricks used

{chr(10).join(used) or "- none beyond the plain recipe"}

## Training curves and LR schedule

{plots}

## Recipe

Re-run with `accelerate launch scripts/<task script> --config config.yaml`.

```yaml
{recipe_text.strip()}
```
"""
    # Assembled by hand, not through from_template: its Jinja would interpret braces in the recipe.
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def write_card(output_dir: Path, info: dict[str, Any], repo_id: str | None = None) -> Path:
    path = output_dir / "README.md"
    path.write_text(build_card(output_dir, info, repo_id))
    return path
