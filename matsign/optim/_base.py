"""Steppers: pure ``(init, update)`` pairs, `chain`, and the multi-parameter helper.

A stepper works on one array (or one stack of same-shape arrays, shape ``(k, ...)``):
``init(param) -> state`` and ``update(grad, state, param) -> (update, state)``, with
``state`` a NamedTuple of arrays. Updates are *added* to parameters (`apply_updates`),
so the learning-rate block at the end of a chain carries the minus sign.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .. import _xp
from .._typing import Array, Namespace
from ..duality import ORIENTATIONS
from . import _tree

__all__ = [
    "NONFINITE_POLICIES",
    "EmptyState",
    "Groups",
    "MultiState",
    "Stepper",
    "apply_updates",
    "chain",
    "every_matrix",
    "group_keys",
    "matrix_shape",
    "multi",
    "stack",
    "step_stacks",
    "unstack",
]

NONFINITE_POLICIES = ("skip", "raise", "ignore")
"""What ``nonfinite=`` chooses from when a gradient holds NaN or inf: skip the step (zero
updates, the state kept, selected on the device), raise (one host sync), or let it through."""


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
    host_step : bool, default False
        Whether ``update``, called eagerly, reads values on the host (Shampoo, SOAP: the
        checks of their inverse roots and eigenbases, which raise on inf or NaN). Outside
        tracing `multi` then decides a ``"skip"`` on the host, before calling it; under
        ``jax.jit`` the checks are skipped and the step is selected on the device.

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
    host_step: bool = False


class EmptyState(NamedTuple):
    """The state of a stateless stepper."""


def _no_state(param):  # numpydoc ignore=PR01,RT01
    """Init of a stateless stepper."""
    return EmptyState()


def stateless(direction: Callable[[Array, Array], Array]) -> Stepper:
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


def chain(*steppers: Stepper) -> Stepper:
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

    for s in steppers:
        if not isinstance(s, Stepper):
            msg = f"chain takes Steppers; got {type(s).__name__} {s!r}"
            raise TypeError(msg)

    def init(param):
        _check_parameter(param)
        return tuple(s.init(param) for s in steppers)

    def update(grad, state, param):
        if grad is None:  # multi and the torch classes never pass one
            raise TypeError("a stepper's update needs a gradient array; got None")
        _xp.namespace(grad, *(() if param is None else (param,)))  # TypeError if mixed
        if param is not None and tuple(grad.shape) != tuple(param.shape):
            msg = (f"a gradient of shape {tuple(grad.shape)} for a parameter of shape "
                   f"{tuple(param.shape)}")
            raise ValueError(msg)
        new_state = []
        for s, inner in zip(steppers, state, strict=True):
            grad, inner = s.update(grad, inner, param)
            new_state.append(inner)
        return grad, tuple(new_state)

    return Stepper(init, update, all(s.stackable for s in steppers),
                   any(s.host_step for s in steppers))


def _check_parameter(param):
    """TypeError unless ``param`` is an array of a real floating dtype (optimizer state)."""
    xp = _xp.namespace(param)
    if not xp.isdtype(param.dtype, "real floating"):
        msg = (f"optimizers take real floating parameters; got an array of dtype "
               f"{param.dtype} (an integer or complex parameter has no gradient step here)")
        raise TypeError(msg)


def apply_updates(params: Any, updates: Any) -> Any:
    """``params + updates``, for one array or a (nested) dict, list or tuple of them.

    Parameters
    ----------
    params : array, or dict, list or tuple of (nested) arrays
        Current parameters.
    updates : same structure as ``params``
        As returned by a stepper's ``update``.

    Returns
    -------
    Same structure as ``params``
        New parameters (new arrays; nothing is modified in place).

    Raises
    ------
    KeyError
        If ``updates`` lacks a parameter of ``params``.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.optim import apply_updates
    >>> apply_updates({"w": np.ones(2)}, {"w": np.array([0.5, -1.0])})
    {'w': array([1.5, 0. ])}
    >>> apply_updates({"block": [np.ones(1)]}, {"block": [np.ones(1)]})
    {'block': [array([2.])]}
    """
    step = dict(_tree.leaves(updates))
    return _tree.rebuild(params, lambda key, p: p + _lookup(step, key, "updates"))


def _lookup(table, key, what):
    try:
        return table[key]
    except KeyError:
        msg = f"{what} have no entry for the parameter {key!r}"
        raise KeyError(msg) from None


def all_finite(arrays: Sequence[Array], *, xp: Namespace) -> Array:
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
    flags = [_xp.all_finite(a, xp=xp) for a in arrays]
    return xp.all(xp.stack(flags)) if flags else xp.asarray(True)


def check_nonfinite(flag: Array | bool, policy: str, *, where: str) -> None:
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
    if policy == "raise" and _xp.is_traced(flag):
        msg = ("nonfinite='raise' reads the finite flag on the host, which cannot happen "
               "while tracing (jax.jit); use 'skip' (the step is selected on the device)")
        raise ValueError(msg)
    if policy == "raise" and not bool(flag):
        msg = f"non-finite gradient (inf or NaN) in {where}; optimizer state left unchanged"
        raise ValueError(msg)


def keep_if(flag: Array, new: Any, old: Any, *, xp: Namespace) -> Any:
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
        # static parts of a state (layouts) are equal; a Python counter needs the host
        return new if new == old or bool(flag) else old
    if isinstance(new, tuple):
        parts = [keep_if(flag, n, o, xp=xp) for n, o in zip(new, old, strict=True)]
        return type(new)(*parts) if hasattr(new, "_fields") else tuple(parts)
    return xp.where(flag, new, old)


@_xp.static
class Groups(tuple):
    """The stacking of `multi`: ``(label, keys)`` per stack, static under ``jax.jit``.

    A tuple of ``(label, tuple of parameter keys)``; hashable metadata rather than
    numbers, so a `MultiState` passes through ``jax.jit`` as an argument and a result.
    """

    __slots__ = ()


class MultiState(NamedTuple):
    """State of a `multi` stepper: one stacked state per group of same-shape parameters.

    Attributes
    ----------
    groups : Groups
        ``(label, keys)`` per group: the parameter keys (see `multi`).
    states : tuple
        The group stepper's state, stacked along a new first axis when the group
        holds more than one parameter.
    """

    groups: Groups
    states: tuple


def matrix_shape(
    shape: Sequence[int], reshape: str, orientation: str = "out_in",
) -> tuple[int, ...]:
    """The shape a stepper sees for a parameter of ``shape`` (see `multi`).

    Parameters
    ----------
    shape : tuple of int
        The parameter's shape.
    reshape : {"flatten", "batch"}
        For more than two axes: ``"flatten"`` gives one matrix of all of them (a conv
        kernel as out x in*kh*kw), ``"batch"`` keeps the shape, a stack of matrices
        over the last two axes (per head, per expert).
    orientation : {"out_in", "in_out"}, default "out_in"
        Which axis of a weight is its output: the first (torch's ``nn.Linear``
        ``(out, in)``, conv ``(out, in, kh, kw)``) or the last (flax and optax: a
        Dense kernel ``(in, out)``, conv ``(kh, kw, in, out)``). Steppers always see
        ``(..., fan_out, fan_in)``: a ``"in_out"`` parameter is seen
        transposed, so update scales and Muon's rules read the same either way.

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        For an unknown ``reshape`` or ``orientation``.

    Examples
    --------
    >>> from matsign.optim import matrix_shape
    >>> matrix_shape((64, 3, 3, 3), "flatten"), matrix_shape((8, 16, 4), "batch")
    ((64, 27), (8, 16, 4))
    >>> matrix_shape((3, 3, 16, 64), "flatten", "in_out")
    (64, 144)
    """
    if reshape not in ("flatten", "batch"):
        msg = f"reshape must be 'flatten' or 'batch'; got {reshape!r}"
        raise ValueError(msg)
    if orientation not in ORIENTATIONS:
        msg = f"orientation must be one of {ORIENTATIONS}; got {orientation!r}"
        raise ValueError(msg)
    flat = _flat_shape(tuple(int(d) for d in shape), reshape, orientation)
    if len(flat) < 2 or orientation == "out_in":
        return flat
    return (*flat[:-2], flat[-1], flat[-2])


def _flat_shape(shape, reshape, orientation):
    """The shape in the parameter's own orientation, axes merged by ``reshape``."""
    if len(shape) <= 2 or reshape == "batch":
        return shape
    if orientation == "out_in":
        return (shape[0], math.prod(shape[1:]))
    return (math.prod(shape[:-1]), shape[-1])


def _seen(a, reshape, orientation, xp):
    """``a`` as its stepper sees it (`matrix_shape`): reshaped, transposed if fan-in first."""
    flat = _flat_shape(tuple(a.shape), reshape, orientation)
    a = xp.reshape(a, flat) if flat != tuple(a.shape) else a
    return a if a.ndim < 2 or orientation == "out_in" else xp.matrix_transpose(a)


def _unseen(u, shape, orientation, xp):
    """The inverse of `_seen`: the update in the parameter's own ``shape``."""
    u = u if u.ndim < 2 or orientation == "out_in" else xp.matrix_transpose(u)
    return xp.reshape(u, shape) if tuple(u.shape) != shape else u


def group_keys(
    items: Iterable[tuple[Any, Array]], reshape: str, *,
    label: Callable[[Any, Array], Any] | None = None,
    stackable: Callable[[Any], bool] | None = None, orientation: str = "out_in",
) -> tuple[tuple[Any, tuple[Any, ...]], ...]:
    """``(label, keys)`` per stack: parameters of one label, view shape, dtype and device.

    Parameters
    ----------
    items : sequence of (key, array)
        The parameters.
    reshape : {"flatten", "batch"}
        See `matrix_shape`.
    label : callable, optional
        ``label(key, param)``; None labels every parameter None.
    stackable : callable, optional
        ``stackable(label)``: whether that label's stepper takes stacks (see
        `Stepper`); None: all do.
    orientation : {"out_in", "in_out"}, default "out_in"
        See `matrix_shape`.

    Returns
    -------
    tuple of (label, tuple of keys)
        In order of first appearance. Only matrices share a stack: a stack of
        higher-order arrays would be ambiguous.
    """
    groups = {}
    for key, p in items:
        name = None if label is None else label(key, p)
        shape = matrix_shape(p.shape, reshape, orientation)
        alone = len(shape) != 2 or (stackable is not None and not stackable(name))
        signature = (name, shape, str(p.dtype), str(_xp.device(p)), *((key,) if alone else ()))
        groups.setdefault(signature, []).append(key)
    return tuple((sig[0], tuple(keys)) for sig, keys in groups.items())


def stack(arrays: Sequence[Array], shape: tuple[int, ...], *, xp: Namespace) -> Array:
    """Same-shape arrays seen as ``shape``, stacked along a new first axis (one: itself).

    Parameters
    ----------
    arrays : sequence of arrays
        The members of one stack.
    shape : tuple of int
        The shape each member is seen as (see `matrix_shape`).
    xp : namespace
        Their namespace.

    Returns
    -------
    array
        ``(len(arrays), *shape)``, or the single member reshaped (no copy).
    """
    arrays = [xp.reshape(a, shape) if tuple(a.shape) != shape else a for a in arrays]
    return arrays[0] if len(arrays) == 1 else xp.stack(arrays)


def unstack(
    stacked: Array, shapes: Sequence[tuple[int, ...]], *, xp: Namespace,
) -> list[Array]:
    """The members of a stack as views, each in its own shape (inverse of `stack`).

    Parameters
    ----------
    stacked : array
        As made by `stack` from ``len(shapes)`` members.
    shapes : sequence of tuple of int
        Each member's own shape.
    xp : namespace
        Its namespace.

    Returns
    -------
    list of arrays
    """
    parts = [stacked] if len(shapes) == 1 else [stacked[i, ...] for i in range(len(shapes))]
    pairs = zip(parts, shapes, strict=True)
    return [xp.reshape(u, s) if tuple(u.shape) != s else u for u, s in pairs]


def step_stacks(
    steppers: Sequence[Stepper], grads: Sequence[Array], states: Sequence[Any],
    params: Sequence[Array] | None = None, *, nonfinite: str, where: str, xp: Namespace,
    finite: Array | None = None, finish: Callable[[], None] | None = None,
) -> tuple[list[Array], tuple[Any, ...], Array]:
    """One step of each stack's stepper under the non-finite policy: the engine's core.

    Parameters
    ----------
    steppers : sequence of Stepper
        One per stack.
    grads : sequence of arrays
        One stacked gradient per stack (see `stack`).
    states : sequence
        Each stepper's state for its stack.
    params : sequence of arrays, optional
        Stacked parameters, for steppers that read them (weight decay); None passes
        None to every stepper.
    nonfinite : {"skip", "raise", "ignore"}
        See `multi`.
    where : str
        What held the gradients, for the error message.
    xp : namespace
        The arrays' namespace.
    finite : array, optional
        The 0-d finite flag, when the caller has it already: a distributed adapter
        passes the flag of every process's gradients together (one all-reduce), so
        that all processes skip or raise together. None: computed from ``grads``.
    finish : callable, optional
        Called once every stack's update is made, before the directions are read:
        completes work the steppers' ``work`` callables deferred (a distributed
        transport gathering every stack's results in one collective fills them here).

    Returns
    -------
    directions : list of arrays
        Each stepper's update, zero for a skipped step.
    states : tuple
        The new states (the old ones for a skipped step).
    finite : array
        0-d boolean: whether every gradient was finite (no host sync).

    Raises
    ------
    ValueError
        Under ``nonfinite="raise"`` for a non-finite gradient (one host sync).
    """
    finite = all_finite(grads, xp=xp) if finite is None else finite
    check_nonfinite(finite, nonfinite, where=where)
    skip = nonfinite == "skip"
    # eager host_step steppers read values on the host and cannot take inf or NaN; host
    # arrays are read for free: both skip before the step (no where-passes over every
    # array). While tracing, nothing is read: the step is computed and then selected.
    eager = not _xp.is_traced(finite)
    if skip and eager and (any(s.host_step for s in steppers) or _xp.reads_free(finite)):
        if not bool(finite):
            return [xp.zeros_like(G) for G in grads], tuple(states), finite
        skip = False
    params = [None] * len(grads) if params is None else params
    directions, new_states = [], []
    for stepper, G, inner, P in zip(steppers, grads, states, params, strict=True):
        U, new = stepper.update(G, inner, P)
        directions.append(U)
        new_states.append(new)
    if finish is not None:
        finish()
    if skip:
        directions = [xp.where(finite, U, 0.0) for U in directions]
        new_states = [keep_if(finite, new, inner, xp=xp)
                      for new, inner in zip(new_states, states, strict=True)]
    return directions, tuple(new_states), finite


def every_matrix(fn: Callable[[Array], Array], stacked: Array) -> Array:
    """The single-process work assignment: ``fn`` of every matrix here, in one call.

    Parameters
    ----------
    fn : callable
        A batched matrix function (``fn(stack)`` acts on each matrix of the stack).
    stacked : array of shape (k, ..., m, n) or (m, n)
        The stack the engine holds.

    Returns
    -------
    array
        ``fn(stacked)``.

    Notes
    -----
    This is the engine's distribution seam: the matrix work of a step (orthogonalising,
    in `matsign.optim.orthogonalize`) goes through a ``work(fn, stacked)`` callable.
    A distributed adapter passes one that computes ``fn`` on this process's share of
    the matrices and gathers the others' results; everything else in a step is
    element-wise and runs where the data is.
    """
    return fn(stacked)


def multi(
    steppers: Stepper | Mapping[str, Stepper],
    labels: Callable[[Any, Array], str] | Any = None, *,
    reshape: str = "flatten", orientation: str = "out_in", nonfinite: str = "skip",
    place: Callable[[Array], Array] | None = None,
) -> Stepper:
    """Apply steppers over (nested) dicts, lists or tuples of parameters, stacking same-shape ones.

    Parameters of one label and one shape, dtype and device are stacked along a new
    first axis and updated by one call, so Muon orthogonalises them in one batched
    `matsign.newton_schulz` call. Their state lives stacked (one array per state
    field and stack), so a step stacks only the gradients.

    Parameters
    ----------
    steppers : Stepper or dict of str to Stepper
        One stepper for all parameters, or one per label.
    labels : callable, dict or pytree of labels, optional
        ``labels(key, param) -> label``; or the labels in the parameters' structure
        (what `route` returns); or a flat dict key -> label. Keys are the parameters'
        paths joined with dots (``"block.0.weight"``; a top-level parameter keeps its
        dict key or list position). Needed when ``steppers`` is a dict.
    reshape : {"flatten", "batch"}, default "flatten"
        How parameters of more than two axes are seen: see `matrix_shape`. Updates
        come back in the parameter's own shape.
    orientation : {"out_in", "in_out"}, default "out_in"
        Which axis of a weight is its output (see `matrix_shape`): torch's ``(out,
        in)`` or flax's ``(in, out)``, which steppers see transposed.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        If any gradient holds inf or NaN: ``"skip"`` returns zero updates and the old
        state (on a device, CUDA or JAX, and under ``jax.jit``, selected with ``where``:
        no host sync; on host arrays, NumPy or torch on the CPU, and for eager steppers
        with ``host_step``, decided on the host before the step, which is then not
        computed), ``"raise"`` raises ValueError (one host sync per step; not under
        ``jax.jit``) and ``"ignore"`` lets the values through.
    place : callable, optional
        ``place(stack) -> stack``, applied to every stacked gradient and parameter of
        two or more matrices before the step: where a stack lives (the JAX adapter
        constrains it to be sharded on its stack axis). None leaves them as they are.

    Returns
    -------
    Stepper
        ``init(params)`` and ``update(grads, state, params)`` over the parameters;
        updates come back in the gradients' structure. ``params`` may be None when no
        stepper reads them (no weight decay inside the steppers).

    Raises
    ------
    ValueError
        For an unknown option; under ``nonfinite="raise"``, from ``update``.
    KeyError
        From ``init``, for a parameter without a label or a label without a stepper.

    Notes
    -----
    A stepper sees a stacked group as one array of shape ``(k, *shape)``: blocks that
    act per matrix (orthogonalisation, update scales) work on the last two axes.
    The engine's parts are public for adapters (``matsign.optim.torch``):
    `group_keys`, `stack`, `unstack` and `step_stacks`, which applies the policy.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> params = {"a": np.eye(2), "b": 2 * np.eye(2), "bias": np.zeros(2),
    ...           "head": np.ones((3, 2))}
    >>> step = optim.multi({"muon": optim.muon(0.1), "adamw": optim.adamw(0.1)},
    ...                    optim.route(params))
    >>> state = step.init(params)
    >>> [(label, keys) for label, keys in state.groups]
    [('muon', ('a', 'b')), ('adamw', ('bias',)), ('adamw', ('head',))]
    >>> grads = {k: np.ones_like(p) for k, p in params.items()}
    >>> updates, state = step.update(grads, state, params)
    >>> params = optim.apply_updates(params, updates)
    """
    check_nonfinite(True, nonfinite, where="")
    matrix_shape((1,), reshape, orientation)
    pick = _chooser(steppers, labels)
    placed = (lambda a: a) if place is None else place

    def seen(arrays, keys, xp):
        members = [_seen(arrays[k], reshape, orientation, xp) for k in keys]
        stacked = stack(members, tuple(members[0].shape), xp=xp)
        return placed(stacked) if len(keys) > 1 else stacked

    def init(params):
        items = _tree.leaves(params)
        lookup = dict(items)
        xp = _xp.namespace(*lookup.values())
        groups = group_keys(items, reshape, label=pick.label, orientation=orientation,
                            stackable=lambda name: pick.stepper(name).stackable)
        states = tuple(pick.stepper(name).init(seen(lookup, keys, xp)) for name, keys in groups)
        return MultiState(Groups(groups), states)

    def update(grads, state, params=None):
        grad_map = dict(_tree.leaves(grads))
        missing = [k for _, keys in state.groups for k in keys if k not in grad_map]
        if missing:  # a None (or absent) gradient: the updates could not match the state
            msg = f"multi: no gradient (None or absent) for the parameter(s) {missing}"
            raise ValueError(msg)
        xp = _xp.namespace(*grad_map.values())
        G = [seen(grad_map, keys, xp) for _, keys in state.groups]
        P = None
        if params is not None:
            param_map = dict(_tree.leaves(params))
            P = [seen(param_map, keys, xp) for _, keys in state.groups]
        chosen = [pick.stepper(name) for name, _ in state.groups]
        U, states, _ = step_stacks(chosen, G, state.states, P, nonfinite=nonfinite,
                                   where="the gradients", xp=xp)
        out = {}
        for (_, keys), u in zip(state.groups, U, strict=True):
            view = tuple(u.shape[1:]) if len(keys) > 1 else tuple(u.shape)
            members = unstack(u, [view] * len(keys), xp=xp)
            out.update((k, _unseen(m, tuple(grad_map[k].shape), orientation, xp))
                       for k, m in zip(keys, members, strict=True))
        updates = _tree.rebuild(grads, lambda key, g: _lookup(out, key, "the stacking"))
        return updates, MultiState(state.groups, states)

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
    if callable(labels):
        label_of = labels
    else:
        table = dict(_tree.leaves(labels))
        label_of = lambda key, p: _lookup(table, key, "the labels")  # noqa: E731

    def stepper(label):
        if label not in steppers:
            msg = f"no stepper for label {label!r}; have {sorted(steppers)}"
            raise KeyError(msg)
        return steppers[label]

    return _Chooser(label_of, stepper)
