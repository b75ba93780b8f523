"""batch_by_tokens: batches of similar lengths within a token budget, as many each epoch, seeded, sharded
across processes, planned exactly and resumed bit-exact."""
from __future__ import annotations

import json
import random

import pytest
import torch
from accelerate.data_loader import prepare_data_loader
from conftest import image_argv
from speech_fixtures import asr_argv, spoken_words, tiny_whisper  # noqa: F401 (fixtures)
from test_group_by_length import assert_resumes_bit_exact
from test_translation import tiny_marian, toy_argv, toy_data  # noqa: F401 (fixtures)

from fastft.batches import TokenBudgetBatches
from fastft.config import TrainingArguments
from fastft.plan import make_plan
from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask
from fastft.tasks.speech import SpeechArguments, speech_task
from fastft.tasks.translation import TranslationArguments, TranslationTask

pytestmark = pytest.mark.usefixtures("one_thread")

_rng = random.Random(0)
LENGTHS = [_rng.randint(2, 60) for _ in range(992)]


def padded(batch: list[int]) -> int:
    """Tokens of a batch padded to its longest sample."""
    return len(batch) * max(LENGTHS[i] for i in batch)


def test_an_epoch_holds_every_sample_once_in_batches_within_the_budget_longest_first():
    batches = TokenBudgetBatches(LENGTHS, mean_batch_size=16, seed=0)
    assert batches.max_tokens == round(16 * sum(LENGTHS) / len(LENGTHS))
    first = list(batches)
    assert sorted(i for b in first for i in b) == list(range(len(LENGTHS))) and len(first) == len(batches)
    assert all(padded(b) <= batches.max_tokens for b in first)
    assert 62 <= len(first) <= 70  # about the 62 batches of 16 that fixed batches give (measured 64)
    assert max(LENGTHS) in [LENGTHS[i] for i in first[0]]  # the longest lead: an out-of-memory shows at once
    sizes = {max(LENGTHS[i] for i in b): len(b) for b in first}
    assert sizes[min(sizes)] > 8 * sizes[max(sizes)]  # short samples many to a batch, long ones few
    waste = sum(padded(b) for b in first) / sum(LENGTHS) - 1
    assert waste < 0.05  # padding (measured 0.014; 0.8 for shuffled batches of 16)


def test_each_epoch_has_as_many_batches_with_other_companions_replayed_from_seed_and_epoch():
    batches = TokenBudgetBatches(LENGTHS, 16, seed=0)
    first = list(batches)
    assert list(batches) == first  # replayed exactly: a resume sees the same batches
    batches.set_epoch(1)
    second = list(batches)
    assert sorted(map(len, second)) == sorted(map(len, first))  # the plan's count holds every epoch
    assert {frozenset(b) for b in second} != {frozenset(b) for b in first}  # ties broken anew
    assert [len(b) for b in second] != [len(b) for b in first]  # and the batches in another order
    assert list(TokenBudgetBatches(LENGTHS, 16, seed=1)) != first


def test_a_sample_longer_than_the_budget_is_a_batch_of_its_own():
    batches = TokenBudgetBatches([1, 2, 1, 100, 2], mean_batch_size=1, seed=0)  # budget 21 tokens
    assert list(batches)[0] == [3] and sorted(map(len, batches)) == [1, 4]


def test_two_processes_take_alternate_batches_and_the_plan_counts_them():
    batches = TokenBudgetBatches(LENGTHS, mean_batch_size=8, seed=0)
    loaders = [prepare_data_loader(torch.utils.data.DataLoader(range(len(LENGTHS)), batch_sampler=batches),
                                   num_processes=2, process_index=rank, put_on_device=False) for rank in (0, 1)]
    ranks = [[b.tolist() for b in loader] for loader in loaders]
    plan = make_plan(TrainingArguments(output_dir="unused", per_device_train_batch_size=8), len(LENGTHS), 2,
                     token_batches=batches)
    assert len(ranks[0]) == len(ranks[1]) == len(loaders[0]) == plan.batches_per_epoch == plan.steps_per_epoch
    order = list(batches)
    assert [b for pair in zip(*ranks) for b in pair][:len(order)] == order  # every batch once, alternately
    assert plan.global_batch_size == 16 and f"up to {batches.max_tokens} padded tokens" in plan.describe()


def test_translation_with_token_batches_learns_plans_exactly_and_resumes_bit_exact(tmp_path, toy_data, tiny_marian,
                                                                                   capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    flags = ["--batch_by_tokens", "true", "--num_train_epochs", "2", "--eval_strategy", "no"]
    main(TranslationTask, TranslationArguments, toy_argv(straight, toy_data, tiny_marian, *flags, "--dry_run"))
    out = capsys.readouterr().out
    assert "token-budget batches (batch_by_tokens=True)" in out and "padded tokens each" in out
    planned = int(out.split("total optimizer steps:")[1].split()[0])
    final = main(TranslationTask, TranslationArguments, toy_argv(straight, toy_data, tiny_marian, *flags,
                                                                  "--eval_before_training", "true"))
    before = json.loads((straight / "metrics.jsonl").read_text().splitlines()[0])
    assert final["total_steps"] == planned  # the dry run counts the batches training gets
    assert before["step"] == 0 and final["eval_loss"] < 0.8 * before["eval_loss"]  # it learns
    assert_resumes_bit_exact(straight, resumed, toy_data, tiny_marian, flags)
    grouped = main(TranslationTask, TranslationArguments, toy_argv(
        tmp_path / "grouped", toy_data, tiny_marian, "--group_by_length", "true", "--num_train_epochs", "2",
        "--eval_strategy", "no"))
    assert grouped["eval_loss"] != final["eval_loss"]  # not the length groups of a fixed size


@pytest.mark.parametrize("case", ["speech recognition", "image", "with group_by_length"])
def test_where_it_does_not_apply_it_is_refused_in_one_line(case, tmp_path, spoken_words, tiny_whisper, tiny_images,
                                                           tiny_model, toy_data, tiny_marian, capsys):
    flags = ("--batch_by_tokens", "true")
    run, expected = {
        "speech recognition": (lambda: main(speech_task, SpeechArguments, asr_argv(
            tmp_path / "run", spoken_words, tiny_whisper, *flags)), "automatic-speech-recognition batch's cost"),
        "image": (lambda: main(ImageTask, ImageArguments, image_argv(tmp_path / "run", tiny_images, tiny_model,
                                                                     *flags)), "drop batch_by_tokens"),
        "with group_by_length": (lambda: main(TranslationTask, TranslationArguments, toy_argv(
            tmp_path / "run", toy_data, tiny_marian, *flags, "--group_by_length", "true")), "drop group_by_length"),
    }[case]
    with pytest.raises(SystemExit):
        run()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_by_tokens" in err[0] and expected in err[0], err
    assert not (tmp_path / "run" / "model.safetensors").exists()
