"""Every public routine checks its input the same way, and its errors name it, on every backend.

The oracle is the dtype policy of the design (integers to the namespace's default real float,
complex refused, fewer than two axes refused naming the shape) and the namespace's own
``default_dtypes``; the per-module tests check the numbers.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from matsign import (
    _xp,
    dualize,
    inverse_root,
    matrix_root,
    msign,
    newton_schulz,
    orthogonality_error,
    polar,
    psd_power,
)
from matsign.duality import dual_norm, norm, spectral_norm
from matsign.kron import init_factors, update_factors

MATRIX_ROUTINES = {
    "msign": msign,
    "polar": polar,
    "newton_schulz": newton_schulz,
    "orthogonality_error": orthogonality_error,
    "inverse_root": lambda A: inverse_root(A, 2),
    "matrix_root": lambda A: matrix_root(A, 2),
    "psd_power": lambda A: psd_power(A, 0.5),
    "dualize": dualize,
    "norm": norm,
    "dual_norm": dual_norm,
    "spectral_norm": spectral_norm,
}


def _update_factors(G):
    """update_factors on a complex G, with factors from its real part."""
    return update_factors(G, init_factors(_xp.namespace(G).real(G)))


ROUTINES = {**MATRIX_ROUTINES, "init_factors": init_factors, "update_factors": _update_factors}
SPD = [[2, 1], [1, 2]]  # a valid input for every routine, integer-valued


@pytest.mark.parametrize("name", MATRIX_ROUTINES)
@pytest.mark.parametrize("shape", [(), (3,)])
def test_fewer_than_two_axes_raise_naming_routine_and_shape(backend, name, shape):
    G = backend.asarray(np.ones(shape), "float32")
    expected = rf"^{name} expects (square matrices of )?shape \(\.\.\., ., n\); got "
    with pytest.raises(ValueError, match=expected + re.escape(str(shape)) + "$"):
        MATRIX_ROUTINES[name](G)


@pytest.mark.parametrize("name", ROUTINES)
def test_complex_input_raises_type_error_naming_routine(backend, name):
    xp = backend.xp
    G = xp.astype(backend.asarray(SPD, "float32"), xp.complex64)
    with pytest.raises(TypeError, match=rf"^{name}: .*real input only; got complex dtype"):
        ROUTINES[name](G)


@pytest.mark.parametrize("name", MATRIX_ROUTINES)
def test_integer_input_is_computed_in_the_default_float(backend, name):
    xp = backend.xp
    A = xp.asarray(SPD, device=backend.device)
    default = xp.__array_namespace_info__().default_dtypes(device=backend.device)
    as_float = xp.astype(A, default["real floating"])
    got, expected = MATRIX_ROUTINES[name](A), MATRIX_ROUTINES[name](as_float)
    for x, y in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, expected)), strict=True):
        assert x.dtype == default["real floating"]
        assert bool(xp.all(x == y))


# --- one spelling per idea, and the deprecated spellings -------------------------------------

OWN_MODULES = ["matsign", "matsign.duality", "matsign.kron", "matsign.polar",
               "matsign.polynomials", "matsign.roots", "matsign.testing",
               "matsign.optim._base", "matsign.optim.alias", "matsign.optim.muon",
               "matsign.optim.shampoo", "matsign.optim.transforms"]
RETIRED = {"max_iter": "max_steps", "kind": "norm"}  # 0.1 spellings, accepted until 0.3


def public_functions(module_names):
    """(qualified name, function) of every public function the modules export."""
    import importlib
    import inspect

    for module_name in module_names:
        module = importlib.import_module(module_name)
        for attr in module.__all__:
            value = getattr(module, attr)
            if inspect.isfunction(value):
                yield f"{value.__module__}.{value.__name__}", value


def test_one_spelling_per_idea_in_public_signatures():
    """Step limits are max_steps, norm choices norm=, and layout= is always a KronLayout."""
    import inspect

    for name, function in public_functions(OWN_MODULES):
        for parameter in inspect.signature(function).parameters.values():
            assert parameter.name not in RETIRED, f"{name}({parameter.name}=...)"
            if parameter.name == "layout":
                assert parameter.annotation == "KronLayout", f"{name}: {parameter}"


def test_public_signatures_are_annotated():
    import inspect

    for name, function in public_functions(OWN_MODULES[1:]):
        signature = inspect.signature(function)
        assert signature.return_annotation is not inspect.Signature.empty, f"{name} -> ?"
        for parameter in signature.parameters.values():
            if parameter.kind is not parameter.VAR_KEYWORD:
                assert parameter.annotation is not parameter.empty, f"{name}({parameter.name})"


def test_renamed_keywords_warn_forward_and_refuse_both():
    from matsign import _checks

    @_checks.renamed_keywords(since="0.2", until="0.3", old="new")
    def f(x, /, new=1, *, other=2):
        return x, new, other

    assert f(0) == (0, 1, 2)
    with pytest.warns(DeprecationWarning, match=r"^f: old= is deprecated since matsign 0\.2 "
                                                r"and will be removed in 0\.3; use new= "):
        assert f(0, old=5) == (0, 5, 2)
    for call in (lambda: f(0, 3, old=5), lambda: f(0, new=3, old=5)):  # positional or keyword
        with pytest.raises(TypeError, match="f got both new= and its deprecated spelling old="):
            call()
