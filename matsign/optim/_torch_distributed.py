"""torch.distributed transports for the engine's matrix work (part of `matsign.optim.torch`).

A step's matrix work runs on *work units*: the sub-stacks `matsign.optim.plan.split`
gives each rank. Two transports bring whole matrices to the rank that computes them:

- `Gathering` (replicated parameters, DDP): every rank holds every matrix; rank ``r``
  computes its sub-stacks and asynchronous ``all_gather`` s of flat buffers, a bucket of
  stacks at a time, share the results;
- `exchanged` (FSDP2, ``Shard(0)``): rank ``r`` holds rows of every matrix; one
  ``all_to_all`` brings each matrix's shards to its owner, who computes it, and one
  sends the result's rows back, in a small pipeline of batches (the next batch's
  shards travel while this one is computed). Shards are padded to ``ceil(m / R)`` rows.

Both send in the ``communication`` dtype and return the result in the input's dtype.
Shampoo and SOAP move whole parameters instead (`to_owners`, `from_owners`, `share`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist

from . import plan
from .plan import buckets, offsets

__all__ = ["Gathering", "Placement", "agree", "as_group", "exchanged", "from_owners", "like",
           "local", "placement", "shard_rows", "share", "size", "to_owners"]

PIPELINE = 4  # batches in flight per stack under FSDP2 (at most)
BUCKET = plan.BUCKET  # elements per rank in one all_gather of replicated results (about)

_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class Placement(NamedTuple):
    """Where a parameter's data lives: the group sharing the work and how it is held."""

    group: object  # a ProcessGroup, or None: this process alone
    sharded: bool  # a DTensor sharded on dim 0 (FSDP2); False: replicated or local


def placement(p: torch.Tensor, process_group=None) -> Placement:
    """The `Placement` of parameter ``p`` given an optimizer's ``process_group``.

    Raises
    ------
    ValueError
        For a DTensor on a mesh of more than one dimension, placed otherwise than
        ``Shard(0)`` or ``Replicate()``, or on another group than ``process_group``.
    """
    group = as_group(process_group)
    if not _is_dtensor(p):
        return Placement(group, False)
    mesh, placements = p.device_mesh, tuple(p.placements)
    if mesh.ndim != 1:
        msg = (f"matsign.optim.torch: a DTensor parameter of shape {tuple(p.shape)} lies on a "
               f"{mesh.ndim}-D mesh; only 1-D meshes (FSDP2, DDP) are supported")
        raise ValueError(msg)
    own = mesh.get_group()
    if group is not None and group is not own:
        msg = (f"matsign.optim.torch: a DTensor parameter of shape {tuple(p.shape)} lies on "
               f"another group than process_group")
        raise ValueError(msg)
    kind = type(placements[0]).__name__
    if kind == "Replicate":
        return Placement(own, False)
    if kind != "Shard" or placements[0].dim != 0:
        msg = (f"matsign.optim.torch: a DTensor parameter of shape {tuple(p.shape)} is placed "
               f"{placements}; supported: Shard(0) (FSDP2) or Replicate()")
        raise ValueError(msg)
    return Placement(own, True)


def as_group(process_group):
    """A ProcessGroup from a group or a 1-D DeviceMesh (None stays None)."""
    if process_group is None or not hasattr(process_group, "get_group"):
        return process_group
    if process_group.ndim != 1:
        msg = f"process_group: a DeviceMesh must be 1-D; got {process_group.ndim}-D"
        raise ValueError(msg)
    return process_group.get_group()


def _is_dtensor(x):
    return type(x).__name__ == "DTensor" and hasattr(x, "to_local")


def local(x: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``x``: the local shard of a DTensor, else ``x`` itself."""
    return x.to_local() if _is_dtensor(x) else x


def like(part: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A state entry as the parameter holds it: a DTensor laid out as ``p`` if ``p`` is one.

    Entries shaped as ``p``'s shard (momentum, moments) become DTensors with ``p``'s mesh
    and placements (so `torch.distributed.checkpoint` saves and reshards them); the
    others (counters, whole-matrix statistics) stay plain tensors.
    """
    if not _is_dtensor(p) or not isinstance(part, torch.Tensor):
        return part
    if tuple(part.shape) != tuple(p.to_local().shape):
        return part
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(part, p.device_mesh, p.placements, shape=p.shape,
                              stride=p.stride(), run_check=False)


def size(group) -> int:
    """The number of ranks in ``group``."""
    return dist.get_world_size(group)


def agree(finite: torch.Tensor, group) -> torch.Tensor:
    """The 0-d finite flag of every rank of ``group`` together (one ``all_reduce``)."""
    flag = finite.to(torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
    return flag.to(torch.bool)


def shard_rows(rows: int, size: int) -> tuple[int, ...]:
    """Rows of each rank's ``Shard(0)`` shard of ``rows`` rows, as FSDP2 (torch.chunk) cuts."""
    chunk = -(-rows // size)
    return tuple(max(0, min(rows, (r + 1) * chunk) - r * chunk) for r in range(size))


def _as_stack(x, fn):
    """``x`` as a stack ``(k, rows, rest)``, ``fn`` for such stacks, and the way back.

    A stack of one matrix is held without its first axis (see `matsign.optim.stack`);
    ``fn`` then sees it so, as it would here alone (the 2-D kernels round otherwise).
    """
    if x.ndim == 2:
        return x[None], lambda X: fn(X[0])[None], lambda y: y[0]
    return x.reshape(x.shape[0], x.shape[1], -1), fn, lambda y: y.reshape(x.shape)


class Gathering:
    """One step's replicated matrix work: every rank computes its sub-stacks, all share.

    Rank ``r`` computes sub-stack ``r`` of every stack (``counts[s]``, from
    `matsign.optim.plan.split`) and writes it into a flat buffer of its own; consecutive
    stacks form buckets (`matsign.optim.plan.buckets`), and each bucket goes by one
    asynchronous ``all_gather`` as soon as its stacks are computed, while the next ones
    are (at most two buckets' buffers are alive). A stack's result is complete after
    `finish` (`matsign.optim.step_stacks` calls
    it before reading the directions). Every rank ends with the same results, equal to
    ``fn`` of the whole stack up to the ``communication`` rounding (none when it is
    ``fn``'s compute dtype). Buffers pad each rank to the bucket's longest share.
    """

    def __init__(self, counts: Sequence[Sequence[int]], sizes: Sequence[int], group,
                 communication: torch.dtype | None):
        self.counts, self.group, self.dtype = [tuple(c) for c in counts], group, communication
        self.rank = dist.get_rank(group)
        self.buckets = buckets(self.counts, sizes, BUCKET)
        self.lengths = [[sum(self.counts[s][r] * sizes[s] for s in bucket)
                         for r in range(len(self.counts[0]))] for bucket in self.buckets]
        self.sizes = sizes
        self.pending = {}  # stack -> (input stack, its result to fill)
        self.sends = {}  # bucket -> this rank's flat buffer
        self.handles = []  # (bucket, received buffer, handle)

    def work(self, s: int) -> Callable:
        """The ``work(fn, stack)`` of stack ``s`` (see `matsign.optim.orthogonalize`)."""
        return functools.partial(self._compute, s)

    def _compute(self, s, fn, stacked):
        X, fn, restore = _as_stack(stacked, fn)
        b = next(i for i, bucket in enumerate(self.buckets) if s in bucket)
        dtype = self.dtype or stacked.dtype
        send = self.sends.setdefault(b, X.new_zeros(max(self.lengths[b]), dtype=dtype))
        start, at = offsets(self.counts[s]), self._offset(b, s, self.rank)
        mine = X[start[self.rank]:start[self.rank + 1]]
        if mine.shape[0]:
            send[at:at + mine.numel()] = fn(mine).reshape(-1)
        out = X.new_empty(X.shape)
        self.pending[s] = out
        if s == self.buckets[b][-1]:  # the bucket is complete here: send it
            recv = send.new_empty((len(self.counts[s]), send.numel()))
            self.handles.append((b, recv, _gather(recv.view(-1), send, group=self.group,
                                                   async_op=True)))
            del self.sends[b]
            self._receive(keep=1)  # the previous bucket travelled while this one was computed
        return restore(out)

    def _offset(self, b, s, r):
        """Where rank ``r``'s part of stack ``s`` starts in its buffer of bucket ``b``."""
        before = self.buckets[b][:self.buckets[b].index(s)]
        return sum(self.counts[t][r] * self.sizes[t] for t in before)

    def finish(self):
        """Wait for the buckets still travelling and fill the stacks' results."""
        self._receive(keep=0)

    def _receive(self, keep):
        """Fill the results of every bucket sent but the last ``keep`` (waiting for them)."""
        while len(self.handles) > keep:
            b, recv, handle = self.handles.pop(0)
            handle.wait()
            for s in self.buckets[b]:
                out, start = self.pending.pop(s), offsets(self.counts[s])
                for r, c in enumerate(self.counts[s]):
                    at = self._offset(b, s, r)
                    part = recv[r, at:at + c * self.sizes[s]]
                    out[start[r]:start[r + 1]] = part.view(c, *out.shape[1:])


class _Batch(NamedTuple):
    """One batch of the FSDP2 pipeline: per owner, which of its matrices it holds."""

    take: tuple  # per owner rank, a slice of the stack (its matrices in this batch)


def _batches(counts):
    """Split each owner's sub-stack into at most `PIPELINE` batches (matrix ranges)."""
    start, most = offsets(counts), max(counts)
    per = max(1, -(-most // PIPELINE))
    def take(r, b):
        return slice(min(start[r] + b, start[r + 1]), min(start[r] + b + per, start[r + 1]))

    return [_Batch(tuple(take(r, b) for r in range(len(counts)))) for b in range(0, most, per)]


def exchanged(fn: Callable, shards: torch.Tensor, *, counts: Sequence[int], rows: int, group,
              communication: torch.dtype | None) -> torch.Tensor:
    """``fn`` of a stack held as ``Shard(0)`` shards: to the owners by all_to_all and back.

    ``shards`` is this rank's ``(k, rows_r, ...)`` part of a ``(k, rows, ...)`` stack;
    ``counts`` the matrices each rank owns (contiguous, in rank order). Returns this
    rank's rows of ``fn(stack)``.
    """
    X, fn, restore = _as_stack(shards, fn)
    size, rank = len(counts), dist.get_rank(group)
    held = shard_rows(rows, size)
    if X.shape[1] != held[rank]:
        msg = (f"matsign.optim.torch: rank {rank} holds {X.shape[1]} of {rows} rows of a "
               f"Shard(0) parameter; expected {held[rank]} (torch.chunk's split)")
        raise ValueError(msg)
    dtype = communication or shards.dtype
    pad = max(held)
    padded = X.new_zeros((X.shape[0], pad, X.shape[2]), dtype=dtype)
    padded[:, :held[rank]] = X
    out = X.new_empty(padded.shape, dtype=dtype)
    pipeline = _Pipeline(fn, padded, out, held, rank, group)
    for batch in _batches(counts):
        pipeline.push(batch)
    pipeline.drain()
    return restore(out[:, :held[rank]].to(shards.dtype))


class _Pipeline:
    """The FSDP2 exchange of one stack, batch after batch, communication in flight."""

    def __init__(self, fn, padded, out, held, rank, group):
        self.fn, self.padded, self.out = fn, padded, out
        self.held, self.rank, self.group = held, rank, group
        self.arriving = None  # (batch, buffer, handle): shards on their way to the owners
        self.leaving = []  # (batch, buffer, handle): results on their way back

    def push(self, batch):
        """Send ``batch``'s shards, then compute the previous batch while they travel."""
        arriving = self._send_shards(batch)
        if self.arriving is not None:
            self._compute(*self.arriving)
        self.arriving = arriving

    def drain(self):
        """Compute the last batch and wait for every result to come home."""
        if self.arriving is not None:
            self._compute(*self.arriving)
        for batch, buffer, handle in self.leaving:
            handle.wait()
            at = 0
            for take in batch.take:
                n = take.stop - take.start
                self.out[take] = buffer[at:at + n]
                at += n

    def _send_shards(self, batch):
        blocks = [self.padded[take] for take in batch.take]
        send = torch.cat(blocks).contiguous()
        mine = blocks[self.rank].shape[0]
        recv = send.new_empty((len(blocks), mine, *send.shape[1:]))
        splits_in = [b.numel() for b in blocks]
        splits_out = [recv[0].numel()] * len(blocks)
        handle = dist.all_to_all_single(recv.view(-1), send.view(-1), splits_out, splits_in,
                                        group=self.group, async_op=True)
        return batch, recv, handle

    def _compute(self, batch, recv, handle):
        handle.wait()
        mine = recv.shape[1]
        pad = recv.shape[2]
        result = recv.new_zeros((len(self.held), mine, pad, recv.shape[3]))
        if mine:
            whole = torch.cat([recv[s, :, :h] for s, h in enumerate(self.held)], dim=1)
            done = self.fn(whole).to(recv.dtype)
            top = offsets(self.held)
            for s, h in enumerate(self.held):
                result[s, :, :h] = done[:, top[s]:top[s] + h]
        sizes = [take.stop - take.start for take in batch.take]
        back = result.new_empty((sum(sizes), pad, recv.shape[3]))
        counts = [n * pad * recv.shape[3] for n in sizes]
        handle = dist.all_to_all_single(back.view(-1), result.view(-1), counts,
                                        [result[0].numel()] * len(self.held),
                                        group=self.group, async_op=True)
        self.leaving.append((batch, back, handle))


# Whole parameters at their owners (Shampoo, SOAP): one collective each way per step.

def _slot(shape, size):
    """``(rows, rest, padded rows)`` of a parameter's ``Shard(0)`` slots on ``size`` ranks."""
    rows = int(shape[0]) if len(shape) else 1
    rest = 1
    for d in shape[1:]:
        rest *= int(d)
    return rows, rest, -(-rows // size)


def to_owners(shards: Sequence[Sequence[torch.Tensor]], shapes: Sequence[tuple], owners, group,
              communication: torch.dtype | None) -> dict[int, list[torch.Tensor]]:
    """Whole tensors at their owners from ``Shard(0)`` shards, by one ``all_to_all``.

    ``shards[j]`` are this rank's shards of the tensors of parameter ``j`` (its gradient,
    its value), ``shapes[j]`` their whole shape and ``owners[j]`` the rank assembling
    them. Returns ``{j: [whole tensors]}`` for the parameters this rank owns.
    """
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    dtype = communication or shards[0][0].dtype
    like = shards[0][0]
    send, splits_in = [], [0] * size
    for j in sorted(range(len(shapes)), key=lambda j: owners[j]):
        _, rest, pad = _slot(shapes[j], size)
        for t in shards[j]:
            block = like.new_zeros((pad, rest), dtype=dtype)
            block[:t.shape[0] if t.ndim else 1] = t.reshape(-1, rest)
            send.append(block.reshape(-1))
            splits_in[owners[j]] += pad * rest
    mine = [j for j in range(len(shapes)) if owners[j] == rank]
    per_source = sum(len(shards[j]) * _slot(shapes[j], size)[2] * _slot(shapes[j], size)[1]
                     for j in mine)
    recv = like.new_empty((size * per_source,), dtype=dtype)
    dist.all_to_all_single(recv, torch.cat(send) if send else like.new_empty(0, dtype=dtype),
                           [per_source] * size, splits_in, group=group)
    return _assembled(recv.view(size, per_source), mine, shards, shapes, size, like.dtype)


def _assembled(recv, mine, shards, shapes, size, dtype):
    """Each owned parameter's whole tensors from the slots every source sent."""
    out, at = {}, 0
    for j in mine:
        rows, rest, pad = _slot(shapes[j], size)
        held = shard_rows(rows, size)
        out[j] = []
        for _ in shards[j]:
            parts = [recv[s, at:at + pad * rest].view(pad, rest)[:held[s]] for s in range(size)]
            out[j].append(torch.cat(parts).reshape(shapes[j]).to(dtype))
            at += pad * rest
    return out


def from_owners(whole: dict[int, torch.Tensor], shapes: Sequence[tuple], owners, group,
                communication: torch.dtype | None, like: torch.Tensor) -> list[torch.Tensor]:
    """This rank's ``Shard(0)`` rows of every parameter's result, sent by its owner."""
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    dtype = communication or like.dtype
    send = []
    for s in range(size):
        for j in sorted(whole):
            rows, rest, pad = _slot(shapes[j], size)
            top, held = offsets(shard_rows(rows, size)), shard_rows(rows, size)
            block = like.new_zeros((pad, rest), dtype=dtype)
            block[:held[s]] = whole[j].reshape(rows, rest)[top[s]:top[s] + held[s]]
            send.append(block.reshape(-1))
    per_dest = sum(_slot(shapes[j], size)[2] * _slot(shapes[j], size)[1] for j in whole)
    order = sorted(range(len(shapes)), key=lambda j: owners[j])
    splits_out = [0] * size
    for j in order:
        rows, rest, pad = _slot(shapes[j], size)
        splits_out[owners[j]] += pad * rest
    recv = like.new_empty((sum(splits_out),), dtype=dtype)
    dist.all_to_all_single(recv, torch.cat(send) if send else like.new_empty(0, dtype=dtype),
                           splits_out, [per_dest] * size, group=group)
    out, at = [None] * len(shapes), 0
    for j in order:
        rows, rest, pad = _slot(shapes[j], size)
        mine = shard_rows(rows, size)[rank]
        local_shape = (mine, *shapes[j][1:]) if len(shapes[j]) else ()
        out[j] = recv[at:at + pad * rest].view(pad, rest)[:mine].reshape(local_shape).to(like.dtype)
        at += pad * rest
    return out


def share(whole: dict[int, torch.Tensor], shapes: Sequence[tuple], owners, group,
          communication: torch.dtype | None, like: torch.Tensor) -> list[torch.Tensor]:
    """Every parameter's result on every rank, from its owner, by one ``all_gather``."""
    size = dist.get_world_size(group)
    dtype = communication or like.dtype
    numel = [math.prod(s) for s in shapes]
    lengths = [sum(numel[j] for j in range(len(shapes)) if owners[j] == r) for r in range(size)]
    width = max(lengths)
    send = like.new_zeros((width,), dtype=dtype)
    if whole:
        flat = torch.cat([whole[j].reshape(-1).to(dtype) for j in sorted(whole)])
        send[:flat.numel()] = flat
    recv = like.new_empty((size, width), dtype=dtype)
    _gather(recv.view(-1), send, group=group)
    out, at = [None] * len(shapes), [0] * size
    for j in range(len(shapes)):
        r = owners[j]
        out[j] = recv[r, at[r]:at[r] + numel[j]].reshape(shapes[j]).to(like.dtype)
        at[r] += numel[j]
    return out
