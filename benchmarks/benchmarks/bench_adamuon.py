"""AdaMuon and NorMuon beside their peers: agreement over 20 steps and step time.

Peers, each optional (a row whose peer is missing raises `NotImplementedError` in
``setup``; asv skips it):

- ``pytorch_optimizer.AdaMuon`` and ``pytorch_optimizer.NorMuon`` (``pip install --no-deps
  pytorch-optimizer``; not a dependency of matsign or of its tests);
- the NorMuon authors' ``SingleDeviceNorMuon``, from the file ``normuon.py`` of
  github.com/zichongli5/NorMuon named by the environment variable
  ``MATSIGN_NORMUON_REFERENCE`` (it is not on PyPI; its one dependency is torch). The
  AdaMuon authors' class needs CUDA and a process group whose ``all_gather`` takes a 2-D
  buffer (gloo refuses it), so it has no row here; the tests transcribe its step.

Agreement (`TrackAdaMuonAgreement`, `PAIRS`): an MLP of matrices only (12-24-24-24-8,
float32, seed 0) trained 20 steps on the same batches by each side; the figure is the
largest relative difference ``||p - q|| / ||q||`` over the parameters. The peers run their
Newton–Schulz in bfloat16 (all of them cast to it); a pair ending in ``-float32`` runs
theirs in float32 (the module's function replaced by the same loop without the cast, or
pytorch-optimizer's ``dtype=torch.float32``) and matsign's too, which isolates the
algorithm from the bfloat16 rounding. The matsign side is configured as each peer:

- ``NorMuon/reference``: `matsign.optim.torch.NorMuon` with its defaults and
  ``SingleDeviceNorMuon`` (``lr=0.02, weight_decay=0, momentum=0.95, beta2=0.95``);
- ``NorMuon/pytorch_optimizer``: the same and ``pytorch_optimizer.NorMuon`` (defaults:
  the reference's step);
- ``AdaMuon/pytorch_optimizer``: `matsign.optim.torch.AdaMuon` set to pytorch-optimizer's
  variant, which is the AdaMuon authors' first release rather than their current code: no
  sign, no Nesterov, ``betas=(0.9, 0.95)``, a bias-corrected moment, ``eps=1e-10`` and its
  default ``use_adjusted_lr=True``, a learning rate times ``0.2 sqrt(max(m, n))`` on top of
  the RMS of 0.2 (``rms=0.04 sqrt(max(m, n))`` per shape here).

Step time (`TimeAdaMuonStep`): one ``step()`` over the matrices of a GPT-2-like model at
``width`` (12 blocks of four d x d, one 4d x d and one d x 4d matrix, fixed Gaussian
gradients), every Newton–Schulz in bfloat16; ``matsign.AdaMuon`` runs its defaults (the
authors' current step), ``matsign.Muon`` is the baseline, and a row ending in ``-match``
uses ``match="torch.optim.Muon"`` (torch.optim.Muon's rounding and batched products in
place of matsign's kernels). Run as a
script for interleaved rounds (each round times every row once, rows rotated; ratios are
medians of per-round ratios)::

    MATSIGN_NORMUON_REFERENCE=/path/to/normuon.py \\
        python benchmarks/benchmarks/bench_adamuon.py --width 256 --repeat 15
"""

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import math
import os
import statistics
import sys
from pathlib import Path

try:
    from . import THREADS, cpu_model, pin_threads, rotated_rounds, sizes
except ImportError:  # run as a script: python benchmarks/benchmarks/bench_adamuon.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package's folder
    from benchmarks import THREADS, cpu_model, pin_threads, rotated_rounds, sizes

try:
    import torch
except ImportError:
    torch = None

ROWS = ["matsign.AdaMuon", "matsign.AdaMuon-match", "pytorch_optimizer.AdaMuon",
        "matsign.NorMuon", "matsign.NorMuon-match", "reference.NorMuon",
        "pytorch_optimizer.NorMuon", "matsign.Muon", "matsign.Muon-match"]
PAIRS = ["NorMuon/reference", "NorMuon/reference-float32", "NorMuon/pytorch_optimizer",
         "NorMuon/pytorch_optimizer-float32", "AdaMuon/pytorch_optimizer",
         "AdaMuon/pytorch_optimizer-float32"]
RATIOS = [("matsign.AdaMuon", "pytorch_optimizer.AdaMuon"),
          ("matsign.NorMuon", "reference.NorMuon"),
          ("matsign.NorMuon", "pytorch_optimizer.NorMuon"),
          ("matsign.AdaMuon-match", "pytorch_optimizer.AdaMuon"),
          ("matsign.NorMuon-match", "reference.NorMuon"),
          ("matsign.NorMuon-match", "pytorch_optimizer.NorMuon"),
          ("matsign.AdaMuon", "matsign.Muon"), ("matsign.NorMuon", "matsign.Muon"),
          ("matsign.AdaMuon-match", "matsign.Muon-match"),
          ("matsign.NorMuon-match", "matsign.Muon-match")]
WIDTHS = sizes(["256"], ["64"])
BLOCKS = 12
REFERENCE = "MATSIGN_NORMUON_REFERENCE"
ADAMUON_LR = 1e-3


def require(row):
    """Raise `NotImplementedError` (asv: skip) when ``row`` cannot run here."""
    if torch is None:
        raise NotImplementedError("torch is not installed")
    if "pytorch_optimizer" in row and importlib.util.find_spec("pytorch_optimizer") is None:
        raise NotImplementedError("pytorch-optimizer is not installed (pip install --no-deps "
                                  "pytorch-optimizer)")
    if "reference" in row and not Path(os.environ.get(REFERENCE, "")).is_file():
        raise NotImplementedError(f"{REFERENCE} does not name the NorMuon authors' normuon.py")


@functools.cache
def _reference_module():
    spec = importlib.util.spec_from_file_location("normuon_reference", os.environ[REFERENCE])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _float32_newton_schulz(G, steps=5):
    """The references' ``zeropower_via_newtonschulz5`` loop without its bfloat16 cast."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.float()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if G.size(-2) > G.size(-1) else X


@contextlib.contextmanager
def _peers_in_float32():
    """Run the peers' Newton–Schulz in float32 while the block is active."""
    patches = []
    if Path(os.environ.get(REFERENCE, "")).is_file():
        patches.append((_reference_module(), "zeropower_via_newtonschulz5",
                        _float32_newton_schulz))
    if importlib.util.find_spec("pytorch_optimizer") is not None:
        from pytorch_optimizer.optimizer.muon import adamuon, base, normuon

        for module in (adamuon, base, normuon):
            original = module.zero_power_via_newton_schulz_5
            patches.append((module, "zero_power_via_newton_schulz_5",
                            functools.partial(original, dtype=torch.float32)))
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, value in patches:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _adamuon_groups(params):
    """pytorch-optimizer's AdaMuon as matsign's: one group per shape, its RMS in ``rms``."""
    shapes = {}
    for p in params:
        shapes.setdefault(tuple(p.shape), []).append(p)
    return [{"params": group, "rms": 0.04 * math.sqrt(max(shape[0], math.prod(shape[1:])))}
            for shape, group in shapes.items()]


def make(row, params, ns_dtype="bfloat16"):
    """``row``'s optimizer over ``params`` (the options named in the module notes)."""
    from matsign.optim import torch as mt

    dtype = getattr(torch, ns_dtype)
    kernel = {}
    if row.endswith("-match"):  # torch.optim.Muon's Newton–Schulz kernel (batched products)
        row, kernel = row.removesuffix("-match"), {"match": "torch.optim.Muon"}
    if row == "matsign.NorMuon":
        return mt.NorMuon(params, ns_dtype=dtype, **kernel)
    if row == "matsign.Muon":
        return mt.Muon(params, lr=0.02, weight_decay=0.0, **kernel)
    if row == "matsign.AdaMuon":
        return mt.AdaMuon(params, lr=ADAMUON_LR, weight_decay=0.0, ns_dtype=dtype, **kernel)
    if row == "matsign.AdaMuon-as-pytorch_optimizer":
        return mt.AdaMuon(_adamuon_groups(params), lr=ADAMUON_LR, weight_decay=0.0,
                          momentum=0.9, beta2=0.95, nesterov=False, sign=False,
                          bias_correction=True, eps=1e-10, ns_dtype=dtype)
    if row == "reference.NorMuon":
        return _reference_module().SingleDeviceNorMuon(params)
    import pytorch_optimizer

    if row == "pytorch_optimizer.NorMuon":
        return pytorch_optimizer.NorMuon([{"params": params, "use_muon": True}])
    return pytorch_optimizer.AdaMuon([{"params": params, "use_muon": True}], lr=ADAMUON_LR)


# --- Agreement -----------------------------------------------------------------------------


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 24, bias=False), torch.nn.Tanh(),
                               torch.nn.Linear(24, 24, bias=False), torch.nn.Tanh(),
                               torch.nn.Linear(24, 24, bias=False), torch.nn.Tanh(),
                               torch.nn.Linear(24, 8, bias=False))


def _trained(factory):
    model = _model()
    params = list(model.parameters())
    opt = factory(params)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x, y = torch.randn(32, 12, generator=g), torch.randn(32, 8, generator=g)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in params]


def agreement(pair):
    """The largest relative difference of the parameters after 20 steps (see `PAIRS`)."""
    name, _, peer = pair.partition("/")
    peer, _, precision = peer.partition("-")
    dtype = precision or "bfloat16"
    mine = "matsign.AdaMuon-as-pytorch_optimizer" if name == "AdaMuon" else f"matsign.{name}"
    context = _peers_in_float32() if precision else contextlib.nullcontext()
    with context:
        ours = _trained(lambda p: make(mine, p, dtype))
        theirs = _trained(lambda p: make(f"{peer}.{name}", p))
    return max(float((a - b).norm() / b.norm()) for a, b in zip(ours, theirs, strict=True))


def _require_pair(pair):
    peer = pair.partition("/")[2].partition("-")[0]
    require(peer)


class TrackAdaMuonAgreement:
    """Largest relative parameter difference after 20 steps, matsign against a peer."""

    params = (PAIRS,)
    param_names = ("pair",)

    def setup(self, pair):
        _require_pair(pair)
        pin_threads()

    def track_max_relative_difference(self, pair):
        return agreement(pair)

    track_max_relative_difference.unit = "max ||p - q|| / ||q||"


# --- Step time -----------------------------------------------------------------------------


def gpt2_like_matrices(width, seed=0):
    """Per block four d x d, one 4d x d and one d x 4d matrix, with gradients."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(width, width)] * 4 + [(4 * width, width), (width, 4 * width)]
    params = []
    for _ in range(BLOCKS):
        for shape in shapes:
            p = torch.nn.Parameter(0.02 * torch.randn(shape, generator=g))
            p.grad = torch.randn(shape, generator=g)
            params.append(p)
    return params


class TimeAdaMuonStep:
    """Seconds per ``step()`` over the GPT-2-like matrices (see the module notes)."""

    params = (ROWS, WIDTHS)
    param_names = ("implementation", "width")
    timeout = 300
    number = 1
    repeat = (3, 15, 20.0)
    warmup_time = 0

    def setup(self, row, width):
        require(row)
        pin_threads()
        self.opt = make(row, gpt2_like_matrices(int(width)))
        self.opt.step()  # state: untimed

    def time_step(self, row, width):
        self.opt.step()  # (the reference's Nesterov overwrites the gradient: same cost)


# --- Script --------------------------------------------------------------------------------


def measure(width, repeat):
    """Seconds per step of every row that can run here, in interleaved rounds."""
    rows = []
    for row in ROWS:
        with contextlib.suppress(NotImplementedError):
            require(row)
            rows.append(row)
    sets = {row: gpt2_like_matrices(width) for row in rows}
    grads = {row: [p.grad.clone() for p in sets[row]] for row in rows}
    optimizers = {row: make(row, sets[row]) for row in rows}
    for opt in optimizers.values():
        opt.step()

    def restore(row):  # the reference's Nesterov overwrites the gradient
        for p, grad in zip(sets[row], grads[row], strict=True):
            p.grad = grad.clone()

    return rotated_rounds({row: opt.step for row, opt in optimizers.items()}, repeat,
                          before=restore)



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
            _require_pair(pair)
            print(f"  {pair:<40}{agreement(pair):.2e}")
    seconds = measure(width, repeat)
    count = sum(p.numel() for p in gpt2_like_matrices(width))
    print(f"step time, width {width} ({count / 1e6:.1f}M parameters, float32, Newton–Schulz "
          f"in bfloat16), {repeat} interleaved rounds:")
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
