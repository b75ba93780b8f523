"""The benchmarks' bookkeeping: what they report must mean what RESULTS.md says (no timing is asserted)."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from conftest import REPO


def load(name: str):
    """A benchmark script as a module (benchmarks/ is not a package)."""
    if name not in sys.modules:  # registered first: a dataclass looks its module up there
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


tta = load("time_to_accuracy")


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
    # A configuration's own flags come after the shared ones and win, as in argparse.
    argv = ["--num_train_epochs", "2", "--per_device_train_batch_size", "64", "--num_train_epochs", "1"]
    two_of_three = tta.summarise("x", 1e-3, argv, [reach, reach, never], 0.85, "eval_accuracy")
    assert (two_of_three["reached"], two_of_three["median_s"], two_of_three["max_s"]) == (2, 20.0, 20.0)
    one_of_three = tta.summarise("y", 1e-3, argv, [reach, never, never], 0.85, "eval_accuracy")
    assert one_of_three["median_s"] == float("inf")
    table = tta.markdown([two_of_three | {"config": "baseline"}, one_of_three],
                         {"metric": "eval_accuracy", "eval_data": "images", "target": 0.85, "eval_samples": 10,
                          "train_samples": 10, "epochs": 1, "batch": 64, "image_size": 64, "threads": 1, "workers": 1,
                          "seeds": 3, "machine": "m", "date": "d"})
    assert "| baseline | 1 | 64 | 0.001 | 2/3 | 20 | 20-20 | 1.00x | 1.00x (1.00-1.00) | 10 |" in table
    # Seed 2: the baseline reaches the target and y never does (0x); seed 3 reaches it in neither (left out).
    assert "| y | 1 | 64 | 0.001 | 1/3 | never | 20-20 | - | 0.50x (0.00-1.00) | never |" in table


def test_paired_ratios_compare_each_seed_with_the_baselines_same_seed():
    """A configuration twice as fast on every seed is 2x paired, even where the seeds' own speeds differ."""
    base, fast = [40.0, 100.0, 60.0, None], [20.0, 50.0, None, 30.0]
    assert tta.paired_ratios(base, fast) == [2.0, 2.0, 0.0, float("inf")]
    assert tta.ratio_text(tta.paired_ratios(base, fast)) == "2.00x (0.00-inf)"
    assert tta.paired_ratios([None], [None]) == [] and tta.ratio_text([]) == "-"


def test_first_seed_runs_fresh_seeds_for_every_configuration(tmp_path, monkeypatch):
    """A configuration picked on some seeds is confirmed on others: --first_seed moves every run's seed."""
    runs = []

    def fake_run(argv, out, threads, cwd, running=None):
        runs.append((tta.flag(argv, "seed"), tta.flag(argv, "lr_scheduler_type")))
        return rows((8, 10.0, 1.0, 0.9))

    monkeypatch.setattr(tta.comparison, "train_process", fake_run)
    tta.main(["--seeds", "2", "--first_seed", "5", "--baseline_lr", "3e-3", "--recommended_lr", "2e-3",
              "--configs", "baseline,recommended", "--out", str(tmp_path), "--stem", "t"])
    assert sorted(runs) == [("5", "linear"), ("5", "one_cycle"), ("6", "linear"), ("6", "one_cycle")]
    assert "2 seeds (5-6)" in (tmp_path / "t.md").read_text()


def test_a_smaller_batch_is_evaluated_after_as_many_samples(tmp_path, monkeypatch):
    """Time to target is read at evaluations: a half batch evaluated every 8 steps would get a finer grid."""
    grid = {}

    def fake_run(argv, out, threads, cwd, running=None):
        grid[tta.flag(argv, "per_device_train_batch_size")] = tta.flag(argv, "eval_steps")
        return rows((8, 10.0, 1.0, 0.9))

    monkeypatch.setattr(tta.comparison, "train_process", fake_run)
    tta.main(["--seeds", "1", "--eval_steps", "8", "--baseline_lr", "3e-3", "--recommended_lr", "2e-3",
              "--configs", "baseline,shorter rise at batch 32,+ warmup and LR scaled to batch 128",
              "--out", str(tmp_path), "--stem", "t"])
    assert grid == {"64": "8", "32": "16", "128": "4"}


def test_a_configuration_with_learning_rate_auto_keeps_it_and_says_so(tmp_path, monkeypatch):
    stated = {}

    def fake_run(argv, out, threads, cwd, running=None):
        stated[tta.flag(argv, "lr_find_steps") if "--lr_find_steps" in argv else None] = tta.flag(argv, "learning_rate")
        return rows((8, 10.0, 1.0, 0.9))

    monkeypatch.setattr(tta.comparison, "train_process", fake_run)
    tta.main(["--seeds", "1", "--baseline_lr", "3e-3", "--recommended_lr", "2e-3", "--out", str(tmp_path),
              "--configs", "baseline,recommended with learning_rate auto over 40 steps", "--stem", "t"])
    assert stated == {None: "0.003", "40": "auto"}
    assert "| recommended with learning_rate auto over 40 steps | 1 | 64 | auto |" in (tmp_path / "t.md").read_text()


def test_a_configuration_that_states_its_own_learning_rate_shows_it_not_the_benchmarks():
    assert tta.summarise("half", 2e-3, ["--learning_rate", "1e-3", "--num_train_epochs", "1",
                                        "--per_device_train_batch_size", "32"], [rows((8, 10.0, 1.0, 0.9))], 0.8,
                         "eval_accuracy")["learning_rate"] == 1e-3


def test_the_peers_table_pairs_fastft_with_each_peer_by_seed():
    peers = load("peers")
    ours = tta.summarise("fastft", 2e-3, ["--num_train_epochs", "2", "--per_device_train_batch_size", "32"],
                         [rows((8, 10.0, 1.0, 0.9)), rows((8, 20.0, 1.0, 0.9))], 0.8, "eval_accuracy")
    peer = tta.summarise("fastai", 1e-3, ["--num_train_epochs", "3", "--per_device_train_batch_size", "64"],
                         [rows((8, 28.0, 1.0, 0.9)), rows((8, 30.0, 1.0, 0.7))], 0.8, "eval_accuracy")
    meta = {"metric": "eval_accuracy", "target": 0.8, "eval_samples": 100, "eval_data": "images",
            "train_samples": 400, "image_size": 64, "threads": 1, "workers": 2, "seeds": 2, "first_seed": 0,
            "machine": "cpu", "date": "2026-12-03"}
    table = peers.markdown([ours, peer], meta, "Target eval_accuracy >= 0.8 on 100 images")
    assert table.startswith("Target eval_accuracy >= 0.8 on 100 images, seeds 0-1, 1 thread(s) per run, ")
    # seed 0: 27 s against 9 s, 3x; seed 1: the peer never reaches it, infinitely slower
    assert "| fastai | 3 | 64 | 0.001 | 1/2 | never | 27-27 | infx (3.00-inf) | never |" in table
    assert "| fastft | 2 | 32 | 0.002 | 2/2 | 14 | 9-19 | - |" in table


def test_the_peers_table_gives_each_fastft_row_its_own_column_against_each_peer():
    peers = load("peers")
    ours = tta.summarise("fastft", 2e-3, ["--num_train_epochs", "2", "--per_device_train_batch_size", "32"],
                         [rows((8, 10.0, 1.0, 0.9)), rows((8, 20.0, 1.0, 0.9))], 0.8, "eval_accuracy")
    lp_ft = tta.summarise("fastft after a probe", 2e-3, ["--num_train_epochs", "3", "--per_device_train_batch_size",
                                                         "32"], [rows((8, 3.0, 1.0, 0.9)), rows((8, 6.0, 1.0, 0.9))],
                          0.8, "eval_accuracy")
    peer = tta.summarise("fastai", 1e-3, ["--num_train_epochs", "3", "--per_device_train_batch_size", "64"],
                         [rows((8, 28.0, 1.0, 0.9)), rows((8, 58.0, 1.0, 0.9))], 0.8, "eval_accuracy")
    meta = {"metric": "eval_accuracy", "target": 0.8, "threads": 1, "workers": 2, "seeds": 2, "first_seed": 0,
            "machine": "cpu", "date": "2026-12-07"}
    table = peers.markdown([ours, lp_ft, peer], meta, "Target")
    assert ("| fastft sooner by, paired by seed: median (min-max) | fastft after a probe sooner by, paired by seed: "
            "median (min-max) |") in table
    # the peer: 27 s and 57 s against 9 s and 19 s (3x), against 2 s and 5 s (13.5x, 11.4x)
    assert "| fastai | 3 | 64 | 0.001 | 2/2 | 42 | 27-57 | 3.00x (3.00-3.00) | 12.45x (11.40-13.50) |" in table
    assert "| fastft after a probe | 3 | 32 | 0.002 | 2/2 | 3.5 | 2.0-5.0 | - | - |" in table


def test_the_peers_benchmark_names_each_configuration_without_commas_and_refuses_an_unknown_one(tmp_path, capsys):
    from fastft.run import main
    from fastft.tasks.image import ImageArguments, ImageTask

    peers = load("peers")
    configs = peers.configurations(peers.argparse.Namespace(image_size=64, fastft_lr=2.78e-3, fine_tune_epochs=2,
                                                            one_cycle_epochs=3, max_train_samples=4096,
                                                            max_eval_samples=1000, quickstart_epochs=2,
                                                            eval_images=512), tmp_path)
    assert not [n for n in configs if "," in n], "--configs splits on commas"
    names = [n for n in configs if "fastai" in n][-1:] + [n for n in configs if n.startswith("fastft")]
    assert tta.selected(list(configs), ",".join(names)) == names
    # the old name, with its comma, is two unknown names
    with pytest.raises(SystemExit, match=r"--configs: unknown configuration\(s\) 'fastai fine_tune\(2\)', 'lr_find'; "
                                         r"valid: fastft \(shorter rise at batch 32\), "):
        tta.selected(list(configs), "fastft (shorter rise at batch 32),fastai fine_tune(2), lr_find")
    # the LP-FT row is the recipe after one head-only epoch on cached features, a valid image run
    lp_ft, epochs, _ = configs["fastft (shorter rise at batch 32) after a cached linear-probe epoch"]
    assert epochs == "1+2"
    assert main(ImageTask, ImageArguments, [*lp_ft[2:], "--dataset_name", "fastft:fashion_mnist", "--max_train_samples",
                                            "1024", "--output_dir", str(tmp_path / "o"), "--dry_run"]) is None
    out = capsys.readouterr().out
    assert "total optimizer steps:      96 (3 epochs)" in out
    assert "(freeze_epochs=1); head-only epochs as a linear probe on features computed once" in out
    # the shipped quickstart, as it is but for the data, size and epochs, with a probe epoch and a fresh
    # schedule after it
    restarted, epochs, batch = configs["fastft quickstart recipe after a cached linear-probe epoch and a restarted "
                                       "schedule"]
    assert (epochs, batch) == ("1+2", "32") and tta.flag(restarted, "config").endswith("recipes/image/quickstart.yaml")
    assert main(ImageTask, ImageArguments, [*restarted[2:], "--dataset_name", "fastft:fashion_mnist",
                                            "--max_train_samples", "1024", "--output_dir", str(tmp_path / "q"),
                                            "--dry_run"]) is None
    out = capsys.readouterr().out
    assert "total optimizer steps:      96 (3 epochs)" in out and "learning rate (scaled):     0.001" in out
    assert "schedule restarted:         at step 32 (the unfreezing), warming up over 6" in out


def test_the_peers_benchmark_at_the_quickstarts_size_runs_the_recipe_as_shipped_and_evaluates_alike(tmp_path):
    peers = load("peers")
    configs = peers.configurations(peers.argparse.Namespace(image_size=64, fastft_lr=2.78e-3, fine_tune_epochs=2,
                                                            one_cycle_epochs=3, max_train_samples=20000,
                                                            max_eval_samples=2000, quickstart_epochs=1,
                                                            eval_images=1024), tmp_path)
    shipped, epochs, batch = configs["fastft quickstart recipe for 1 epoch"]
    assert (epochs, batch, tta.flag(shipped, "num_train_epochs")) == ("1", "32", "1")
    lp_ft, epochs, _ = configs["fastft quickstart recipe after a cached linear-probe epoch and a restarted schedule"]
    assert (epochs, tta.flag(lp_ft, "num_train_epochs")) == ("1+1", "2")
    # every tool evaluates after the same number of training images: 1024 = 32 x 32 = 16 x 64 = 128 x 8
    assert tta.flag(shipped, "eval_steps") == tta.flag(lp_ft, "eval_steps") == "32"
    assert tta.flag(configs["fastai fit_one_cycle(3) unfrozen at its lr_find LR"][0], "eval_every") == "16"
    assert tta.flag(configs["HF Trainer at the example's README hyperparameters"][0], "eval_steps") == "128"
    with pytest.raises(SystemExit, match=r"--eval_images 1000: must be a positive multiple of 64"):
        peers.main(["--eval_images", "1000"])


@pytest.mark.parametrize("task", ["image", "translation"])
def test_every_benchmark_configuration_is_a_valid_recipe(task, capsys):
    """Each configuration's flags parse as fields of the task's script (a typo would waste a long run)."""
    from fastft.run import main
    from fastft.tasks.image import ImageArguments, ImageTask
    from fastft.tasks.translation import TranslationArguments, TranslationTask

    bench = tta.BENCHES[task]
    assert not [n for n in bench.configurations if "," in n], "--configs splits on commas"
    task_cls, args_cls = {"image": (ImageTask, ImageArguments),
                          "translation": (TranslationTask, TranslationArguments)}[task]
    variants = [bench.recommended + flags for flags in bench.variants.values()]
    for extra in [bench.no_trainer + flags for flags in bench.tricks.values()] + [bench.recommended, *variants]:
        # as the benchmark orders them: the common flags first, so a configuration's own (learning_rate auto,
        # two epochs for a probe epoch and one of fine-tuning) win
        argv = [*bench.common, "--num_train_epochs", "1", "--eval_steps", "5", "--max_train_samples", "1024",
                "--learning_rate", "1e-3", *extra, "--output_dir", "unused", "--dry_run"]
        assert main(task_cls, args_cls, argv) is None, extra
    assert "global batch" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # it sets torch's threads: restored afterwards
def test_engine_overhead_checks_the_trajectory_and_reports_paired_ratios(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # and sets this if unset: undone afterwards
    eo = load("engine_overhead")
    eo.main(["--repeats", "2", "--steps", "3", "--warmup", "1", "--batch", "4", "--threads", "1",
             "--out", str(tmp_path)])
    report = json.loads((tmp_path / "engine_overhead.json").read_text())
    for name, m in report["models"].items():
        assert m["trajectory_max_rel_gap"] < 1e-5, name  # fastft trains exactly as the plain loop
        assert all(len(rates) == 2 and min(rates) > 0 for rates in m["steps_per_s"].values())
    assert "| resnet18 (conv) |" in (tmp_path / "engine_overhead.md").read_text()


@pytest.mark.slow
def test_precision_throughput_times_each_variant_through_the_engine(tmp_path):
    pt = load("precision_throughput")
    report = pt.main(["--models", "small", "--variants", "fp32,bf16 + channels_last", "--batch", "4",
                      "--steps", "3", "--warmup", "1", "--repeats", "2", "--out", str(tmp_path)])
    for m in report["models"].values():
        assert set(m["median"]) == {"fp32", "bf16 + channels_last"} and min(m["median"].values()) > 0
        assert m["vs_fp32"]["fp32"]["median"] == 1.0
    table = (tmp_path / "precision_throughput_cpu.md").read_text()
    assert "| resnet18 (conv) | bf16 + channels_last |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only where there is no GPU")
def test_precision_throughput_refuses_fp16_without_a_gpu(capsys):
    with pytest.raises(SystemExit):
        load("precision_throughput").main(["--variants", "fp32,fp16"])
    assert "needs a GPU" in capsys.readouterr().err


def test_results_name_the_cpu_generation_and_its_vector_units():
    """Two VMs both called 'AMD EPYC' ran at different speeds: the family/model and AVX-512 tell them apart."""
    from fastft import host

    block = "processor\t: {n}\nmodel name\t: AMD EPYC\ncpu family\t: {fam}\nmodel\t\t: 2\nflags\t\t: fpu {flags}\n"
    zen5 = "\n".join(block.format(n=n, fam=26, flags="avx2 avx512f avx512_bf16") for n in (0, 1))
    assert host.cpu(zen5).startswith("AMD EPYC (family 26, model 2), ")
    assert host.cpu(zen5).endswith(" cores, AVX-512 with BF16")
    assert host.cpu(block.format(n=0, fam=23, flags="avx2")).endswith(" cores, AVX2")
    assert "cores, no AVX2" in host.cpu("")  # no /proc/cpuinfo (macOS): still a description


def test_padding_counts_each_tensor_padded_to_its_batchs_longest():
    pad = load("padding")
    lengths = [(3, 1), (1, 2), (3, 2), (1, 4)]  # (source, labels) per sample
    # [0, 1], [2, 3]: sources pad to 3 (2 + 0 padding) and 3 (0 + 2), labels to 2 (1 + 0) and 4 (2 + 0)
    assert pad.epoch_padding([0, 1, 2, 3], lengths, 2) == (2 + 2 + 1 + 2, 6 + 6 + 4 + 8)
    # [0, 2], [1, 3]: the long sources together: no source padding; labels pad to 2 (1) and 4 (2)
    assert pad.epoch_padding([0, 2, 1, 3], lengths, 2) == (0 + 0 + 1 + 2, 6 + 2 + 4 + 8)
    # batches of their own sizes (batch_by_tokens): [0, 2, 1] pads sources to 3 (2) and labels to 2 (1)
    assert pad.epoch_padding([[0, 2, 1], [3]], lengths, None) == (2 + 1, 9 + 6 + 1 + 4)


@pytest.mark.parametrize("task", ["speech", "translation"])
def test_every_lora_benchmark_configuration_is_a_valid_recipe(task, capsys):
    from fastft.cli import run_command

    lora = load("lora")
    script, recipe, _, _, sizes = lora.TASKS[task]
    for name, flags in lora.CONFIGS.items():
        if "10x LR" in name:
            flags = [*flags, *lora.ten_times_lr(recipe)]
        for size_flags, _ in sizes.values():
            run_command(["train", task, "--config", recipe, *size_flags, *flags, "--output_dir", "unused",
                         "--dry_run"])
    assert "global batch" in capsys.readouterr().out


def test_the_translation_peer_gets_the_pairs_fastft_trains_and_scores(tmp_path, capsys):
    """Same data in both tools: the exported seed's pairs are the ones fastft's task draws with that seed."""
    from fastft.arguments import parse_args
    from fastft.config import TrainingArguments
    from fastft.run import main
    from fastft.tasks.translation import TranslationArguments, TranslationTask

    pt = load("peers_translation")
    folder = pt.export(3, 48, 20, tmp_path)
    train, test = ([json.loads(line)["translation"] for line in (folder / f"{split}.json").read_text().splitlines()]
                   for split in ("train", "test"))
    task = TranslationTask(*parse_args([TranslationArguments, TrainingArguments], [
        "--config", str(pt.RECIPE), "--seed", "3", "--max_train_samples", "48", "--max_eval_samples", "20"]))
    train_set, _ = task.load_data()
    assert [p["de"] for p in test] == task.eval_sources and [p["en"] for p in test] == task.eval_references
    assert len(train) == len(train_set) == 48
    assert [train_set[i]["input_ids"] for i in range(48)] == [task.encode(p["de"], p["en"])["input_ids"] for p in train]
    # fastft's configuration is a valid run of its script
    configs = pt.configurations(pt.argparse.Namespace(steps=200, max_train_samples=6400, max_eval_samples=200),
                                tmp_path)
    assert not [n for n in configs if "," in n], "--configs splits on commas"
    fastft_cmd = configs["fastft (the translation quickstart recipe)"][0]
    assert main(TranslationTask, TranslationArguments, [*fastft_cmd[2:], "--output_dir", str(tmp_path / "o"),
                                                        "--dry_run"]) is None
    assert "total optimizer steps:      200" in capsys.readouterr().out
