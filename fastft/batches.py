"""Data helpers of the loop: seeded per-sample augmentation, length-grouped order, token-budget batches,
accumulation windows, padded gathering."""
from __future__ import annotations

import random
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

IGNORE_INDEX = -100  # padding of labels and gathered sequences, as in transformers


def cat_padded(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate batches whose sequences (dim 1) differ in length, padding with IGNORE_INDEX."""
    if chunks[0].ndim < 2:
        return torch.cat(chunks)
    width = max(c.shape[1] for c in chunks)
    # F.pad lists the last dimension first: leave trailing dims alone, pad dim 1 at its end.
    return torch.cat([torch.nn.functional.pad(c, (0, 0) * (c.ndim - 2) + (0, width - c.shape[1]),
                                              value=IGNORE_INDEX) for c in chunks])


def windows(loader: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Micro-batches grouped by optimizer step (the last window of an epoch may be short)."""
    window = []
    for batch in loader:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


class SeededSamples(torch.utils.data.Dataset):
    """Each sample's augmentation draws from an RNG seeded by (seed, epoch, index).

    accelerate prefetches a batch ahead and a resume re-reads the skipped batches,
    so augmentations drawn from the global RNG would differ after a resume.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        # The DataLoader fetches a whole batch through here, so the global RNG states are saved
        # and restored once a batch: numpy's get/set_state alone costs ~0.1 ms, ~3 % of a
        # vit_tiny CPU step when it was paid per sample.
        py_state, np_state = random.getstate(), np.random.get_state()
        # fork_rng restores only the CPU generator: torch.manual_seed would also seed (and leave
        # seeded) every accelerator, and costs milliseconds a sample in CUDA builds.
        with torch.random.fork_rng(devices=[]):
            try:
                samples = []
                for index in indices:
                    seed = hash((self.seed, self.epoch, index)) & 0xFFFF_FFFF
                    torch.default_generator.manual_seed(seed)
                    random.seed(seed)
                    np.random.seed(seed)
                    samples.append(self.dataset[index])
                return samples
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class LengthGroupedOrder(torch.utils.data.Sampler):
    """``group_by_length``: samples of similar lengths share an optimizer step; the steps come in random order.

    The groups are transformers' (``get_length_grouped_indices``, the HF Trainer's): it shuffles,
    cuts the order into megabatches of 50 groups and sorts each longest first. Taken as they
    are, each megabatch runs from its longest to its shortest samples, a sawtooth of 50 steps
    (transformers#20810): the loss oscillates, and an evaluation may follow a stretch of the
    shortest samples (the reduced translation quickstart ended 200 steps at BLEU 0.00-0.36,
    against 0.38-2.18 with the groups shuffled). So the groups are then shuffled, as fairseq
    and lhotse shuffle their length buckets; the group holding the longest sample still leads
    (an out-of-memory comes at once) and a short last group stays last, so every full group is
    one step. A group is one optimizer step's samples on all processes, so each process's
    batches of a step hold similar lengths. Both shuffles draw from (seed, epoch) as the
    shuffled order does: a resume replays them exactly.
    """

    def __init__(self, lengths: Sequence[int], group_size: int, seed: int):
        self.lengths, self.group_size, self.seed, self.epoch = list(lengths), group_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch)) & 0xFFFF_FFFF)
        grouped = get_length_grouped_indices(self.lengths, self.group_size, generator=generator)
        size, full = self.group_size, len(grouped) // self.group_size
        steps = [grouped[k:k + size] for k in range(0, len(grouped), size)]
        middle = steps[1:full]  # the full groups after the one holding the longest sample
        shuffled = [middle[g] for g in torch.randperm(len(middle), generator=generator).tolist()]
        return iter([i for step in [*steps[:1], *shuffled, *steps[max(full, 1):]] for i in step])


class TokenBudgetBatches(torch.utils.data.Sampler):
    """``batch_by_tokens``: batches of similar lengths, each up to a budget of padded tokens (fairseq's
    ``--max-tokens``), so that short samples come many to a batch and long ones few.

    The budget is ``mean_batch_size`` times the mean sample's tokens, so an epoch has about as many
    batches as fixed batches of ``mean_batch_size`` would give, and LR scaling, the schedule and the
    recipe's batch keep their meaning (as the mean batch). Samples are sorted by length, ties in an
    order drawn from (seed, epoch), and cut greedily: the batch sizes depend only on the lengths, so
    every epoch has the same number of batches (the plan's), with different companions. The batch
    of the longest samples leads (an out-of-memory comes at once); the others come in an order drawn
    from (seed, epoch), so a resume replays them exactly.
    """

    def __init__(self, lengths: Sequence[int], mean_batch_size: int, seed: int):
        if not lengths:
            raise ValueError("batch_by_tokens needs at least one training sample")
        self.lengths, self.seed, self.epoch = list(lengths), seed, 0
        self.max_tokens = max(1, round(mean_batch_size * sum(self.lengths) / len(self.lengths)))
        self.sizes = self._pack(sorted(self.lengths))

    def _pack(self, ascending: list[int]) -> list[int]:
        """Batch sizes along the sorted lengths: each grows while its size x its longest fits the budget
        (a single sample longer than the budget is a batch of its own)."""
        sizes, size = [], 0
        for length in ascending:  # ascending, so each new sample is its batch's longest
            if size and (size + 1) * length > self.max_tokens:
                sizes.append(size)
                size = 0
            size += 1
        return [*sizes, size]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch)) & 0xFFFF_FFFF)
        ties = torch.randperm(len(self.lengths), generator=generator).tolist()
        ascending = sorted(ties, key=self.lengths.__getitem__)  # stable: equal lengths keep the random order
        ends = np.cumsum(self.sizes).tolist()
        batches = [ascending[end - size:end] for size, end in zip(self.sizes, ends)]
        rest = batches[:-1]
        return iter([batches[-1], *(rest[k] for k in torch.randperm(len(rest), generator=generator).tolist())])
