"""The engine's per-sample augmentation seeding, which makes resumes bit-exact, and its CPU thread check."""
from __future__ import annotations

import random
import types
import warnings

import numpy as np
import pytest
import torch

from fastft.batches import SeededSamples
from fastft.launch import oversubscription, warn_if_oversubscribed


class Draws(torch.utils.data.Dataset):
    """A sample is one draw from each global RNG an augmentation may use."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), torch.rand(()).item()


def test_a_sample_depends_only_on_seed_epoch_and_index_and_global_rngs_are_untouched():
    samples = SeededSamples(Draws(), seed=3)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    before = random.random(), float(np.random.rand()), torch.rand(()).item()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    batch = samples.__getitems__([5, 1, 2])
    # The caller's streams go on as if no sample had been drawn (mixup, dropout draw from them).
    assert (random.random(), float(np.random.rand()), torch.rand(()).item()) == before
    # The same index gives the same draws alone, in another batch, or in another order (a resume).
    assert samples[1] == batch[1] and samples.__getitems__([2, 7])[0] == batch[2]
    assert len({batch[0], batch[1], batch[2]}) == 3  # but different indices differ
    samples.epoch = 1
    assert samples[5] != batch[0]  # and a new epoch gives new augmentations


def test_oversubscribed_cpu_threads_warn_with_the_setting_that_fixes_them(monkeypatch):
    assert oversubscription(threads=1, local_processes=2, cores=2) is None
    assert oversubscription(threads=2, local_processes=1, cores=2) is None
    assert "set OMP_NUM_THREADS=1 per process" in oversubscription(threads=2, local_processes=2, cores=2)
    assert "OMP_NUM_THREADS=4" in oversubscription(threads=16, local_processes=4, cores=16)

    cpu = types.SimpleNamespace(device=torch.device("cpu"), is_local_main_process=True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1000")  # more processes than any machine has cores
    with pytest.warns(UserWarning, match="1000 process"):
        warn_if_oversubscribed(cpu)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_oversubscribed(cpu)  # one process, one thread: silent
