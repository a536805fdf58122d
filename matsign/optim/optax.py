"""matsign's optimizers as ``optax.GradientTransformation`` objects (needs jax and optax).

Every transformation runs matsign's engine (`matsign.optim.multi`) over any pytree of
parameters (nested dicts, lists, tuples): parameters of one label, shape and dtype are
stacked and updated by one call, so Muon orthogonalises same-shape matrices in one
batched Newton–Schulz call. The state is a pytree of arrays whose stacking layout is
static, so ``init``, ``update`` and whole training steps go through ``jax.jit`` and
``lax.scan``; it composes with ``optax.chain``, ``optax.multi_transform`` and
``optax.apply_updates`` like any optax transformation.

Weights are taken in optax's and flax's layout by default: a Dense kernel is
``(fan_in, fan_out)`` and a conv kernel ``(kh, kw, in, out)`` (``orientation=
"in_out"``; pass ``"out_in"`` for torch's). Given a ``mesh``, every
stack is constrained to be sharded along its stack axis, so each device
orthogonalises its own matrices and the Newton–Schulz iteration needs no collective.

Examples
--------
>>> import jax, jax.numpy as jnp, optax
>>> from matsign.optim import optax as mo
>>> params = {"dense": jnp.ones((4, 3)), "bias": jnp.zeros(3), "head": jnp.ones((3, 2))}
>>> opt = optax.chain(optax.clip_by_global_norm(1.0), mo.muon(0.02))
>>> state = opt.init(params)
>>> grads = jax.tree.map(jnp.ones_like, params)
>>> updates, state = jax.jit(opt.update)(grads, state, params)
>>> params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

from . import _base, alias
from .adafactor import scale_by_adafactor
from .adafactor import tiger as _tiger
from .adamuon import adamuon as _adamuon
from .adamuon import normuon as _normuon
from .muon import muon as _muon
from .muon import route
from .shampoo import shampoo as _shampoo
from .shampoo import soap as _soap
from .transforms import add_decayed_weights, scale, scale_by_learning_rate, trace

__all__ = ["adafactor", "adamuon", "adamw", "as_optax", "lion", "muon", "normuon", "shampoo",
           "soap", "tiger"]


def as_optax(
    steppers: _base.Stepper | Mapping[str, _base.Stepper], labels: Any = None, *,
    reshape: str = "flatten", orientation: str = "in_out", nonfinite: str = "skip",
    mesh: jax.sharding.Mesh | None = None, axis: str | None = None,
) -> optax.GradientTransformation:
    """matsign steppers over a pytree of parameters, as an optax transformation.

    Parameters
    ----------
    steppers : Stepper or dict of str to Stepper
        One stepper for every parameter (``matsign.optim.muon(0.02)``), or one per
        label.
    labels : pytree or callable, optional
        The label of each parameter, in the parameters' structure, or a callable
        ``labels(params)`` returning it (as ``optax.multi_transform``); needed when
        ``steppers`` is a dict. `matsign.optim.route` gives Muon's usual split.
        Labels are read once, by ``init``; ``update`` follows the state's stacking.
    reshape : {"flatten", "batch"}, default "flatten"
        Parameters of more than two axes: one matrix (a conv kernel), or a stack of
        matrices over the last two axes (per head, per expert); see
        `matsign.optim.matrix_shape`.
    orientation : {"in_out", "out_in"}, default "in_out"
        Which axis of a weight is its output: the last (optax, flax) or the first
        (torch). Update scales and Muon's rules read ``(fan_out, fan_in)`` either way.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        A gradient with inf or NaN: ``"skip"`` returns zero updates and keeps the
        state, selected on the device (no host sync, under ``jax.jit`` too);
        ``"raise"`` works only outside ``jax.jit``; ``"ignore"`` lets it through, as
        optax's own transformations do.
    mesh : jax.sharding.Mesh, optional
        Constrain every stack of two or more matrices to be sharded along its stack
        axis over ``axis``: each device updates its own matrices, and Newton–Schulz
        runs without collectives. A stack whose count does not divide the axis size
        is left to the compiler.
    axis : str, optional
        The mesh axis to shard stacks over; the mesh's only axis by default.

    Returns
    -------
    optax.GradientTransformation
        ``init(params)`` and ``update(updates, state, params=None)``; ``params`` are
        needed only by steppers that read them (weight decay raises without them).

    Raises
    ------
    ValueError
        For an unknown option, a mesh without ``axis`` when it has several axes, or
        (from ``init``) a parameter without a label.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from matsign import optim
    >>> from matsign.optim.optax import as_optax
    >>> params = {"w": jnp.ones((8, 4)), "b": jnp.zeros(4), "head": jnp.ones((4, 2))}
    >>> opt = as_optax({"muon": optim.muon(0.02), "adamw": optim.adamw(1e-3)},
    ...                optim.route)
    >>> [(label, keys) for label, keys in opt.init(params).groups]
    [('muon', ('w',)), ('adamw', ('b',)), ('adamw', ('head',))]
    """
    place = None if mesh is None else _stack_sharding(mesh, axis)
    options = {"reshape": reshape, "orientation": orientation, "nonfinite": nonfinite,
               "place": place}
    engine = _base.multi(steppers, _labels_from_state, **options)

    def init(params):
        tree = labels(params) if callable(labels) else labels
        return _base.multi(steppers, tree, **options).init(params)

    def update(updates, state, params=None):
        return engine.update(updates, state, params)

    return optax.GradientTransformation(init, update)


def _labels_from_state(key, param):  # numpydoc ignore=PR01
    """Never called: ``update`` follows the stacking that ``init`` stored in the state."""
    raise AssertionError(key)


def _stack_sharding(mesh, axis) -> Callable[[Any], Any]:
    """``place`` for `matsign.optim.multi`: a stack sharded along its first axis."""
    if axis is None:
        if len(mesh.axis_names) != 1:
            msg = f"mesh has axes {mesh.axis_names}: name the one to shard stacks over (axis=)"
            raise ValueError(msg)
        axis = mesh.axis_names[0]
    if axis not in mesh.axis_names:
        msg = f"axis {axis!r} is not an axis of the mesh {mesh.axis_names}"
        raise ValueError(msg)
    size = mesh.shape[axis]
    spec = jax.sharding.PartitionSpec(axis)
    sharding = jax.sharding.NamedSharding(mesh, spec)

    def place(stacked):
        if stacked.shape[0] % size:
            return stacked
        return jax.lax.with_sharding_constraint(stacked, sharding)

    return place


def muon(
    learning_rate: float | Callable = 0.02, *, other: _base.Stepper | None = None,
    labels: Any = None, reshape: str = "flatten", orientation: str = "in_out",
    nonfinite: str = "skip", mesh: jax.sharding.Mesh | None = None, axis: str | None = None,
    **options: Any,
) -> optax.GradientTransformation:
    """Muon on the hidden matrices, ``other`` on the rest: `matsign.optim.muon` for optax.

    Parameters
    ----------
    learning_rate : float or callable, default 0.02
        Muon's learning rate, or a schedule of the step count.
    other : Stepper, optional
        For the parameters Muon does not take; default
        ``matsign.optim.adamw(learning_rate, weight_decay=0.0)``, as
        ``optax.contrib.muon`` (which also runs Adam, undecayed, on them).
    labels : pytree or callable, optional
        ``"muon"`` or ``"other"`` per parameter (see `as_optax`); default
        `matsign.optim.route`: matrices (two or more axes) except those named like
        embeddings and output heads (``embed``, ``lm_head``, ...); it warns when no
        matrix is named like a head (the last one would go to Muon).
    reshape, orientation, nonfinite, mesh, axis
        See `as_optax`.
    **options
        The options of `matsign.optim.muon`: ``momentum``, ``nesterov``,
        ``bias_correction`` (``True`` for ``optax.contrib.muon``'s bias-corrected
        Nesterov), ``weight_decay``, ``update_scale`` (a number ``c`` is
        ``consistent_rms=c``), ``schedule``, ``steps``, ``dtype``, ...

    Returns
    -------
    optax.GradientTransformation

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from matsign.optim.optax import muon
    >>> opt = muon(0.02, bias_correction=True, method="svd")  # the exact U V^T
    >>> params = {"w": jnp.eye(3), "b": jnp.zeros(3), "lm_head": jnp.ones((3, 5))}
    >>> grads = {"w": jnp.diag(jnp.array([3.0, 2.0, 1.0])), "b": jnp.ones(3),
    ...          "lm_head": jnp.ones((3, 5))}
    >>> updates, state = opt.update(grads, opt.init(params))
    >>> print(jnp.round(updates["w"], 3))
    [[-0.02 -0.   -0.  ]
     [-0.   -0.02 -0.  ]
     [-0.   -0.   -0.02]]
    >>> [(label, keys) for label, keys in state.groups]
    [('muon', ('w',)), ('other', ('b',)), ('other', ('lm_head',))]
    """
    steppers = {"muon": _muon(learning_rate, **options),
                "other": alias.adamw(learning_rate, weight_decay=0.0) if other is None else other}
    if labels is None:
        labels = _default_labels
    return as_optax(steppers, labels, reshape=reshape, orientation=orientation, nonfinite=nonfinite,
                    mesh=mesh, axis=axis)


def _default_labels(params):  # numpydoc ignore=PR01,RT01
    """`matsign.optim.route`'s split into "muon" and "other"."""
    return route(params, matrix="muon", other="other")


def _everywhere(stepper, reshape, orientation, nonfinite, mesh, axis):
    return as_optax(stepper, reshape=reshape, orientation=orientation, nonfinite=nonfinite,
                    mesh=mesh, axis=axis)


def adamw(
    learning_rate: float | Callable = 1e-3, *, reshape: str = "flatten",
    orientation: str = "in_out", nonfinite: str = "skip",
    mesh: jax.sharding.Mesh | None = None, axis: str | None = None, **options: Any,
) -> optax.GradientTransformation:
    """`matsign.optim.adamw` on every parameter (torch's defaults: ``weight_decay=0.01``).

    Parameters
    ----------
    learning_rate : float or callable, default 1e-3
        A constant or a schedule of the step count.
    reshape, orientation, nonfinite, mesh, axis
        See `as_optax`.
    **options
        The options of `matsign.optim.adamw` (``b1``, ``b2``, ``eps``,
        ``weight_decay``, ``amsgrad``, ``cautious_mask``, ...).

    Returns
    -------
    optax.GradientTransformation
    """
    return _everywhere(alias.adamw(learning_rate, **options), reshape, orientation, nonfinite,
                       mesh, axis)


def lion(
    learning_rate: float | Callable = 1e-4, *, reshape: str = "flatten",
    orientation: str = "in_out", nonfinite: str = "skip",
    mesh: jax.sharding.Mesh | None = None, axis: str | None = None, **options: Any,
) -> optax.GradientTransformation:
    """`matsign.optim.lion` on every parameter.

    Parameters
    ----------
    learning_rate : float or callable, default 1e-4
        A constant or a schedule of the step count.
    reshape, orientation, nonfinite, mesh, axis
        See `as_optax`.
    **options
        The options of `matsign.optim.lion` (``b1``, ``b2``, ``weight_decay``, ...).

    Returns
    -------
    optax.GradientTransformation
    """
    return _everywhere(alias.lion(learning_rate, **options), reshape, orientation, nonfinite,
                       mesh, axis)


def shampoo(
    learning_rate: float | Callable = 1e-3, *, reshape: str = "flatten",
    orientation: str = "in_out", nonfinite: str = "skip",
    mesh: jax.sharding.Mesh | None = None, axis: str | None = None, **options: Any,
) -> optax.GradientTransformation:
    """`matsign.optim.shampoo` on every parameter (each one alone: not stacked).

    Parameters
    ----------
    learning_rate : float or callable, default 1e-3
        A constant or a schedule of the step count.
    reshape, orientation, nonfinite, mesh, axis
        See `as_optax`.
    **options
        The options of `matsign.optim.shampoo` (``every``, ``start``, ``max_dim``,
        ``weight_decay``, ...).

    Returns
    -------
    optax.GradientTransformation
    """
    return _everywhere(_shampoo(learning_rate, **options), reshape, orientation,
                       nonfinite, mesh, axis)


def soap(
    learning_rate: float | Callable = 3e-3, *, reshape: str = "flatten",
    orientation: str = "in_out", nonfinite: str = "skip",
    mesh: jax.sharding.Mesh | None = None, axis: str | None = None, **options: Any,
) -> optax.GradientTransformation:
    """`matsign.optim.soap` on every parameter (each one alone: not stacked).

    Parameters
    ----------
    learning_rate : float or callable, default 3e-3
        A constant or a schedule of the step count.
    reshape, orientation, nonfinite, mesh, axis
        See `as_optax`.
    **options
        The options of `matsign.optim.soap` (``b1``, ``b2``, ``every``,
        ``max_precond_dim``, ``weight_decay``, ...).

    Returns
    -------
    optax.GradientTransformation
    """
    return _everywhere(_soap(learning_rate, **options), reshape, orientation,
                       nonfinite, mesh, axis)


def adafactor(
    learning_rate: float | Callable | None = None, *, min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8, multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0, momentum: float | None = None,
    weight_decay_rate: float | None = None, eps: float = 1e-30, factored: bool = True,
    weight_decay_mask: Any = None, orientation: str = "in_out", nonfinite: str = "skip",
    mesh: jax.sharding.Mesh | None = None, axis: str | None = None,
) -> optax.GradientTransformation:
    """``optax.adafactor``'s signature, defaults and steps, on matsign's Adafactor.

    Parameters
    ----------
    learning_rate : float, callable or None, default None
        The step size, or a schedule of the step count; None: no learning rate (the
        step is the clipped direction times the parameter scale), as optax.
    min_dim_size_to_factor : int, default 128
        Factor the second moment over the two largest axes when both are this long.
    decay_rate : float, default 0.8
        ``beta2_t = 1 - t^(-decay_rate)``.
    multiply_by_parameter_scale : bool, default True
        Multiply the step by ``max(1e-3, RMS(param))``.
    clipping_threshold : float or None, default 1.0
        Divide the direction by ``max(1, RMS / clipping_threshold)``; None: no clipping.
    momentum : float, optional
        EMA ``m <- momentum m + (1 - momentum) u`` of the scaled step ``u`` (no
        debiasing), kept in the parameter's dtype.
    weight_decay_rate : float, optional
        Subtract ``weight_decay_rate * param`` (optax's rate is not multiplied by the
        learning rate).
    eps : float, default 1e-30
        Added to the squared gradient.
    factored : bool, default True
        False: keep the full second moment of every parameter.
    weight_decay_mask : pytree or callable, optional
        Booleans in the parameters' structure, or ``mask(params)`` returning them: which
        parameters decay (a prefix tree as optax takes is not supported).
    orientation, nonfinite, mesh, axis
        See `as_optax`; parameters keep their own shape (``reshape="batch"``), so a conv
        kernel is factored over its two largest axes, as optax.

    Returns
    -------
    optax.GradientTransformation

    Notes
    -----
    The steps follow `optax.adafactor`'s chain (``scale_by_factored_rms``,
    ``clip_by_block_rms``, ``scale_by_learning_rate``, ``scale_by_param_block_rms``,
    ``ema``, ``add_decayed_weights``) through `matsign.optim.scale_by_adafactor` with
    ``eps_mode="add"``, ``factor_axes="largest"``: the trajectories agree to rounding.
    optax's ``decay_offset`` and ``dtype_momentum`` are not taken (every option is
    keyword-only here, so a positional call cannot shift them).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from matsign.optim.optax import adafactor
    >>> params = {"w": jnp.ones((256, 128)), "b": jnp.ones(128)}
    >>> opt = adafactor(1e-2)
    >>> state = opt.init(params)
    >>> [type(s[0]).__name__ for s in state.states]
    ['AdafactorState', 'AdafactorUnfactoredState']
    >>> updates, state = opt.update({"w": jnp.ones((256, 128)), "b": jnp.ones(128)}, state,
    ...                             params)
    >>> round(float(updates["w"][0, 0]), 6)     # -lr * RMS(w) * (g / sqrt(g^2))
    -0.01
    """
    direction = scale_by_adafactor(
        decay_rate=decay_rate, eps=eps, eps_mode="add", clipping_threshold=clipping_threshold,
        multiply_by_parameter_scale=multiply_by_parameter_scale, factored=factored,
        factor_axes="largest", min_dim_size_to_factor=min_dim_size_to_factor)
    lr = scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
    parts = [direction, lr, *(() if momentum is None else (trace(momentum, ema=True),))]
    steppers = _base.chain(*parts)
    labels = None
    if weight_decay_rate is not None:
        # optax adds the decay to the direction before its final sign flip, unscaled by
        # the rate; parts end negated, so flip back, decay, flip again
        decay = add_decayed_weights(weight_decay_rate)
        decayed = _base.chain(*parts, scale(-1.0), decay, scale(-1.0))
        steppers, labels = decayed, None
        if weight_decay_mask is not None:
            steppers = {"decay": decayed, "keep": _base.chain(*parts)}
            labels = functools.partial(_decay_labels, weight_decay_mask)
    return as_optax(steppers, labels, reshape="batch", orientation=orientation, nonfinite=nonfinite,
                    mesh=mesh, axis=axis)


def _decay_labels(mask, params):  # numpydoc ignore=PR01,RT01
    """``"decay"`` where ``mask`` (a tree of booleans, or a callable of ``params``) is true."""
    tree = mask(params) if callable(mask) else mask
    return jax.tree.map(lambda decay: "decay" if decay else "keep", tree)


def tiger(
    learning_rate: float | Callable = 1e-4, *, reshape: str = "flatten",
    orientation: str = "in_out", nonfinite: str = "skip",
    mesh: jax.sharding.Mesh | None = None, axis: str | None = None, **options: Any,
) -> optax.GradientTransformation:
    """`matsign.optim.tiger` on every parameter.

    Parameters
    ----------
    learning_rate : float or callable, default 1e-4
        A constant or a schedule of the step count.
    reshape, orientation, nonfinite, mesh, axis
        See `as_optax`.
    **options
        The options of `matsign.optim.tiger` (``beta``, ``weight_decay``,
        ``cautious_mask``, ...).

    Returns
    -------
    optax.GradientTransformation
    """
    return _everywhere(_tiger(learning_rate, **options), reshape, orientation, nonfinite,
                       mesh, axis)


def _matrices_and_other(matrix, other, labels, reshape, orientation, nonfinite, mesh, axis):
    """``matrix`` on the hidden matrices, ``other`` on the rest (labels as `muon`'s)."""
    labels = _default_labels if labels is None else labels
    return as_optax({"muon": matrix, "other": other}, labels, reshape=reshape,
                    orientation=orientation, nonfinite=nonfinite, mesh=mesh, axis=axis)


def adamuon(
    learning_rate: float | Callable = 6e-4, *, other: _base.Stepper | None = None,
    labels: Any = None, reshape: str = "flatten", orientation: str = "in_out",
    nonfinite: str = "skip", mesh: jax.sharding.Mesh | None = None, axis: str | None = None,
    **options: Any,
) -> optax.GradientTransformation:
    """AdaMuon on the hidden matrices, ``other`` on the rest: `matsign.optim.adamuon` for optax.

    Parameters
    ----------
    learning_rate : float or callable, default 6e-4
        AdaMuon's learning rate (its updates have Adam's RMS), or a schedule.
    other : Stepper, optional
        For the parameters AdaMuon does not take; default
        ``matsign.optim.adamw(learning_rate, weight_decay=0.0)``: one learning rate for
        both, as AdaMuon's RMS alignment intends.
    labels : pytree or callable, optional
        ``"muon"`` or ``"other"`` per parameter; default `matsign.optim.route` (see
        `muon`).
    reshape, orientation, nonfinite, mesh, axis
        See `as_optax`.
    **options
        The options of `matsign.optim.adamuon` (``momentum``, ``nesterov``, ``b2``,
        ``eps``, ``sign``, ``rms``, ``weight_decay``, ``method``, ...).

    Returns
    -------
    optax.GradientTransformation

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from matsign.optim.optax import adamuon
    >>> opt = adamuon(1e-3, method="svd")
    >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3), "lm_head": jnp.ones((3, 5))}
    >>> grads = jax.tree.map(lambda p: jnp.arange(p.size, dtype=p.dtype).reshape(p.shape) - 1,
    ...                      params)
    >>> updates, state = jax.jit(opt.update)(grads, opt.init(params))
    >>> round(float(jnp.sqrt(jnp.mean(updates["w"] ** 2))), 6)   # lr times Adam's RMS 0.2
    0.0002
    >>> [(label, keys) for label, keys in state.groups]
    [('muon', ('w',)), ('other', ('b',)), ('other', ('lm_head',))]
    """
    other = alias.adamw(learning_rate, weight_decay=0.0) if other is None else other
    return _matrices_and_other(_adamuon(learning_rate, **options), other, labels, reshape,
                               orientation, nonfinite, mesh, axis)


def normuon(
    learning_rate: float | Callable = 0.02, *, other: _base.Stepper | None = None,
    labels: Any = None, reshape: str = "flatten", orientation: str = "in_out",
    nonfinite: str = "skip", mesh: jax.sharding.Mesh | None = None, axis: str | None = None,
    **options: Any,
) -> optax.GradientTransformation:
    """NorMuon on the hidden matrices, ``other`` on the rest: `matsign.optim.normuon` for optax.

    Parameters
    ----------
    learning_rate : float or callable, default 0.02
        NorMuon's learning rate, or a schedule.
    other : Stepper, optional
        For the parameters NorMuon does not take; default
        ``matsign.optim.adamw(3e-4, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.0)``, the
        reference's ``NorMuonWithAuxAdam`` defaults.
    labels : pytree or callable, optional
        ``"muon"`` or ``"other"`` per parameter; default `matsign.optim.route` (see
        `muon`). The statistics are per row of the ``(fan_out, fan_in)`` matrix: per
        output neuron, whatever the ``orientation``.
    reshape, orientation, nonfinite, mesh, axis
        See `as_optax`.
    **options
        The options of `matsign.optim.normuon` (``momentum``, ``b2``, ``neurons``,
        ``rms``, ``update_scale``, ``weight_decay``, ``method``, ...).

    Returns
    -------
    optax.GradientTransformation

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from matsign.optim.optax import normuon
    >>> opt = normuon(0.02, method="svd")
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2), "head": jnp.ones((2, 4))}
    >>> grads = {"w": jnp.array([[4.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),  # flax: (in, out)
    ...          "b": jnp.ones(2), "head": jnp.ones((2, 4))}
    >>> updates, state = jax.jit(opt.update)(grads, opt.init(params))
    >>> state.states[0][1].second_momentum_buffer.shape         # one per output neuron
    (2, 1)
    """
    if other is None:
        other = alias.adamw(3e-4, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.0)
    return _matrices_and_other(_normuon(learning_rate, **options), other, labels, reshape,
                               orientation, nonfinite, mesh, axis)
