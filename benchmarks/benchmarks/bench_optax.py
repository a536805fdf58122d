"""Muon step time under ``jax.jit``: `matsign.optim.optax.muon` beside ``optax.contrib.muon``.

The parameter set is GPT-2 small in flax's layout, float32: per block the attention's
``c_attn`` (768, 2304) and ``c_proj`` (768, 768), the MLP's ``c_fc`` (768, 3072) and
``c_proj`` (3072, 768) kernels, their biases and two LayerNorms; the embeddings ``wte``
(50257, 768) and ``wpe`` (1024, 768) and the final LayerNorm. ``gpt2-small`` has its 12
blocks; ``gpt2-small-4-layers`` keeps 4 of them (the embeddings whole), the case asv times
(a full step takes seconds per implementation on one CPU thread). Gradients are fixed
Gaussian arrays; the step is ``update`` then ``optax.apply_updates``, jitted, its result
fed back as the next step's parameters and state and waited for (``block_until_ready``).

Both rows take the same assignment (`assignment`): Muon on the 4 kernels of each block,
Adam on the embeddings, biases and LayerNorms (``optax.contrib.muon`` by a
``muon_weight_dimension_numbers`` tree with None there, matsign by a labels tree), and
the same maths: momentum 0.95 with optax's bias-corrected Nesterov, Jordan's quintic for
5 steps in float32, the width scale ``sqrt(max(1, fan_out / fan_in))``, learning rate
0.02, no weight decay; Adam at 3e-4 (optax.contrib.muon's Adam is Nesterov's, matsign's
AdamW plain: element-wise, a small share of the step). Rows (`ROWS`): ``matsign``
(same-shape matrices stacked, one batched Newton–Schulz per shape) and
``optax.contrib.muon`` (one ``vmap`` per leaf).

JAX runs XLA on ``MATSIGN_BENCH_THREADS`` threads as BLAS and torch elsewhere in the suite:
at 1 (the default) this module sets ``--xla_cpu_multi_thread_eigen=false`` in
``XLA_FLAGS`` before jax is imported; at any other count XLA keeps its own pool (every
core). Run as a script for interleaved rounds (the rows alternate which goes first; the
ratio is the median over rounds of the per-round ratio)::

    python benchmarks/benchmarks/bench_optax.py --repeat 7
    python benchmarks/benchmarks/bench_optax.py --case gpt2-small-4-layers --threads 2

Beside the times the script gives the Newton–Schulz flops of a step (the standard
iteration's model, `matsign.cli.timing.newton_schulz_flops`) over the time, as a fraction
of a jitted GEMM's rate (768 x 768 by 768 x 3072, float32) timed in each round; above 1
where fewer flops ran than the model counts (matsign's Gram-space iteration on the wide
and tall kernels). asv:
`TimeOptaxMuonStep` times each row alone, `TrackOptaxMuonRatio` records the interleaved
ratio; without jax or optax ``setup`` raises `NotImplementedError` (asv: skipped).
"""

import argparse
import contextlib
import importlib.util
import math
import os
import statistics
import sys
import time
from pathlib import Path

try:
    from . import THREADS, cpu_model, pin_threads, sizes
except ImportError:  # run as a script: python benchmarks/benchmarks/bench_optax.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package's folder
    from benchmarks import THREADS, cpu_model, pin_threads, sizes

ROWS = ["matsign", "optax.contrib.muon"]
CASES = sizes(["gpt2-small-4-layers"], ["gpt2-small-1-layer"])  # the script: "gpt2-small"
BLOCKS = {"gpt2-small": 12, "gpt2-small-4-layers": 4, "gpt2-small-1-layer": 1}
WIDTH, VOCAB, CONTEXT = 768, 50257, 1024
JORDAN = (3.4445, -4.7750, 2.0315)
LR, ADAM_LR, MOMENTUM = 0.02, 3e-4, 0.95
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def limit_xla_threads(threads):
    """XLA on one thread when ``threads == 1`` (effective only before jax starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and ONE_THREAD not in flags:
        if "jax" in sys.modules:
            print("bench_optax: jax was imported first; XLA keeps its thread pool",
                  file=sys.stderr)
        os.environ["XLA_FLAGS"] = f"{flags} {ONE_THREAD}".strip()


limit_xla_threads(THREADS)


def require_jax():
    """Skip (`NotImplementedError`) without jax and optax."""
    for module in ("jax", "optax"):
        if importlib.util.find_spec(module) is None:
            raise NotImplementedError(f"{module} is not installed")


# --- The parameter set and the two optimizers ----------------------------------------------


def gpt2_shapes(blocks):
    """GPT-2 small's parameter shapes, flax layout: kernels are (fan_in, fan_out)."""
    d = WIDTH

    def dense(fan_in, fan_out):
        return {"kernel": (fan_in, fan_out), "bias": (fan_out,)}

    def norm():
        return {"scale": (d,), "bias": (d,)}

    block = {"ln_1": norm(), "attn": {"c_attn": dense(d, 3 * d), "c_proj": dense(d, d)},
             "ln_2": norm(), "mlp": {"c_fc": dense(d, 4 * d), "c_proj": dense(4 * d, d)}}
    return {"wte": (VOCAB, d), "wpe": (CONTEXT, d), "h": [block] * blocks, "ln_f": norm()}


def _is_shape(x):
    return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def assignment(shapes):
    """True for the leaves Muon takes: the blocks' kernels (not embeddings, not vectors)."""
    import jax

    def hidden(path, shape):
        return len(shape) == 2 and getattr(path[-1], "key", None) == "kernel"

    return jax.tree_util.tree_map_with_path(hidden, shapes, is_leaf=_is_shape)


def arrays(shapes, seed, scale):
    """Float32 Gaussian arrays of ``shapes`` (made on the device, one key per leaf)."""
    import jax
    import jax.numpy as jnp

    leaves, tree = jax.tree.flatten(shapes, is_leaf=_is_shape)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    made = [scale * jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, leaves,
                                                                        strict=True)]
    return jax.tree.unflatten(tree, made)


def make_transformation(row, shapes):
    """``row``'s optax transformation over ``shapes``, with the common assignment."""
    import jax
    import optax
    from optax.contrib import MuonDimensionNumbers

    muon_leaves = assignment(shapes)
    if row == "optax.contrib.muon":
        dims = jax.tree.map(lambda m: MuonDimensionNumbers() if m else None, muon_leaves)
        return optax.contrib.muon(LR, ns_coeffs=JORDAN, ns_steps=5, beta=MOMENTUM,
                                  nesterov=True, weight_decay=0.0, adam_learning_rate=ADAM_LR,
                                  muon_weight_dimension_numbers=dims)
    if row == "matsign":
        from matsign import optim
        from matsign.optim import optax as matsign_optax

        labels = jax.tree.map(lambda m: "muon" if m else "other", muon_leaves)
        return matsign_optax.muon(LR, momentum=MOMENTUM, nesterov=True, bias_correction=True,
                                  weight_decay=0.0, update_scale="jordan", schedule="jordan",
                                  steps=5, labels=labels,
                                  other=optim.adamw(ADAM_LR, weight_decay=0.0))
    raise ValueError(f"unknown row {row!r}")


class Stepping:
    """One row's jitted step over the case's parameters, compiled and warmed up."""

    def __init__(self, row, case):
        import jax
        import optax

        self.shapes = gpt2_shapes(BLOCKS[case])
        self.params = arrays(self.shapes, seed=0, scale=0.02)
        self.grads = arrays(self.shapes, seed=1, scale=1.0)
        tx = make_transformation(row, self.shapes)
        self.state = tx.init(self.params)

        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        start = time.perf_counter()
        self.compiled = jax.jit(step).lower(self.params, self.state, self.grads).compile()
        self.compile_seconds = time.perf_counter() - start
        self.step()  # the first run: buffers, thread pools (untimed)

    def step(self):
        """One step, waited for; returns its wall time in seconds."""
        import jax

        start = time.perf_counter()
        self.params, self.state = self.compiled(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))
        return time.perf_counter() - start


def newton_schulz_flops(shapes):
    """Flops of 5 standard quintic steps on every Muon matrix (`timing.newton_schulz_flops`)."""
    import jax

    from matsign import polynomials
    from matsign.cli.timing import newton_schulz_flops as flops

    schedule = polynomials.preset("jordan")
    leaves = jax.tree.leaves(shapes, is_leaf=_is_shape)
    chosen = jax.tree.leaves(assignment(shapes))
    return sum(flops(schedule, s, steps=5) for s, m in zip(leaves, chosen, strict=True) if m)


def gemm_seconds():
    """A callable timing one jitted (768, 768) @ (768, 3072) float32 product, and its flops."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(2), (WIDTH, WIDTH), jnp.float32)
    b = jax.random.normal(jax.random.key(3), (WIDTH, 4 * WIDTH), jnp.float32)
    product = jax.jit(lambda a, b: a @ b)
    product(a, b).block_until_ready()

    def timed():
        start = time.perf_counter()
        product(a, b).block_until_ready()
        return time.perf_counter() - start

    return timed, 2.0 * WIDTH * WIDTH * 4 * WIDTH


def measure(case, repeat, rows=ROWS):
    """Interleaved rounds: each row's step times, the GEMM's, compile times.

    Round ``r`` steps the rows in order, reversed on odd rounds, after a GEMM.
    """
    steppers = {row: Stepping(row, case) for row in rows}
    timed_gemm, gemm_flops = gemm_seconds()
    seconds = {row: [] for row in rows}
    gemm = []
    for r in range(repeat):
        gemm.append(min(timed_gemm() for _ in range(3)))
        for row in rows if r % 2 == 0 else rows[::-1]:
            seconds[row].append(steppers[row].step())
    return {"seconds": seconds, "gemm_seconds": gemm, "gemm_flops": gemm_flops,
            "compile_seconds": {row: s.compile_seconds for row, s in steppers.items()},
            "flops": newton_schulz_flops(steppers[rows[0]].shapes)}


def ratio(seconds, row, reference):
    """Median over rounds of ``row``'s time over ``reference``'s in the same round."""
    return statistics.median(a / b for a, b in zip(seconds[row], seconds[reference],
                                                   strict=True))


def gemm_fraction(result, row):
    """Median over rounds of (NS flops / step time) over (GEMM flops / GEMM time)."""
    pairs = zip(result["seconds"][row], result["gemm_seconds"], strict=True)
    return statistics.median(result["flops"] * g / (result["gemm_flops"] * t) for t, g in pairs)


# --- asv -----------------------------------------------------------------------------------


class TimeOptaxMuonStep:
    """Seconds per jitted step (Muon on the kernels, Adam on the rest), each row alone."""

    params = (ROWS, CASES)
    param_names = ("implementation", "case")
    timeout = 900
    number = 1
    repeat = (3, 7, 60.0)  # 3 steps at least, up to 7 within 60 s
    warmup_time = 0

    def setup(self, row, case):
        require_jax()
        pin_threads()
        self.stepping = Stepping(row, case)

    def time_step(self, row, case):
        self.stepping.step()


class TrackOptaxMuonRatio:
    """matsign's step time over optax.contrib.muon's, interleaved in one process (3 rounds)."""

    params = (CASES,)
    param_names = ("case",)
    timeout = 1200

    def setup_cache(self):
        if any(importlib.util.find_spec(m) is None for m in ("jax", "optax")):
            return None
        pin_threads()
        return {case: measure(case, repeat=3) for case in CASES}

    def setup(self, cache, case):
        require_jax()
        if cache is None:
            raise NotImplementedError("the step times did not run")

    def track_ratio_to_optax(self, cache, case):
        return ratio(cache[case]["seconds"], "matsign", "optax.contrib.muon")

    def track_gemm_fraction_matsign(self, cache, case):
        return gemm_fraction(cache[case], "matsign")

    def track_gemm_fraction_optax(self, cache, case):
        return gemm_fraction(cache[case], "optax.contrib.muon")

    setup_cache.timeout = 1200
    track_ratio_to_optax.unit = "matsign / optax.contrib.muon, same process"
    track_gemm_fraction_matsign.unit = "NS flop rate / GEMM rate"
    track_gemm_fraction_optax.unit = "NS flop rate / GEMM rate"


# --- Script --------------------------------------------------------------------------------



def _load():
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.1f}"
    return "unknown"


def report(result, case, threads):
    import jax
    import optax

    parameters = sum(math.prod(s) for s in
                     jax.tree.leaves(gpt2_shapes(BLOCKS[case]), is_leaf=_is_shape))
    print(f"Muon step under jax.jit, {case} ({parameters / 1e6:.1f}M parameters, float32), "
          f"{len(result['gemm_seconds'])} interleaved rounds; {cpu_model()}, "
          f"{os.cpu_count()} CPUs, XLA threads: {'1' if threads == 1 else 'default pool'}; "
          f"jax {jax.__version__}, optax {optax.__version__}; load {_load()} after the rounds")
    print(f"Newton-Schulz model: {result['flops'] / 1e9:.1f} GFLOP per step; GEMM "
          f"{result['gemm_flops'] / statistics.median(result['gemm_seconds']) / 1e9:.1f} "
          "GFLOP/s (median)")
    print(f"{'row':<22}{'median s':>10}{'min s':>10}{'compile s':>11}{'/ GEMM rate':>13}")
    for row, values in result["seconds"].items():
        print(f"{row:<22}{statistics.median(values):>10.3f}{min(values):>10.3f}"
              f"{result['compile_seconds'][row]:>11.1f}{gemm_fraction(result, row):>13.3f}")
    print("matsign / optax.contrib.muon (median of per-round ratios): "
          f"{ratio(result['seconds'], 'matsign', 'optax.contrib.muon'):.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="gpt2-small", choices=sorted(BLOCKS))
    parser.add_argument("--repeat", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="1: XLA on one thread; otherwise XLA's own pool")
    args = parser.parse_args(argv)
    require_jax()
    if args.threads != 1:
        flags = os.environ.get("XLA_FLAGS", "").replace(ONE_THREAD, "").strip()
        os.environ["XLA_FLAGS"] = flags
    limit_xla_threads(args.threads)
    from matsign.cli.timing import pin_threads as pin

    pin(args.threads)
    report(measure(args.case, args.repeat), args.case, args.threads)


if __name__ == "__main__":
    main()
