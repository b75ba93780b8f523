"""fastft's image recipe against fastai and the HF Trainer, on the same images, weights, resolution,
thread count and machine, in one run.

    python benchmarks/peers.py --setup               # fastai's own environment, once (benchmarks/.venv-peers)
    python benchmarks/peers.py --workers 2 --threads 1 --seeds 3
    python benchmarks/peers.py --max_train_samples 20000 --max_eval_samples 2000 --target 0.85 \
        --eval_images 1024 --quickstart_epochs 1 --configs ...   # at the quickstart's own size

Each seed exports its own subset of Fashion-MNIST (the subset fastft's ``max_train_samples`` /
``max_eval_samples`` would draw with that seed) as an imagefolder, and every tool reads that folder
with the same EfficientNet-Lite0 weights (``fastft:efficientnet_lite0``, a timm checkpoint):

- ``fastft``: ``scripts/train_image.py`` with the shipped ``recipes/image/quickstart.yaml`` (linear decay, its own
  LR) for 2 epochs, and the same after one head-only epoch on cached features (``cache_frozen_features``, LP-FT,
  a trick no peer has) with a fresh schedule from the unfreezing; and the earlier one-cycle recipe at this size
  (time_to_accuracy's ``shorter rise at batch 32``: batch 32, the weight EMA, a 10 % one-cycle rise; its LR from
  ``--lr_find`` once), alone and after a cached probe epoch;
- ``fastai fine_tune`` / ``fastai fit_one_cycle`` (unfrozen): ``vision_learner`` with fastai's own head,
  normalisation and ``aug_transforms``, at fastai's default LR and at its ``lr_find`` valley (run before
  training, untimed, as fastft's own LR test is), in a separate environment (fastai and its
  dependencies never enter fastft's; it shares fastft's torch and timm through a ``.pth`` file);
- ``HF Trainer``: transformers' image-classification example (torchvision augmentation, TimmWrapper,
  ``Trainer``) at its README's hyperparameters.

Time to target is training time only: evaluations (every ``--eval_images`` training images, 512 by
default, on the same test subset) are subtracted in every tool. Each fastft row gets a column: how
much sooner it reached the target than each peer, paired by seed. Writes
benchmarks/results/<stem>.{json,md} (stem peers_image).
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import time_to_accuracy as tta  # noqa: E402
from fastft import comparison, host  # noqa: E402

PEERS_VENV = REPO / "benchmarks" / ".venv-peers"
PEER_PYTHON = PEERS_VENV / "bin" / "python"
PEER_PACKAGES = ["fastai==2.8.12", "plum-dispatch<2.10"]  # plum 2.10 breaks fastai 2.8's type dispatch
FASTFT_RECIPE = "shorter rise at batch 32"
QUICKSTART = REPO / "recipes" / "image" / "quickstart.yaml"


def setup() -> None:
    """fastai's environment: its own venv whose .pth puts fastft's packages (torch, timm) after its own."""
    import site

    if not PEER_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    own = subprocess.run([str(PEER_PYTHON), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                         capture_output=True, text=True).stdout.strip()
    Path(own, "zz_fastft_stack.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([str(PEER_PYTHON), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)


def export(seed: int, train_samples: int, eval_samples: int, root: Path) -> Path:
    """The seed's subset as imagefolder PNGs: train/<class>/ and test/<class>/."""
    from fastft.offline import image

    raw = image.dataset_asset("fastft:fashion_mnist")
    names = raw["train"].features["label"].names
    folder = root / f"seed-{seed}"
    for split, size in (("train", train_samples), ("test", eval_samples)):
        # fastft's own cut (tasks/common.with_eval_split): a seeded shuffle, then the first rows
        part = raw[split].shuffle(seed=seed).select(range(size))
        for i, row in enumerate(part):
            target = folder / split / names[row["label"]].replace("/", "-")
            target.mkdir(parents=True, exist_ok=True)
            row["image"].convert("RGB").save(target / f"{i:05d}.png")
    return folder


def configurations(a: argparse.Namespace, model: Path) -> dict[str, tuple[list[str], str, str]]:
    """name -> (command without data, seed and output folder; its epochs; its batch). Names have no commas:
    --configs splits on them."""
    fastai = [str(PEER_PYTHON), str(REPO / "benchmarks" / "peers" / "fastai_image.py"),
              "--model", str(model), "--size", str(a.image_size), "--bs", "64",
              "--eval_every", str(a.eval_images // 64)]
    recipe = tta.IMAGE.variants[FASTFT_RECIPE]
    common = list(tta.IMAGE.common)
    common[common.index("--dataset_name") + 1] = "imagefolder"
    epochs, batch = tta.flag(recipe, "num_train_epochs"), tta.flag(recipe, "per_device_train_batch_size")
    fastft = [sys.executable, str(REPO / "scripts" / "train_image.py"), *common, "--image_size", str(a.image_size),
              *tta.IMAGE.recommended, *recipe, "--learning_rate", str(a.fastft_lr),
              "--eval_steps", str(a.eval_images // int(batch))]
    # The shipped quickstart recipe as it is (its own LR, linear decay), at this size and evaluation rate.
    shipped = yaml.safe_load(QUICKSTART.read_text())
    qs_batch = str(shipped["per_device_train_batch_size"])
    quickstart = [sys.executable, str(REPO / "scripts" / "train_image.py"), "--config", str(QUICKSTART),
                  "--dataset_name", "imagefolder", "--max_train_samples", str(a.max_train_samples),
                  "--max_eval_samples", str(a.max_eval_samples), "--image_size", str(a.image_size),
                  "--report_to", "none", "--learning_rate", str(shipped["learning_rate"]),
                  "--eval_steps", str(a.eval_images // int(qs_batch))]
    hf = [sys.executable, str(REPO / "benchmarks" / "peers" / "hf_trainer_image.py"), "--model", str(model),
          "--size", str(a.image_size), "--eval_steps", str(a.eval_images // 8)]
    ft, oc, qs = str(a.fine_tune_epochs), str(a.one_cycle_epochs), str(a.quickstart_epochs)
    return {
        f"fastft ({FASTFT_RECIPE})": (fastft, epochs, batch),
        f"fastft ({FASTFT_RECIPE}) after a cached linear-probe epoch": (
            [*fastft, *tta.LP_FT, "--num_train_epochs", str(int(epochs) + 1)], f"1+{epochs}", batch),
        f"fastft quickstart recipe for {qs} epoch{'s' if qs != '1' else ''}": (
            [*quickstart, "--num_train_epochs", qs], qs, qs_batch),
        "fastft quickstart recipe after a cached linear-probe epoch and a restarted schedule": (
            [*quickstart, *tta.LP_FT, *tta.RESTART, "--num_train_epochs", str(a.quickstart_epochs + 1)],
            f"1+{qs}", qs_batch),
        f"fastai fine_tune({ft}) at its default LR": ([*fastai, "--method", "fine_tune", "--epochs", ft], f"1+{ft}", "64"),
        f"fastai fine_tune({ft}) at its lr_find LR": (
            [*fastai, "--method", "fine_tune", "--epochs", ft, "--lr", "lr_find"], f"1+{ft}", "64"),
        f"fastai fit_one_cycle({oc}) unfrozen at its default LR": (
            [*fastai, "--method", "fit_one_cycle", "--epochs", oc], oc, "64"),
        f"fastai fit_one_cycle({oc}) unfrozen at its lr_find LR": (
            [*fastai, "--method", "fit_one_cycle", "--epochs", oc, "--lr", "lr_find"], oc, "64"),
        "HF Trainer at the example's README hyperparameters": (hf, "5", "8"),
    }


def markdown(results: list[dict], meta: dict, about: str) -> str:
    """The table: each configuration's time to target and, for each fastft row (named "fastft ..."), how much
    sooner it reached it than each peer, paired by seed (a seed that never reaches the target is infinitely
    slow); ``about`` opens its first line (the target and the data)."""
    ours = [r for r in results if r["config"].startswith("fastft")] or results[:1]
    first = meta["first_seed"]
    sooner = (["fastft sooner by, paired by seed: median (min-max)"] if len(ours) == 1 else
              [f"{r['config']} sooner by, paired by seed: median (min-max)" for r in ours])
    lines = [f"{about}, seeds {first}-{first + meta['seeds'] - 1}, {meta['threads']} thread(s) per run, "
             f"{meta['workers']} run(s) at a time; {meta['machine']}; {meta['date']}.", "",
             "| configuration | epochs | batch | LR | reached | median time to target (s) | spread (s) | "
             + "".join(f"{c} | " for c in sooner) + f"median steps to target | final {meta['metric']} (median, min-max) |",
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(sooner) + "---:|---|"]
    for r in results:
        lr = r["learning_rate"] if isinstance(r["learning_rate"], str) else f"{r['learning_rate']:.2g}"
        median, spread = comparison.seconds_text(r)
        vs = ["-" if r in ours else comparison.ratio_text(comparison.paired_ratios(r["times_s"], o["times_s"])) for o in ours]
        steps = "never" if r["median_steps"] == float("inf") else f"{r['median_steps']:.0f}"
        lines.append(f"| {r['config']} | {r['epochs']} | {r['batch']} | {lr} | {r['reached']}/{r['seeds']} | "
                     f"{median} | {spread} | " + "".join(f"{v} | " for v in vs) + f"{steps} | {comparison.final_text(r)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", action="store_true", help="create fastai's environment and exit")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first_seed", type=int, default=0)
    p.add_argument("--configs", help="comma-separated names (default: all)")
    p.add_argument("--target", type=float, default=0.80)
    p.add_argument("--max_train_samples", type=int, default=4096)
    p.add_argument("--max_eval_samples", type=int, default=1000)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--fastft_lr", type=float, default=2.78e-3,
                   help="the one-cycle rows' LR (their --lr_find suggestion); the quickstart rows train at its own")
    p.add_argument("--fine_tune_epochs", type=int, default=2, help="fastai fine_tune's unfrozen epochs")
    p.add_argument("--one_cycle_epochs", type=int, default=3, help="fastai fit_one_cycle's epochs")
    p.add_argument("--quickstart_epochs", type=int, default=2,
                   help="the quickstart rows' epochs (after the probe epoch, for LP-FT); the recipe's own is 1 "
                        "epoch of 20,000 images (625 steps), 2 epochs of 4,096 are 256")
    p.add_argument("--eval_images", type=int, default=512,
                   help="training images between evaluations, in every tool (a multiple of 64)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=tta.RESULTS)
    p.add_argument("--stem", default="peers_image", help="result file name")
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return 0
    if a.eval_images <= 0 or a.eval_images % 64:
        raise SystemExit(f"--eval_images {a.eval_images}: must be a positive multiple of 64 (every tool's batch "
                         "divides it: 64 for fastai, 32 for fastft, 8 for the HF Trainer)")
    from fastft.offline import image

    configs = configurations(a, Path(image.model_asset("fastft:efficientnet_lite0")))
    names = tta.selected(list(configs), a.configs)
    if any(configs[n][0][0] == str(PEER_PYTHON) for n in names) and not PEER_PYTHON.exists():
        raise SystemExit(f"fastai's environment is missing: python benchmarks/peers.py --setup ({PEERS_VENV})")
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    with tempfile.TemporaryDirectory() as tmp, comparison.Runs(Path(tmp) / "runs", a.workers, a.threads,
                                                               cwd=REPO) as runs:
        folders = {s: export(s, a.max_train_samples, a.max_eval_samples, Path(tmp) / "data") for s in seeds}
        futures = {}
        for seed in seeds:  # seed-major: the configurations take turns on the machine
            for name in names:
                cmd = [*configs[name][0], "--seed", str(seed)]
                cmd += ["--data_dir" if "train_image.py" in cmd[1] else "--data", str(folders[seed])]
                futures[name, seed] = runs.submit(cmd), runs.output_dir(cmd)
        try:
            per_config = {name: [futures[name, s][0].result() for s in seeds] for name in names}
        except comparison.RunFailed as err:
            raise SystemExit(str(err)) from None
        results = []
        for name in names:
            # a peer writes the LR it trained at (its lr_find valley) to run.json; fastft's is in its command
            lrs = [json.loads((futures[name, s][1] / "run.json").read_text())["learning_rate"]
                   if (futures[name, s][1] / "run.json").exists()
                   else float(tta.flag(configs[name][0], "learning_rate")) for s in seeds]
            for seed, rows in zip(seeds, per_config[name]):
                print(f"{name} seed={seed}: time to target {comparison.time_to_target(rows, a.target, 'eval_accuracy')}, "
                      f"final {rows[-1]['eval_accuracy']:.4f}", flush=True)
            shown = lrs[0] if len(set(map(str, lrs))) == 1 else "/".join(f"{float(x):.2g}" for x in lrs)
            _, epochs, batch = configs[name]
            results.append({**comparison.summarise(name, per_config[name], a.target, "eval_accuracy"),
                            "epochs": epochs, "batch": batch,
                            "learning_rate": shown if isinstance(shown, str) else float(shown)})
    meta = {"metric": "eval_accuracy", "target": a.target, "eval_samples": a.max_eval_samples,
            "eval_data": "Fashion-MNIST test images", "train_samples": a.max_train_samples,
            "image_size": a.image_size, "threads": a.threads, "workers": a.workers, "seeds": a.seeds,
            "first_seed": a.first_seed, "machine": host.cpu(), "date": datetime.date.today().isoformat()}
    about = (f"Target {meta['metric']} >= {meta['target']} on {meta['eval_samples']} {meta['eval_data']}; "
             f"{meta['train_samples']} training images at {meta['image_size']} px")
    table = markdown(results, meta, about)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (a.out / f"{a.stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
