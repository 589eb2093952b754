"""Keras' generator semantics for one Lightning epoch: `steps_per_epoch` batches from an endless stream.

Keras 1st-edition listings train with `fit_generator(..., steps_per_epoch=100)`: an epoch is 100 batches
drawn from a `flow_from_directory` iterator that walks the data in passes, reshuffled every pass, each
pass ending with a short batch (2000 images in batches of 32: 62 full batches and one of 16). So with
batch 32 an "epoch" is 3,200 images, not 2,000, and the stream carries on where the last epoch stopped.

`StreamBatchSampler` reproduces that. Batch j of the stream is batch (j mod k) of pass (j div k), k the
batches per pass; pass p is a permutation drawn from (seed, p) alone. Any epoch is therefore a pure
function of (seed, epoch): a resumed run sees exactly the batches an uninterrupted one would. With
`steps=None` an epoch is one pass (PyTorch's usual epoch).

`shuffle_buffer` (the 2nd edition's `image_dataset_from_directory`): instead of a fresh permutation per pass,
the file list is shuffled once (from the seed) and every pass goes through tf.data's `shuffle(buffer)`: a
buffer of that many items, each output drawn at random from it and refilled from the list in order, so an
item moves at most about `buffer` places forward per pass and the passes stay correlated.

Several devices (`rank`, `world_size`): rank r takes batches r, r + N, r + 2N, ... of the same stream, so
one optimizer step consumes N consecutive stream batches (the global batch is N x batch_size) and an epoch
of `steps` steps covers N x steps batches. Lightning cannot wrap a custom batch sampler in its
DistributedSampler, hence this. With one device the stream is exactly the one above.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


class StreamBatchSampler(Sampler[list[int]]):
    def __init__(self, size: int, batch_size: int, steps: int | None = None, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int | None = None):
        if size < 1 or batch_size < 1:
            raise ValueError(f"need at least one sample and a positive batch size, got {size}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size, self.shuffle_buffer = rank, world_size, shuffle_buffer
        self.per_pass = math.ceil(size / batch_size)
        # steps=None: one pass per epoch over all ranks together (the last step may run into the next pass)
        self.steps = steps if steps is not None else math.ceil(self.per_pass / world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch (train and validation loaders alike)."""
        self.epoch = int(epoch)

    @property
    def sampler(self) -> "StreamBatchSampler":
        # Lightning calls set_epoch on `loader.sampler` and `loader.batch_sampler.sampler`, not on the batch
        # sampler itself: answering as our own `.sampler` gets us the call.
        return self

    def _pass(self, index: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if self.shuffle_buffer:
            files = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1_000_003 - 1))
            return buffer_shuffle(files, self.shuffle_buffer, generator)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self):
        first = self.epoch * self.steps * self.world_size
        order, current = None, -1
        for i in range(self.steps):
            batch = first + i * self.world_size + self.rank
            pass_index, in_pass = divmod(batch, self.per_pass)
            if pass_index != current:
                order, current = self._pass(pass_index), pass_index
            yield order[in_pass * self.batch_size:(in_pass + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.steps


def buffer_shuffle(items: torch.Tensor, buffer: int, generator: torch.Generator) -> torch.Tensor:
    """tf.data's `shuffle(buffer)`: fill a buffer with the first items; repeatedly output a random one of it
    and put the next input item in its place; when the input runs out, empty the buffer at random."""
    pool, rest, out = items[:buffer].tolist(), iter(items[buffer:].tolist()), []
    while pool:
        i = int(torch.randint(len(pool), (1,), generator=generator))
        out.append(pool[i])
        following = next(rest, None)
        if following is None:
            pool[i] = pool[-1]
            pool.pop()
        else:
            pool[i] = following
    return torch.tensor(out, dtype=torch.long)
