"""``torch.optim.Optimizer`` subclasses built on the steppers: `Muon`, `AdamW`, `Lion`,
`Shampoo`, `SOAP`, `Adafactor`, `Tiger`, `AdaMuon`, `NorMuon`.

`Muon` and `AdamW` accept every keyword argument of ``torch.optim.Muon`` and
``torch.optim.AdamW`` with the same meaning and keep their state under the same names
(``momentum_buffer``; ``step``, ``exp_avg``, ``exp_avg_sq``), so they are drop-ins,
``state_dict`` included. `Shampoo` and `SOAP` take the options of
`matsign.optim.scale_by_shampoo` and `matsign.optim.scale_by_soap`. This is the one
module of matsign, besides the backend layer, that imports torch.

On several processes, every optimizer takes ``process_group=`` (DDP: replicated
parameters) or finds the mesh of its ``DTensor`` parameters (FSDP2, ``Shard(0)``) and
shares the matrix work across the ranks (the transports are in
``matsign.optim._torch_distributed``; see the guide page "Distributed training").

A stepper's state (a NamedTuple, possibly nesting tuples and NamedTuples) is kept per
parameter as a flat dict of *entries*: its tensors and bare Python numbers, named by
their path (``exp_avg``, ``factors.factors.0``). ``None`` and tuples of plain values
(the shapes of a `matsign.kron.KronLayout`) are structure: ``init`` rebuilds them.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from ..kron import kron_layout
from ..polynomials import Schedule
from . import _torch_distributed as distributed
from ._base import (
    all_finite,
    chain,
    check_nonfinite,
    group_keys,
    matrix_shape,
    stack,
    step_stacks,
    unstack,
)
from ._torch_model import ModelOptimizer, module_labels
from .adafactor import scale_by_adafactor, scale_by_tiger
from .adamuon import normuon_axis, packed_shape, scale_by_adamuon, scale_by_normuon
from .plan import newton_schulz_flops, offsets, root_flops, split
from .shampoo import scale_by_shampoo, scale_by_soap, shampoo, soap
from .transforms import (
    SHAPE_SCALES,
    cautious,
    check_split,
    orthogonalize,
    scale_by_adam,
    scale_by_lion,
    shape_scale,
    trace,
)

__all__ = [
    "SOAP", "AdaMuon", "Adafactor", "AdamW", "Lion", "ModelOptimizer", "Muon", "NorMuon",
    "Shampoo", "Tiger", "module_labels", "qk_clip_",
]

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]  # as torch.optim takes them

ADJUST_LR_FN = {None: "jordan", "original": "jordan", "match_rms_adamw": "moonlight"}


def _is_structure(value):
    """None, or a plain tuple of plain values (a shape): fixed by ``init``, not stored."""
    if value is None:
        return True
    if not isinstance(value, tuple) or hasattr(value, "_fields"):
        return False
    return not any(isinstance(v, (tuple, torch.Tensor, _Slot)) for v in value)


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _map_entries(state, fn, prefix=""):
    """``state`` with every entry replaced by ``fn(name, entry)``; structure kept.

    NamedTuple fields are named by field, tuple items by position, except that the
    parts of a `chain` (a tuple of NamedTuples) share their parent's namespace when
    their entry names are distinct: ``chain(trace, orthogonalize)`` keeps torch's
    ``momentum_buffer``.
    """
    if _is_structure(state):
        return state
    if not isinstance(state, tuple):
        return fn(prefix, state)
    if hasattr(state, "_fields"):
        return type(state)(*(_map_entries(value, fn, _join(prefix, field))
                             for field, value in zip(state._fields, state, strict=True)))
    shared = _shares_namespace(state)
    return tuple(_map_entries(value, fn, prefix if shared else _join(prefix, str(i)))
                 for i, value in enumerate(state))


def _shares_namespace(parts):
    if not all(hasattr(part, "_fields") for part in parts):
        return False
    names = [name for part in parts for name in _entries(part)]
    return len(names) == len(set(names))


def _entries(state):
    """The entries of a stepper state, ``{name: tensor or Python number}``."""
    found = {}
    _map_entries(state, found.__setitem__)
    return found


class _Slot:
    """An entry's place in a skeleton: the dtype a tensor entry loads in (None otherwise)."""

    __slots__ = ("dtype",)

    def __init__(self, name, value):
        self.dtype = value.dtype if isinstance(value, torch.Tensor) else None


class _Unit(NamedTuple):
    """How the ranks share one stack's matrix work (see `matsign.optim.plan.split`)."""

    counts: tuple  # matrices of the stack each rank computes
    rows: int | None  # None: replicated (all_gather); the rows of a Shard(0) matrix (all_to_all)
    size: int  # elements of one matrix


class _Held(NamedTuple):
    """A parameter group's stacked state between steps (see `_StepperOptimizer`)."""

    params: tuple  # the parameters that had gradients, in order
    groups: tuple  # the engine's stacks: (label, positions in params)
    states: tuple  # one stepper state per stack, its tensors stacked
    entries: tuple  # per parameter, the {name: view} installed in ``optimizer.state[p]``
    units: tuple = ()  # per stack, its `_Unit`, or None: computed here alone
    group: Any = None  # the process group the parameters are spread over, or None


class _StepperOptimizer(torch.optim.Optimizer):
    """A thin ``torch.optim`` adapter over the engine of `matsign.optim.multi`.

    Per parameter group, the engine groups the parameters with gradients into stacks
    (`matsign.optim.group_keys`: same-shape matrices for Muon, one parameter each for
    the others), runs the stepper on each stack (`matsign.optim.step_stacks`: the
    non-finite policy) and the adapter applies the directions with torch's rounding:
    ``p <- p (1 - lr wd) - lr s u`` by ``torch._foreach_*`` calls over the stack.

    The state lives stacked between steps (``_held``); ``self.state[p]`` holds views
    of it by entry name (see the module notes), so ``state_dict`` is per parameter as
    torch's. It is built when the optimizer is made (and again by ``load_state_dict``)
    for the parameters that require gradients, so that the first step runs the same
    code as every later one: ``torch.compile(opt.step)`` compiles once. A state that is
    not the installed views (a new parameter, a changed set of gradients) is stacked
    again from the entries at the step.
    """

    _stack = False  # stack same-shape matrices into one call (Muon)
    _decay_in_direction = False  # the stepper's direction includes the decay (Shampoo, SOAP)
    _whole_state = False  # state of whole parameters, not shards (Shampoo, SOAP)

    def __init__(self, params, defaults, process_group=None):  # numpydoc ignore=PR01
        """Set up the parameter groups (see ``torch.optim.Optimizer``)."""
        self._held = {}
        self._process_group = process_group
        distributed.as_group(process_group)  # a bad mesh fails here, not at step 1
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._check_group(group)
        self._build()

    def _check_group(self, group):  # numpydoc ignore=PR01
        """Refuse what the optimizer cannot take in ``group`` (a clear error, before any state)."""

    def _build(self):
        """Stack and install each group's state for its parameters that require gradients."""
        for index, group in enumerate(self.param_groups):
            params = tuple(p for p in group["params"] if p.requires_grad)
            if params and self._builds_ahead(params):
                held = self._stacked(self._stepper(group), params, group)
                self._held[index] = self._installed(held, group)

    def _builds_ahead(self, params):  # numpydoc ignore=PR01,RT01
        """Whether the state of ``params`` is built before the first step."""
        return True

    def _stepper(self, group, work=None):  # numpydoc ignore=PR01,RT01
        """The stepper for ``group``'s current hyperparameters (``work``: see `orthogonalize`)."""
        raise NotImplementedError

    def _compute_dtype(self, group):  # numpydoc ignore=PR01,RT01
        """The dtype of the matrix work, the default ``communication_dtype`` (None: the input's)."""
        return None

    def __setstate__(self, state):
        """Fill options a loaded state dict lacks (e.g. one saved by torch.optim) with defaults."""
        super().__setstate__(state)
        self._held = {}
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def load_state_dict(self, state_dict):
        """Load a state dict: tensors take the dtypes the stepper's ``init`` gives them.

        ``torch.optim.Optimizer`` casts every tensor but ``step`` to the parameter's
        dtype; a stepper may keep some (counters, factors) wider than the parameter,
        so each entry is cast from the saved tensor to its ``init`` dtype instead.

        Parameters
        ----------
        state_dict : dict
            As returned by `state_dict` (here or by the torch.optim peer).
        """
        loading = self._loading(state_dict)  # checked before anything changes
        super().load_state_dict(state_dict)
        for p, saved, skeleton in loading:
            for name, slot in skeleton.items():
                if slot.dtype is not None and isinstance(saved.get(name), torch.Tensor):
                    self.state[p][name] = saved[name].to(device=p.device, dtype=slot.dtype)
        self._held = {}
        self._build()

    def _loading(self, state_dict):
        """``(param, saved entries, skeleton)`` per saved state; ValueError for an entry
        whose size is not the one this optimizer's ``init`` gives that parameter (a state
        of another model or other options), raised before any state changes."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"])
                for a, b in zip(saved_groups, self.param_groups, strict=True)):
            return []  # torch.optim.Optimizer.load_state_dict says what does not match
        saved_ids = iter([i for g in saved_groups for i in g["params"]])
        loading = []
        for group in self.param_groups:
            stepper = self._stepper(group)
            for p in group["params"]:
                saved = state_dict["state"].get(next(saved_ids), {})
                if not saved:
                    continue
                mine = self._state_like(p)
                fresh = _entries(stepper.init(mine.reshape(_view(mine, group))))
                for name, value in saved.items():
                    expected = fresh.get(name)
                    if (isinstance(value, torch.Tensor) and isinstance(expected, torch.Tensor)
                            and distributed.local(value).numel() != expected.numel()):
                        msg = (f"{type(self).__name__}.load_state_dict: the saved {name!r} of "
                               f"a parameter of shape {tuple(p.shape)} has shape "
                               f"{tuple(value.shape)}, not {tuple(expected.shape)}: a state "
                               f"of another model or other options; nothing was loaded")
                        raise ValueError(msg)
                loading.append((p, saved, {k: _Slot(k, v) for k, v in fresh.items()}))
        return loading

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss.

        Returns
        -------
        loss
            What ``closure`` returned, or None.

        Raises
        ------
        ValueError
            Under ``nonfinite="raise"``, if a gradient holds inf or NaN; nothing changes.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            self._step_group(index, group)
        return loss

    def _step_group(self, index, group):
        params = self._with_gradients(group)
        if not params:
            return
        stepper = self._stepper(group)
        held = self._held.get(index)
        if held is None or not self._intact(held, params):
            held = self._stacked(stepper, params, group)
        here = [distributed.local(p) for p in params]  # DTensors: this rank's shard
        grads = [distributed.local(-p.grad if group.get("maximize", False) else p.grad)
                 for p in params]
        views = [_view(here[keys[0]], group) for _, keys in held.groups]
        G = [stack([grads[i] for i in keys], view, xp=torch)
             for (_, keys), view in zip(held.groups, views, strict=True)]
        P = None
        if self._decay_in_direction:
            P = [stack([here[i] for i in keys], view, xp=torch)
                 for (_, keys), view in zip(held.groups, views, strict=True)]
        finite = None
        if held.group is not None and group["nonfinite"] != "ignore":
            finite = distributed.agree(all_finite(G, xp=torch), held.group)
        works, finish = self._works(held, group)
        steppers = [stepper if work is None else self._stepper(group, work) for work in works]
        U, states, finite = step_stacks(steppers, G, held.states, P,
                                        nonfinite=group["nonfinite"],
                                        where=f"a {type(self).__name__} group", xp=torch,
                                        finite=finite, finish=finish)
        skip = finite if group["nonfinite"] == "skip" else None
        for (_, keys), u in zip(held.groups, U, strict=True):
            members = [here[i] for i in keys]
            directions = unstack(u, [tuple(p.shape) for p in members], xp=torch)
            whole = _view(params[keys[0]], group)  # the scale reads the matrix, not the shard
            self._apply(members, directions, self._scale(whole, group), skip, group)
        self._held[index] = self._installed(held._replace(states=states), group)

    def _with_gradients(self, group):
        """The group's parameters that have gradients (real and dense, or raise)."""
        params = tuple(p for p in group["params"] if p.grad is not None)
        for p in params:
            if torch.is_complex(p) or p.grad.is_sparse:
                msg = f"{type(self).__name__} supports real dense gradients only"
                raise RuntimeError(msg)
        return params

    def _works(self, held, group):
        """Per stack its ``work(fn, stack)`` (None: all here), and the step's ``finish``.

        Replicated stacks share one `Gathering` (results gathered a bucket at a time,
        complete at ``finish``); sharded ones go by all_to_all, each complete at return.
        """
        if all(unit is None for unit in held.units):
            return held.units, None
        comm = group["communication_dtype"] or self._compute_dtype(group)
        replicated = [i for i, u in enumerate(held.units) if u is not None and u.rows is None]
        gathering = None
        if replicated:
            gathering = distributed.Gathering([held.units[i].counts for i in replicated],
                                              [held.units[i].size for i in replicated],
                                              held.group, comm)
        works = []
        for i, unit in enumerate(held.units):
            if unit is None:
                works.append(None)
            elif unit.rows is None:
                works.append(gathering.work(replicated.index(i)))
            else:
                works.append(functools.partial(distributed.exchanged, counts=unit.counts,
                                               rows=unit.rows, group=held.group,
                                               communication=comm))
        return works, (None if gathering is None else gathering.finish)

    def _intact(self, held, params):
        """Whether ``self.state`` still holds exactly the views installed last step."""
        if held.params != params:
            return False
        return all(self.state[p].get(name) is value
                   for p, entries in zip(params, held.entries, strict=True)
                   for name, value in entries.items())

    def _stacked(self, stepper, params, group):
        """The engine's stacks of ``params``, their states and how the ranks share them."""
        where = [distributed.placement(p, self._process_group) for p in params]
        items = list(enumerate(params))
        groups = (group_keys(items, group.get("reshape", "batch"),
                             label=lambda i, p: where[i])  # sharded and plain apart
                  if self._stack else tuple((where[i], (i,)) for i, _ in items))
        states = tuple(self._stacked_state(stepper, [params[i] for i in keys], group)
                       for _, keys in groups)
        spread = {w.group for w in where} - {None}
        if len(spread) > 1:
            msg = (f"{type(self).__name__}: the parameters lie on {len(spread)} process groups; "
                   f"one optimizer spreads its work over one group")
            raise ValueError(msg)
        process_group = spread.pop() if spread else None
        units = self._units(params, groups, group, process_group)
        return _Held(params, groups, states, (), units, process_group)

    def _units(self, params, groups, group, process_group):
        """Per stack, its `_Unit` (None: here), the split balancing flops over the ranks."""
        shared = [i for i, (w, keys) in enumerate(groups)
                  if self._stack and w.group is not None
                  and len(_view(params[keys[0]], group)) == 2]
        if not shared:
            return (None,) * len(groups)
        views = [_view(params[groups[i][1][0]], group) for i in shared]
        counts = split([len(groups[i][1]) for i in shared],
                       [newton_schulz_flops(v) for v in views],
                       distributed.size(process_group))
        units = [None] * len(groups)
        for i, view, per_rank in zip(shared, views, counts, strict=True):
            units[i] = _Unit(per_rank, view[0] if groups[i][0].sharded else None,
                             math.prod(view))
        return tuple(units)

    def _stacked_state(self, stepper, members, group):
        """The stack's state: each member's entries (``init`` where it has none), stacked."""
        here = [self._state_like(p) for p in members]
        view = _view(here[0], group)
        fresh = stepper.init(here[0].reshape(view))
        skeleton = _map_entries(fresh, _Slot)
        names = _entries(fresh)
        values = []
        for p, mine in zip(members, here, strict=True):  # self.state changes after a step
            stored = {name: v for name, v in self.state.get(p, {}).items() if name != "owner"}
            state = ({name: _as_viewed(distributed.local(v), names.get(name))
                      for name, v in stored.items()}
                     if stored else _entries(stepper.init(mine.reshape(view))))
            missing = sorted(set(names) - set(state))
            if missing:
                msg = (f"{type(self).__name__}: the state of a parameter of shape "
                       f"{tuple(p.shape)} lacks {missing} (has {sorted(state)}); was it "
                       f"saved by another optimizer or with other options?")
                raise ValueError(msg)
            values.append(state)
        return _map_entries(skeleton, lambda name, _: _stack_entry([v[name] for v in values]))

    def _state_like(self, p):  # numpydoc ignore=PR01,RT01
        """What this rank's state of ``p`` is shaped after: its shard, or the whole ``p``."""
        mine = distributed.local(p)
        if not self._whole_state or mine is p:
            return mine
        return mine.new_zeros(p.shape)

    def _installed(self, held, group):
        """``held`` with each parameter's state entries set to views of the stacks."""
        entries = [{} for _ in held.params]
        for (_, keys), state in zip(held.groups, held.states, strict=True):
            for name, value in _entries(state).items():
                for i, part in zip(keys, _parts(value, len(keys)), strict=True):
                    p = held.params[i]
                    shape = tuple((p if self._whole_state else distributed.local(p)).shape)
                    part = _as_shaped(part, shape, group)
                    if not self._whole_state:  # a shard's state, laid out as p
                        part = distributed.like(part, p)
                    self.state[p][name] = entries[i][name] = part
        return held._replace(entries=tuple(entries))

    def _scale(self, view, group):  # numpydoc ignore=PR01,RT01
        """Multiplier of the learning rate for a direction of shape ``view``."""
        return 1.0

    def _apply(self, members, directions, scale, skip, group):
        """``p <- p (1 - lr wd) - lr scale u`` in place, as torch.optim rounds it.

        Under "skip" (``skip`` is the 0-d finite flag) the decay factor is 1 and the
        directions are 0 for a non-finite step, selected on the device.
        """
        lr = float(group["lr"])
        if self._decay_in_direction:  # p + (-lr) u, two roundings as the functional step
            torch._foreach_add_(members, torch._foreach_mul(directions, -lr * scale))
            return
        factor = 1.0 - lr * group["weight_decay"]
        if group.get("cautious_weight_decay", False) and factor != 1.0:
            for p, u in zip(members, directions, strict=True):
                decayed = torch.where(u * p > 0, p * factor, p)
                p.copy_(decayed if skip is None else torch.where(skip, decayed, p))
        elif factor != 1.0:
            keep = factor if skip is None else torch.where(skip, _scalar(factor, members[0]), 1.0)
            torch._foreach_mul_(members, keep)
        torch._foreach_add_(members, directions, alpha=-lr * scale)


def _scalar(value, like):
    """``value`` as a 0-d tensor of ``like``'s dtype and device (rounded once, as a scalar)."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _view(p, group):
    """The shape the stepper sees for ``p`` (Muon's ``reshape``; others: ``p``'s own)."""
    return matrix_shape(p.shape, group.get("reshape", "batch"))


def _as_shaped(part, shape, group):
    """A member's entry in its parameter's ``shape`` where it has the stepper's view of it."""
    view = matrix_shape(shape, group.get("reshape", "batch"))
    if isinstance(part, torch.Tensor) and view != shape and tuple(part.shape) == view:
        return part.view(shape)  # a flattened conv kernel's momentum, as the kernel
    return part


def _as_viewed(value, fresh):
    """A stored entry in the shape the stepper works on (``fresh``: its ``init`` entry)."""
    if (isinstance(value, torch.Tensor) and isinstance(fresh, torch.Tensor)
            and value.shape != fresh.shape and value.numel() == fresh.numel()):
        return value.reshape(fresh.shape)
    return value


def _stack_entry(values):
    """One stack's entry from its members': tensors stacked, Python numbers shared."""
    if len(values) == 1:
        return values[0]
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    if any(v != values[0] for v in values):
        msg = f"cannot stack per-parameter Python numbers that differ: {values}"
        raise ValueError(msg)
    return values[0]


def _parts(value, count):
    """The members' views of a stacked entry (see `_stack_entry`)."""
    if count > 1 and isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    return [value] * count


def _check_common(lr, weight_decay, nonfinite):
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
    check_nonfinite(True, nonfinite, where="")


class Muon(_StepperOptimizer):
    """Muon as a ``torch.optim.Optimizer``; a drop-in for ``torch.optim.Muon``.

    Every keyword of torch.optim.Muon has its meaning here; ``match="torch.optim.Muon"``
    also reproduces its arithmetic bit for bit.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups (dicts) of matrices; with ``reshape`` also
        conv kernels and stacks of matrices.
    lr : float, default 1e-3
        Learning rate (schedulers may change ``group["lr"]`` between steps).
    weight_decay : float, default 0.1
        Decoupled weight decay: ``p <- p - lr * weight_decay * p``.
    momentum : float, default 0.95
        EMA momentum ``buf <- lerp(buf, grad, 1 - momentum)``.
    nesterov : bool, default True
        Orthogonalise ``lerp(grad, buf, momentum)`` instead of ``buf``.
    ns_coefficients : tuple of float, str or Schedule, default (3.4445, -4.7750, 2.0315)
        Newton–Schulz polynomial repeated for ``ns_steps`` steps, as torch; matsign
        also takes a preset name (e.g. ``"polar_express"``) or a Schedule.
    eps : float, default 1e-7
        Lower clamp of the Frobenius norm before normalising.
    ns_steps : int, default 5
        Newton–Schulz steps.
    adjust_lr_fn : {None, "original", "match_rms_adamw", "spectral", "none"}, default None
        Update scale: ``sqrt(max(1, m/n))`` (None, "original"), ``0.2 sqrt(max(m, n))``
        ("match_rms_adamw"), ``sqrt(m/n)`` ("spectral"), or 1 ("none").
    ns_dtype : torch.dtype or None, default torch.bfloat16
        Compute dtype of the iteration (torch.optim.Muon always uses bfloat16); None
        computes in the gradient's dtype (faster on CPUs without bfloat16 products).
    reshape : {"flatten", "batch"}, default "flatten"
        Parameters of more than two axes: flattened to (out, rest) or a stack of
        matrices; the update scale is that of the matrix orthogonalised.
    cautious_weight_decay : bool, default False
        Decay only entries where the update and the parameter share a sign.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        If a gradient of the group holds inf or NaN: skip the group's step (parameters
        and state unchanged; on CUDA no host sync), raise ValueError (a host sync), or
        go on.
    match : {None, "torch.optim.Muon"}, optional
        ``"torch.optim.Muon"`` rounds exactly as torch.optim.Muon: with the defaults
        the parameters follow torch's bit for bit (see `matsign.newton_schulz`).
        None uses matsign's kernels (Gram space for wide and tall matrices, symmetric
        products, a matrix at a time where the CPU's batched products lose): the
        same iteration, rounded differently, no further from ``U V^T``.
    split : int or sequence of int, optional
        Orthogonalise blocks of each matrix separately, in one batched call: ``3``
        for a fused QKV weight, the head count for one block per head, sizes for
        uneven blocks (see `matsign.optim.orthogonalize`); the update scale is then
        each block's.
    split_axis : {-2, -1}, default -2
        Cut rows (outputs) or columns (inputs).
    dual_norm_step : bool, default False
        Scale each orthogonalised matrix (or block) ``O`` by ``<N, O>``, the dual norm
        of its input: steepest descent under the spectral norm.
    process_group : ProcessGroup or DeviceMesh, optional
        Spread the matrix work over this group's ranks: each rank orthogonalises a
        flops-balanced share of every stack and the results are all-gathered (DDP,
        replicated parameters). DTensor parameters (FSDP2, ``Shard(0)``) use their own
        mesh without it. See the guide page "Distributed training".
    communication_dtype : torch.dtype, optional
        Dtype of the matrices sent between ranks; default ``ns_dtype`` (the iteration's
        own rounding: exact), or the parameters' dtype when ``ns_dtype`` is None.

    Notes
    -----
    Same-shape parameters of a group share one stacked momentum buffer and are
    orthogonalised by one `matsign.newton_schulz` call (see
    `matsign.optim.orthogonalize`); ``state[p]["momentum_buffer"]`` is a view of it.
    A state dict saved by torch.optim.Muon loads here and resumes.

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import Muon
    >>> model = torch.nn.Linear(4, 3, bias=False)
    >>> opt = Muon(model.parameters(), lr=0.02, ns_dtype=None)
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> opt.step()
    >>> sorted(opt.state[model.weight])
    ['momentum_buffer']
    """

    _stack = True

    def __init__(
        self, params: Params, lr: float = 1e-3, weight_decay: float = 0.1,
        momentum: float = 0.95, nesterov: bool = True,
        ns_coefficients: tuple[float, ...] | str | Schedule = (3.4445, -4.7750, 2.0315),
        eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None,
        *, ns_dtype: torch.dtype | None = torch.bfloat16, reshape: str = "flatten",
        cautious_weight_decay: bool = False, nonfinite: str = "skip", match: str | None = None,
        split: int | Sequence[int] | None = None, split_axis: int = -2,
        dual_norm_step: bool = False,
        process_group: Any = None, communication_dtype: torch.dtype | None = None,
    ) -> None:
        _check_common(lr, weight_decay, nonfinite)
        check_split(split, split_axis)
        if not 0.0 <= momentum:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if adjust_lr_fn not in ADJUST_LR_FN and adjust_lr_fn not in SHAPE_SCALES:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        if ns_steps >= 100:
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        matrix_shape((1,), reshape)
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    "nesterov": nesterov, "ns_coefficients": ns_coefficients, "eps": eps,
                    "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn, "ns_dtype": ns_dtype,
                    "reshape": reshape, "cautious_weight_decay": cautious_weight_decay,
                    "nonfinite": nonfinite, "match": match, "split": split,
                    "split_axis": split_axis, "dual_norm_step": dual_norm_step,
                    "communication_dtype": communication_dtype}
        super().__init__(params, defaults, process_group)

    def _check_group(self, group):
        for p in group["params"]:
            if p.ndim < 2:
                msg = (f"Muon takes matrices (or conv/stacked >2-D tensors); got a "
                       f"parameter of size {tuple(p.size())}: see matsign.optim.route")
                raise ValueError(msg)

    def _stepper(self, group, work=None):
        split = group.get("split")
        return chain(
            trace(group["momentum"], nesterov=group["nesterov"], ema=True),
            orthogonalize(schedule=group["ns_coefficients"], steps=group["ns_steps"],
                          eps=group["eps"], dtype=group["ns_dtype"], match=group["match"],
                          dual_norm_step=group.get("dual_norm_step", False), work=work,
                          split=split, split_axis=group.get("split_axis", -2),
                          # each block's own scale, inside the matrix work (the transport
                          # of a distributed step fills the directions after it)
                          update_scale=None if split is None else self._mode(group)),
        )

    def _compute_dtype(self, group):
        return group["ns_dtype"]

    def _scale(self, view, group):
        return 1.0 if group.get("split") is not None else shape_scale(view, self._mode(group))

    @staticmethod
    def _mode(group):
        return ADJUST_LR_FN.get(group["adjust_lr_fn"], group["adjust_lr_fn"])


class AdamW(_StepperOptimizer):
    """AdamW as a ``torch.optim.Optimizer``; a drop-in for ``torch.optim.AdamW``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float, default 1e-3
        Learning rate.
    betas : tuple of float, default (0.9, 0.999)
        Moment decay rates.
    eps : float, default 1e-8
        Added to ``sqrt(v_hat)``.
    weight_decay : float, default 1e-2
        Decoupled weight decay.
    amsgrad : bool, default False
        Use the running maximum of ``v`` (state ``max_exp_avg_sq``).
    maximize : bool, default False
        Ascend instead of descend.
    foreach, capturable, differentiable, fused : optional
        Accepted for compatibility; torch's kernel choices, without effect here.
    cautious_mask : bool, default False
        Mask the Adam direction where it disagrees in sign with the gradient.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        See `Muon`.
    process_group : ProcessGroup or DeviceMesh, optional
        The ranks sharing the step (see `Muon`); DTensor parameters use their mesh.
    communication_dtype : torch.dtype, optional
        Dtype of what is sent between ranks; default the parameters' dtype.

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import AdamW
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = AdamW([w], lr=0.1, weight_decay=0.0)
    >>> w.square().sum().backward()
    >>> opt.step()
    >>> w.detach()
    tensor([0.9000, 0.9000, 0.9000])
    """

    def __init__(
        self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
        *, maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
        differentiable: bool = False, fused: bool | None = None, cautious_mask: bool = False,
        nonfinite: str = "skip", process_group: Any = None,
        communication_dtype: torch.dtype | None = None,
    ) -> None:
        _check_common(lr, weight_decay, nonfinite)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable,
                    "fused": fused, "cautious_mask": cautious_mask, "nonfinite": nonfinite,
                    "communication_dtype": communication_dtype}
        super().__init__(params, defaults, process_group)

    def _stepper(self, group, work=None):
        adam = scale_by_adam(*group["betas"], group["eps"], amsgrad=group["amsgrad"])
        return cautious(adam) if group["cautious_mask"] else adam


class Lion(_StepperOptimizer):
    """Lion as a ``torch.optim.Optimizer``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float, default 1e-4
        Learning rate.
    betas : tuple of float, default (0.9, 0.99)
        Interpolation for the direction and decay of the momentum.
    weight_decay : float, default 0.0
        Decoupled weight decay.
    maximize : bool, default False
        Ascend instead of descend.
    cautious_mask : bool, default False
        Mask the direction where it disagrees in sign with the gradient.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        See `Muon`.
    process_group : ProcessGroup or DeviceMesh, optional
        The ranks sharing the step (see `Muon`); DTensor parameters use their mesh.
    communication_dtype : torch.dtype, optional
        Dtype of what is sent between ranks; default the parameters' dtype.

    References
    ----------
    Chen et al., Symbolic Discovery of Optimization Algorithms (arXiv:2302.06675).

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import Lion
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = Lion([w], lr=0.5)
    >>> w.grad = torch.tensor([2.0, -3.0])
    >>> opt.step()
    >>> w.detach()
    tensor([-0.5000,  0.5000])
    """

    def __init__(self, params: Params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 cautious_mask: bool = False, nonfinite: str = "skip",
                 process_group: Any = None,
                 communication_dtype: torch.dtype | None = None) -> None:
        _check_common(lr, weight_decay, nonfinite)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta <= 1.0:  # NaN too
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "maximize": maximize, "cautious_mask": cautious_mask,
                    "nonfinite": nonfinite, "communication_dtype": communication_dtype}
        super().__init__(params, defaults, process_group)

    def _stepper(self, group, work=None):
        direction = scale_by_lion(*group["betas"])
        return cautious(direction) if group["cautious_mask"] else direction




class _KronOptimizer(_StepperOptimizer):
    """Shampoo and SOAP: the functional optimizer, applied per parameter of any order.

    The stepper is ``factory(-1.0, weight_decay=..., **options)``: the functional
    optimizer at learning rate -1, which returns its direction plus the decoupled
    decay, ``u + wd p``, so the wrapper's step ``p - lr (u + wd p)`` is the functional
    one's; decay, first-step rules and options are the functional optimizer's own.
    Each keyword argument of the direction stepper (``direction``) is a constructor
    argument with the same default.
    """

    _decay_in_direction = True
    _whole_state = True  # an owner keeps the state of whole parameters
    factory = None  # matsign.optim.shampoo or .soap
    direction = None  # the stepper behind it, whose keyword arguments are the options

    def __init__(self, params, lr, weight_decay, maximize, nonfinite, options,
                 process_group=None, communication_dtype=None):
        name = type(self).__name__
        _check_common(lr, weight_decay, nonfinite)
        known = self._options()
        unknown = sorted(set(options) - set(known))
        if unknown:
            msg = (f"{name}: unknown option(s) {unknown}; "
                   f"{self.direction.__name__} takes {list(known)}")
            raise ValueError(msg)
        options = {**known, **options}
        self._owners_cache = {}
        defaults = {"lr": lr, "weight_decay": weight_decay, **options,
                    "maximize": maximize, "nonfinite": nonfinite,
                    "communication_dtype": communication_dtype}
        super().__init__(params, defaults, process_group)

    def _check_group(self, group):
        self._stepper(group)  # the stepper checks its options: now, not at step 1

    def _builds_ahead(self, params):
        # over a process group each rank keeps the state of the parameters it owns,
        # chosen at the first step: no state of every parameter on every rank
        return all(distributed.placement(p, self._process_group).group is None
                   for p in params)

    def _step_group(self, index, group):
        """One step; over a process group, each parameter's direction is its owner's."""
        params = self._with_gradients(group)
        where = [distributed.placement(p, self._process_group) for p in params]
        spread = {w.group for w in where} - {None}
        if not spread:
            super()._step_group(index, group)
            return
        if len(spread) > 1:
            msg = f"{type(self).__name__}: the parameters lie on {len(spread)} process groups"
            raise ValueError(msg)
        self._step_owned(index, group, params, where, spread.pop())

    def _step_owned(self, index, group, params, where, process_group):
        """Owners (balanced by root flops) compute whole parameters' directions; all apply."""
        grads = [distributed.local(-p.grad if group["maximize"] else p.grad) for p in params]
        if group["nonfinite"] != "ignore":
            finite = distributed.agree(all_finite(grads, xp=torch), process_group)
            check_nonfinite(finite, group["nonfinite"], where=f"a {type(self).__name__} group")
            if not bool(finite):  # eager roots check their input on the host anyway
                return
        here = [distributed.local(p) for p in params]
        owners = self._owners(index, params, group, process_group)
        rank = dist.get_rank(process_group)
        whole = {j: (grads[j], here[j]) for j in range(len(params))
                 if owners[j] == rank and not where[j].sharded}
        sharded = [j for j, w in enumerate(where) if w.sharded]
        comm = group["communication_dtype"]
        if sharded:
            got = distributed.to_owners([(grads[j], here[j]) for j in sharded],
                                        [tuple(params[j].shape) for j in sharded],
                                        [owners[j] for j in sharded], process_group, comm)
            whole.update({sharded[i]: tuple(pair) for i, pair in got.items()})
        mine = sorted(whole)
        owned = tuple(params[j] for j in mine)
        stepper = self._stepper(group)
        held = self._held.get(index)
        if held is None or not self._intact(held, owned):
            held = self._stacked(stepper, owned, group)
        U, states, _ = step_stacks([stepper] * len(mine), [whole[j][0] for j in mine],
                                   held.states, [whole[j][1] for j in mine],
                                   nonfinite="ignore", where="", xp=torch)
        self._held[index] = self._installed(held._replace(states=states), group)
        for p, owner in zip(params, owners, strict=True):  # where each state lives, on every rank
            if int(self.state[p].get("owner", -1)) != owner:
                self.state[p]["owner"] = torch.tensor(owner)
        directions = self._shared(dict(zip(mine, U, strict=True)), params, where, owners,
                                  process_group, comm)
        for p, u in zip(here, directions, strict=True):
            self._apply([p], [u], 1.0, None, group)

    def _shared(self, directions, params, where, owners, process_group, comm):
        """Every parameter's direction here (its shard under FSDP2), from its owner."""
        out = [None] * len(params)
        for sharded in (True, False):
            js = [j for j, w in enumerate(where) if w.sharded == sharded]
            if not js:
                continue
            move = distributed.from_owners if sharded else distributed.share
            got = move({i: directions[j] for i, j in enumerate(js) if j in directions},
                       [tuple(params[j].shape) for j in js], [owners[j] for j in js],
                       process_group, comm, distributed.local(params[js[0]]))
            for j, u in zip(js, got, strict=True):
                out[j] = u
        return out

    def _owners(self, index, params, group, process_group):
        """Each parameter's owner rank, balancing the root flops (cached per shapes)."""
        layouts = [kron_layout(tuple(p.shape), max_dim=group["max_dim"],
                               max_precond_dim=group["max_precond_dim"]) for p in params]
        key = (tuple(layouts), distributed.size(process_group))
        cached = self._owners_cache.get(index)
        if cached is None or cached[0] != key:
            counts = split([1] * len(params),
                           [root_flops(lay) + math.prod(lay.shape) for lay in layouts], key[1])
            self._owners_cache[index] = (key, tuple(c.index(1) for c in counts))
        return self._owners_cache[index][1]

    @classmethod
    def _options(cls):
        """The direction stepper's keyword arguments and their defaults."""
        parameters = inspect.signature(cls.direction).parameters.values()
        return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}

    def _stepper(self, group, work=None):
        options = {name: group[name] for name in self._options()}
        return type(self).factory(-1.0, weight_decay=group["weight_decay"], **options)


def _mirror_signature(cls):
    """Show the direction stepper's options in ``cls``'s signature (help, docs)."""
    factory = inspect.signature(cls.factory).parameters
    head = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("lr", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=factory["learning_rate"].default)]
    keyword = inspect.Parameter.KEYWORD_ONLY
    tail = [inspect.Parameter("weight_decay", keyword,
                              default=factory["weight_decay"].default),
            *(inspect.Parameter(name, keyword, default=default)
              for name, default in cls._options().items()),
            inspect.Parameter("maximize", keyword, default=False),
            inspect.Parameter("nonfinite", keyword, default="skip"),
            inspect.Parameter("process_group", keyword, default=None),
            inspect.Parameter("communication_dtype", keyword, default=None)]
    cls.__init__.__signature__ = inspect.Signature([*head, *tail])
    return cls


def _default(function, name):
    return inspect.signature(function).parameters[name].default


# the functional optimizers' defaults (module constants: a default is evaluated once anyway)
SHAMPOO_LR = _default(shampoo, "learning_rate")
SHAMPOO_WEIGHT_DECAY = _default(shampoo, "weight_decay")
SOAP_LR = _default(soap, "learning_rate")
SOAP_WEIGHT_DECAY = _default(soap, "weight_decay")


@_mirror_signature
class Shampoo(_KronOptimizer):
    """Shampoo, grafted onto Adam's step length, as a ``torch.optim.Optimizer``.

    The updates are those of ``matsign.optim.shampoo(lr, weight_decay=..., **options)``
    (`matsign.optim.shampoo`), with ``lr`` read from the parameter group each step.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups (dicts), of any order: a matrix gets two
        factors, a conv kernel one per axis, a bias one (full-matrix AdaGrad on the
        vector), see `matsign.kron.kron_layout`.
    lr : float, default 1e-3
        Learning rate: Adam's, as the direction is grafted onto Adam's step length.
    weight_decay : float, default 0.0
        Decoupled weight decay: ``p <- p - lr * (u + weight_decay * p)``.
    maximize : bool, default False
        Ascend instead of descend.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        If a gradient of the group holds inf or NaN: skip the group's step (parameters
        and state unchanged), raise ValueError, or go on (the inverse roots then raise).
    process_group : ProcessGroup or DeviceMesh, optional
        The ranks sharing the step; DTensor parameters (FSDP2) use their own mesh.
        Each parameter then has an owner rank (balanced by the flops of its roots),
        which keeps its state and computes its direction; the directions are shared.
    communication_dtype : torch.dtype, optional
        Dtype of what is sent between ranks; default the parameters' dtype.
    **options
        The keyword arguments of `matsign.optim.scale_by_shampoo`, with its defaults:
        ``b1=0.9``, ``b2=0.999``, ``eps=1e-8`` (Adam's moments), ``beta=None`` (sum the
        factor statistics; a float keeps an EMA), ``every=10`` (recompute the roots),
        ``start=1`` (first Shampoo step), ``max_dim``, ``max_precond_dim`` (blocking),
        ``exponents``, ``root_eps=1e-6``, ``root_eps_mode="relative"``, ``rank_rtol``,
        ``graft=True``, ``root_method="auto"``. Each is kept in the parameter group.

    Raises
    ------
    ValueError
        For an unknown option or a value out of range, named in the message.

    Notes
    -----
    State per parameter: the entries of `matsign.optim.ShampooState`, ``step``,
    ``exp_avg``, ``exp_avg_sq`` and per mode ``factors.factors.<i>`` and
    ``preconditioners.matrices.<i>`` (shape ``(*grid, block, block)``). Eagerly the
    stepper decides when to recompute on the host (free on the CPU, one read of the step
    count per step on CUDA) and its inverse roots reject non-finite input, so ``"skip"``
    decides on the host as well, without running the stepper.

    References
    ----------
    Gupta, Koren and Singer, Shampoo (arXiv:1802.09568); Anil et al., Scalable
    Second Order Optimization (arXiv:2002.09018).

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import Shampoo
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> opt = Shampoo(model.parameters(), lr=1e-2, every=5)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     model(torch.randn(8, 4)).square().mean().backward()
    ...     opt.step()
    >>> for name, value in opt.state[model.weight].items():
    ...     print(name, tuple(value.shape))
    step ()
    factors.factors.0 (1, 1, 3, 3)
    factors.factors.1 (1, 1, 4, 4)
    preconditioners.matrices.0 (1, 1, 3, 3)
    preconditioners.matrices.1 (1, 1, 4, 4)
    exp_avg (3, 4)
    exp_avg_sq (3, 4)
    """

    factory = staticmethod(shampoo)
    direction = staticmethod(scale_by_shampoo)

    def __init__(self, params: Params, lr: float = SHAMPOO_LR, *,
                 weight_decay: float = SHAMPOO_WEIGHT_DECAY, maximize: bool = False,
                 nonfinite: str = "skip", process_group: Any = None,
                 communication_dtype: torch.dtype | None = None, **options) -> None:
        super().__init__(params, lr, weight_decay, maximize, nonfinite, options,
                         process_group, communication_dtype)


@_mirror_signature
class SOAP(_KronOptimizer):
    """SOAP, Adam in the eigenbases of Shampoo's factors, as a ``torch.optim.Optimizer``.

    The updates are those of ``matsign.optim.soap(lr, weight_decay=..., **options)``
    (`matsign.optim.soap`), with ``lr`` read from the parameter group each step.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups (dicts), of any order (see `Shampoo`).
    lr : float
        Learning rate; default that of `matsign.optim.soap`.
    weight_decay : float
        Decoupled weight decay, ``p <- p - lr * (u + weight_decay * p)``; default that
        of `matsign.optim.soap`.
    maximize : bool, default False
        Ascend instead of descend.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        See `Shampoo`.
    process_group : ProcessGroup or DeviceMesh, optional
        See `Shampoo`.
    communication_dtype : torch.dtype, optional
        See `Shampoo`.
    **options
        The keyword arguments of `matsign.optim.scale_by_soap`, with its defaults:
        ``b1``, ``b2``, ``eps`` (Adam's moments), ``beta`` (EMA of the factors),
        ``every`` (refresh the eigenbases), ``max_dim``, ``max_precond_dim``
        (blocking) and the rest it takes. Each is kept in the parameter group.

    Raises
    ------
    ValueError
        For an unknown option or a value out of range, named in the message.

    Notes
    -----
    The first step sets up the eigenbases (its direction is 0), as in
    `matsign.optim.soap`. The state per parameter holds the entries of
    `matsign.optim.SOAPState` (``step``, ``exp_avg``, ``exp_avg_sq`` in the rotated
    blocked shape, per mode ``factors.factors.<i>`` and ``bases.bases.<i>``).

    References
    ----------
    Vyas et al., SOAP: Improving and Stabilizing Shampoo using Adam (arXiv:2409.11321).

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import SOAP
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> x, y = torch.randn(16, 4), torch.randn(16, 3)
    >>> opt = SOAP(model.parameters(), lr=0.05, every=5)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = (model(x) - y).square().mean()
    ...     loss.backward()
    ...     return loss
    >>> first = opt.step(closure)
    >>> for _ in range(20):
    ...     last = opt.step(closure)
    >>> bool(last < first)
    True
    """

    factory = staticmethod(soap)
    direction = staticmethod(scale_by_soap)

    def __init__(self, params: Params, lr: float = SOAP_LR, *,
                 weight_decay: float = SOAP_WEIGHT_DECAY, maximize: bool = False,
                 nonfinite: str = "skip", process_group: Any = None,
                 communication_dtype: torch.dtype | None = None, **options) -> None:
        super().__init__(params, lr, weight_decay, maximize, nonfinite, options,
                         process_group, communication_dtype)


class Adafactor(_StepperOptimizer):
    """Adafactor as a ``torch.optim.Optimizer``; a drop-in for ``torch.optim.Adafactor``.

    The constructor takes torch.optim.Adafactor's arguments with their defaults and
    meaning, and the state keeps its names and shapes (``step``; ``row_var`` and
    ``col_var`` for tensors of two or more axes, factored over the last two;
    ``variance`` for vectors and scalars), so torch's state dicts load and resume here.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float, default 1e-2
        The cap of the relative step size: a step moves ``min(lr, 1/sqrt(t)) *
        max(eps[1], RMS(p))`` times the clipped direction.
    beta2_decay : float, default -0.8
        The second-moment decay ``beta2_t = 1 - t^beta2_decay``; must be <= 0.
    eps : tuple of (float or None, float), default (None, 1e-3)
        ``eps1`` clamps the row mean below and the second-moment estimate at ``eps1^2``
        (None: ``finfo(dtype).eps``); ``eps2`` is the least parameter scale.
    d : float, default 1.0
        Clipping threshold: the direction is divided by ``max(1, RMS / d)``; >= 1.
    weight_decay : float, default 0.0
        Decoupled: ``p <- p (1 - lr weight_decay)`` (``lr`` the cap, as torch).
    foreach : bool, optional
        Accepted for compatibility; without effect here.
    maximize : bool, default False
        Ascend instead of descend.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        See `Muon`.
    process_group : ProcessGroup or DeviceMesh, optional
        Replicated parameters (DDP): every rank computes the same steps. Sharded DTensor
        parameters (FSDP2) raise: the column means and the RMS of the update and of the
        parameter need the whole tensor.
    communication_dtype : torch.dtype, optional
        Accepted as the other classes do; nothing is sent.

    Raises
    ------
    ValueError
        For an argument out of range (torch's messages); at ``step``, for a parameter
        sharded by FSDP2.

    Notes
    -----
    The step is that of `matsign.optim.adafactor` (see `matsign.optim.scale_by_adafactor`,
    ``eps_mode="clamp"``), computed without host syncs: torch.optim.Adafactor reads the
    step count and two norms per parameter on the host (``.item()``). The result agrees
    with torch's to rounding (float32, 1e-5 relative over 50 steps in the tests).

    References
    ----------
    Shazeer and Stern, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost
    (arXiv:1804.04235).

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import Adafactor
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> opt = Adafactor(model.parameters())
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> opt.step()
    >>> {name: tuple(value.shape) for name, value in opt.state[model.weight].items()}
    {'step': (), 'row_var': (3, 1), 'col_var': (1, 4)}
    >>> sorted(opt.state[model.bias])
    ['step', 'variance']
    """

    _decay_in_direction = True  # so the stepper reads the parameters (their RMS); see _apply

    def __init__(self, params: Params, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False, nonfinite: str = "skip", process_group: Any = None,
                 communication_dtype: torch.dtype | None = None) -> None:
        _check_common(lr, weight_decay, nonfinite)
        if not 0.0 >= beta2_decay:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        defaults = {"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d,
                    "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize,
                    "nonfinite": nonfinite, "communication_dtype": communication_dtype}
        super().__init__(params, defaults, process_group)

    def _stepper(self, group, work=None):
        eps1, eps2 = group["eps"]
        direction = scale_by_adafactor(
            decay_rate=-group["beta2_decay"], eps=eps1, eps_mode="clamp",
            clipping_threshold=group["d"], min_scale=eps2, relative_step=float(group["lr"]))
        return direction

    def _apply(self, members, directions, scale, skip, group):
        """``p <- p (1 - lr wd)``, then ``p <- p - lr u``: torch.optim.Adafactor's order."""
        lr = float(group["lr"])
        factor = 1.0 - lr * group["weight_decay"]
        if factor != 1.0:
            keep = factor if skip is None else torch.where(skip, _scalar(factor, members[0]), 1.0)
            torch._foreach_mul_(members, keep)
        torch._foreach_add_(members, directions, alpha=-lr * scale)

    def _step_group(self, index, group):
        for p in group["params"]:
            if p.grad is not None and distributed.placement(p, self._process_group).sharded:
                msg = (f"Adafactor: a parameter of shape {tuple(p.shape)} is sharded (FSDP2 "
                       f"Shard(0)); its column means and RMS need the whole tensor, which "
                       f"this optimizer does not gather: use it on replicated parameters")
                raise ValueError(msg)
        super()._step_group(index, group)


class Tiger(_StepperOptimizer):
    """Tiger, the sign of one momentum, as a ``torch.optim.Optimizer``.

    ``m <- beta m + (1 - beta) g``, ``p <- p (1 - lr weight_decay) - lr sign(m)``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float, default 1e-4
        Learning rate (a sign step, as Lion's).
    beta : float, default 0.945
        Momentum decay (Su: 0.945 for vision, 0.965 for language models).
    weight_decay : float, default 0.0
        Decoupled weight decay.
    maximize : bool, default False
        Ascend instead of descend.
    cautious_mask : bool, default False
        Mask the direction where it disagrees in sign with the gradient.
    cautious_weight_decay : bool, default False
        Decay only entries where the update and the parameter share a sign.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        See `Muon`.
    process_group : ProcessGroup or DeviceMesh, optional
        The ranks sharing the step (see `Muon`); DTensor parameters use their mesh.
    communication_dtype : torch.dtype, optional
        Dtype of what is sent between ranks; default the parameters' dtype.

    Notes
    -----
    The state is ``exp_avg`` (`matsign.optim.TigerState`). Element-wise, so FSDP2
    shards step alone; with ``cautious_mask`` the mask's rescaling counts the entries of
    the shard, as `Lion`'s.

    References
    ----------
    Su, Tiger: A Tight-fisted Optimizer (2023), https://github.com/bojone/tiger.

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import Tiger
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = Tiger([w], lr=0.5)
    >>> w.grad = torch.tensor([2.0, -3.0])
    >>> opt.step()
    >>> w.detach(), opt.state[w]["exp_avg"]
    (tensor([-0.5000,  0.5000]), tensor([ 0.1100, -0.1650]))
    """

    def __init__(self, params: Params, lr: float = 1e-4, beta: float = 0.945,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 cautious_mask: bool = False, cautious_weight_decay: bool = False,
                 nonfinite: str = "skip", process_group: Any = None,
                 communication_dtype: torch.dtype | None = None) -> None:
        _check_common(lr, weight_decay, nonfinite)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter: {beta}")
        defaults = {"lr": lr, "beta": beta, "weight_decay": weight_decay,
                    "maximize": maximize, "cautious_mask": cautious_mask,
                    "cautious_weight_decay": cautious_weight_decay,
                    "nonfinite": nonfinite, "communication_dtype": communication_dtype}
        super().__init__(params, defaults, process_group)

    def _stepper(self, group, work=None):
        direction = scale_by_tiger(group["beta"])
        return cautious(direction) if group["cautious_mask"] else direction


class _SecondMomentMuon(_StepperOptimizer):
    """Muon's stacking and transports for AdaMuon and NorMuon, whose work packs a moment.

    Their blocks hand ``work`` each matrix with its second moment beside it
    (`matsign.optim.adamuon.packed_shape`), so a replicated stack's buffers hold the
    packed size, and the moment travels in the parameters' dtype unless
    ``communication_dtype`` says otherwise (a moment is state: rounding it to bfloat16
    every step would change the optimizer).
    """

    _stack = True

    def _check_matrices(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    msg = (f"{type(self).__name__} takes matrices (or conv/stacked >2-D "
                           f"tensors); got a parameter of size {tuple(p.size())}: see "
                           f"matsign.optim.route")
                    raise ValueError(msg)

    def _packed(self, view, group):  # numpydoc ignore=PR01,RT01
        """The shape one matrix of ``view`` travels as."""
        raise NotImplementedError

    def _units(self, params, groups, group, process_group):
        units = super()._units(params, groups, group, process_group)
        return tuple(unit if unit is None else unit._replace(
            size=math.prod(self._packed(_view(params[keys[0]], group), group)))
            for unit, (_, keys) in zip(units, groups, strict=True))


def _check_moment_options(lr, weight_decay, momentum, beta2, ns_steps, reshape, nonfinite):
    _check_common(lr, weight_decay, nonfinite)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum should be in [0, 1) but is: {momentum}")
    if beta2 is not None and not 0.0 <= beta2 < 1.0:
        raise ValueError(f"beta2 should be in [0, 1) but is: {beta2}")
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    matrix_shape((1,), reshape)


class AdaMuon(_SecondMomentMuon):
    """AdaMuon as a ``torch.optim.Optimizer``: Muon's momentum, an orthogonalised sign, Adam's RMS.

    The positional arguments follow the reference class (Si et al.'s ``AdaMuon``) and the
    state keeps its names: ``momentum_buffer`` and ``v_buffer`` (shaped as the parameter;
    the reference flattens it, and its state loads here).

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups of matrices; with ``reshape`` also conv kernels
        and stacks of matrices.
    lr : float, default 6e-4
        Learning rate. The update has Adam's RMS, so Adam's learning rate carries over
        (the reference GPT-2 runs: 6e-4 with weight decay 0.1; the reference class's
        default of 0.02 is Muon's).
    weight_decay : float, default 0.01
        Decoupled weight decay ``p <- p (1 - lr weight_decay)`` (the reference's default).
    momentum : float, default 0.95
        EMA momentum, and the decay of the second moment unless ``beta2`` is given.
    nesterov : bool, default True
        Orthogonalise the sign of ``lerp(grad, buf, momentum)`` instead of the buffer's.
    ns_steps : int, default 5
        Newton–Schulz steps.
    eps : float, default 1e-8
        Added to ``sqrt(v)`` and to the Frobenius norm of the RMS rescale.
    beta2 : float, optional
        Decay of the second moment; None: ``momentum`` (the reference code).
    ns_coefficients : tuple of float, str or Schedule, default (3.4445, -4.7750, 2.0315)
        The Newton–Schulz polynomial (see `Muon`).
    sign : bool, default True
        Orthogonalise the sign of the momentum (False: the momentum, the paper's v1).
    rms : float, default 0.2
        RMS of each matrix's update before the learning rate.
    bias_correction : bool, default False
        Divide ``v`` by ``1 - beta2^t`` (state ``step`` too); cancelled by the rescale up
        to ``eps``.
    ns_eps : float, default 1e-7
        Lower clamp of the Frobenius norm before Newton–Schulz.
    ns_dtype : torch.dtype or None, default torch.bfloat16
        Compute dtype of the iteration (the reference's bfloat16); None: the gradient's.
    reshape : {"flatten", "batch"}, default "flatten"
        Parameters of more than two axes (see `Muon`).
    cautious_weight_decay : bool, default False
        Decay only entries where the update and the parameter share a sign.
    maximize : bool, default False
        Ascend instead of descend.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        See `Muon`.
    match : {None, "torch.optim.Muon"}, optional
        Newton–Schulz rounded as torch.optim.Muon's (see `Muon`).
    process_group : ProcessGroup or DeviceMesh, optional
        Spread the matrix work over the ranks (see `Muon`): each matrix's second moment
        travels with it, so every statistic is that of the whole matrix under DDP and
        FSDP2 (``Shard(0)``) alike.
    communication_dtype : torch.dtype, optional
        Dtype of what is sent between ranks: the sign of the momentum, the moment and
        the result; default the parameters' dtype (a bfloat16 one rounds the moment).

    Notes
    -----
    The step is `matsign.optim.adamuon`'s: ``O = NS(sign(N))``, ``v <- b v + (1 - b)
    O^2``, ``U = O / (sqrt(v) + eps)``, ``p <- p (1 - lr wd) - lr rms sqrt(m n) U /
    (||U||_F + eps)``, with ``(m, n)`` the matrix orthogonalised (a conv kernel
    flattened; the reference takes ``min`` and ``max`` of the kernel's four axes there).

    References
    ----------
    Si, Zhang and Shen, AdaMuon: Adaptive Muon Optimizer (arXiv:2507.11005).

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import AdaMuon
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3, bias=False)
    >>> opt = AdaMuon(model.parameters(), lr=1e-3, weight_decay=0.0, ns_dtype=None)
    >>> before = model.weight.detach().clone()
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> opt.step()
    >>> sorted(opt.state[model.weight])
    ['momentum_buffer', 'v_buffer']
    >>> round(float((model.weight.detach() - before).square().mean().sqrt()), 6)  # lr 0.2
    0.0002
    """

    def __init__(
        self, params: Params, lr: float = 6e-4, weight_decay: float = 0.01,
        momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5, eps: float = 1e-8,
        beta2: float | None = None, *,
        ns_coefficients: tuple[float, ...] | str | Schedule = (3.4445, -4.7750, 2.0315),
        sign: bool = True, rms: float = 0.2, bias_correction: bool = False,
        ns_eps: float = 1e-7, ns_dtype: torch.dtype | None = torch.bfloat16,
        reshape: str = "flatten", cautious_weight_decay: bool = False, maximize: bool = False,
        nonfinite: str = "skip", match: str | None = None, process_group: Any = None,
        communication_dtype: torch.dtype | None = None,
    ) -> None:
        _check_moment_options(lr, weight_decay, momentum, beta2, ns_steps, reshape, nonfinite)
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    "nesterov": nesterov, "ns_steps": ns_steps, "eps": eps, "beta2": beta2,
                    "ns_coefficients": ns_coefficients, "sign": sign, "rms": rms,
                    "bias_correction": bias_correction, "ns_eps": ns_eps,
                    "ns_dtype": ns_dtype, "match": match, "reshape": reshape,
                    "cautious_weight_decay": cautious_weight_decay, "maximize": maximize,
                    "nonfinite": nonfinite, "communication_dtype": communication_dtype}
        self._stepper(defaults)  # a bad option fails here, not at step 1
        super().__init__(params, defaults, process_group)
        self._check_matrices()

    def _stepper(self, group, work=None):
        beta2 = group["momentum"] if group["beta2"] is None else group["beta2"]
        return chain(
            trace(group["momentum"], nesterov=group["nesterov"], ema=True),
            scale_by_adamuon(beta2, group["eps"], sign=group["sign"], rms=group["rms"],
                             bias_correction=group["bias_correction"],
                             schedule=group["ns_coefficients"], steps=group["ns_steps"],
                             ns_eps=group["ns_eps"], dtype=group["ns_dtype"],
                             match=group.get("match"), work=work),
        )

    def _packed(self, view, group):
        return packed_shape(view, "adamuon")


class NorMuon(_SecondMomentMuon):
    """NorMuon as a ``torch.optim.Optimizer``: Muon with neuron-wise normalised updates.

    The positional arguments and defaults follow the reference class (Li et al.'s
    ``NorMuon``/``SingleDeviceNorMuon``) and the state keeps its names:
    ``momentum_buffer`` and ``second_momentum_buffer`` (``(rows, 1)``), so its state
    dicts load here.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups of matrices; with ``reshape`` also conv kernels
        and stacks of matrices.
    lr : float, default 0.02
        Learning rate (Muon's: the normalised update keeps the Frobenius norm of the
        orthogonalised one).
    weight_decay : float, default 0.0
        Decoupled weight decay ``p <- p (1 - lr weight_decay)``.
    momentum : float, default 0.95
        EMA momentum.
    beta2 : float, default 0.95
        Decay of the per-neuron second moment.
    nesterov : bool, default True
        Orthogonalise ``lerp(grad, buf, momentum)`` (False: the buffer, as the paper's
        Algorithm 1).
    ns_coefficients : tuple of float, str or Schedule, default (3.4445, -4.7750, 2.0315)
        The Newton–Schulz polynomial (see `Muon`).
    eps : float, default 1e-10
        Added to ``sqrt(v)`` and to the norm of the rescale.
    ns_steps : int, default 5
        Newton–Schulz steps.
    adjust_lr_fn : {None, "original", "match_rms_adamw", "spectral", "none"}, default None
        The update scale as `Muon`'s: None is ``sqrt(max(1, m/n))`` (the reference code),
        or ``"none"`` when ``rms`` is set.
    neurons : {"rows", "columns", "longer"}, default "rows"
        One statistic per row (output neuron), per column, or along the longer side
        (modded-nanogpt); see `matsign.optim.adamuon.normuon_axis`.
    rms : float, optional
        Rescale to this RMS instead of keeping the norm (the paper's Algorithm 1: 0.2,
        with Adam's learning rates).
    ns_eps : float, default 1e-7
        Lower clamp of the Frobenius norm before Newton–Schulz.
    ns_dtype : torch.dtype or None, default torch.bfloat16
        Compute dtype of the iteration (the reference's bfloat16); None: the gradient's.
    reshape : {"flatten", "batch"}, default "flatten"
        Parameters of more than two axes (see `Muon`).
    cautious_weight_decay : bool, default False
        Decay only entries where the update and the parameter share a sign
        (modded-nanogpt).
    maximize : bool, default False
        Ascend instead of descend.
    nonfinite : {"skip", "raise", "ignore"}, default "skip"
        See `Muon`.
    match : {None, "torch.optim.Muon"}, optional
        Newton–Schulz rounded as torch.optim.Muon's (see `Muon`).
    process_group : ProcessGroup or DeviceMesh, optional
        Spread the matrix work over the ranks (see `Muon`); the per-neuron moment
        travels with its matrix, so the statistics and the rescale are those of the whole
        matrix under DDP and FSDP2 alike.
    communication_dtype : torch.dtype, optional
        Dtype of what is sent between ranks; default the parameters' dtype.

    Raises
    ------
    ValueError
        For an argument out of range; at ``step``, for column statistics of a parameter
        sharded by FSDP2 (its rows are spread over the ranks).

    Notes
    -----
    The step is `matsign.optim.normuon`'s: ``O = NS(N)``, ``v <- lerp(v, mean_j O^2,
    1 - beta2)`` per row, ``U = O / (sqrt(v) + eps)``, ``p <- p (1 - lr wd) - lr s
    ||O||_F U / (||U||_F + eps)`` with ``s`` the update scale. The reference computes
    the statistics of a conv kernel over its last axis after reshaping it back; here
    they are the rows of the flattened kernel, as the reference's first release.

    References
    ----------
    Li, Liu, Liang, Chen and Zhao, NorMuon: Making Muon more efficient and scalable
    (arXiv:2510.05491).

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import NorMuon
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3, bias=False)
    >>> opt = NorMuon(model.parameters(), ns_dtype=None)
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> opt.step()
    >>> {name: tuple(value.shape) for name, value in opt.state[model.weight].items()}
    {'momentum_buffer': (3, 4), 'second_momentum_buffer': (3, 1)}
    """

    def __init__(
        self, params: Params, lr: float = 0.02, weight_decay: float = 0.0,
        momentum: float = 0.95, beta2: float = 0.95, nesterov: bool = True,
        ns_coefficients: tuple[float, ...] | str | Schedule = (3.4445, -4.7750, 2.0315),
        eps: float = 1e-10, ns_steps: int = 5, adjust_lr_fn: str | None = None, *,
        neurons: str = "rows", rms: float | None = None, ns_eps: float = 1e-7,
        ns_dtype: torch.dtype | None = torch.bfloat16, reshape: str = "flatten",
        cautious_weight_decay: bool = False, maximize: bool = False, nonfinite: str = "skip",
        match: str | None = None, process_group: Any = None,
        communication_dtype: torch.dtype | None = None,
    ) -> None:
        _check_moment_options(lr, weight_decay, momentum, beta2, ns_steps, reshape, nonfinite)
        if adjust_lr_fn not in ADJUST_LR_FN and adjust_lr_fn not in SHAPE_SCALES:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    "beta2": beta2, "nesterov": nesterov, "ns_coefficients": ns_coefficients,
                    "eps": eps, "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn,
                    "neurons": neurons, "rms": rms, "ns_eps": ns_eps, "ns_dtype": ns_dtype,
                    "reshape": reshape, "cautious_weight_decay": cautious_weight_decay,
                    "maximize": maximize, "nonfinite": nonfinite, "match": match,
                    "communication_dtype": communication_dtype}
        self._stepper(defaults)  # a bad option fails here, not at step 1
        super().__init__(params, defaults, process_group)
        self._check_matrices()

    def _stepper(self, group, work=None):
        return chain(
            trace(group["momentum"], nesterov=group["nesterov"], ema=True),
            scale_by_normuon(group["beta2"], group["eps"], neurons=group["neurons"],
                             rms=group["rms"], schedule=group["ns_coefficients"],
                             steps=group["ns_steps"], ns_eps=group["ns_eps"],
                             dtype=group["ns_dtype"], match=group.get("match"), work=work),
        )

    def _packed(self, view, group):
        return packed_shape(view, "normuon", group["neurons"])

    def _scale(self, view, group):
        mode = group["adjust_lr_fn"]
        if mode is None and group["rms"] is not None:
            return 1.0
        return shape_scale(view, ADJUST_LR_FN.get(mode, mode))

    def _step_group(self, index, group):
        for p in group["params"]:
            view = _view(p, group)
            if (p.grad is not None and normuon_axis(view, group["neurons"]) == -2
                    and distributed.placement(p, self._process_group).sharded):
                msg = (f"NorMuon: column statistics (neurons={group['neurons']!r}) of a "
                       f"parameter of shape {tuple(p.shape)} sharded by rows (FSDP2 "
                       f"Shard(0)) are not supported; use neurons='rows'")
                raise ValueError(msg)
        super()._step_group(index, group)


@torch.no_grad()
def qk_clip_(
    w_q: torch.Tensor | torch.nn.Linear, w_k: torch.Tensor | torch.nn.Linear,
    max_logits: torch.Tensor, *, threshold: float, num_heads: int, alpha: float = 0.5,
    num_kv_heads: int | None = None,
) -> torch.Tensor:
    """MuonClip's QK-Clip in place, for a training loop that recorded each head's max logit.

    `matsign.optim.qk_clip` on the weights of a query and a key projection (torch's
    ``nn.Linear`` layout, heads contiguous along the rows), written into them. Weights
    sharded by FSDP2 (DTensors, ``Shard(0)`` or ``Replicate()`` on a 1-D mesh) are scaled
    shard by shard, with no communication: each rank scales the rows it holds by their
    head's factor, and the full weights come out as `matsign.optim.qk_clip` gives them.

    Parameters
    ----------
    w_q, w_k : Tensor or nn.Linear
        The query and key projections (their ``weight``).
    max_logits : Tensor of shape (num_heads,)
        Each query head's largest pre-softmax logit over the batch; the same on every
        rank (reduce it with ``all_reduce(..., op=MAX)`` first).
    threshold, num_heads, alpha, num_kv_heads
        See `matsign.optim.qk_clip`.

    Returns
    -------
    Tensor
        The clip factors ``gamma_h`` (1 for heads at or below the threshold).

    Raises
    ------
    ValueError
        As `matsign.optim.qk_clip`, and for DTensors laid out otherwise (sharded by
        columns, or on a mesh of more than one dimension).

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import qk_clip_
    >>> q, k = torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False)
    >>> gamma = qk_clip_(q, k, torch.tensor([400.0, 50.0]), threshold=100.0, num_heads=2)
    >>> gamma
    tensor([0.2500, 1.0000])
    """
    from .clip import clip_factors, qk_factors

    w_q, w_k = (w.weight if isinstance(w, torch.nn.Linear) else w for w in (w_q, w_k))
    max_logits = max_logits.full_tensor() if hasattr(max_logits, "full_tensor") else max_logits
    on_q, on_k = qk_factors(max_logits, threshold=threshold, num_heads=num_heads, alpha=alpha,
                            num_kv_heads=num_kv_heads)
    scaled = [(w_q, on_q)] + ([] if on_k is None else [(w_k, on_k)])
    starts = [_first_held_row(w, num_heads) for w, _ in scaled]  # every check before a write
    for (w, factors), start in zip(scaled, starts, strict=True):
        part = distributed.local(w)
        per_row = factors.to(w.dtype).repeat_interleave(w.shape[0] // num_heads)
        part.mul_(per_row[start:start + part.shape[0]].reshape(-1, *(1,) * (w.ndim - 1)))
    return clip_factors(max_logits, threshold)


def _first_held_row(w, heads):
    """The first row of ``w`` this rank holds (0, or its ``Shard(0)`` offset), checked.

    ``w`` must split into ``heads`` heads along its rows; its layout is checked and read
    by `_torch_distributed.placement`, as for every parameter of the optimizers.
    """
    if w.ndim == 0 or w.shape[0] % heads:
        msg = (f"qk_clip: a weight of shape {tuple(w.shape)} does not split into {heads} "
               f"heads along its rows")
        raise ValueError(msg)
    where = distributed.placement(w)
    if not where.sharded:
        return 0
    counts = distributed.shard_rows(w.shape[0], distributed.size(where.group))
    return offsets(counts)[dist.get_rank(where.group)]
