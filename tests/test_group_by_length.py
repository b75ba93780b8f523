"""group_by_length: the HF Trainer's length groups, shuffled, seeded by epoch, sharded alike, resumed exactly."""
from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from accelerate.data_loader import prepare_data_loader
from conftest import image_argv
from safetensors.torch import load_file
from transformers.trainer_pt_utils import get_length_grouped_indices
from speech_fixtures import asr_argv, spoken_words, tiny_whisper  # noqa: F401 (fixtures)
from test_translation import tiny_marian, toy_argv, toy_data  # noqa: F401 (fixtures)

from fastft.batches import LengthGroupedOrder
from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask
from fastft.tasks.speech import SpeechArguments, speech_task
from fastft.tasks.translation import TranslationArguments, TranslationTask

pytestmark = pytest.mark.usefixtures("one_thread")

_rng = random.Random(0)
LENGTHS = [_rng.randint(2, 60) for _ in range(992)]  # 62 global batches of 2 x 8


def padding(order: list[int], batch: int) -> float:
    """Share of a padded batch that is padding, over the epoch."""
    batches = [[LENGTHS[i] for i in order[k:k + batch]] for k in range(0, len(order), batch)]
    return sum(max(b) * len(b) - sum(b) for b in batches) / sum(max(b) * len(b) for b in batches)


def test_the_order_is_a_permutation_of_similar_lengths_drawn_from_seed_and_epoch():
    order = LengthGroupedOrder(LENGTHS, group_size=16, seed=0)
    first = list(order)
    assert sorted(first) == list(range(len(LENGTHS))) and list(order) == first  # replayed exactly
    assert LENGTHS[first[0]] == max(LENGTHS)  # the longest leads: an out-of-memory shows at once
    order.set_epoch(1)
    assert list(order) != first
    assert list(LengthGroupedOrder(LENGTHS, 16, seed=1)) != first
    shuffled = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(0)).tolist()
    assert padding(first, 16) < padding(shuffled, 16) / 4  # measured 0.07 against 0.46


def falls(order: list[int], batch: int) -> float:
    """Share of consecutive steps whose mean length is below the previous step's."""
    means = [sum(LENGTHS[i] for i in order[k:k + batch]) / batch for k in range(0, len(order) - batch + 1, batch)]
    return sum(b < a for a, b in zip(means, means[1:])) / (len(means) - 1)


def test_the_steps_come_in_random_order_not_a_sawtooth_from_long_to_short():
    # transformers' order runs each megabatch from its longest to its shortest samples, so an
    # evaluation may follow a stretch of the shortest ones (transformers#20810).
    hf = get_length_grouped_indices(LENGTHS, 16, generator=torch.Generator().manual_seed(0))
    ours = list(LengthGroupedOrder(LENGTHS, group_size=16, seed=0))
    assert falls(hf, 16) > 0.9 and 0.3 < falls(ours, 16) < 0.7  # measured 0.93 against 0.61


def test_the_groups_are_transformers_and_a_short_last_group_stays_last():
    lengths = LENGTHS + [30] * 8  # 62 full groups of 16 and 8 left over
    ours = list(LengthGroupedOrder(lengths, group_size=16, seed=3))
    hf = get_length_grouped_indices(lengths, 16, generator=torch.Generator().manual_seed(hash((3, 0)) & 0xFFFF_FFFF))
    groups = lambda order: [frozenset(order[k:k + 16]) for k in range(0, 992, 16)]  # noqa: E731
    assert set(groups(ours)) == set(groups(hf)) and groups(ours) != groups(hf)
    assert ours[:16] == hf[:16] and ours[992:] == hf[992:]  # the longest leads, the 8 left over end the epoch


def test_two_processes_share_each_global_batch_of_one_stretch():
    order = LengthGroupedOrder(LENGTHS, group_size=2 * 8, seed=0)  # 2 processes x 8 per device
    loaders = [prepare_data_loader(torch.utils.data.DataLoader(range(len(LENGTHS)), batch_size=8, sampler=order),
                                   num_processes=2, process_index=rank, put_on_device=False) for rank in (0, 1)]
    steps = list(zip(*[[batch.tolist() for batch in loader] for loader in loaders]))
    seen = [i for step in steps for batch in step for i in batch]
    assert sorted(seen) == list(range(len(LENGTHS)))  # every sample once, no process repeats another's
    assert [a + b for a, b in steps] == [list(order)[k:k + 16] for k in range(0, len(LENGTHS), 16)]


def assert_resumes_bit_exact(straight, resumed, toy_data, tiny_marian, flags: list[str]) -> None:
    """A run with ``flags`` killed after step 60 (in its second epoch) and resumed ends where ``straight`` did."""
    argv = toy_argv(resumed, toy_data, tiny_marian, *flags, "--checkpointing_steps", "30", "--save_total_limit", "5")
    main(TranslationTask, TranslationArguments, argv)
    for later in [p for p in resumed.glob("checkpoint-*") if int(p.name.split("-")[1]) > 60]:
        shutil.rmtree(later)  # as if the run died after step 60
    for name in ("metrics.json", "model.safetensors"):
        (resumed / name).unlink()
    main(TranslationTask, TranslationArguments, argv)
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_translation_with_length_groups_learns_and_resumes_bit_exact(tmp_path, toy_data, tiny_marian, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    flags = ["--group_by_length", "true", "--num_train_epochs", "2", "--eval_strategy", "no"]
    main(TranslationTask, TranslationArguments, toy_argv(straight, toy_data, tiny_marian, *flags, "--dry_run"))
    assert "length-grouped batches (group_by_length=True)" in capsys.readouterr().out
    final = main(TranslationTask, TranslationArguments, toy_argv(straight, toy_data, tiny_marian, *flags,
                                                                  "--eval_before_training", "true"))
    before = json.loads((straight / "metrics.jsonl").read_text().splitlines()[0])
    assert before["step"] == 0 and final["eval_loss"] < 0.8 * before["eval_loss"]  # it learns (3.27 -> 2.37)
    assert_resumes_bit_exact(straight, resumed, toy_data, tiny_marian, flags)
    # Not the shuffled order: the same run without length groups ends elsewhere.
    plain = main(TranslationTask, TranslationArguments,
                 toy_argv(tmp_path / "plain", toy_data, tiny_marian, "--num_train_epochs", "2", "--eval_strategy", "no"))
    assert plain["eval_loss"] != final["eval_loss"]


def test_speech_recognition_groups_by_transcript_tokens(tmp_path, spoken_words, tiny_whisper):
    final = main(speech_task, SpeechArguments, asr_argv(tmp_path / "run", spoken_words, tiny_whisper,
                                                        "--group_by_length", "true", "--max_steps", "4"))
    assert final["total_steps"] == 4


def test_a_task_without_token_lengths_refuses_it_in_one_line(tmp_path, tiny_images, tiny_model, capsys):
    with pytest.raises(SystemExit):
        main(ImageTask, ImageArguments, image_argv(tmp_path / "run", tiny_images, tiny_model, "--group_by_length",
                                                   "true"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "group_by_length" in err[0] and "image-classification samples have none" in err[0]
    assert not (tmp_path / "run" / "model.safetensors").exists()
