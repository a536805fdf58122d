"""Muon: momentum, orthogonalisation, an update scale, decoupled weight decay; and routing."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .._typing import Array, DType
from ..polynomials import Schedule
from . import _tree
from ._base import Stepper, chain
from .transforms import (
    add_decayed_weights,
    orthogonalize,
    scale_by_learning_rate,
    trace,
)

__all__ = ["DEFAULT_EXCLUDE", "EMBEDDING_NAMES", "HEAD_NAMES", "muon", "route"]

EMBEDDING_NAMES = ("embed", "wte", "wpe")
HEAD_NAMES = ("lm_head", "head", "output", "classifier", "unembed")
DEFAULT_EXCLUDE = EMBEDDING_NAMES + HEAD_NAMES


def muon(
    learning_rate: float | Callable[[Array], Array | float] = 0.02, *, momentum: float = 0.95,
    nesterov: bool = True, ema: bool = True, bias_correction: bool = False,
    weight_decay: float = 0.0, cautious_weight_decay: bool = False,
    update_scale: str | float = "jordan",
    schedule: str | Schedule | Sequence[float] = "jordan", steps: int | None = None,
    eps: float = 1e-7, dtype: DType | None = None, method: str = "newton_schulz",
    split: int | Sequence[int] | None = None, split_axis: int = -2,
    dual_norm_step: bool = False,
) -> Stepper:
    """Muon: orthogonalised momentum for matrix parameters.

    Parameters
    ----------
    learning_rate : float or callable, default 0.02
        A constant or a schedule of the step count (see `scale_by_learning_rate`).
    momentum : float, default 0.95
        Momentum ``mu``.
    nesterov : bool, default True
        Orthogonalise the Nesterov look-ahead instead of the buffer.
    ema : bool, default True
        Momentum as an EMA ``buf <- lerp(buf, g, 1 - mu)`` (torch.optim.Muon and the
        current reference code) or as a sum ``buf <- mu buf + g``. After the
        normalisation inside the orthogonalisation the two differ only through
        Nesterov's mix of ``g`` and ``buf``.
    bias_correction : bool, default False
        Bias-corrected EMA (see `trace`): with Nesterov it changes the mix of ``g`` and
        ``buf`` in early steps, as ``optax.contrib.muon`` does; without, the
        normalisation cancels it.
    weight_decay : float, default 0.0
        Decoupled: the step subtracts ``learning_rate * weight_decay * param``
        (not multiplied by the update scale, as in torch.optim.Muon).
    cautious_weight_decay : bool, default False
        Decay only entries where the update and the parameter share a sign.
    update_scale : {"jordan", "moonlight", "spectral", "none"} or float, default "jordan"
        Multiplier of the orthogonalised update for an m x n matrix:
        ``sqrt(max(1, m/n))``, ``0.2 sqrt(max(m, n))`` (to reuse AdamW's learning rate
        and weight decay), ``sqrt(m/n)`` (fan-out over fan-in), or 1; a number ``c``
        gives ``c sqrt(max(m, n))`` (update RMS ``c``, optax's ``consistent_rms``).
        Taken from the matrix that is orthogonalised (after `matrix_shape`).
    schedule, steps, eps, dtype, method
        The orthogonalisation (see `orthogonalize`): by default Jordan's quintic
        ``(3.4445, -4.7750, 2.0315)`` for 5 steps in the gradient's dtype; pass
        ``dtype=torch.bfloat16`` to compute it as torch.optim.Muon does.
    split, split_axis : optional
        Orthogonalise blocks of each matrix separately (fused QKV into three, or one
        block per attention head), still in one batched call; the update scale is then
        each block's (see `orthogonalize`).
    dual_norm_step : bool, default False
        Step length ``<N, O>``, the dual norm of the orthogonalised input: steepest
        descent under the spectral norm (see `orthogonalize`).

    Returns
    -------
    Stepper
        Works on arrays of shape (..., m, n): a leading axis is a stack of matrices.
        Use `multi` (with `route`) for whole models, which also flattens conv kernels.

    Raises
    ------
    ValueError
        For an unknown ``update_scale``, ``schedule`` or ``method``.

    Notes
    -----
    Per step: ``B <- mu B + (1 - mu) G``; ``N = lerp(G, B, mu)`` (Nesterov) or ``B``;
    ``O = NS(N)``; ``W <- W - lr (s O + wd W)`` with ``s`` the update scale.

    References
    ----------
    Jordan et al., Muon: An optimizer for hidden layers in neural networks (2024),
    kellerjordan.github.io/posts/muon; Liu et al., Muon is Scalable for LLM Training
    (arXiv:2502.16982); Bernstein, Deriving Muon (2025).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> W = np.zeros((3, 2))
    >>> opt = optim.muon(0.1, steps=12, schedule="quintic")
    >>> u, _ = opt.update(np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), opt.init(W), W)
    >>> np.round(-u / 0.1, 3)   # U V^T times sqrt(3 / 2)
    array([[1.225, 0.   ],
           [0.   , 1.225],
           [0.   , 0.   ]])
    """
    return chain(
        trace(momentum, nesterov=nesterov, ema=ema, bias_correction=bias_correction),
        orthogonalize(schedule=schedule, steps=steps, eps=eps, dtype=dtype, method=method,
                      split=split, split_axis=split_axis, dual_norm_step=dual_norm_step,
                      update_scale=update_scale),
        add_decayed_weights(weight_decay, cautious=cautious_weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def route(
    params: Any, *, matrix: str = "muon", other: str = "adamw",
    exclude: Sequence[str] = DEFAULT_EXCLUDE, head: Any = "auto",
) -> Any:
    """Label each parameter for Muon or for an element-wise optimizer.

    Muon is for the hidden layers' matrices. Scalars and vectors (biases, norms),
    embeddings and output heads go to AdamW or Lion (Jordan et al.; Liu et al.).

    Parameters
    ----------
    params : dict, list or tuple of (nested) arrays
        Parameters by name (``dict(model.named_parameters())``, a flax parameter
        dict) or in order.
    matrix : str, default "muon"
        Label of the parameters Muon takes.
    other : str, default "adamw"
        Label of the rest (e.g. ``"lion"``).
    exclude : tuple of str
        A parameter whose name (its path joined with dots, see `multi`) contains one
        of these (case-insensitive) goes to ``other`` even if it is a matrix:
        embeddings and output heads by their usual names (`EMBEDDING_NAMES`,
        `HEAD_NAMES`). Parameters in lists carry no names.
    head : "auto", "last", a parameter key, or None; default "auto"
        The output layer, which goes to ``other``: ``"auto"`` finds it by name and, if
        no matrix is named like a head (an ``nn.Sequential``'s ``"4.weight"``, a list),
        warns that the last matrix goes to Muon, so that a head is never routed to Muon
        silently; ``"last"`` sends the last matrix in order to ``other``; a key names
        the head; None: no output layer to treat (tied to the embedding, or none).
        `matsign.optim.torch` routes a whole ``nn.Module`` by module type instead.

    Returns
    -------
    Same structure as ``params``
        The labels, for `multi` (a dict for a dict, a list for a list).

    Raises
    ------
    KeyError
        For a ``head`` key that is not a parameter.

    Warns
    -----
    UserWarning
        Under ``head="auto"``, when no matrix is named like a head.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.optim import route
    >>> params = {"embed.weight": np.zeros((100, 8)), "block.fc.weight": np.zeros((8, 8)),
    ...           "block.fc.bias": np.zeros(8), "lm_head.weight": np.zeros((100, 8))}
    >>> list(route(params).values())
    ['adamw', 'muon', 'adamw', 'adamw']
    >>> route({"0.weight": np.zeros((8, 4)), "2.weight": np.zeros((3, 8))}, head="last")
    {'0.weight': 'muon', '2.weight': 'adamw'}
    """
    lowered = tuple(e.lower() for e in exclude)
    matrices = [key for key, p in _tree.leaves(params) if p.ndim >= 2]
    named = {key for key in matrices
             if isinstance(key, str) and any(e in key.lower() for e in lowered)}
    heads = _head(head, matrices, named, exclude)

    def label(key, p):
        return matrix if p.ndim >= 2 and key not in named and key not in heads else other

    return _tree.rebuild(params, label)


def _head(head, matrices, named, exclude):
    """The keys `route` sends to ``other`` as the output layer (see its ``head``)."""
    if head is None or not matrices:
        return set()
    if head == "last":
        return {matrices[-1]}
    if head != "auto":
        if head not in matrices:
            msg = f"route: head {head!r} is not a matrix parameter; have {matrices}"
            raise KeyError(msg)
        return {head}
    names = HEAD_NAMES if tuple(exclude) == DEFAULT_EXCLUDE else tuple(exclude)
    if not any(any(n in str(key).lower() for n in names) for key in named):
        msg = (f"route: no output head found by name among {len(matrices)} matrices "
               f"(looked for {', '.join(names)}); the last one, {matrices[-1]!r}, goes to "
               f"Muon. Pass head='last' (or its key) to send it to the element-wise "
               f"optimizer, or head=None if the model has no output layer of its own")
        warnings.warn(msg, UserWarning, stacklevel=3)
    return set()
