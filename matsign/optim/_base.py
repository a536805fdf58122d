"""Steppers: pure ``(init, update)`` pairs, `chain`, and the multi-parameter helper.

A stepper works on one array (or one stack of same-shape arrays, shape ``(k, ...)``):
``init(param) -> state`` and ``update(grad, state, param) -> (update, state)``, with
``state`` a NamedTuple of arrays. Updates are *added* to parameters (`apply_updates`),
so the learning-rate block at the end of a chain carries the minus sign.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .. import _xp

__all__ = [
    "NONFINITE_POLICIES",
    "EmptyState",
    "MultiState",
    "Stepper",
    "apply_updates",
    "chain",
    "matrix_shape",
    "multi",
]

NONFINITE_POLICIES = ("skip", "raise", "ignore")


class Stepper(NamedTuple):
    """A pure optimizer building block: ``init(param)`` and ``update(grad, state, param)``.

    Attributes
    ----------
    init : callable
        ``init(param) -> state``, a NamedTuple of arrays shaped after ``param``.
    update : callable
        ``update(grad, state, param) -> (update, new_state)``; nothing is mutated.
    stackable : bool, default True
        Whether a stack of same-shape parameters (a new first axis) may be passed as
        one array; False for steppers that treat every axis as a tensor mode (Shampoo).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> sgd = optim.chain(optim.trace(0.9), optim.scale_by_learning_rate(0.1))
    >>> w = np.ones(3)
    >>> state = sgd.init(w)
    >>> u, state = sgd.update(np.full(3, 2.0), state, w)
    >>> optim.apply_updates(w, u)
    array([0.8, 0.8, 0.8])
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], tuple[Any, Any]]
    stackable: bool = True


class EmptyState(NamedTuple):
    """The state of a stateless stepper."""


def _no_state(param):  # numpydoc ignore=PR01,RT01
    """Init of a stateless stepper."""
    return EmptyState()


def stateless(direction):
    """A stepper without state from ``direction(grad, param) -> update``.

    Parameters
    ----------
    direction : callable
        ``direction(grad, param)`` returning the update.

    Returns
    -------
    Stepper
    """
    return Stepper(_no_state, lambda grad, state, param: (direction(grad, param), state))


def chain(*steppers):
    """Compose steppers: each one's update is the next one's gradient.

    Parameters
    ----------
    *steppers : Stepper
        Applied left to right.

    Returns
    -------
    Stepper
        Its state is the tuple of the parts' states.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> step = optim.chain(optim.scale(2.0), optim.scale_by_learning_rate(0.5))
    >>> u, _ = step.update(np.array([1.0]), step.init(np.zeros(1)), np.zeros(1))
    >>> u
    array([-1.])
    """

    def init(param):
        return tuple(s.init(param) for s in steppers)

    def update(grad, state, param):
        new_state = []
        for s, inner in zip(steppers, state, strict=True):
            grad, inner = s.update(grad, inner, param)
            new_state.append(inner)
        return grad, tuple(new_state)

    return Stepper(init, update, all(s.stackable for s in steppers))


def apply_updates(params, updates):
    """``params + updates``, for one array or a list or dict of them.

    Parameters
    ----------
    params : array, list or dict of arrays
        Current parameters.
    updates : same structure as ``params``
        As returned by a stepper's ``update``.

    Returns
    -------
    array, list or dict of arrays
        New parameters (new arrays; nothing is modified in place).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.optim import apply_updates
    >>> apply_updates({"w": np.ones(2)}, {"w": np.array([0.5, -1.0])})
    {'w': array([1.5, 0. ])}
    """
    if isinstance(params, Mapping):
        return {k: p + updates[k] for k, p in params.items()}
    if isinstance(params, (list, tuple)):
        return [p + u for p, u in zip(params, updates, strict=True)]
    return params + updates


def all_finite(arrays, *, xp):
    """A 0-d boolean array: whether every entry of every array is finite (no host sync).

    Parameters
    ----------
    arrays : sequence of arrays
        Same namespace.
    xp : namespace
        Their namespace.

    Returns
    -------
    array
        0-d boolean.
    """
    flags = [xp.all(xp.isfinite(a)) for a in arrays]
    return xp.all(xp.stack(flags)) if flags else xp.asarray(True)


def check_nonfinite(flag, policy, *, where):
    """Act on the all-finite ``flag`` by ``policy`` ("raise" syncs with the host).

    Parameters
    ----------
    flag : array
        0-d boolean from `all_finite`.
    policy : {"skip", "raise", "ignore"}
        See `multi`.
    where : str
        What held the gradients, for the message.

    Raises
    ------
    ValueError
        For an unknown policy, or a non-finite gradient under "raise".
    """
    if policy not in NONFINITE_POLICIES:
        msg = f"nonfinite must be one of {NONFINITE_POLICIES}; got {policy!r}"
        raise ValueError(msg)
    if policy == "raise" and not bool(flag):
        msg = f"non-finite gradient (inf or NaN) in {where}; optimizer state left unchanged"
        raise ValueError(msg)


def keep_if(flag, new, old, *, xp):
    """``new`` where ``flag`` is true, else ``old``: arrays, or NamedTuples/tuples of them.

    Parameters
    ----------
    flag : array
        0-d boolean.
    new, old : array or (nested) tuple of arrays
        Same structure.
    xp : namespace
        Their namespace.

    Returns
    -------
    Same structure as ``new``.
    """
    if new is None or type(new) in (bool, int, float, str):  # not NumPy's float64 scalars
        return new  # static parts of a state (layouts, skipped modes)
    if isinstance(new, tuple):
        parts = [keep_if(flag, n, o, xp=xp) for n, o in zip(new, old, strict=True)]
        return type(new)(*parts) if hasattr(new, "_fields") else tuple(parts)
    return xp.where(flag, new, old)


class MultiState(NamedTuple):
    """State of a `multi` stepper: one stacked state per group of same-shape parameters.

    Attributes
    ----------
    groups : tuple of tuple
        ``(label, keys)`` per group: the parameter keys (dict keys or list positions).
    states : tuple
        The group stepper's state, stacked along a new first axis when the group
        holds more than one parameter.
    """

    groups: tuple
    states: tuple


def _as_items(params):
    if isinstance(params, Mapping):
        return list(params.items())
    return list(enumerate(params))


def _rebuild(params, values):
    if isinstance(params, Mapping):
        return {k: values[k] for k in params}
    return [values[i] for i in range(len(params))]


def matrix_shape(shape, reshape):
    """The shape a stepper sees for a parameter of ``shape`` (see `multi`).

    Parameters
    ----------
    shape : tuple of int
        The parameter's shape.
    reshape : {"flatten", "batch"}
        For more than two axes: ``"flatten"`` gives ``(shape[0], prod(rest))`` (a conv
        kernel as out x in*kh*kw), ``"batch"`` keeps the shape, a stack of matrices
        over the last two axes (per head, per expert).

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        For an unknown ``reshape``.

    Examples
    --------
    >>> from matsign.optim import matrix_shape
    >>> matrix_shape((64, 3, 3, 3), "flatten"), matrix_shape((8, 16, 4), "batch")
    ((64, 27), (8, 16, 4))
    """
    if reshape not in ("flatten", "batch"):
        msg = f"reshape must be 'flatten' or 'batch'; got {reshape!r}"
        raise ValueError(msg)
    shape = tuple(int(d) for d in shape)
    if len(shape) <= 2 or reshape == "batch":
        return shape
    return (shape[0], math.prod(shape[1:]))


def _group_keys(items, pick, reshape):
    groups = {}
    for key, p in items:
        label = pick.label(key, p)
        shape = matrix_shape(p.shape, reshape)
        # only matrices are stacked: a stack of higher-order arrays would be ambiguous
        tag = (key,) if len(shape) != 2 or not pick.stepper(label).stackable else ()
        signature = (label, shape, str(p.dtype), str(_xp.device(p)), *tag)
        groups.setdefault(signature, []).append(key)
    return tuple((sig[0], tuple(keys)) for sig, keys in groups.items())


def _stack(arrays, shape, *, xp):
    arrays = [xp.reshape(a, shape) if tuple(a.shape) != shape else a for a in arrays]
    return arrays[0] if len(arrays) == 1 else xp.stack(arrays)


def _unstack(stacked, shapes, *, xp):
    parts = [stacked] if len(shapes) == 1 else [stacked[i, ...] for i in range(len(shapes))]
    pairs = zip(parts, shapes, strict=True)
    return [xp.reshape(u, s) if tuple(u.shape) != s else u for u, s in pairs]


def multi(steppers, labels=None, *, reshape="flatten", nonfinite="skip"):
    """Apply steppers over a list or dict of parameters, stacking same-shape ones.

    Parameters of one label and one shape, dtype and device are stacked along a new
    first axis and updated by one call, so Muon orthogonalises them in one batched
    `matsign.msign`-style call.

    Parameters
    ----------
    steppers : Stepper or dict of str to Stepper
        One stepper for all parameters, or one per label.
    labels : callable or dict, optional
        ``labels(key, param) -> label`` or a dict key -> label (see `route`); needed
        when ``steppers`` is a dict.
    reshape : {"flatten", "batch"}, default "flatten"
        How parameters of more than two axes are seen: see `matrix_shape`. Updates
        come back in the parameter's own shape.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        If any gradient holds inf or NaN: ``"skip"`` returns zero updates and the old
        state (no host sync: selected with ``where``), ``"raise"`` raises ValueError
        (one host sync per step) and ``"ignore"`` lets the values through.

    Returns
    -------
    Stepper
        ``init(params)`` and ``update(grads, state, params)`` over the list or dict;
        updates come back in the same structure.

    Raises
    ------
    ValueError
        Under ``nonfinite="raise"``, from ``update``.

    Notes
    -----
    A stepper sees a stacked group as one array of shape ``(k, *shape)``: blocks that
    act per matrix (orthogonalisation, update scales) work on the last two axes.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> params = {"a": np.eye(2), "b": 2 * np.eye(2), "bias": np.zeros(2)}
    >>> step = optim.multi({"muon": optim.muon(0.1), "adamw": optim.adamw(0.1)},
    ...                    optim.route(params))
    >>> state = step.init(params)
    >>> [(label, keys) for label, keys in state.groups]
    [('muon', ('a', 'b')), ('adamw', ('bias',))]
    >>> grads = {k: np.ones_like(p) for k, p in params.items()}
    >>> updates, state = step.update(grads, state, params)
    >>> params = optim.apply_updates(params, updates)
    """
    check_nonfinite(True, nonfinite, where="")
    matrix_shape((1,), reshape)
    pick = _chooser(steppers, labels)

    def init(params):
        items = _as_items(params)
        lookup = dict(items)
        groups = _group_keys(items, pick, reshape)
        xp = _xp.namespace(*lookup.values())
        states = []
        for label, keys in groups:
            shape = matrix_shape(lookup[keys[0]].shape, reshape)
            states.append(pick.stepper(label).init(_stack([lookup[k] for k in keys], shape, xp=xp)))
        states = tuple(states)
        return MultiState(groups, states)

    def update(grads, state, params):
        grad_map, param_map = dict(_as_items(grads)), dict(_as_items(params))
        xp = _xp.namespace(*grad_map.values())
        flag = all_finite(list(grad_map.values()), xp=xp)
        check_nonfinite(flag, nonfinite, where="the gradients")
        out, new_states = {}, []
        for (label, keys), inner in zip(state.groups, state.states, strict=True):
            shapes = [tuple(param_map[k].shape) for k in keys]
            view = matrix_shape(shapes[0], reshape)
            G = _stack([grad_map[k] for k in keys], view, xp=xp)
            P = _stack([param_map[k] for k in keys], view, xp=xp)
            U, new = pick.stepper(label).update(G, inner, P)
            if nonfinite == "skip":
                U, new = xp.where(flag, U, xp.zeros_like(U)), keep_if(flag, new, inner, xp=xp)
            out.update(zip(keys, _unstack(U, shapes, xp=xp), strict=True))
            new_states.append(new)
        return _rebuild(params, out), MultiState(state.groups, tuple(new_states))

    return Stepper(init, update)


class _Chooser(NamedTuple):
    label: Callable
    stepper: Callable


def _chooser(steppers, labels):
    """Label function and stepper lookup for `multi`."""
    if isinstance(steppers, Stepper):
        return _Chooser(lambda key, p: None, lambda label: steppers)
    if labels is None:
        msg = "multi needs labels when steppers is a dict of label -> Stepper"
        raise ValueError(msg)
    label_of = labels if callable(labels) else (lambda key, p: labels[key])

    def stepper(label):
        if label not in steppers:
            msg = f"no stepper for label {label!r}; have {sorted(steppers)}"
            raise KeyError(msg)
        return steppers[label]

    return _Chooser(label_of, stepper)
