"""Benchmarks for `matsign.optim.plan`: the flops imbalance of each scheme, and `cost`'s time.

The imbalance figures are exact properties of the work assignment (`plan.cost`: the
busiest rank's Newton–Schulz flops over the ideal share, 1.0 is perfect), not
measurements: they change only when `plan.split` or a scheme's model changes, and asv's
history then shows when. The parameter set is GPT-2 small's 72 Muon matrices
(`plan.model_shapes`), the structure ``bench_optim.gpt2_like_parameters`` builds.
"""

from matsign.optim import plan

RANKS = [2, 4, 8]


class TrackImbalance:
    """Busiest rank over the ideal share of one Muon step on GPT-2 small, replicated."""

    params = (list(plan.SCHEMES), RANKS)
    param_names = ("scheme", "ranks")

    def setup(self, scheme, ranks):
        self.shapes = plan.model_shapes("gpt2-small")

    def track_imbalance(self, scheme, ranks):
        return plan.cost(self.shapes, ranks, scheme=scheme).imbalance

    track_imbalance.unit = "busiest / ideal flops"


class TimeCost:
    """`plan.cost` of Llama-3-70B's 560 matrices on 1024 ranks (pure Python)."""

    params = (["matsign", "dion"], list(plan.LAYOUTS))
    param_names = ("scheme", "layout")

    def setup(self, scheme, layout):
        self.shapes = plan.model_shapes("llama-3-70b")

    def time_cost(self, scheme, layout):
        plan.cost(self.shapes, 1024, scheme=scheme, layout=layout)
