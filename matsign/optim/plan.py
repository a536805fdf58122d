"""Who computes which matrices: the work assignment of a distributed step, and its cost.

The engine holds same-shape matrices in stacks. On several processes (ranks), each
stack is cut into contiguous sub-stacks, one per rank (possibly empty), so that the
Newton–Schulz flops of the whole step are balanced across ranks: `split`. Every rank
computes the same assignment from the shapes alone, with no communication.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["newton_schulz_flops", "offsets", "split"]


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
    ((1, 2), (1, 1))
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
