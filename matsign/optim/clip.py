"""QK-Clip (MuonClip): rescale attention heads whose largest logit passed a threshold.

After an optimizer step, a head ``h`` whose largest pre-softmax logit ``S_h`` over the
last batch exceeds ``threshold`` (tau) has its query and key projections scaled so that
``S_h`` becomes tau: with ``gamma_h = tau / S_h``, the query by ``gamma_h^alpha`` and the
key by ``gamma_h^(1 - alpha)`` (the logit is bilinear in the two). The forward and
backward passes are untouched; the training loop records ``S_h`` and calls `qk_clip`.
"""

from __future__ import annotations

from typing import Any

from .. import _xp
from .._checks import as_rate
from .._typing import Array
from ._base import ORIENTATIONS

__all__ = ["clip_factors", "qk_clip", "qk_clip_mla", "qk_factors"]


def clip_factors(max_logits: Array, threshold: float) -> Array:
    """``gamma_h = min(1, tau / S_h)`` per head: 1 exactly where ``S_h <= tau``.

    Parameters
    ----------
    max_logits : array of shape (heads,)
        Each head's largest pre-softmax logit over the batch (scaling included).
    threshold : float
        tau > 0.

    Returns
    -------
    array of shape (heads,)
        In ``max_logits``' dtype; no host sync.

    Raises
    ------
    ValueError
        For a threshold that is not a finite number > 0.
    """
    if not (isinstance(threshold, (int, float)) and 0 < threshold < float("inf")):
        msg = f"qk_clip: threshold must be a finite number > 0; got {threshold!r}"
        raise ValueError(msg)
    xp = _xp.namespace(max_logits)
    over = max_logits > threshold
    return xp.where(over, threshold / xp.where(over, max_logits, 1.0), 1.0)


def _per_head(W, factors, num_heads, orientation, xp):
    """``W`` with head ``h``'s outputs (rows, or columns in flax's layout) times ``factors[h]``."""
    if orientation not in ORIENTATIONS:
        msg = f"orientation must be one of {ORIENTATIONS}; got {orientation!r}"
        raise ValueError(msg)
    axis = 0 if orientation == "out_in" else W.ndim - 1
    if W.shape[axis] % num_heads:
        msg = (f"qk_clip: {W.shape[axis]} outputs do not split into {num_heads} heads "
               f"(shape {tuple(W.shape)}, orientation {orientation!r})")
        raise ValueError(msg)
    f = xp.astype(factors, W.dtype)
    if axis == 0:
        heads = xp.reshape(W, (num_heads, W.shape[0] // num_heads, *W.shape[1:]))
        scaled = heads * xp.reshape(f, (num_heads, *(1,) * (heads.ndim - 1)))
    else:
        heads = xp.reshape(W, (*W.shape[:-1], num_heads, W.shape[-1] // num_heads))
        scaled = heads * xp.reshape(f, (num_heads, 1))
    return xp.reshape(scaled, W.shape)


def qk_clip(
    w_q: Array, w_k: Array, max_logits: Array, *, threshold: float, num_heads: int,
    alpha: float = 0.5, num_kv_heads: int | None = None, orientation: str = "out_in",
) -> tuple[Array, Array]:
    """QK-Clip for multi-head (and grouped-query) attention: the rescaled ``(w_q, w_k)``.

    Parameters
    ----------
    w_q, w_k : array
        Query and key projection weights, heads contiguous along the output axis:
        ``(num_heads * head_dim, d_model)`` in torch's layout (``nn.Linear.weight``),
        ``(d_model, num_heads * head_dim)`` with ``orientation="in_out"``.
    max_logits : array of shape (num_heads,)
        Each query head's largest pre-softmax logit ``max_ij q_i . k_j / sqrt(d)`` over
        the batch, as the training loop recorded it.
    threshold : float
        tau: heads above it are scaled back to it (Kimi K2 uses 100).
    num_heads : int
        Query heads.
    alpha : float, default 0.5
        The query's share of the scaling: ``gamma^alpha`` on the query, ``gamma^(1 -
        alpha)`` on the key.
    num_kv_heads : int, optional
        Key heads, when fewer than ``num_heads`` (grouped-query attention). A key head
        shared by several query heads is left untouched and each query head takes its
        whole ``gamma`` (the rule Kimi K2 uses for MLA's shared rotary key), so the clip
        never couples heads.
    orientation : {"out_in", "in_out"}, default "out_in"
        Which axis of the weights holds the outputs (the heads).

    Returns
    -------
    (w_q, w_k) : arrays
        New arrays (the inputs are not modified); heads at or below tau are bitwise
        unchanged. No host sync.

    Raises
    ------
    ValueError
        For a bad threshold, alpha, orientation or head count.

    References
    ----------
    Kimi Team, Kimi K2: Open Agentic Intelligence (arXiv:2507.20534), MuonClip; Su,
    QK-Clip (kexue.fm/archives/11126, 2025).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.optim import qk_clip
    >>> w_q, w_k = np.ones((4, 3)), np.ones((4, 3))       # 2 heads of dimension 2
    >>> q, k = qk_clip(w_q, w_k, np.array([400.0, 50.0]), threshold=100.0, num_heads=2)
    >>> q[:, 0], k[:, 0]                                   # head 0: gamma = 1/4, sqrt each
    (array([0.5, 0.5, 1. , 1. ]), array([0.5, 0.5, 1. , 1. ]))
    """
    xp = _xp.namespace(w_q, w_k, max_logits)
    on_q, on_k = qk_factors(max_logits, threshold=threshold, num_heads=num_heads, alpha=alpha,
                            num_kv_heads=num_kv_heads)
    new_k = w_k if on_k is None else _per_head(w_k, on_k, num_heads, orientation, xp)
    return _per_head(w_q, on_q, num_heads, orientation, xp), new_k


def qk_factors(
    max_logits: Array, *, threshold: float, num_heads: int, alpha: float = 0.5,
    num_kv_heads: int | None = None,
) -> tuple[Array, Array | None]:
    """The factors `qk_clip` multiplies each head's query and key outputs by.

    For callers that scale the weights themselves (in place, or shard by shard:
    `matsign.optim.torch.qk_clip_`).

    Parameters
    ----------
    max_logits : array of shape (num_heads,)
        Each query head's largest pre-softmax logit over the batch.
    threshold, num_heads, alpha, num_kv_heads
        See `qk_clip`.

    Returns
    -------
    (query, key) : array of shape (num_heads,), and the same or None
        ``gamma^alpha`` and ``gamma^(1 - alpha)`` with ``gamma`` from `clip_factors`;
        with grouped-query attention, ``gamma`` on the queries and None for the keys
        (shared key heads are left untouched).

    Raises
    ------
    ValueError
        For a bad threshold, alpha or head count, or ``max_logits`` not of shape
        ``(num_heads,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.optim import qk_factors
    >>> qk_factors(np.array([400.0, 50.0]), threshold=100.0, num_heads=2)   # gamma = 1/4, 1
    (array([0.5, 1. ]), array([0.5, 1. ]))
    """
    alpha = as_rate(alpha, "alpha", "qk_clip", closed=True)
    gamma = clip_factors(max_logits, threshold)
    if max_logits.shape != (num_heads,):
        msg = (f"qk_clip: max_logits must have shape ({num_heads},), one per query head; "
               f"got {tuple(max_logits.shape)}")
        raise ValueError(msg)
    kv = num_heads if num_kv_heads is None else num_kv_heads
    if kv < 1 or num_heads % kv:
        msg = f"qk_clip: {num_heads} query heads do not share {kv} key heads evenly"
        raise ValueError(msg)
    if kv != num_heads:
        return gamma, None
    return gamma**alpha, gamma ** (1.0 - alpha)


def qk_clip_mla(
    w_q_nope: Array, w_q_rope: Array, w_k_nope: Array, max_logits: Array, *,
    threshold: float, num_heads: int, orientation: str = "out_in",
) -> tuple[Any, Any, Any]:
    """QK-Clip for multi-head latent attention (DeepSeek-V3, Kimi K2), by K2's rules.

    The head-specific parts of the logit ``q^C . k^C + q^R . k^R`` take ``sqrt(gamma)``
    each (``q^C`` and ``k^C``), the head-specific rotary query ``q^R`` takes ``gamma``,
    and the rotary key ``k^R``, shared by every head, is left untouched: each term of the
    logit is then scaled by ``gamma``.

    Parameters
    ----------
    w_q_nope, w_q_rope, w_k_nope : array
        The up-projections to ``q^C``, ``q^R`` and ``k^C``, heads contiguous along the
        output axis (see `qk_clip`); pass the key rows of a fused ``wkv_b`` split off.
    max_logits : array of shape (num_heads,)
        Each head's largest pre-softmax logit over the batch.
    threshold : float
        tau.
    num_heads : int
        Heads.
    orientation : {"out_in", "in_out"}, default "out_in"
        See `qk_clip`.

    Returns
    -------
    (w_q_nope, w_q_rope, w_k_nope) : arrays
        New arrays; heads at or below tau unchanged.

    Raises
    ------
    ValueError
        For a bad threshold, orientation or head count.
    """
    xp = _xp.namespace(w_q_nope, w_q_rope, w_k_nope, max_logits)
    gamma = clip_factors(max_logits, threshold)
    root = xp.sqrt(gamma)
    return (_per_head(w_q_nope, root, num_heads, orientation, xp),
            _per_head(w_q_rope, gamma, num_heads, orientation, xp),
            _per_head(w_k_nope, root, num_heads, orientation, xp))
