"""``fastft ablate``: a recipe against itself without each trick it turns on, over seeds, by time to its target.

Each configuration is the recipe with one trick's fields set to their "off" values (``fastft.tricks``); every
run is a fresh ``fastft train`` process on the same seeds, so a trick's worth is the paired ratio of the time
to target without it over the time with it. What a trick costs in a short test run can differ at full size:
the overrides (``--max_train_samples ...``) apply to every configuration alike.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from fastft import comparison
from fastft.errors import STOPPED, UserError, exit_on_user_error

USAGE = ("fastft ablate [TASK] --config RECIPE [--seeds N] [--tricks NAME,...] [--workers N] [--threads N] "
         "[--launch CMD] [--output_dir DIR] [--FIELD VALUE ...]")
RECIPE = "the recipe"  # the configuration every other is paired with
MARKER = "ablation.json"  # what marks a folder as an ablation's (and holds its figures)


def _options() -> argparse.ArgumentParser:
    from fastft.arguments import OneLineParser

    parser = OneLineParser(prog="fastft ablate", usage=USAGE, allow_abbrev=False, description=(
        "Train the recipe, and the recipe without each trick it turns on, on the same seeds; report each trick's "
        "effect on the time to the recipe's target (target_metric, target_value). Any other --FIELD VALUE "
        "applies to every run (e.g. --max_train_samples 4096 for a quicker ablation)."))
    parser.add_argument("--config", required=True, help="the recipe: a YAML path or a shipped recipe's name")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds per configuration: the recipe's seed and the ones after it (default: 3)")
    parser.add_argument("--tricks", default="", help="comma-separated tricks to ablate, by a field that turns "
                                                     "them on (e.g. model_ema,mixup_alpha); default: every one on")
    parser.add_argument("--workers", type=int, default=1, help="runs side by side (default: 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of each run (default: the environment's); on a CPU, cores / workers")
    parser.add_argument("--launch", default="", help="how each run is started, e.g. 'accelerate launch "
                                                     "--num_processes 2' (default: this Python, one process)")
    parser.add_argument("--output_dir", default=None,
                        help="where the table, plot and each run's evaluations go (default: the recipe's "
                             "output_dir + '-ablate'); the runs' models are not kept")
    parser.add_argument("--overwrite_output_dir", default="false", choices=["true", "false"],
                        help="replace an earlier ablation in --output_dir (default: false)")
    return parser


def flags(overrides: dict[str, Any]) -> list[str]:
    """Field values as command-line flags (None as none, a list as its items)."""
    out: list[str] = []
    for name, value in overrides.items():
        out.append(f"--{name}")
        if isinstance(value, (list, tuple)):
            out += [str(v) for v in value]
        elif isinstance(value, bool):
            out.append(str(value).lower())
        else:
            out.append("none" if value is None else str(value))
    return out


def _task_of(argv: list[str]) -> tuple[str, list[str]]:
    """TASK as given first, or the task folder of a shipped recipe name or a recipe path (recipes/image/x.yaml)."""
    from fastft.cli import TASKS, _task_name

    if argv and not argv[0].startswith("-"):
        return _task_name(argv[0]), argv[1:]
    config = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    folder = Path(config).parent.name if config else ""
    if folder in TASKS:
        return folder, argv
    raise UserError(f"fastft ablate needs a task first (or a --config in a folder named after one): "
                    f"fastft ablate {'|'.join(TASKS)} --config RECIPE")


def configurations(task: str, recipe: Path, overrides: list[str], only: Sequence[str]
                   ) -> tuple[list[tuple[str, dict[str, Any]]], list[str], Any]:
    """([(name, the fields it sets)], the tricks left on with why, training arguments): the recipe first, then
    the recipe without each trick it turns on. Each configuration is checked as a recipe before anything runs."""
    from fastft.arguments import parse_args
    from fastft.cli import task_fields
    from fastft.config import TrainingArguments, check_training_args, closest, to_dict
    from fastft.tricks import TRICKS, tricks_on

    def parse(extra: list[str]) -> tuple[Any, Any]:
        task_args, args = parse_args([task_fields(task), TrainingArguments], ["--config", str(recipe), *overrides,
                                                                              *extra], prog="fastft ablate", task=task)
        check_training_args(args)
        return task_args, args

    task_args, args = parse([])
    if args.target_metric is None or args.eval_strategy == "no":
        raise UserError(f"fastft ablate measures the time to the recipe's target: {recipe} needs target_metric, "
                        f"target_value and an eval_strategy (steps or epoch); set them in it or as flags")
    if args.lr_find or args.dry_run or args.resume_from_checkpoint:
        raise UserError("fastft ablate trains every configuration afresh: drop --lr_find, --dry_run and "
                        "--resume_from_checkpoint")
    recipe_fields = to_dict(task_args, args)
    on = tricks_on(recipe_fields)
    known = {f for t in TRICKS for f in t.fields}
    for name in only:
        if name not in known:
            raise UserError(f"--tricks {name!r} is not a field that turns a trick on{closest(name, sorted(known))}")
        if not any(name in t.fields for t in on):
            raise UserError(f"--tricks {name!r}: the recipe does not turn that trick on, so there is nothing to "
                            f"ablate; it turns on: {', '.join(t.fields[0] for t in on) or 'none'}")
    chosen = [t for t in on if not only or set(only) & set(t.fields)]
    runs: list[tuple[str, dict[str, Any]]] = [(RECIPE, {})]
    kept = []
    for trick in chosen:
        if trick.off is None:
            kept.append(f"{trick.name} ({trick.fields[0]}): nothing to fall back to, so it stays on")
            continue
        try:
            task_off, args_off = parse(flags(trick.off))
        except UserError as err:
            raise UserError(f"the recipe without {trick.name} ({' '.join(flags(trick.off))}) is not a valid "
                            f"recipe: {err}") from None
        assert not trick.on(to_dict(task_off, args_off)), trick.name  # the off values must turn it off
        runs.append((f"without {trick.name.split(',')[0]}", trick.off))  # the name up to its details
    if len(runs) == 1:
        raise UserError(f"{recipe} turns on no trick that can be ablated" + (f" ({'; '.join(kept)})" if kept else ""))
    return runs, kept, args


def _output_folder(out: Path, overwrite: bool) -> None:
    """An ablation writes only into a new or empty folder, or over an ablation it wrote before (when told)."""
    from fastft.output_folder import check_writable

    check_writable(out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / MARKER).is_file():
        raise UserError(f"--output_dir {out} holds files that fastft ablate did not write; it never writes over "
                        f"them: choose a new or empty folder")
    if not overwrite:
        raise UserError(f"--output_dir {out} holds an ablation already; pass --overwrite_output_dir true to "
                        f"replace it or choose another folder")


def _slug(name: str) -> str:
    """A configuration's folder name under runs/."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


TIE = 0.03  # two runs of one seed within 3 % of each other's time: timing noise, not the trick


def _verdict(ratios: list[float]) -> str:
    """What the paired ratios (time without / time with) say: a trick counts only where every seed agrees."""
    if not ratios:
        return "neither reaches the target"
    shorter, longer = sum(r > 1 + TIE for r in ratios), sum(r < 1 - TIE for r in ratios)
    n = len(ratios)
    if shorter == n:
        return "shortens the time on every seed"
    if longer == n:
        return "lengthens the time on every seed"
    if shorter and not longer:
        return f"shortens the time on {shorter} seed(s) of {n}, within {TIE * 100:g} % on the others"
    if longer and not shorter:
        return f"lengthens the time on {longer} seed(s) of {n}, within {TIE * 100:g} % on the others"
    return "no effect beyond the seeds' spread"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The ablation's table: one row per configuration, paired with the recipe seed by seed."""
    lines = [f"# fastft ablate: {meta['recipe']}", "",
             f"{meta['task']}; target {meta['metric']} {'>=' if meta['higher'] else '<='} {meta['target']:g}; seeds "
             f"{meta['seeds']}; {meta['host']}; {meta['date']}; training time only (evaluations excluded).", "",
             f"`{meta['command']}`", "",
             "| configuration | sets | reached | median time to target (s) | spread (s) | "
             "the trick's speed-up: time without / with, paired by seed | median steps to target | "
             f"last {meta['metric']} (median, min-max) | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    base = results[0]
    for r in results:
        median, spread = comparison.seconds_text(r)
        steps = "never" if r["median_steps"] == comparison.INF else f"{r['median_steps']:.0f}"
        if r is base:
            ratio, verdict = "-", "-"
        else:
            ratios = comparison.paired_ratios(r["times_s"], base["times_s"])
            ratio, verdict = comparison.ratio_text(ratios), _verdict(ratios)
        sets = " ".join(flags(r["sets"])) or "-"
        lines.append(f"| {r['config']} | `{sets}` | {r['reached']}/{r['seeds']} | {median} | {spread} | {ratio} | "
                     f"{steps} | {comparison.final_text(r)} | {verdict} |")
    lines += ["", *[f"- Not ablated: {k}." for k in meta["kept"]]]
    return "\n".join(lines).rstrip() + "\n"


def _train_all(commands: dict[tuple[str, int], list[str]], opts: argparse.Namespace, args: Any, higher: bool,
               out: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Each (configuration, seed)'s training command, ``opts.workers`` at a time in the order given; each run's
    evaluation rows. The runs' evaluations and resolved recipes go to ``out/runs`` once all are done (an
    earlier ablation there is replaced only then)."""
    import concurrent.futures

    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="fastft-ablate-") as tmp, \
            comparison.Runs(Path(tmp), opts.workers, opts.threads) as pool:
        futures = {pool.submit(cmd): key for key, cmd in commands.items()}
        folders = {key: pool.output_dir(cmd) for key, cmd in commands.items()}

        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            name, seed = futures[future]
            try:
                rows[name, seed] = future.result()
            except comparison.RunFailed as err:
                raise UserError(f"the run '{name}', seed {seed}, failed: {err.last_line} (its command: "
                                f"{shlex.join(err.command)})") from None
            saved = Path(tmp) / "runs" / _slug(name)  # each run's evaluations and resolved recipe, kept
            saved.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folders[name, seed] / "config.yaml", saved / f"seed-{seed}.config.yaml")
            (saved / f"seed-{seed}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[name, seed]))
            shutil.rmtree(folders[name, seed])  # its model and checkpoints: an ablation keeps figures, not models
            t = comparison.time_to_target(rows[name, seed], args.target_value, args.target_metric, higher)
            print(f"[{done}/{len(futures)}] {name}, seed {seed}: "
                  + (f"target reached after {t:.0f} s of training" if t is not None else "target not reached")
                  + f"; last {args.target_metric} {rows[name, seed][-1][args.target_metric]:.4g}", flush=True)
        # an earlier ablation is replaced (as the user said) only now that this one is complete
        if (out / MARKER).is_file():
            for name in (MARKER, "ablation.md", "ablation.png", "runs"):
                shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "runs"), str(out / "runs"))
    return rows


def ablate(argv: Sequence[str]) -> list[dict[str, Any]]:
    """``fastft ablate ...``: run it, write ablation.{json,md,png}, print the table; the summaries."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help") or "--help" in argv or "-h" in argv:
        _options().print_help()
        return []
    task, rest = _task_of(argv)
    opts, overrides = _options().parse_known_args(rest)
    if opts.seeds < 1 or opts.workers < 1 or (opts.threads is not None and opts.threads < 1):
        raise UserError("--seeds, --workers and --threads must be 1 or more")
    from fastft.arguments import resolve_recipe

    recipe = resolve_recipe(opts.config, task).resolve()
    only = [t.strip() for t in opts.tricks.split(",") if t.strip()]
    runs, kept, args = configurations(task, recipe, overrides, only)
    out = Path(opts.output_dir or f"{args.output_dir.rstrip('/')}-ablate")
    _output_folder(out, opts.overwrite_output_dir == "true")
    from fastft.metrics import higher_is_better

    higher = higher_is_better(args.target_metric)
    seeds = list(range(args.seed, args.seed + opts.seeds))
    launch = shlex.split(opts.launch) if opts.launch else [sys.executable]
    # each run: no Hub push and no tracker; stopping at the target unless the command line says otherwise
    fixed = ["--push_to_hub", "false", "--report_to", "none",
             *([] if any(a.startswith("--stop_at_target") for a in overrides) else ["--stop_at_target", "true"])]
    print(f"fastft ablate: {len(runs)} configurations x {len(seeds)} seeds ({', '.join(n for n, _ in runs)}), "
          f"{opts.workers} at a time; target {args.target_metric} {args.target_value:g}", flush=True)
    commands = {(name, seed): [*launch, "-m", "fastft", "train", task, "--config", str(recipe), *overrides,
                               *flags(sets), *fixed, "--seed", str(seed)]
                for seed in seeds for name, sets in runs}  # seed-major: a slow spell hits every configuration
    try:
        rows = _train_all(commands, opts, args, higher, out)
    except STOPPED as err:  # the pool has ended the runs under way
        name, code = ("Ctrl-C", 130) if isinstance(err, KeyboardInterrupt) else ("SIGTERM", 143)
        print(f"error: stopped by {name}; the runs ended and {out} is as it was", file=sys.stderr, flush=True)
        sys.exit(code)
    results = [{**comparison.summarise(name, [rows[name, s] for s in seeds], args.target_value,
                                       args.target_metric, higher), "sets": sets} for name, sets in runs]
    from fastft import host

    meta = {"task": task, "recipe": opts.config, "recipe_file": str(recipe), "metric": args.target_metric,
            "target": args.target_value, "higher": higher, "seeds": f"{seeds[0]}-{seeds[-1]}", "host": host.describe(), "kept": kept,
            "date": datetime.date.today().isoformat(), "command": shlex.join(["fastft", "ablate", *argv])}
    table = markdown(results, meta)
    (out / "ablation.md").write_text(table)
    comparison.plot(results, out / "ablation.png")
    (out / MARKER).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(table, flush=True)
    print(f"Table, plot and each run's evaluations are in {out}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    return exit_on_user_error(ablate)(sys.argv[1:] if argv is None else argv)
