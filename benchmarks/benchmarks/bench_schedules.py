"""Benchmarks for `matsign.polynomials`: the exact band of every preset, and design time.

The band figures are exact properties of each schedule's scalar map (`polynomials.band`),
not measurements: they change only when a preset or the band computation changes, and
asv's history then shows when. ``lower`` is the smallest singular value of the
normalised input; each preset runs its default number of steps.
"""

from matsign import polynomials

LOWERS = ["1e-3", "1e-2"]


class TrackPresetBand:
    """Where singular values in ``[lower, 1]`` land after each preset's default steps."""

    params = (polynomials.names(), LOWERS)
    param_names = ("preset", "lower")

    def setup(self, preset, lower):
        self.band = polynomials.band(preset, float(lower))

    def track_band_lower(self, preset, lower):
        return self.band[0]

    def track_band_upper(self, preset, lower):
        return self.band[1]

    def track_band_deviation(self, preset, lower):
        return max(1.0 - self.band[0], self.band[1] - 1.0)

    track_band_lower.unit = "sigma"
    track_band_upper.unit = "sigma"
    track_band_deviation.unit = "max |sigma - 1|"


class TimeDesign:
    """`polynomials.design` from ``lower = 1e-3``: Remez with exact rational solves."""

    params = ([3, 5, 7], [5, 10])
    param_names = ("degree", "steps")

    def time_design(self, degree, steps):
        polynomials.design(1e-3, steps, degree, safety=1.01, cushion=0.02)
