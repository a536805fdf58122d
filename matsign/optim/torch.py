"""``torch.optim.Optimizer`` subclasses built on the steppers: `Muon`, `AdamW`, `Lion`.

`Muon` and `AdamW` accept every keyword argument of ``torch.optim.Muon`` and
``torch.optim.AdamW`` with the same meaning and keep their state under the same names
(``momentum_buffer``; ``step``, ``exp_avg``, ``exp_avg_sq``), so they are drop-ins,
``state_dict`` included. This is the one module of matsign, besides the backend layer,
that imports torch.
"""

from __future__ import annotations

import torch

from ._base import all_finite, chain, check_nonfinite, matrix_shape
from .transforms import (
    SHAPE_SCALES,
    cautious,
    orthogonalize,
    scale_by_adam,
    scale_by_lion,
    shape_scale,
    trace,
)

__all__ = ["AdamW", "Lion", "Muon"]

ADJUST_LR_FN = {None: "jordan", "original": "jordan", "match_rms_adamw": "moonlight"}


def _flatten(state):
    """Named fields of a stepper state (a NamedTuple or nested tuples of them)."""
    if hasattr(state, "_fields"):
        return dict(zip(state._fields, state, strict=True))
    flat = {}
    for part in state:
        flat.update(_flatten(part))
    return flat


def _unflatten(template, flat):
    """Rebuild ``template``'s structure from a dict of named fields."""
    if hasattr(template, "_fields"):
        return type(template)(*(flat[name] for name in template._fields))
    return tuple(_unflatten(part, flat) for part in template)


class _StepperOptimizer(torch.optim.Optimizer):
    """Runs a matsign stepper per parameter group; state kept per parameter by field name."""

    _stack = False  # stack same-shape matrices into one call (Muon)

    def _stepper(self, group):  # numpydoc ignore=PR01,RT01
        """The stepper for ``group``'s current hyperparameters."""
        raise NotImplementedError

    def __setstate__(self, state):
        """Fill options a loaded state dict lacks (e.g. one saved by torch.optim) with defaults."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

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
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group):
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if torch.is_complex(p) or p.grad.is_sparse:
                msg = f"{type(self).__name__} supports real dense gradients only"
                raise RuntimeError(msg)
        if not params:
            return
        grads = [-p.grad if group.get("maximize", False) else p.grad for p in params]
        flag = all_finite(grads, xp=torch)
        check_nonfinite(flag, group["nonfinite"], where=f"a {type(self).__name__} group")
        stepper = self._stepper(group)
        by_param = {id(p): g for p, g in zip(params, grads, strict=True)}
        for members in self._batches(params, group):
            self._step_batch(stepper, members, by_param, flag, group)

    def _batches(self, params, group):
        if not self._stack:
            return [[p] for p in params]
        batches = {}
        for p in params:
            key = (matrix_shape(p.shape, group["reshape"]), p.dtype, p.device)
            batches.setdefault(key, []).append(p)
        return list(batches.values())

    def _step_batch(self, stepper, members, grads, flag, group):
        view = matrix_shape(members[0].shape, group.get("reshape", "batch"))
        P = _stack([p.reshape(view) for p in members])
        G = _stack([grads[id(p)].reshape(view) for p in members])
        template = stepper.init(P.new_zeros(()))  # structure only
        for p in members:
            if not self.state[p]:
                self.state[p].update(_flatten(stepper.init(p.reshape(view))))
        flat = {name: _stack([self.state[p][name].reshape(self._field_shape(p, name, view))
                              for p in members]) for name in _flatten(template)}
        U, new_state = stepper.update(G, _unflatten(template, flat), P)
        skip = group["nonfinite"] == "skip"
        alpha = -float(group["lr"]) * self._scale(view, group)
        for i, p in enumerate(members):
            d = (U[i] if len(members) > 1 else U).reshape(p.shape)
            new = _decayed(p, d, group).add_(d, alpha=alpha)
            p.copy_(torch.where(flag, new, p) if skip else new)
        for name, value in _flatten(new_state).items():
            for i, p in enumerate(members):
                v = value[i] if len(members) > 1 else value
                old = self.state[p][name]
                old.copy_(torch.where(flag, v.reshape(old.shape), old) if skip
                          else v.reshape(old.shape))

    def _scale(self, view, group):  # numpydoc ignore=PR01,RT01
        """Multiplier of the learning rate for a direction of shape ``view``."""
        return 1.0

    def _field_shape(self, p, name, view):
        return self.state[p][name].shape if self.state[p][name].ndim == 0 else view


def _decayed(p, direction, group):
    """``p * (1 - lr * wd)`` as torch.optim does it (cautious: only where signs agree)."""
    factor = 1.0 - float(group["lr"]) * group["weight_decay"]
    if not group.get("cautious_weight_decay", False) or factor == 1.0:
        return p.mul(factor)
    return torch.where(direction * p > 0, p.mul(factor), p)


def _stack(tensors):
    return tensors[0] if len(tensors) == 1 else torch.stack(tensors)


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
        and state unchanged; no host sync), raise ValueError (a host sync), or go on.

    Notes
    -----
    Same-shape parameters of a group are stacked and orthogonalised in one batched
    call. The iteration rounds as torch.optim.Muon's does (see
    `matsign.optim.orthogonalize`), so with the defaults the two agree to float32
    rounding.

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
        self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
        ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None,
        *, ns_dtype=torch.bfloat16, reshape="flatten", cautious_weight_decay=False,
        nonfinite="skip",
    ):
        _check_common(lr, weight_decay, nonfinite)
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
                    "nonfinite": nonfinite}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    msg = (f"Muon takes matrices (or conv/stacked >2-D tensors); got a "
                           f"parameter of size {tuple(p.size())}: see matsign.optim.route")
                    raise ValueError(msg)

    def _stepper(self, group):
        return chain(
            trace(group["momentum"], nesterov=group["nesterov"], ema=True),
            orthogonalize(schedule=group["ns_coefficients"], steps=group["ns_steps"],
                          eps=group["eps"], dtype=group["ns_dtype"]),
        )

    def _scale(self, view, group):
        return shape_scale(view, ADJUST_LR_FN.get(group["adjust_lr_fn"], group["adjust_lr_fn"]))


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
        self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
        *, maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
        cautious_mask=False, nonfinite="skip",
    ):
        _check_common(lr, weight_decay, nonfinite)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable,
                    "fused": fused, "cautious_mask": cautious_mask, "nonfinite": nonfinite}
        super().__init__(params, defaults)

    def _stepper(self, group):
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

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False,
                 cautious_mask=False, nonfinite="skip"):
        _check_common(lr, weight_decay, nonfinite)
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                    "maximize": maximize, "cautious_mask": cautious_mask,
                    "nonfinite": nonfinite}
        super().__init__(params, defaults)

    def _stepper(self, group):
        direction = scale_by_lion(*group["betas"])
        return cautious(direction) if group["cautious_mask"] else direction
