"""AdamW, Muon and SOAP beside HeavyBall's: agreement over 20 steps and step time.

HeavyBall (``pip install --no-deps heavyball``; 3.2.1 read and measured) is not a
dependency of matsign or of its tests; a row without it raises `NotImplementedError` in
``setup`` (asv: skipped). HeavyBall compiles its kernels with ``torch.compile`` unless
``heavyball.utils.compile_mode`` is None: the agreement and the asv rows run it eager
(`heavyball_module`); the script's ``--compile`` adds timed rows with its default mode.
HeavyBall sets ``p.grad`` to None after each step, so every timed step is given its
gradients again, on both sides.

Agreement (`TrackHeavyBallAgreement`, `PAIRS`): a small MLP (seed 0) trained 20 steps on
the same batches by each side; the figure is the largest ``||p - q|| / ||q||`` over the
parameters. The learning rates are powers of two, as HeavyBall rounds ``lr`` to a
float32 tensor (``base_lr * step / max(step, warmup + 1)``). Both sides are set to one
algorithm as far as their options allow:

- AdamW: ``lr=2**-10, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01`` on both
  (HeavyBall's defaults are ``lr=0.0025, betas=(0.9, 0.99), weight_decay=0``). HeavyBall
  keeps the bias-corrected moments (an EMA with the debiased ``beta``) and divides by
  ``max(sqrt(v_hat), eps)`` where matsign, as torch, divides by ``sqrt(v_hat) + eps``;
- Muon: `matsign.optim.torch.Muon` with ``momentum=0.9, ns_coefficients="you5"``
  (bfloat16 iteration, its default) and ``heavyball.Muon(heavyball_momentum=True,
  nesterov=True)``: HeavyBall's Nesterov sum ``g + beta (beta v + g)`` is ``1 / (1 -
  beta)`` times Muon's ``lerp(g, lerp(buf, g, 1 - beta), beta)``, which the Frobenius
  normalisation removes; its five Newton-Schulz steps are matsign's ``"you5"`` preset,
  the scale ``sqrt(max(1, m / n))`` is matsign's default. HeavyBall rounds the
  normalised matrix to bfloat16 stochastically (draws from torch's global generator)
  and iterates in bfloat16; in float64 (``storage_dtype="float64"``) it iterates in
  float64 without rounding. Its default momentum (``nesterov_ema``: ``g + EMA``) is not
  Muon's and has no matsign option. Muon takes matrices only (no biases here);
- SOAP: a 16-16-16-16 MLP with biases (every factor of full rank from the first
  batch), ``lr=2**-8, weight_decay=0.01``, ``b1=0.9, b2=0.95, beta=0.95, eps=1e-8,
  every=1`` against ``betas=(0.9, 0.95), shampoo_beta=0.95, eps=1e-8,
  precondition_frequency=1``. HeavyBall adds ``max(1e-8, 64 n eps_dtype) |lambda_max|``
  times the old basis to its power iteration before the QR (1.2e-4 of the largest
  eigenvalue for n = 16 in float32), has the eps placement of its AdamW, skips the
  first step as the reference does, and refreshes on the optimizer steps where a running
  sum of ``1 / precondition_frequency`` passes an integer (steps 2, 4, ... for 2;
  matsign, as the reference: every ``every`` Adam steps, optimizer steps 3, 5, ...).

Step time (`TimeHeavyBallStep`): one ``step()`` over a GPT-2-like parameter set at
``width`` (12 blocks of four d x d, one d x 4d and one 4d x d matrices and two vectors of
d, fixed Gaussian gradients; Muon without the vectors), the agreement's options (SOAP
refreshing every step on both sides). Run as a script for interleaved rounds (each round
times every row once, rows rotated; ratios are medians of per-round ratios)::

    python benchmarks/benchmarks/bench_heavyball.py --repeat 11 [--compile]
"""

import argparse
import importlib.metadata
import importlib.util
import itertools
import os
import statistics
import sys
from pathlib import Path

try:
    from . import THREADS, cpu_model, pin_threads, rotated_rounds, sizes
except ImportError:  # run as a script: python benchmarks/benchmarks/bench_heavyball.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package's folder
    from benchmarks import THREADS, cpu_model, pin_threads, rotated_rounds, sizes

try:
    import torch
except ImportError:
    torch = None

ALGORITHMS = ["AdamW", "Muon", "SOAP"]
ROWS = [f"{side}.{name}" for name in ALGORITHMS for side in ("matsign", "heavyball")]
WIDTHS = sizes(["128"], ["32"])
BLOCKS = 12
STEPS = 20
MLP = (12, 24, 24, 8)
SQUARE = (16, 16, 16, 16)  # SOAP: full-rank factors from the first batch of 32

ADAMW = {"lr": 2**-10, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
MUON = {"lr": 2**-6, "weight_decay": 0.01}
MUON_MATSIGN = {"momentum": 0.9, "ns_coefficients": "you5"}
MUON_HEAVYBALL = {"betas": (0.9, 0.99), "heavyball_momentum": True, "nesterov": True}
SOAP = {"lr": 2**-8, "weight_decay": 0.01}
SOAP_MATSIGN = {"b1": 0.9, "b2": 0.95, "beta": 0.95, "eps": 1e-8, "every": 1}
SOAP_HEAVYBALL = {"betas": (0.9, 0.95), "shampoo_beta": 0.95, "eps": 1e-8,
                  "precondition_frequency": 1}

_COMPILE_MODE = []  # heavyball.utils.compile_mode as imported (its default)


def heavyball_module(compiled=False):
    """HeavyBall, eager (``compile_mode = None``) or with its own compile mode."""
    import heavyball

    if not _COMPILE_MODE:
        _COMPILE_MODE.append(heavyball.utils.compile_mode)
    heavyball.utils.compile_mode = _COMPILE_MODE[0] if compiled else None
    return heavyball


def require(row="heavyball"):
    """Raise `NotImplementedError` (asv: skip) when ``row`` cannot run here."""
    if torch is None:
        raise NotImplementedError("torch is not installed")
    if "heavyball" in row and importlib.util.find_spec("heavyball") is None:
        raise NotImplementedError("heavyball is not installed (pip install --no-deps heavyball)")


def _storage(params):
    return {"storage_dtype": str(params[0].dtype).removeprefix("torch.")}


def make(row, params, **options):
    """``row``'s optimizer over ``params``: the module notes' options, updated by ``options``."""
    from matsign.optim import torch as mt

    side, name = row.split(".")
    if side == "matsign":
        if name == "AdamW":
            return mt.AdamW(params, **{**ADAMW, **options})
        if name == "Muon":
            return mt.Muon(params, **{**MUON, **MUON_MATSIGN, **options})
        return mt.SOAP(params, **{**SOAP, **SOAP_MATSIGN, **options})
    hb = heavyball_module()
    if name == "AdamW":
        return hb.AdamW(params, **{**ADAMW, **_storage(params), **options})
    if name == "Muon":
        return hb.Muon(params, **{**MUON, **MUON_HEAVYBALL, **_storage(params), **options})
    return hb.SOAP(params, **{**SOAP, **SOAP_HEAVYBALL, **_storage(params), **options})


# --- Agreement -----------------------------------------------------------------------------


def _pair(algorithm, mine=None, peer=None, *, sizes=MLP, bias=True, dtype="float32",
          mine_side="matsign", seed=2, note=""):
    return {"algorithm": algorithm, "mine": mine or {}, "peer": peer or {}, "sizes": sizes,
            "bias": bias, "dtype": dtype, "mine_side": mine_side, "seed": seed, "note": note}


PAIRS = {
    "AdamW": _pair("AdamW", note="rounding; eps placement"),
    "AdamW, eps=0, float64": _pair("AdamW", {"eps": 0.0}, {"eps": 0.0}, dtype="float64",
                                   note="rounding"),
    "Muon": _pair("Muon", bias=False, note="bfloat16 iterations"),
    "Muon, HeavyBall against itself": _pair("Muon", bias=False, mine_side="heavyball",
                                            seed=3, note="another stochastic rounding"),
    "Muon, float64": _pair("Muon", {"ns_dtype": None}, bias=False, dtype="float64",
                           note="rounding"),
    "Muon, HeavyBall's default momentum": _pair(
        "Muon", peer={"heavyball_momentum": False}, bias=False,
        note="g + EMA is not Muon's momentum"),
    "SOAP": _pair("SOAP", sizes=SQUARE, note="HeavyBall's lift before the QR"),
    "SOAP, float64": _pair("SOAP", sizes=SQUARE, dtype="float64", note="eps placement"),
    "SOAP, float64, eps=1e-30": _pair("SOAP", {"eps": 1e-30}, {"eps": 1e-30}, sizes=SQUARE,
                                      dtype="float64", note="lift floor 1e-8"),
    "SOAP, every 2": _pair("SOAP", {"every": 2}, {"precondition_frequency": 2}, sizes=SQUARE,
                           note="refreshes one step apart"),
    "SOAP, rank-deficient factors": _pair("SOAP", note="null-space bases arbitrary"),
}


def _model(sizes, bias, dtype):
    torch.manual_seed(0)
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(fan_in, fan_out, bias=bias, dtype=dtype), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def _batches(sizes, dtype):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, sizes[0], generator=g, dtype=dtype),
             torch.randn(32, sizes[-1], generator=g, dtype=dtype)) for _ in range(STEPS)]


def _trained(row, spec, options, seed):
    """The parameters after `STEPS` steps of ``row`` on the pair's model and batches."""
    dtype = getattr(torch, spec["dtype"])
    model = _model(spec["sizes"], spec["bias"], dtype)
    params = list(model.parameters())
    opt = make(row, params, **options)
    torch.manual_seed(seed)  # HeavyBall's stochastic rounding draws from the global generator
    for x, y in _batches(spec["sizes"], dtype):
        for p in params:
            p.grad = None
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in params]


def agreement(pair):
    """The largest relative difference of the parameters after 20 steps (see `PAIRS`)."""
    spec = PAIRS[pair]
    name = spec["algorithm"]
    mine = _trained(f"{spec['mine_side']}.{name}", spec, spec["mine"], 2)
    peer = _trained(f"heavyball.{name}", spec, spec["peer"], spec["seed"])
    return max(float((a - b).norm() / b.norm()) for a, b in zip(mine, peer, strict=True))


class TrackHeavyBallAgreement:
    """Largest relative parameter difference after 20 steps, matsign against HeavyBall."""

    params = (list(PAIRS),)
    param_names = ("pair",)

    def setup(self, pair):
        require()
        pin_threads()

    def track_max_relative_difference(self, pair):
        return agreement(pair)

    track_max_relative_difference.unit = "max ||p - q|| / ||q||"


# --- Step time -----------------------------------------------------------------------------


def gpt2_like_parameters(width, vectors=True, seed=0):
    """Per block four d x d, one d x 4d, one 4d x d matrix (and two vectors), with gradients."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(width, width)] * 4 + [(4 * width, width), (width, 4 * width)]
    shapes += [(width,), (width,)] if vectors else []
    params = []
    for _ in range(BLOCKS):
        for shape in shapes:
            p = torch.nn.Parameter(0.02 * torch.randn(shape, generator=g))
            p.grad = torch.randn(shape, generator=g)
            params.append(p)
    return params


class _Stepper:
    """One row's optimizer over its parameter set; ``step()`` restores the gradients first."""

    def __init__(self, row, width, compiled=False):
        self.params = gpt2_like_parameters(width, vectors=not row.endswith("Muon"))
        self.grads = [p.grad for p in self.params]
        self.compiled = compiled
        self.heavyball = row.startswith("heavyball")
        self.opt = make(row, self.params)

    def step(self):
        for p, g in zip(self.params, self.grads, strict=True):
            p.grad = g  # HeavyBall sets p.grad to None after its step
        if self.heavyball:
            heavyball_module(self.compiled)
        self.opt.step()


class TimeHeavyBallStep:
    """Seconds per ``step()`` over the GPT-2-like set (see the module notes), HeavyBall eager."""

    params = (ROWS, WIDTHS)
    param_names = ("implementation", "width")
    timeout = 300
    number = 1
    repeat = (3, 11, 30.0)
    warmup_time = 0

    def setup(self, row, width):
        require(row)
        pin_threads()
        self.stepper = _Stepper(row, int(width))
        self.stepper.step()  # state: untimed

    def time_step(self, row, width):
        self.stepper.step()


# --- Script --------------------------------------------------------------------------------


def measure(width, repeat, compiled=False):
    """Seconds per step of every row, in interleaved rounds (``compiled``: add HeavyBall's)."""
    rows = {row: (row, False) for row in ROWS}
    if compiled:
        rows.update({f"heavyball.{name} (compiled)": (f"heavyball.{name}", True)
                     for name in ALGORITHMS})
    steppers = {label: _Stepper(row, width, flag) for label, (row, flag) in rows.items()}
    for stepper in steppers.values():
        for _ in range(3 if stepper.compiled else 1):  # state; compilation (SOAP's second step)
            stepper.step()
    return rotated_rounds({label: stepper.step for label, stepper in steppers.items()}, repeat)



def _ratio(seconds, mine, peer):
    return statistics.median(a / b for a, b in zip(seconds[mine], seconds[peer], strict=True))


def report(width, repeat, compiled=False):
    """Print the agreement of each pair and the step times with their ratios."""
    import matsign

    print(f"torch {torch.__version__}, matsign {matsign.__version__}, heavyball "
          f"{importlib.metadata.version('heavyball')}; {cpu_model()}, {os.cpu_count()} CPUs, "
          f"{THREADS} thread(s)")
    print(f"agreement after {STEPS} steps (max relative parameter difference), float32 "
          f"unless named:")
    for pair, spec in PAIRS.items():
        print(f"  {pair:<38}{agreement(pair):>10.2e}   {spec['note']}")
    seconds = measure(width, repeat, compiled)
    count = sum(p.numel() for p in gpt2_like_parameters(width))
    print(f"step time, width {width} ({count / 1e6:.2f}M parameters, float32; Muon without "
          f"the vectors), {repeat} interleaved rounds:")
    for label, values in seconds.items():
        print(f"  {label:<38}{statistics.median(values) * 1e3:>10.2f} ms (median)")
    for name in ALGORITHMS:
        mine = f"matsign.{name}"
        line = f"  {mine} / heavyball.{name}: {_ratio(seconds, mine, f'heavyball.{name}'):.3f}"
        if compiled:
            line += f"; / compiled: {_ratio(seconds, mine, f'heavyball.{name} (compiled)'):.3f}"
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=int(WIDTHS[0]))
    parser.add_argument("--repeat", type=int, default=11, help="interleaved rounds")
    parser.add_argument("--compile", action="store_true",
                        help="also time HeavyBall compiled (torch.compile: minutes at first)")
    args = parser.parse_args(argv)
    require()
    pin_threads()
    report(args.width, args.repeat, args.compile)


if __name__ == "__main__":
    main()
