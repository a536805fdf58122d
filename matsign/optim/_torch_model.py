"""One ``torch.optim.Optimizer`` for a whole model: an algorithm per parameter group.

`ModelOptimizer` routes a model's parameters (Muon for the hidden matrices, AdamW or
another element-wise optimizer for embeddings, the output head and vectors), builds one
matsign optimizer per algorithm and presents them as one optimizer: one list of
``param_groups`` (each with its ``"algorithm"``), one ``state``, one ``state_dict``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch

from .muon import route

__all__ = ["ModelOptimizer", "module_labels"]


def module_labels(model: torch.nn.Module, *, head: Any = "last") -> dict[str, str]:
    """``"matrix"`` or ``"other"`` per named parameter, by module type and identity.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    head : "last", a parameter name, or None; default "last"
        The output layer: the last ``nn.Linear`` in registration order (``"last"``), the
        named parameter, or none. A Linear whose weight is an embedding's (tied) is an
        output head whatever ``head`` says.

    Returns
    -------
    dict of str to str
        In ``model.named_parameters()`` order (a tied weight once). ``"other"``: the
        parameters of ``nn.Embedding`` modules, the output head's weight, and every
        parameter with fewer than two axes; ``"matrix"``: the rest (conv kernels too).

    Raises
    ------
    KeyError
        For a ``head`` name that is not a parameter.

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import module_labels
    >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4),
    ...                             torch.nn.ReLU(), torch.nn.Linear(4, 10))
    >>> for name, label in module_labels(model).items():
    ...     print(name, label)
    0.weight other
    1.weight matrix
    1.bias other
    3.weight other
    3.bias other
    """
    named = dict(model.named_parameters())
    embedded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                for p in m.parameters(recurse=False)}
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    heads = {id(m.weight) for m in linears if id(m.weight) in embedded}
    if head == "last" and linears:
        heads.add(id(linears[-1].weight))
    elif head not in ("last", None):
        if head not in named:
            msg = f"module_labels: head {head!r} is not a parameter of the model"
            raise KeyError(msg)
        heads.add(id(named[head]))
    return {name: "other" if p.ndim < 2 or id(p) in embedded | heads else "matrix"
            for name, p in named.items()}


def _algorithms() -> dict[str, type]:
    """Every optimizer class of `matsign.optim.torch`, by lower-case name."""
    from . import torch as adapters  # imports this module: looked up at call time

    classes = (getattr(adapters, name) for name in adapters.__all__)
    return {cls.__name__.lower(): cls for cls in classes
            if isinstance(cls, type) and issubclass(cls, adapters._StepperOptimizer)}


class ModelOptimizer(torch.optim.Optimizer):
    """One optimizer for a whole model: Muon on the hidden matrices, AdamW on the rest.

    Parameters
    ----------
    model : nn.Module, iterable of (name, parameter), or iterable of dicts
        A module, routed by `module_labels` (embeddings, the output head and vectors
        to ``other``); ``model.named_parameters()``-style pairs, routed by name
        (`matsign.optim.route`: warns when no head is named); or parameter groups,
        each a dict with ``"params"`` and an ``"algorithm"`` (no routing).
    matrix : str, default "muon"
        The algorithm of the matrices: a class name of `matsign.optim.torch` in lower
        case (``"muon"``, ``"shampoo"``, ``"soap"``, ...).
    other : str, default "adamw"
        The algorithm of the rest (``"adamw"``, ``"lion"``, ``"adafactor"``, ...).
    matrix_options, other_options : dict, optional
        Keyword arguments of each algorithm's class (``{"lr": 0.02}``); what is not
        given takes the class's default (`Muon`'s are torch.optim.Muon's).
    overrides : dict, optional
        Per parameter name: an algorithm name, ``"matrix"``/``"other"``, or a dict of
        options for a group of its own (with an optional ``"algorithm"``), e.g.
        ``{"attn.qkv.weight": {"split": 3}}``.
    head : "last", a name, or None; default "last"
        The output head of a module (see `module_labels`); for named pairs, passed to
        `matsign.optim.route` (``"last"`` there too, by default).
    **common
        Passed to every algorithm (``nonfinite``, ``process_group``, ...).

    Attributes
    ----------
    routing : dict of str to str
        Parameter name to its algorithm (for a module or named pairs).
    optimizers : dict of str to torch.optim.Optimizer
        The optimizer of each algorithm; they share this one's ``param_groups`` (the
        same dicts) and ``state``.

    Raises
    ------
    ValueError
        For an unknown algorithm or override, or a group without ``"algorithm"``.

    Notes
    -----
    ``param_groups`` lists every algorithm's groups, in order of first appearance, and
    each carries its ``"algorithm"``: a learning-rate scheduler or a manual change of
    ``group["lr"]`` reaches the algorithm's optimizer, and ``state_dict`` /
    ``load_state_dict`` save and restore everything at once (in this structure).

    Examples
    --------
    >>> import torch
    >>> from matsign.optim.torch import ModelOptimizer
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
    ...                             torch.nn.Linear(16, 16), torch.nn.ReLU(),
    ...                             torch.nn.Linear(16, 3))
    >>> opt = ModelOptimizer(model, matrix_options={"lr": 0.02, "ns_dtype": None},
    ...                      other_options={"lr": 3e-3})
    >>> [(g["algorithm"], len(g["params"])) for g in opt.param_groups]
    [('muon', 2), ('adamw', 4)]
    >>> opt.routing["4.weight"]                       # the output head
    'adamw'
    >>> model(torch.randn(5, 8)).square().mean().backward()
    >>> opt.step()
    >>> opt.zero_grad()
    """

    def __init__(
        self, model: Any, matrix: str = "muon", other: str = "adamw", *,
        matrix_options: Mapping[str, Any] | None = None,
        other_options: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None, head: Any = "last", **common: Any,
    ) -> None:
        known = _algorithms()
        for name in (matrix, other):
            _check_algorithm(name, known)
        self.routing: dict[str, str] = {}
        groups = self._groups(model, matrix, other, dict(matrix_options or {}),
                              dict(other_options or {}), dict(overrides or {}), head, known)
        by_algorithm: dict[str, list[dict]] = {}
        for group in groups:
            by_algorithm.setdefault(group["algorithm"], []).append(group)
        self.optimizers = {name: known[name](members, **common)
                           for name, members in by_algorithm.items()}
        self._ready = False
        super().__init__([g for opt in self.optimizers.values() for g in opt.param_groups], {})
        self._ready = True
        self._bind()

    def _groups(self, model, matrix, other, matrix_options, other_options, overrides, head,
                known):
        if isinstance(model, torch.nn.Module):
            labels = module_labels(model, head=head)
            named = dict(model.named_parameters())
        else:
            items = list(model)
            if items and isinstance(items[0], Mapping):
                for group in items:
                    _check_algorithm(group.get("algorithm"), known, where="a parameter group")
                return [dict(group) for group in items]
            named = dict(items)
            labels = route(named, matrix="matrix", other="other", head=head)
        names = {"matrix": matrix, "other": other}
        options = {matrix: matrix_options, other: other_options}
        unknown = sorted(set(overrides) - set(named))
        if unknown:
            msg = f"ModelOptimizer: overrides name no parameter: {unknown}"
            raise ValueError(msg)
        shared: dict[str, dict] = {}
        groups = []
        for name, p in named.items():
            algorithm, extra = names[labels[name]], None
            if name in overrides:
                algorithm, extra = _override(overrides[name], algorithm, names, known)
            self.routing[name] = algorithm
            if extra is None:
                if algorithm not in shared:
                    shared[algorithm] = {"params": [], "algorithm": algorithm,
                                         **options.get(algorithm, {})}
                    groups.append(shared[algorithm])
                shared[algorithm]["params"].append(p)
            else:
                groups.append({"params": [p], "algorithm": algorithm,
                               **options.get(algorithm, {}), **extra})
        return groups

    def _bind(self):
        """Point every algorithm's optimizer at this one's state (param groups are shared)."""
        for opt in self.optimizers.values():
            self.state.update(opt.state)
        for opt in self.optimizers.values():
            opt.state = self.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; it needs an ``"algorithm"`` once the optimizer is built.

        Parameters
        ----------
        param_group : dict
            ``"params"``, ``"algorithm"`` and options.
        """
        if not self._ready:  # from torch.optim.Optimizer.__init__: groups already placed
            super().add_param_group(param_group)
            return
        name = param_group.get("algorithm")
        _check_algorithm(name, _algorithms(), where="a parameter group")
        if name not in self.optimizers:
            self.optimizers[name] = _algorithms()[name]([param_group])
        else:
            self.optimizers[name].add_param_group(param_group)
        super().add_param_group(self.optimizers[name].param_groups[-1])
        self._bind()

    @torch.no_grad()
    def step(self, closure=None):
        """One step of every algorithm.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (called once).

        Returns
        -------
        loss
            What ``closure`` returned, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` of an optimizer built the same way.

        Each algorithm's optimizer loads its own groups and state (with its own dtype
        rules), and this one's ``param_groups`` and ``state`` are bound to theirs again.

        Parameters
        ----------
        state_dict : dict
            As returned by ``state_dict()``.

        Raises
        ------
        ValueError
            If the saved groups do not match this optimizer's algorithms.
        """
        saved = state_dict["param_groups"]
        if [g.get("algorithm") for g in saved] != [g["algorithm"] for g in self.param_groups]:
            msg = "ModelOptimizer: the state dict's groups have other algorithms than these"
            raise ValueError(msg)
        for name, opt in self.optimizers.items():
            groups = [g for g in saved if g["algorithm"] == name]
            ids = {i for g in groups for i in g["params"]}
            opt.load_state_dict({"state": {i: s for i, s in state_dict["state"].items()
                                           if i in ids},
                                 "param_groups": groups})
        self.param_groups = [g for opt in self.optimizers.values() for g in opt.param_groups]
        self.state = defaultdict(dict)
        self._bind()


def _check_algorithm(name, known, where="ModelOptimizer"):
    if name not in known:
        msg = f"{where}: unknown algorithm {name!r}; choose from {sorted(known)}"
        raise ValueError(msg)


def _override(value, algorithm, names, known):
    """(algorithm, extra options or None) for one parameter's override."""
    if isinstance(value, str):
        chosen = names.get(value, value)
        _check_algorithm(chosen, known, where="ModelOptimizer overrides")
        return chosen, None
    if isinstance(value, Mapping):
        extra = dict(value)
        chosen = extra.pop("algorithm", algorithm)
        chosen = names.get(chosen, chosen)
        _check_algorithm(chosen, known, where="ModelOptimizer overrides")
        return chosen, extra
    msg = f"ModelOptimizer: an override is an algorithm name or a dict of options; got {value!r}"
    raise ValueError(msg)
