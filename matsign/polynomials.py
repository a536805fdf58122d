"""Odd polynomials and per-step Newton–Schulz schedules, with their provenance.

A Newton–Schulz iteration applies odd polynomials ``p(x) = c0 x + c1 x^3 + c2 x^5 + ...``
to the singular values of a matrix whose spectral norm is at most one. A
:class:`Schedule` is the finite list of those polynomials, what happens after the
list ends (stop, or repeat the last one), and the factor the input's Frobenius norm
is multiplied by before the first step.

Everything here is plain Python floats and NumPy float64 on the host: a schedule is
a small table, not an array on the caller's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Schedule", "band", "names", "preset", "scalar_map"]


@dataclass(frozen=True)
class Schedule:
    """A list of odd polynomials applied one per Newton–Schulz step.

    Parameters
    ----------
    name : str
        Registry name of the schedule.
    coefficients : tuple of tuple of float
        One tuple per step, ``(c0, c1, c2, ...)`` for ``p(x) = c0 x + c1 x^3 + c2 x^5 + ...``.
    tail : {"stop", "repeat"}
        After the list: ``"stop"`` allows no more steps than listed, ``"repeat"``
        repeats the last polynomial.
    default_steps : int
        Steps taken when the caller does not say.
    normalizer : float
        The input is divided by ``normalizer * ||G||_F`` before the first step
        (1.01 for the published Polar Express list).
    source : str
        Where the coefficients come from.
    """

    name: str
    coefficients: tuple[tuple[float, ...], ...]
    tail: str = "stop"
    default_steps: int = 5
    normalizer: float = 1.0
    source: str = ""

    def __post_init__(self):
        if self.tail not in ("stop", "repeat"):
            msg = f"tail must be 'stop' or 'repeat'; got {self.tail!r}"
            raise ValueError(msg)
        if not self.coefficients or any(len(c) == 0 for c in self.coefficients):
            msg = f"schedule {self.name!r} needs at least one non-empty polynomial"
            raise ValueError(msg)

    @property
    def degree(self):
        """The highest polynomial degree in the schedule."""
        return 2 * max(len(c) for c in self.coefficients) - 1

    @property
    def converges(self):
        """Whether repeating the tail drives singular values to 1.

        True when the tail repeats a polynomial with ``p(1) = 1`` and ``|p'(1)| < 1``
        (1 is an attracting fixed point); False for schedules that leave a band.
        """
        if self.tail != "repeat":
            return False
        last = self.coefficients[-1]
        value = sum(last)
        slope = sum((2 * k + 1) * c for k, c in enumerate(last))
        return abs(value - 1.0) < 1e-12 and abs(slope) < 1.0

    def polynomials(self, steps=None):
        """The coefficient tuples of the first ``steps`` steps.

        Raises
        ------
        ValueError
            If ``steps`` is negative, or exceeds a schedule whose tail is ``"stop"``.
        """
        steps = self.default_steps if steps is None else int(steps)
        listed = len(self.coefficients)
        if steps < 0 or (self.tail == "stop" and steps > listed):
            msg = f"schedule {self.name!r} takes 0 to {listed} steps; got steps={steps}"
            raise ValueError(msg)
        extra = max(0, steps - listed)
        return self.coefficients[:steps] + (self.coefficients[-1],) * extra


def scalar_map(coefficients, x):
    """Evaluate the odd polynomial ``c0 x + c1 x^3 + ...`` at ``x`` (NumPy, float64)."""
    x = np.asarray(x, dtype=np.float64)
    x2 = x * x
    acc = np.zeros_like(x)
    for c in reversed(coefficients):
        acc = acc * x2 + c
    return acc * x


def _image(coefficients, lo, hi):
    """Exact image ``[min p, max p]`` of ``[lo, hi]``: endpoints and critical points."""
    derivative = [(2 * k + 1) * c for k, c in enumerate(coefficients)]
    # p'(x) is a polynomial in y = x^2; its positive roots y give critical points sqrt(y).
    roots = np.roots(derivative[::-1]) if len(derivative) > 1 else np.array([])
    real = roots[np.abs(roots.imag) <= 1e-12 * np.maximum(1.0, np.abs(roots))].real
    critical = np.sqrt(real[real > 0])
    points = np.concatenate([[lo, hi], critical[(critical > lo) & (critical < hi)]])
    values = scalar_map(coefficients, points)
    return float(values.min()), float(values.max())


def band(schedule, lower, *, steps=None, upper=1.0):
    """Guaranteed interval that singular values in ``[lower, upper]`` land in.

    Parameters
    ----------
    schedule : Schedule or str
        A schedule or a preset name.
    lower : float
        Smallest singular value of the normalised input, ``0 < lower <= upper``.
    steps : int, optional
        Steps to apply (the schedule's default when omitted).
    upper : float, default 1.0
        Largest singular value of the normalised input.

    Returns
    -------
    tuple of float
        ``(lo, hi)``: every singular value of the output lies in this interval.

    Raises
    ------
    ValueError
        If ``lower`` is not in ``(0, upper]``.

    Notes
    -----
    The image of an interval under a polynomial is spanned by its values at the
    endpoints and at the critical points inside; composing these images step by
    step gives the exact band of the composed scalar map, with no sampling. A
    ``lo <= 0`` means the schedule can flip or annihilate small singular values.

    Examples
    --------
    >>> from matsign import polynomials
    >>> lo, hi = polynomials.band("quintic", 1e-3, steps=20)
    >>> abs(lo - 1) < 1e-12 and abs(hi - 1) < 1e-12
    True
    """
    schedule = preset(schedule) if isinstance(schedule, str) else schedule
    if not 0 < lower <= upper:
        msg = f"band needs 0 < lower <= upper; got lower={lower}, upper={upper}"
        raise ValueError(msg)
    lo, hi = float(lower), float(upper)
    for coefficients in schedule.polynomials(steps):
        lo, hi = _image(coefficients, lo, hi)
    return lo, hi


# --- Presets ------------------------------------------------------------------------------

_PE_PAPER_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)


def _with_safety(coefficients, safety):
    """Replace ``p(x)`` by ``p(x / safety)``: the paper's guard against round-off."""
    return tuple(
        tuple(c / safety ** (2 * k + 1) for k, c in enumerate(poly)) for poly in coefficients
    )


_PRESETS = {
    "cubic": Schedule(
        name="cubic",
        coefficients=((1.5, -0.5),),
        tail="repeat",
        default_steps=24,
        source="Classical cubic Newton–Schulz: Higham, Functions of Matrices (2008), eq. 8.20.",
    ),
    "quintic": Schedule(
        name="quintic",
        coefficients=((15 / 8, -10 / 8, 3 / 8),),
        tail="repeat",
        default_steps=16,
        source="Classical quintic Newton–Schulz (Padé family), Higham (2008), sec. 8.8.",
    ),
    "jordan": Schedule(
        name="jordan",
        coefficients=((3.4445, -4.7750, 2.0315),),
        tail="repeat",
        default_steps=5,
        source="Keller Jordan, Muon (2024), github.com/KellerJordan/Muon.",
    ),
    "you5": Schedule(
        name="you5",
        coefficients=(
            (4.0848, -6.8946, 2.9270),
            (3.9505, -6.3029, 2.6377),
            (3.7418, -5.5913, 2.3037),
            (2.8769, -3.1427, 1.2046),
            (2.8366, -3.0525, 1.2012),
        ),
        default_steps=5,
        source="Jiacheng You, 5-step list (x.com/YouJiacheng/status/1905861218138804534).",
    ),
    "you6": Schedule(
        name="you6",
        coefficients=(
            (3955 / 1024, -8306 / 1024, 5008 / 1024),
            (3735 / 1024, -6681 / 1024, 3463 / 1024),
            (3799 / 1024, -6499 / 1024, 3211 / 1024),
            (4019 / 1024, -6385 / 1024, 2906 / 1024),
            (2677 / 1024, -3029 / 1024, 1162 / 1024),
            (2172 / 1024, -1833 / 1024, 682 / 1024),
        ),
        default_steps=6,
        source="Jiacheng You, 6-step list (x.com/YouJiacheng/status/1893704552689303901), "
        "as used in modula.",
    ),
    "polar_express": Schedule(
        name="polar_express",
        coefficients=_with_safety(_PE_PAPER_RAW[:-1], 1.01) + (_PE_PAPER_RAW[-1],),
        tail="repeat",
        default_steps=8,
        normalizer=1.01,
        source="Amsel, Persson, Musco, Gower, The Polar Express (2025), arXiv:2505.16932, "
        "Algorithm 1: degree 5, l = 1e-3, safety 1.01 on all but the last polynomial.",
    ),
    "polar_express_5": Schedule(
        name="polar_express_5",
        coefficients=(
            (8.156554524902461, -22.48329292557795, 15.878769915207462),
            (4.042929935166739, -2.808917465908714, 0.5000178451051316),
            (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
            (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
            (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
        ),
        default_steps=5,
        normalizer=1.02,
        source="modded-nanogpt (github.com/KellerJordan/modded-nanogpt), Polar Express "
        "5-step list generated with safety 2e-2 and cushion 2; input scaled by 1/(1.02 ||G||_F).",
    ),
}


def names():
    """Names of every preset schedule, sorted.

    Examples
    --------
    >>> from matsign import polynomials
    >>> "polar_express" in polynomials.names()
    True
    """
    return sorted(_PRESETS)


def preset(name):
    """The preset :class:`Schedule` called ``name``.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.

    Examples
    --------
    >>> from matsign import polynomials
    >>> polynomials.preset("jordan").coefficients
    ((3.4445, -4.775, 2.0315),)
    """
    try:
        return _PRESETS[name]
    except KeyError:
        msg = f"unknown schedule {name!r}; known: {', '.join(names())}"
        raise ValueError(msg) from None
