"""Who computes which matrices: the work assignment of a distributed step, and its cost.

The engine holds same-shape matrices in stacks. On several processes (ranks), each
stack is cut into contiguous sub-stacks, one per rank (possibly empty), so that the
Newton–Schulz flops of the whole step are balanced across ranks: `split`. Every rank
computes the same assignment from the shapes alone, with no communication.

`cost` evaluates that assignment, and the schemes of three peers, from the shapes
alone: Newton–Schulz flops per rank, bytes each rank sends and receives per step, and
the buffers of whole matrices a rank holds; `model_shapes` lists the Muon matrices of a
few well-known models. ``docs/guide/distributed.rst`` derives every formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "BUCKET",
    "DEFAULT_BYTES",
    "LAYOUTS",
    "MODELS",
    "SCHEMES",
    "Cost",
    "buckets",
    "cost",
    "model_shapes",
    "newton_schulz_flops",
    "offsets",
    "root_flops",
    "split",
]

SCHEMES = ("matsign", "round_robin", "gather", "dion")
"""The schemes `cost` models, in the order the command line prints them."""

LAYOUTS = ("replicated", "sharded")
"""Parameter layouts: ``"replicated"`` (DDP, ZeRO-1) or ``"sharded"`` (FSDP2 ``Shard(0)``)."""

DEFAULT_BYTES = {"matsign": 2, "round_robin": 4, "gather": 2, "dion": 2}
"""Bytes per communicated element of each scheme: bfloat16, but float32 parameters for
KellerJordan/Muon, which gathers the updated parameters themselves."""

MODELS = {
    "gpt2-small": ((768, 768, 48), (3072, 768, 12), (768, 3072, 12)),
    "llama-3-8b": ((4096, 4096, 64), (1024, 4096, 64), (14336, 4096, 64), (4096, 14336, 32)),
    "llama-3-70b": ((8192, 8192, 160), (1024, 8192, 160), (28672, 8192, 160),
                    (8192, 28672, 80)),
}
"""``(rows, columns, count)`` of each model's Muon matrices, in torch's ``(out, in)`` order."""


def newton_schulz_flops(shape: Sequence[int], steps: int = 5) -> int:
    """Flops of ``steps`` quintic Newton–Schulz steps on one matrix of ``shape``.

    Parameters
    ----------
    shape : sequence of int
        ``(..., m, n)``; leading axes multiply the count.
    steps : int, default 5
        Quintic steps.

    Returns
    -------
    int
        ``steps * (4 a^2 b + 2 a^3)`` per matrix with ``a = min(m, n)``, ``b = max(m, n)``
        (the Gram side), times the number of matrices in the leading axes.

    Examples
    --------
    >>> from matsign.optim.plan import newton_schulz_flops
    >>> newton_schulz_flops((768, 3072)) == 5 * 18 * 768**3
    True
    """
    *lead, m, n = (int(d) for d in shape)
    a, b = min(m, n), max(m, n)
    count = 1
    for d in lead:
        count *= d
    return count * steps * (4 * a * a * b + 2 * a ** 3)


def root_flops(layout) -> int:
    """Flops of one refresh of a parameter's Kronecker roots or eigenbases (Shampoo, SOAP).

    Parameters
    ----------
    layout : matsign.kron.KronLayout
        The parameter's blocked view (`matsign.kron.kron_layout`).

    Returns
    -------
    int
        About ``10 b^3`` (a symmetric eigendecomposition) per block of size ``b`` of
        every preconditioned mode, times the number of such blocks.

    Examples
    --------
    >>> from matsign.kron import kron_layout
    >>> from matsign.optim.plan import root_flops
    >>> root_flops(kron_layout((4, 8))) == 10 * (4**3 + 8**3)
    True
    """
    blocks = 1
    for g in layout.grid:
        blocks *= int(g)
    return sum(10 * blocks * int(b) ** 3
               for b, kept in zip(layout.block, layout.preconditioned, strict=True) if kept)


def split(counts: Sequence[int], costs: Sequence[float], ranks: int) -> tuple[tuple[int, ...], ...]:
    """How many matrices of each stack each rank computes, balancing the total cost.

    Parameters
    ----------
    counts : sequence of int
        The number of matrices in each stack.
    costs : sequence of float
        The cost (flops) of one matrix of each stack.
    ranks : int
        The number of ranks sharing the work.

    Returns
    -------
    tuple of tuple of int
        Per stack, the count for each rank; rank ``r`` computes the contiguous
        sub-stack ``offsets(c)[r] : offsets(c)[r + 1]``. Every rank gets
        ``count // ranks`` or one more matrix of a stack (so gathers pad at most one
        matrix per rank); the extra ones go, stack by stack from the costliest
        matrix down, to the ranks with the least work so far (ties: lowest rank).

    Raises
    ------
    ValueError
        For fewer than one rank, mismatched lengths, or negative counts or costs.

    Examples
    --------
    >>> from matsign.optim.plan import split
    >>> split([3, 2], [1.0, 4.0], 2)
    ((2, 1), (1, 1))
    """
    if ranks < 1:
        msg = f"ranks must be at least 1; got {ranks}"
        raise ValueError(msg)
    if len(counts) != len(costs):
        msg = f"counts and costs differ in length: {len(counts)} and {len(costs)}"
        raise ValueError(msg)
    if any(c < 0 for c in counts) or any(c < 0 for c in costs):
        msg = f"counts and costs must be non-negative; got {list(counts)}, {list(costs)}"
        raise ValueError(msg)
    loads = [0.0] * ranks
    result = [None] * len(counts)
    for s in sorted(range(len(counts)), key=lambda s: (-costs[s], s)):
        base, extra = divmod(int(counts[s]), ranks)
        chosen = sorted(range(ranks), key=lambda r: (loads[r], r))[:extra]
        per_rank = tuple(base + (r in chosen) for r in range(ranks))
        for r in range(ranks):
            loads[r] += per_rank[r] * costs[s]
        result[s] = per_rank
    return tuple(result)


BUCKET = 2**20  # elements per rank (on average) in one all_gather of replicated results


def buckets(per_stack: Sequence[Sequence[int]], sizes: Sequence[int],
            limit: float = BUCKET) -> list[list[int]]:
    """Consecutive stacks gathered together, until a bucket holds ``limit`` elements per rank.

    Parameters
    ----------
    per_stack : sequence of sequence of int
        Per stack, the matrices each rank computes (`split`).
    sizes : sequence of int
        Elements of one matrix of each stack.
    limit : float, default `BUCKET`
        Close a bucket once its stacks hold this many elements per rank on average.

    Returns
    -------
    list of list of int
        The stacks of each bucket, in order. Replicated results travel a bucket at a
        time, in one ``all_gather`` of a flat buffer per bucket, padded to the longest
        rank's share: a bucket of several stacks pads less than one per stack, a
        bucket of one stack overlaps its gather with the next stack's work.

    Examples
    --------
    >>> from matsign.optim.plan import buckets
    >>> buckets([(2, 2), (1, 1), (4, 4)], [10, 10, 10], limit=25)
    [[0, 1], [2]]
    """
    out, current, held = [], [], 0.0
    for s, (per_rank, size) in enumerate(zip(per_stack, sizes, strict=True)):
        current.append(s)
        held += sum(per_rank) * size / len(per_rank)
        if held >= limit:
            out.append(current)
            current, held = [], 0.0
    if current:
        out.append(current)
    return out


def offsets(per_rank: Sequence[int]) -> tuple[int, ...]:
    """Start of each rank's sub-stack, and the end: ``(0, c0, c0 + c1, ...)``.

    Parameters
    ----------
    per_rank : sequence of int
        One stack's counts per rank, as from `split`.

    Returns
    -------
    tuple of int
        ``len(per_rank) + 1`` offsets.

    Examples
    --------
    >>> from matsign.optim.plan import offsets
    >>> offsets((2, 1, 1))
    (0, 2, 3, 4)
    """
    out = [0]
    for c in per_rank:
        out.append(out[-1] + int(c))
    return tuple(out)


class Cost(NamedTuple):
    """What one optimizer step's matrix work costs each rank, as `cost` models it.

    Attributes
    ----------
    flops : tuple of int
        Newton–Schulz flops each rank executes, padding and repeated work included.
    imbalance : float
        The busiest rank's flops over the ideal share, ``max(flops) * ranks / useful``
        with ``useful`` the flops of computing every matrix once: 1.0 is perfect; it is
        ``max / mean`` whenever no rank computes padding or another rank's matrices.
    sent : int
        Bytes sent per step by the rank that sends most.
    received : int
        Bytes received per step by the rank that receives most.
    network : int
        Bytes over the network per step, all ranks together (each counted once, where
        it is received).
    memory : int
        Peak bytes of the collective buffers of whole matrices (or shards gathered into
        whole matrices) a rank holds for one unit of work, units done one at a time.
    """

    flops: tuple[int, ...]
    imbalance: float
    sent: int
    received: int
    network: int
    memory: int


def cost(shapes, ranks, *, scheme="matsign", layout="replicated", steps=5,
         bytes_per_element=None):
    """Flops, bytes and memory per rank of one distributed Muon step.

    Parameters
    ----------
    shapes : sequence of ((int, int), int)
        ``((m, n), count)`` per kind of matrix; repeated shapes are merged, in order of
        first appearance.
    ranks : int
        Ranks sharing the step.
    scheme : {"matsign", "round_robin", "gather", "dion"}, default "matsign"
        ``"matsign"``: flops-balanced contiguous sub-stacks (`split`);
        ``"round_robin"``: KellerJordan/Muon's distributed ``Muon``;
        ``"gather"``: Moonlight's Distributed Muon (every rank computes every matrix);
        ``"dion"``: microsoft/dion's ``Muon(distributed_mesh=...)``.
    layout : {"replicated", "sharded"}, default "replicated"
        Every rank holds whole parameters (DDP; ZeRO-1 for ``"gather"``), or shards of
        ``ceil(m / ranks)`` rows (FSDP2 ``Shard(0)``, the last ones padded).
    steps : int, default 5
        Newton–Schulz steps (`newton_schulz_flops`).
    bytes_per_element : int, optional
        Bytes per communicated element; default `DEFAULT_BYTES` of the scheme.

    Returns
    -------
    Cost
        Flops per rank, imbalance, bytes of the busiest rank, network total, memory.

    Raises
    ------
    ValueError
        For an unknown scheme or layout, fewer than one rank, a shape that is not
        ``(m, n)`` with positive sides, a negative count, ``"round_robin"`` with
        ``layout="sharded"``, or ``"dion"`` sharded when ``m % ranks != 0`` (dion asserts
        that every shard has the same rows).

    Notes
    -----
    For ``k`` matrices of ``m x n``, ``R`` ranks, ``b`` bytes per element and row shards
    of ``h = ceil(m / R)`` rows, per stack and rank:

    - matsign, replicated: one all_gather of ``ceil(k / R)`` padded matrices from each
      rank, ``(R - 1) ceil(k / R) m n b`` bytes in and out (a ring), buffer
      ``R ceil(k / R) m n b``;
    - matsign, sharded: all_to_all of the shards to the owner of each matrix and back,
      ``((k - c) + (R - 1) c) h n b`` bytes each way for a rank owning ``c`` matrices;
    - round_robin: parameters sorted by shape, descending, in groups of ``R``; rank ``r``
      computes the ``r``-th of each group and all_gathers the group (the last group
      padded with copies of the last parameter's shape);
    - gather: all_gather of every matrix's shards, ``k (R - 1) h n b``; every rank computes
      all ``k`` matrices;
    - dion: batches of ``R`` same-shape matrices (the last padded, the padding computed
      too); all_gather of one matrix from each rank, or all_to_all of the shards there
      and back.

    With one rank nothing is communicated and no buffer is needed.

    References
    ----------
    K. Jordan, Muon (2024), https://github.com/KellerJordan/Muon, ``muon.py``.
    J. Liu et al., "Muon is Scalable for LLM Training", arXiv:2502.16982, Algorithm 1.
    K. Ahn et al., Dion (2025), https://github.com/microsoft/dion, ``dion/muon.py``.

    Examples
    --------
    >>> from matsign.optim.plan import cost
    >>> shapes = [((2048, 2048), 1), ((1024, 2048), 1), ((1024, 1024), 1)]
    >>> cost(shapes, 2).imbalance        # 48, 10, 6 units: (48 | 10 + 6); ideal 32
    1.5
    >>> cost(shapes, 2, scheme="round_robin").imbalance   # (48 + 6 | 10)
    1.6875
    >>> cost(shapes, 2, scheme="gather").imbalance        # every rank computes all three
    2.0
    >>> cost([((4, 6), 3)], 2).received  # 2 matrices of 24 bfloat16 from the other rank
    96
    """
    stacks = _stacks(shapes)
    _check_options(scheme, layout, ranks)
    b = DEFAULT_BYTES[scheme] if bytes_per_element is None else int(bytes_per_element)
    if scheme == "round_robin":
        flops, sent, received, memory = _round_robin(stacks, ranks, steps, b)
    else:
        model = {"matsign": _matsign, "gather": _gather, "dion": _dion}[scheme]
        flops, sent, received, memory = _per_stack(model, stacks, ranks, steps, b, layout)
    if ranks == 1:
        sent, received, memory = [0], [0], [0]
    useful = sum(k * newton_schulz_flops((m, n), steps) for (m, n), k in stacks)
    imbalance = max(flops) * ranks / useful if useful else 1.0
    return Cost(tuple(flops), imbalance, max(sent), max(received), sum(received), max(memory))


def model_shapes(name):
    """The matrices Muon orthogonalises in a known model.

    Parameters
    ----------
    name : {"gpt2-small", "llama-3-8b", "llama-3-70b"}
        GPT-2 small: 12 blocks of q, k, v, o (768 x 768) and the MLP (3072 x 768,
        768 x 3072). Llama 3: per layer q, o (d x d), k, v (1024 x d), gate, up (f x d),
        down (d x f), with d, f = 4096, 14336 (8B, 32 layers) or 8192, 28672 (70B,
        80 layers).

    Returns
    -------
    tuple of ((int, int), int)
        ``((m, n), count)`` in torch's ``(out, in)`` order, the input of `cost`.
        Embeddings, the output head and norms go to AdamW and are not listed.

    Raises
    ------
    ValueError
        For an unknown name.

    Examples
    --------
    >>> from matsign.optim.plan import model_shapes
    >>> model_shapes("gpt2-small")
    (((768, 768), 48), ((3072, 768), 12), ((768, 3072), 12))
    """
    if name not in MODELS:
        msg = f"unknown model {name!r}; known: {', '.join(MODELS)}"
        raise ValueError(msg)
    return tuple(((m, n), k) for m, n, k in MODELS[name])


def _stacks(shapes):
    """``[((m, n), count)]`` with repeated shapes merged and every entry checked."""
    merged = {}
    for entry in shapes:
        (m, n), k = _entry(entry)
        merged[(m, n)] = merged.get((m, n), 0) + k
    return list(merged.items())


def _entry(entry):
    try:
        shape, k = entry
        m, n = (int(d) for d in shape)
        k = int(k)
    except (TypeError, ValueError):
        msg = f"cost expects ((m, n), count) per entry; got {entry!r}"
        raise ValueError(msg) from None
    if m < 1 or n < 1 or k < 0:
        msg = f"cost expects positive sides and a count >= 0; got {entry!r}"
        raise ValueError(msg)
    return (m, n), k


def _check_options(scheme, layout, ranks):
    if scheme not in SCHEMES:
        msg = f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}"
        raise ValueError(msg)
    if layout not in LAYOUTS:
        msg = f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}"
        raise ValueError(msg)
    if int(ranks) != ranks or ranks < 1:
        msg = f"ranks must be an integer >= 1; got {ranks!r}"
        raise ValueError(msg)
    if scheme == "round_robin" and layout == "sharded":
        msg = "scheme 'round_robin' (KellerJordan/Muon) runs on replicated parameters only"
        raise ValueError(msg)


def _per_stack(model, stacks, ranks, steps, b, layout):
    """Sum a per-stack model over the stacks; memory is the largest stack's."""
    flops, sent, received = [0] * ranks, [0] * ranks, [0] * ranks
    memory = [0] * ranks
    for unit in model(stacks, ranks, steps, b, layout):
        for r in range(ranks):
            flops[r] += unit[0][r]
            sent[r] += unit[1][r]
            received[r] += unit[2][r]
            memory[r] = max(memory[r], unit[3][r])
    return flops, sent, received, memory


def _ring_all_gather(chunks):
    """``(sent, received)`` per rank of a ring all_gather of one chunk (bytes) per rank."""
    total, ranks = sum(chunks), len(chunks)
    sent = [total - chunks[(r + 1) % ranks] for r in range(ranks)]  # all but the last to arrive
    return sent, [total - c for c in chunks]


def _all_to_all(send):
    """``(sent, received)`` per rank for ``send[r][o]`` bytes from rank r to rank o."""
    ranks = len(send)
    sent = [sum(send[r][o] for o in range(ranks) if o != r) for r in range(ranks)]
    received = [sum(send[r][o] for r in range(ranks) if r != o) for o in range(ranks)]
    return sent, received


def _matsign(stacks, ranks, steps, b, layout):
    """Per stack (sharded) or bucket (replicated): flops, sent, received, buffer bytes."""
    costs = [newton_schulz_flops(shape, steps) for shape, _ in stacks]
    per_stack = split([k for _, k in stacks], costs, ranks)
    if layout == "replicated":
        yield from _matsign_buckets(stacks, costs, per_stack, ranks, b)
        return
    for ((m, n), k), f, owned in zip(stacks, costs, per_stack, strict=True):
        flops = [c * f for c in owned]
        shard = math.ceil(m / ranks) * n * b
        there = [[owned[o] * shard for o in range(ranks)] for _ in range(ranks)]
        back = [[owned[r] * shard] * ranks for r in range(ranks)]
        sent, received = _both_ways(there, back)
        yield flops, sent, received, [(c * ranks + k) * shard for c in owned]


def _matsign_buckets(stacks, costs, per_stack, ranks, b):
    """Replicated: one all_gather per bucket; two buckets' buffers live at a time."""
    sizes = [m * n for (m, n), _ in stacks]
    previous = 0
    for bucket in buckets(per_stack, sizes):
        lengths = [sum(per_stack[s][r] * sizes[s] for s in bucket) for r in range(ranks)]
        chunk = max(lengths) * b
        sent, received = _ring_all_gather([chunk] * ranks)
        flops = [sum(per_stack[s][r] * costs[s] for s in bucket) for r in range(ranks)]
        yield flops, sent, received, [previous + ranks * chunk] * ranks
        previous = ranks * chunk


def _both_ways(there, back):
    """Bytes of two all_to_alls, one after the other."""
    sent1, received1 = _all_to_all(there)
    sent2, received2 = _all_to_all(back)
    return ([s + t for s, t in zip(sent1, sent2, strict=True)],
            [s + t for s, t in zip(received1, received2, strict=True)])


def _gather(stacks, ranks, steps, b, layout):
    """Moonlight: all_gather every matrix's shards; every rank computes every matrix."""
    for (m, n), k in stacks:
        shard = math.ceil(m / ranks) * n * b
        sent, received = _ring_all_gather([k * shard] * ranks)
        flops = [k * newton_schulz_flops((m, n), steps)] * ranks
        yield flops, sent, received, [ranks * shard if k else 0] * ranks


def _dion(stacks, ranks, steps, b, layout):
    """dion: batches of ``ranks`` same-shape matrices, one matrix per rank per batch."""
    for (m, n), k in stacks:
        batches = -(-k // ranks)
        flops = [batches * newton_schulz_flops((m, n), steps)] * ranks
        if layout == "replicated":
            sent, received = _ring_all_gather([batches * m * n * b] * ranks)
            yield flops, sent, received, [ranks * m * n * b if k else 0] * ranks
        else:
            _check_dion_shards(m, ranks)
            shard = m // ranks * n * b
            one_each = [[batches * shard] * ranks for _ in range(ranks)]
            sent, received = _both_ways(one_each, one_each)
            yield flops, sent, received, [2 * ranks * shard if k else 0] * ranks


def _check_dion_shards(m, ranks):
    if m % ranks:
        msg = (f"dion's sharded Muon needs rows divisible by ranks; got {m} rows "
               f"on {ranks} ranks")
        raise ValueError(msg)


def _round_robin(stacks, ranks, steps, b):
    """KellerJordan/Muon: sorted by shape, groups of ``ranks``, all_gather of each group."""
    order = sorted([shape for shape, k in stacks for _ in range(k)], reverse=True)
    if not order:
        return [0] * ranks, [0] * ranks, [0] * ranks, [0] * ranks
    pads = ranks - len(order) % ranks  # ranks pads, not 0, when the count divides evenly
    slots = order + [order[-1]] * pads
    flops, sent, received = [0] * ranks, [0] * ranks, [0] * ranks
    for base in range(0, len(order), ranks):
        group = slots[base:base + ranks]
        for r, shape in enumerate(group):
            flops[r] += newton_schulz_flops(shape, steps) if base + r < len(order) else 0
        s, t = _ring_all_gather([m * n * b for m, n in group])
        sent = [x + y for x, y in zip(sent, s, strict=True)]
        received = [x + y for x, y in zip(received, t, strict=True)]
    pad_bytes = pads * order[-1][0] * order[-1][1] * b  # gathered in place: only the pads
    return flops, sent, received, [pad_bytes] * ranks
