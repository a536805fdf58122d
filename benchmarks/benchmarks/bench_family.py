"""Adafactor and Tiger beside their peers: agreement over 20 steps and step time.

Peers: ``torch.optim.Adafactor`` and, when installed, ``pytorch_optimizer.AdaFactor`` and
``pytorch_optimizer.Tiger`` (pytorch-optimizer is not a dependency of matsign or of its
tests; install it with ``pip install --no-deps pytorch-optimizer``). A row whose peer is
missing raises `NotImplementedError` in ``setup`` (asv: skipped).

Agreement (`TrackFamilyAgreement`, `PAIRS`): a small MLP with biases (12-24-24-8, float32,
seed 0) trained 20 steps on the same batches by each side of a pair; the figure is the
largest relative difference ``||p - q|| / ||q||`` over the parameters. The pairs:

- ``Adafactor/torch``: `matsign.optim.torch.Adafactor` and torch.optim.Adafactor, defaults;
- ``Adafactor/pytorch_optimizer``: the same class and pytorch-optimizer's AdaFactor with
  its momentum off (``betas=(None, 0.999)``) and ``lr=1e-2``: pytorch-optimizer adds
  ``eps1 = 1e-30`` to ``g^2`` where torch clamps, caps ``beta2`` at 0.999 (reached after
  5623 steps) and, with ``relative_step=True`` (its default), ignores ``lr`` for the
  fixed cap 1e-2; its default momentum (``betas[0] = 0.9``, kept in bfloat16) has no
  counterpart in torch's Adafactor;
- ``Adafactor-momentum/pytorch_optimizer``: `matsign.optim.adafactor` with ``b1=0.9,
  eps_mode="add"`` (the paper's eps, tensor2tensor's momentum over the scaled step), run
  through `matsign.optim.multi`, and pytorch-optimizer's AdaFactor with
  ``momentum_dtype=torch.float32``;
- ``Tiger/pytorch_optimizer``: `matsign.optim.torch.Tiger` and pytorch-optimizer's Tiger,
  ``lr=1e-3, beta=0.965, weight_decay=0.01`` (its defaults).

Step time (`TimeFamilyStep`): one ``step()`` over a GPT-2-like parameter set at ``width``
(12 blocks of four d x d, one d x 4d and one 4d x d matrices and two LayerNorm vectors of
d, fixed Gaussian gradients). Run as a script for interleaved rounds (each round times
every row once, rows rotated; ratios are medians of per-round ratios)::

    python benchmarks/benchmarks/bench_family.py --width 256 --repeat 15
"""

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import statistics
import sys
from pathlib import Path

try:
    from . import THREADS, cpu_model, pin_threads, rotated_rounds, sizes
except ImportError:  # run as a script: python benchmarks/benchmarks/bench_family.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package's folder
    from benchmarks import THREADS, cpu_model, pin_threads, rotated_rounds, sizes

try:
    import torch
except ImportError:
    torch = None

ROWS = ["matsign.Adafactor", "torch.optim.Adafactor", "pytorch_optimizer.AdaFactor",
        "matsign.Tiger", "pytorch_optimizer.Tiger"]
PAIRS = ["Adafactor/torch", "Adafactor/pytorch_optimizer",
         "Adafactor-momentum/pytorch_optimizer", "Tiger/pytorch_optimizer"]
RATIOS = [("matsign.Adafactor", "torch.optim.Adafactor"),
          ("matsign.Adafactor", "pytorch_optimizer.AdaFactor"),
          ("matsign.Tiger", "pytorch_optimizer.Tiger")]
WIDTHS = sizes(["256"], ["64"])
BLOCKS = 12
TIGER = {"lr": 1e-3, "beta": 0.965, "weight_decay": 0.01}  # pytorch-optimizer's defaults
NO_MOMENTUM = {"lr": 1e-2, "betas": (None, 0.999)}  # pytorch-optimizer's AdaFactor, momentum off


def require(row):
    """Raise `NotImplementedError` (asv: skip) when ``row`` cannot run here."""
    if torch is None:
        raise NotImplementedError("torch is not installed")
    if "pytorch_optimizer" in row and importlib.util.find_spec("pytorch_optimizer") is None:
        raise NotImplementedError("pytorch-optimizer is not installed (pip install --no-deps "
                                  "pytorch-optimizer)")


def make(row, params):
    """``row``'s optimizer over ``params`` (the options named in the module notes)."""
    from matsign.optim import torch as mt

    if row == "matsign.Adafactor":
        return mt.Adafactor(params)
    if row == "torch.optim.Adafactor":
        return torch.optim.Adafactor(params)
    if row == "matsign.Tiger":
        return mt.Tiger(params, **TIGER)
    import pytorch_optimizer

    if row == "pytorch_optimizer.AdaFactor":
        return pytorch_optimizer.AdaFactor(params, **NO_MOMENTUM)
    return pytorch_optimizer.Tiger(params, **TIGER)


# --- Agreement -----------------------------------------------------------------------------


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.Tanh(),
                               torch.nn.Linear(24, 24), torch.nn.Tanh(),
                               torch.nn.Linear(24, 8))


def _batches(steps=20):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 12, generator=g), torch.randn(32, 8, generator=g))
            for _ in range(steps)]


def _trained(step_with):
    """The parameters after 20 steps, ``step_with(params)`` giving the step function."""
    model = _model()
    params = list(model.parameters())
    step = step_with(params)
    for x, y in _batches():
        for p in params:
            p.grad = None
        ((model(x) - y) ** 2).mean().backward()
        step()
    return [p.detach().clone() for p in params]


def _functional(stepper):
    """``step_with`` for a matsign functional stepper applied through `matsign.optim.multi`."""
    from matsign import optim

    def step_with(params):
        engine = optim.multi(stepper, reshape="batch")
        state = [engine.init(dict(enumerate(p.detach() for p in params)))]

        def step():
            with torch.no_grad():
                grads = dict(enumerate(p.grad for p in params))
                updates, state[0] = engine.update(grads, state[0],
                                                  dict(enumerate(p.detach() for p in params)))
                for i, p in enumerate(params):
                    p.add_(updates[i])

        return step

    return step_with


def _optimizer(factory):
    return lambda params: factory(params).step


def agreement(pair):
    """The largest relative difference of the parameters after 20 steps (see `PAIRS`)."""
    from matsign import optim

    if pair == "Adafactor/torch":
        sides = (_optimizer(lambda p: make("matsign.Adafactor", p)),
                 _optimizer(lambda p: torch.optim.Adafactor(p, foreach=False)))
    elif pair == "Adafactor/pytorch_optimizer":
        sides = (_optimizer(lambda p: make("matsign.Adafactor", p)),
                 _optimizer(lambda p: make("pytorch_optimizer.AdaFactor", p)))
    elif pair == "Adafactor-momentum/pytorch_optimizer":
        import pytorch_optimizer

        sides = (_functional(optim.adafactor(1e-2, b1=0.9, eps_mode="add")),
                 _optimizer(lambda p: pytorch_optimizer.AdaFactor(
                     p, lr=1e-2, betas=(0.9, 0.999), momentum_dtype=torch.float32)))
    else:
        sides = (_optimizer(lambda p: make("matsign.Tiger", p)),
                 _optimizer(lambda p: make("pytorch_optimizer.Tiger", p)))
    mine, peer = (_trained(side) for side in sides)
    return max(float((a - b).norm() / b.norm()) for a, b in zip(mine, peer, strict=True))


class TrackFamilyAgreement:
    """Largest relative parameter difference after 20 steps, matsign against a peer."""

    params = (PAIRS,)
    param_names = ("pair",)

    def setup(self, pair):
        require("pytorch_optimizer" if "pytorch_optimizer" in pair else "torch")
        pin_threads()

    def track_max_relative_difference(self, pair):
        return agreement(pair)

    track_max_relative_difference.unit = "max ||p - q|| / ||q||"


# --- Step time -----------------------------------------------------------------------------


def gpt2_like_parameters(width, seed=0):
    """Per block four d x d, one d x 4d, one 4d x d matrix and two vectors, with gradients."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(width, width)] * 4 + [(4 * width, width), (width, 4 * width)]
    shapes += [(width,), (width,)]
    params = []
    for _ in range(BLOCKS):
        for shape in shapes:
            p = torch.nn.Parameter(0.02 * torch.randn(shape, generator=g))
            p.grad = torch.randn(shape, generator=g)
            params.append(p)
    return params


class TimeFamilyStep:
    """Seconds per ``step()`` over the GPT-2-like set (see the module notes)."""

    params = (ROWS, WIDTHS)
    param_names = ("implementation", "width")
    timeout = 300
    number = 1
    repeat = (3, 15, 20.0)
    warmup_time = 0

    def setup(self, row, width):
        require(row)
        pin_threads()
        self.opt = make(row, gpt2_like_parameters(int(width)))
        self.opt.step()  # state: untimed

    def time_step(self, row, width):
        self.opt.step()


# --- Script --------------------------------------------------------------------------------


def measure(width, repeat):
    """Seconds per step of every row that can run here, in interleaved rounds."""
    rows = []
    for row in ROWS:
        with contextlib.suppress(NotImplementedError):
            require(row)
            rows.append(row)
    optimizers = {row: make(row, gpt2_like_parameters(width)) for row in rows}
    for opt in optimizers.values():
        opt.step()
    return rotated_rounds({row: opt.step for row, opt in optimizers.items()}, repeat)



def report(width, repeat):
    """Print the agreement of each pair and the step times with their ratios."""
    import matsign

    versions = f"torch {torch.__version__}, matsign {matsign.__version__}"
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions += f", pytorch-optimizer {importlib.metadata.version('pytorch-optimizer')}"
    print(f"{versions}; {cpu_model()}, {os.cpu_count()} CPUs, {THREADS} thread(s)")
    print("agreement after 20 steps (max relative parameter difference):")
    for pair in PAIRS:
        with contextlib.suppress(NotImplementedError):
            require("pytorch_optimizer" if "pytorch_optimizer" in pair else "torch")
            print(f"  {pair:<40}{agreement(pair):.2e}")
    seconds = measure(width, repeat)
    count = sum(p.numel() for p in gpt2_like_parameters(width))
    print(f"step time, width {width} ({count / 1e6:.1f}M parameters, float32), {repeat} "
          f"interleaved rounds:")
    for row, values in seconds.items():
        print(f"  {row:<40}{statistics.median(values) * 1e3:>9.2f} ms (median)")
    for mine, peer in RATIOS:
        if mine in seconds and peer in seconds:
            ratio = statistics.median(a / b for a, b in zip(seconds[mine], seconds[peer],
                                                            strict=True))
            print(f"  {mine} / {peer}: {ratio:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=int(WIDTHS[0]))
    parser.add_argument("--repeat", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args(argv)
    require("torch")
    pin_threads()
    report(args.width, args.repeat)


if __name__ == "__main__":
    main()
