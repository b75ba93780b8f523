"""The engine's per-sample augmentation seeding, which makes resumes bit-exact."""
from __future__ import annotations

import random

import numpy as np
import torch

from fastft.engine import _SeededSamples


class Draws(torch.utils.data.Dataset):
    """A sample is one draw from each global RNG an augmentation may use."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), torch.rand(()).item()


def test_a_sample_depends_only_on_seed_epoch_and_index_and_global_rngs_are_untouched():
    samples = _SeededSamples(Draws(), seed=3)
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
