"""Configurations compared over seeds by time to a target: what ``fastft ablate`` and the benchmarks share.

Every run is a fresh training process with its own thread count; several may run side by side, seed by
seed across the configurations, so a slow spell of the machine hits them alike. Time to target is
training time only (``elapsed_s`` minus the ``eval_runtime_s`` of the evaluations so far) at the first
evaluation that reaches it; seeds differ more than configurations, so ratios are paired seed by seed.
"""
from __future__ import annotations

import concurrent.futures
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

from fastft import reporting

INF = float("inf")  # a seed that never reaches the target counts as infinitely slow in medians and ratios


class RunFailed(RuntimeError):
    """A training process of the comparison exited with an error: its command and the end of its stderr."""

    def __init__(self, command: Sequence[str], stderr: str):
        self.command, self.stderr = [str(c) for c in command], stderr
        super().__init__(f"run failed ({' '.join(self.command)}):\n{stderr[-2000:]}")

    @property
    def last_line(self) -> str:
        """The last line the run printed (an error: line, or a traceback's exception)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no output"


def train_process(cmd: Sequence[str], out: Path, threads: Optional[int], cwd: Optional[Path] = None,
                  running: Optional[set[subprocess.Popen]] = None) -> list[dict[str, Any]]:
    """Run one training command, which writes its logs to ``out``, with this many intra-op threads (None: as
    the environment says); its evaluation rows. The process is in ``running`` while it runs."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(list(map(str, cmd)), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    running = set() if running is None else running
    running.add(proc)
    try:
        _, stderr = proc.communicate()
    finally:
        running.discard(proc)
    if proc.returncode != 0:
        raise RunFailed(cmd, stderr)
    return reporting.read_jsonl(out / reporting.EVAL_LOG)


class Runs:
    """Training commands run ``workers`` at a time, each in a fresh output folder under ``folder``; a command
    submitted twice runs once. Leaving the block cancels what is still queued and, on an error or a stop
    signal, ends the runs under way (SIGTERM), so a failed run stops the comparison instead of waiting."""

    def __init__(self, folder: Path, workers: int, threads: Optional[int], cwd: Optional[Path] = None):
        self.folder, self.threads, self.cwd = folder, threads, cwd
        self.pool = concurrent.futures.ThreadPoolExecutor(workers)
        self.submitted: dict[tuple[str, ...], concurrent.futures.Future] = {}
        self.running: set[subprocess.Popen] = set()

    def submit(self, cmd: Sequence[str]) -> concurrent.futures.Future:
        """A fastft training command without its --output_dir; the future of its evaluation rows."""
        key = tuple(map(str, cmd))
        if key not in self.submitted:
            out = self.output_dir(key)
            self.submitted[key] = self.pool.submit(train_process, [*key, "--output_dir", str(out)], out,
                                                   self.threads, self.cwd, running=self.running)
        return self.submitted[key]

    def output_dir(self, cmd: Sequence[str]) -> Path:
        """The output folder of a submitted command (or of the next one submitted)."""
        key = tuple(map(str, cmd))
        index = list(self.submitted).index(key) if key in self.submitted else len(self.submitted)
        return self.folder / str(index)

    def __enter__(self) -> "Runs":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if exc_type is not None:  # stopped (a signal, a failed run): the runs under way stop too, as by SIGTERM
            for proc in list(self.running):
                proc.terminate()
        self.pool.shutdown(wait=True)


def _reaches(value: float, target: float, higher: bool) -> bool:
    return value >= target if higher else value <= target


def time_to_target(rows: list[dict[str, Any]], target: float, metric: str, higher: bool = True) -> Optional[float]:
    """Training seconds (evaluation excluded) at the first evaluation reaching the target (at most it, for a
    metric where lower is better)."""
    evaluating = 0.0
    for row in rows:
        evaluating += row.get("eval_runtime_s", 0.0)
        if _reaches(row[metric], target, higher):
            return row["elapsed_s"] - evaluating
    return None


def steps_to_target(rows: list[dict[str, Any]], target: float, metric: str, higher: bool = True) -> Optional[int]:
    """Optimizer steps at the first evaluation reaching the target."""
    return next((row["step"] for row in rows if _reaches(row[metric], target, higher)), None)


def summarise(name: str, rows_per_seed: list[list[dict[str, Any]]], target: float, metric: str,
              higher: bool = True) -> dict[str, Any]:
    """One configuration over its seeds: how many reached the target, median time and steps, final metric."""
    times = [time_to_target(rows, target, metric, higher) for rows in rows_per_seed]
    steps = [steps_to_target(rows, target, metric, higher) for rows in rows_per_seed]
    reached = sorted(t for t in times if t is not None)
    finals = [rows[-1][metric] for rows in rows_per_seed]
    return {"config": name, "seeds": len(times), "reached": len(reached),
            "median_s": statistics.median([t if t is not None else INF for t in times]),
            "min_s": reached[0] if reached else None, "max_s": reached[-1] if reached else None,
            "median_steps": statistics.median([s if s is not None else INF for s in steps]),
            "final_median": statistics.median(finals), "final_min": min(finals), "final_max": max(finals),
            "times_s": times, "steps": steps, "finals": finals}


def paired_ratios(base_times: list[Optional[float]], times: list[Optional[float]]) -> list[float]:
    """Base time / this configuration's time on the same seed, on the seeds where either reached the
    target (one that never does is infinitely slow)."""
    return [(b if b is not None else INF) / (t if t is not None else INF)
            for b, t in zip(base_times, times) if b is not None or t is not None]


def ratio_text(ratios: list[float]) -> str:
    """Median (min-max) of paired ratios, as the tables show them."""
    if not ratios:
        return "-"

    def fmt(x: float) -> str:
        return "inf" if x == INF else f"{x:.2f}"
    return f"{fmt(statistics.median(ratios))}x ({fmt(min(ratios))}-{fmt(max(ratios))})"


def seconds_text(r: dict[str, Any]) -> tuple[str, str]:
    """(median, min-max spread) of a summary's time to target, as the tables show them."""
    digits = 1 if r["reached"] and r["max_s"] < 10 else 0  # a few seconds (a tiny test run) keep a decimal
    median = "never" if r["median_s"] == INF else f"{r['median_s']:.{digits}f}"
    return median, (f"{r['min_s']:.{digits}f}-{r['max_s']:.{digits}f}" if r["reached"] else "-")


def final_text(r: dict[str, Any]) -> str:
    return f"{r['final_median']:.4f} ({r['final_min']:.4f}-{r['final_max']:.4f})"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Each configuration's seeds' times to target (dots) and their median (bar), one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["config"] for r in results]
    fig, ax = plt.subplots(figsize=(5 + 0.08 * max(map(len, names)), 0.5 * len(results) + 1))  # room for the names
    for i, r in enumerate(results):
        times = [t for t in r["times_s"] if t is not None]
        ax.scatter(times, [i] * len(times), color="tab:blue", alpha=0.6)
        if r["median_s"] != INF:
            ax.scatter([r["median_s"]], [i], color="black", marker="|", s=300)
        missed = r["seeds"] - r["reached"]
        if missed:  # a seed that never reached the target has no dot: say so on its row
            ax.annotate(f"{missed} seed(s) never", (1.0, i), xycoords=("axes fraction", "data"),
                        ha="right", va="center", fontsize=8, color="tab:red")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("training seconds to target (dots: seeds, bar: median)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
