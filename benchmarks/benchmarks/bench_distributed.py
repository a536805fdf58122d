"""Distributed Muon on CPU processes: step time beside Keller Jordan's, and collective bytes.

The parameter set is the compute-bound part of GPT-2 small at width ``d`` (256 by
default): 12 blocks of four ``d x d``, one ``4d x d`` and one ``d x 4d`` matrix, float32,
Gaussian gradients (`bench_optim.gpt2_like_parameters`, the same seed on every rank).
Every row orthogonalises in float32 (matsign ``ns_dtype=None``, the port
``ns_dtype=None``: the reference CPUs multiply bfloat16 without native instructions),
``lr=0.02``, no weight decay, momentum 0.95 with Nesterov, Jordan's quintic for 5 steps
and the update scale ``sqrt(max(1, m/n))``. Rows (`ROWS`):

- ``matsign-1p``: `matsign.optim.torch.Muon`, one process, no process group;
- ``matsign-ddp-2p``: the same with ``process_group`` on 2 processes, replicated
  parameters and identical gradients on each rank (DDP's layout);
- ``matsign-fsdp2-2p``: 2 processes, the matrices held by one module under
  ``torch.distributed.fsdp.fully_shard`` (DTensor parameters, ``Shard(0)``), the local
  gradient shards set by hand;
- ``jordan-1p`` and ``jordan-2p``: `distributed_peers.JordanMuon`, the port of Keller
  Jordan's distributed Muon (rank ``r`` updates every ``world``-th parameter in size
  order, then ``all_gather``), on one and on two processes.

Each process is started by ``torch.multiprocessing`` (start method spawn), runs torch on
one thread (``torch.set_num_threads(1)``), and the 2-process rows talk over gloo on
127.0.0.1 (a free port found by binding port 0; ``GLOO_SOCKET_IFNAME=lo``). All rows'
processes are started together and build their optimizers and take one untimed step;
then the rows are stepped one at a time, interleaved, in alternating order, for
``steps`` rounds: a row's time in a round is the slowest rank's ``step()``, timed after
a barrier. Medians over rounds are reported, and ratios as medians of the per-round
ratios (both rows saw the same outside load). Every run is bounded: past its deadline
the children are killed and `MeasurementTimeout` is raised.

Collective bytes (`measure_bytes`, 2 processes): the bytes one ``step()`` makes all
ranks together send to other ranks, by a ``TorchDispatchMode`` (`CollectiveBytes`) that
sees both the explicit ``torch.distributed`` calls (as ``c10d`` ops, e.g.
``alltoall_base_``) and the functional collectives DTensor issues (``_c10d_functional``
ops), counted with the bandwidth-optimal algorithms' traffic per rank: all_gather
``(R-1) x input``, all_reduce ``2 (R-1)/R x input``, reduce_scatter ``(R-1)/R x input``,
all_to_all the input less the rank's own split. ``CommDebugMode`` watches the same step
and counts calls only, not bytes; it sees the transport's explicit ``all_to_all_single``
too (as ``c10d.alltoall_base_``), and its totals match the calls counted here, so no
collective needs wrapping. Rows (`BYTE_ROWS`): ``matsign-fsdp2`` (the transport of
``matsign.optim.torch.Muon`` on the FSDP2 parameters), ``implicit-dtensor`` (the
functional engine ``matsign.optim.multi(matsign.optim.muon(...))`` applied to the DTensor
gradients themselves: whatever DTensor's sharding propagation redistributes; on gloo
DTensor replaces all_to_all by all_gather and a local chunk, and says so in a warning),
``minimum-fsdp2`` (each matrix once to its owner and once back:
``2 (R-1)/R x elements x bytes`` per matrix), and for the replicated layout
``matsign-ddp``, ``jordan-2p`` and ``minimum-ddp`` (each updated matrix once from its
owner to the others: ``(R-1) x elements x bytes``).

Run as a script for a table::

    python benchmarks/benchmarks/bench_distributed.py --width 256 --steps 5

asv runs the same measurements once per class (``setup_cache``): rows that cannot run
here (no gloo, no FSDP2, a matsign without ``process_group``) raise
`NotImplementedError` in ``setup`` (asv: skipped).
"""

import argparse
import contextlib
import inspect
import json
import os
import queue
import socket
import statistics
import sys
import time
from pathlib import Path

try:
    from . import cpu_model, sizes
    from .bench_optim import BLOCKS, gpt2_like_parameters
except ImportError:  # run as a script: python benchmarks/benchmarks/bench_distributed.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package's folder
    from benchmarks import cpu_model, sizes
    from benchmarks.bench_optim import BLOCKS, gpt2_like_parameters

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.utils._python_dispatch import TorchDispatchMode
except ImportError:  # the benchmarks are skipped (setup_cache raises NotImplementedError)
    torch = None
    TorchDispatchMode = object
else:
    try:
        from .distributed_peers import JordanMuon  # imports torch
    except ImportError:  # run as a script
        from benchmarks.distributed_peers import JordanMuon

ROWS = ["matsign-1p", "matsign-ddp-2p", "matsign-fsdp2-2p", "jordan-1p", "jordan-2p"]
PROCESSES = {row: int(row[-2]) for row in ROWS}
PEER = {"matsign-1p": "jordan-1p", "matsign-ddp-2p": "jordan-2p",
        "matsign-fsdp2-2p": "jordan-2p", "jordan-1p": "jordan-1p", "jordan-2p": "jordan-2p"}
BYTE_ROWS = ["matsign-fsdp2", "implicit-dtensor", "minimum-fsdp2",
             "matsign-ddp", "jordan-2p", "minimum-ddp"]
BYTE_MINIMUM = {"matsign-fsdp2": "minimum-fsdp2", "implicit-dtensor": "minimum-fsdp2",
                "minimum-fsdp2": "minimum-fsdp2", "matsign-ddp": "minimum-ddp",
                "jordan-2p": "minimum-ddp", "minimum-ddp": "minimum-ddp"}
WIDTHS = sizes(["256"], ["64"])
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # the folder holding benchmarks/
WORLD = 2
LR = 0.02
TIMEOUT = 900.0  # seconds for one whole measurement: start, warm-up and every round


class MeasurementTimeout(RuntimeError):
    """A measurement passed its deadline; its processes were killed."""


# --- The rows: what each process builds --------------------------------------------------


def matrix_shapes(width):
    """Shapes of the matrices of `gpt2_like_parameters` at ``width``, in its order."""
    d = int(width)
    return [s for _ in range(BLOCKS) for s in [(d, d)] * 4 + [(4 * d, d), (d, 4 * d)]]


def _matrices(width):
    """Float32 parameters with gradients, the same on every rank (a fixed seed)."""
    matrices, _ = gpt2_like_parameters(int(width))
    return matrices


def _matsign_muon(params, *, distributed=False, process_group=None):
    """matsign's Muon over ``params`` with every row's options.

    ``distributed``: the row needs matsign's torch.distributed support (a Muon with
    ``process_group``); DTensor parameters take their mesh's group (``process_group``
    None), replicated ones the ``process_group`` given.
    """
    from matsign.optim.torch import Muon

    options = {}
    if distributed:
        if "process_group" not in inspect.signature(Muon).parameters:
            raise NotImplementedError("matsign.optim.torch.Muon takes no process_group here")
        options["process_group"] = process_group
    return Muon(params, lr=LR, weight_decay=0.0, momentum=0.95, nesterov=True,
                ns_dtype=None, **options)


def _fsdp2_matrices(width):
    """The matrices as the parameters of one ``fully_shard`` module, with local gradients.

    Returns the DTensor parameters (``Shard(0)`` over all ranks) with gradients
    ``Shard(0)`` of the same full gradients every rank drew.
    """
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import Shard, distribute_tensor
    except ImportError as error:
        raise NotImplementedError(f"no FSDP2 in this torch: {error}") from error
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    matrices = _matrices(width)
    grads = [p.grad for p in matrices]
    module = torch.nn.ParameterList(matrices)
    fully_shard(module, mesh=mesh)
    params = list(module.parameters())
    for p, grad in zip(params, grads, strict=True):
        # src_data_rank=None: each rank keeps its own chunk, no communication
        p.grad = distribute_tensor(grad, mesh, [Shard(0)], src_data_rank=None)
    return params


def build_step(row, width):
    """A zero-argument callable that takes one optimizer step of ``row`` on this process.

    The 2-process rows expect the default process group to be initialised.
    """
    if row in ("matsign-1p", "jordan-1p"):
        matrices = _matrices(width)
        opt = (_matsign_muon(matrices) if row == "matsign-1p"
               else JordanMuon(matrices, lr=LR, ns_dtype=None))
    elif row in ("matsign-ddp-2p", "matsign-ddp"):
        opt = _matsign_muon(_matrices(width), distributed=True, process_group=dist.group.WORLD)
    elif row in ("matsign-fsdp2-2p", "matsign-fsdp2"):
        opt = _matsign_muon(_fsdp2_matrices(width), distributed=True)
    elif row == "jordan-2p":
        opt = JordanMuon(_matrices(width), lr=LR, ns_dtype=None,
                         process_group=dist.group.WORLD)
    elif row == "implicit-dtensor":
        return _implicit_dtensor_step(width)
    else:
        raise ValueError(f"unknown row {row!r}")
    return opt.step


def _implicit_dtensor_step(width):
    """The functional engine applied to the DTensor gradients, updates added in place."""
    from matsign import optim

    params = _fsdp2_matrices(width)
    stepper = optim.multi(optim.muon(LR, momentum=0.95, nesterov=True, weight_decay=0.0))
    weights = [p.detach() for p in params]
    grads = [p.grad for p in params]
    state = [stepper.init(weights)]

    def step():
        updates, state[0] = stepper.update(grads, state[0], weights)
        with torch.no_grad():
            for w, u in zip(weights, updates, strict=True):
                w.add_(u)

    return step


# --- Processes -----------------------------------------------------------------------------


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_group(rank, world, port):
    """Pin one thread and, for ``world > 1``, join a gloo group on loopback."""
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                          GLOO_SOCKET_IFNAME="lo")
        dist.init_process_group("gloo", rank=rank, world_size=world)


def _leave_group(world):
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def _run_bounded(worker, args, nprocs, deadline, collect):
    """Start ``nprocs`` spawned ``worker(index, *args)``; ``collect(poll)`` drives them.

    ``poll()`` raises if a child failed; past ``deadline`` (time.monotonic) or on any
    error the children are killed. Returns what ``collect`` returns.
    """
    if PACKAGE_ROOT not in sys.path:  # spawned children unpickle `worker` by module name
        sys.path.append(PACKAGE_ROOT)
    context = mp.start_processes(worker, args=args, nprocs=nprocs, join=False,
                                 start_method="spawn")

    def poll():
        context.join(timeout=0)  # raises ProcessRaisedException / ProcessExitedException
        if time.monotonic() > deadline:
            raise MeasurementTimeout("distributed measurement passed its deadline")

    try:
        result = collect(poll)
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise MeasurementTimeout("children did not exit before the deadline")
        return result
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(5)


def _get(results, poll):
    """The next message from the children, checking on them every second."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            poll()


# --- Step times ----------------------------------------------------------------------------


def _roles(rows):
    """(row, rank, world, port) per process; one fresh port per multi-process row."""
    roles = []
    for row in rows:
        world = PROCESSES[row]
        port = free_port() if world > 1 else 0
        roles += [(row, rank, world, port) for rank in range(world)]
    return roles


def _step_worker(index, roles, width, commands, results):
    """One process of one row: build, warm up, then time a step per command."""
    row, rank, world, port = roles[index]
    _join_group(rank, world, port)
    try:
        try:
            step = build_step(row, width)
        except NotImplementedError as error:
            results.put(("unavailable", row, rank, str(error)))
            return
        step()  # untimed: state, workspaces
        results.put(("ready", row, rank, None))
        while commands[index].get() == "step":
            if world > 1:
                dist.barrier()
            start = time.perf_counter()
            step()
            results.put(("time", row, rank, time.perf_counter() - start))
    finally:
        _leave_group(world)


def measure_steps(width=256, steps=5, rows=ROWS, timeout=TIMEOUT):
    """Seconds per Muon step of each row, interleaved over ``steps`` rounds.

    Returns ``{"seconds": {row: [per round]}, "unavailable": {row: reason},
    "load": (before, after)}``, the load being the 1-minute load average when the
    processes start and when the last round ends.
    """
    load = _load()
    roles = _roles(rows)
    ctx = mp.get_context("spawn")
    commands = [ctx.SimpleQueue() for _ in roles]
    results = ctx.Queue()
    deadline = time.monotonic() + timeout
    members = {row: [i for i, role in enumerate(roles) if role[0] == row] for row in rows}

    def collect(poll):
        unavailable = {}
        for _ in roles:  # every process says "ready" or "unavailable" once
            kind, row, _, detail = _get(results, poll)
            if kind == "unavailable":
                unavailable[row] = detail
        timed = [row for row in rows if row not in unavailable]
        seconds = {row: [] for row in timed}
        try:
            for round_ in range(steps):
                for row in timed if round_ % 2 == 0 else timed[::-1]:
                    for i in members[row]:
                        commands[i].put("step")
                    times = [_get(results, poll)[3] for _ in members[row]]
                    seconds[row].append(max(times))
        finally:
            for i in range(len(roles)):
                commands[i].put("stop")
        return {"seconds": seconds, "unavailable": unavailable, "load": _load()}

    result = _run_bounded(_step_worker, (roles, str(width), commands, results), len(roles),
                          deadline, collect)
    result["load"] = (load, result["load"])
    return result


def _load():
    """The 1-minute load average (other processes share these cores), or None."""
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()[0]
    return None


def ratio(seconds, row, reference):
    """Median over rounds of ``row``'s time over ``reference``'s in the same round."""
    return statistics.median(a / b for a, b in zip(seconds[row], seconds[reference],
                                                   strict=True))


# --- Collective bytes ----------------------------------------------------------------------


def _nbytes(tensors):
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    return sum(_nbytes(t) for t in tensors)


def _all_to_all_bytes(tensor, splits, rank, world):
    """Bytes of ``tensor`` (split along axis 0) that go to other ranks."""
    total = _nbytes(tensor)
    if not splits:
        return total * (world - 1) / world
    row_bytes = total / max(1, tensor.shape[0])
    return total - splits[rank] * row_bytes


def _traffic(name, args, rank, world):
    """Bytes this rank sends to others for collective ``name``, or None if not one.

    ``name`` is the op's name without its namespace: ``_c10d_functional`` names
    (DTensor's) and ``c10d`` names (``torch.distributed``'s calls) both appear.
    """
    gather, share, reduce_ = world - 1, (world - 1) / world, 2 * (world - 1) / world
    table = {
        "all_gather_into_tensor": lambda: gather * _nbytes(args[0]),
        "all_gather_into_tensor_out": lambda: gather * _nbytes(args[0]),
        "all_gather_into_tensor_coalesced": lambda: gather * _nbytes(args[0]),
        "_allgather_base_": lambda: gather * _nbytes(args[1]),
        "allgather_": lambda: gather * _nbytes(args[1]),
        "allgather_coalesced_": lambda: gather * _nbytes(args[1]),
        "allgather_into_tensor_coalesced_": lambda: gather * _nbytes(args[1]),
        "all_reduce": lambda: reduce_ * _nbytes(args[0]),
        "all_reduce_": lambda: reduce_ * _nbytes(args[0]),
        "all_reduce_coalesced": lambda: reduce_ * _nbytes(args[0]),
        "all_reduce_coalesced_": lambda: reduce_ * _nbytes(args[0]),
        "allreduce_": lambda: reduce_ * _nbytes(args[0]),
        "allreduce_coalesced_": lambda: reduce_ * _nbytes(args[0]),
        "reduce_scatter_tensor": lambda: share * _nbytes(args[0]),
        "reduce_scatter_tensor_coalesced": lambda: share * _nbytes(args[0]),
        "_reduce_scatter_base_": lambda: share * _nbytes(args[1]),
        "reduce_scatter_": lambda: share * _nbytes(args[1]),
        "reduce_scatter_tensor_coalesced_": lambda: share * _nbytes(args[1]),
        "all_to_all_single": lambda: _all_to_all_bytes(args[0], args[2], rank, world),
        "alltoall_base_": lambda: _all_to_all_bytes(args[1], args[4], rank, world),
        "alltoall_": lambda: _nbytes(args[1]) - _nbytes(args[1][rank]),
    }
    return table[name]() if name in table else None


COLLECTIVE_NAMESPACES = ("c10d", "_c10d_functional", "c10d_functional")
NOT_COLLECTIVES = {"wait_tensor", "_wrap_tensor_autograd", "barrier", "monitored_barrier_"}


class CollectiveBytes(TorchDispatchMode):
    """Count the collectives run under it and the bytes this rank sends to other ranks.

    DTensor arguments are let through (``NotImplemented``) so that DTensor first
    lowers an op to local ops and functional collectives, which this mode then sees.
    ``calls`` and ``bytes`` are keyed by op name; collectives without a traffic rule
    (send, recv, gather, scatter, broadcast, ...) are counted in ``calls`` and listed in
    ``uncounted``.
    """

    def __init__(self, rank, world):
        super().__init__()
        self.rank, self.world = rank, world
        self.calls, self.bytes, self.uncounted = {}, {}, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.distributed.tensor import DTensor

        if any(issubclass(t, DTensor) for t in types):
            return NotImplemented
        out = func(*args, **(kwargs or {}))
        namespace = getattr(func, "namespace", "")
        name = func._overloadpacket.__name__ if hasattr(func, "_overloadpacket") else ""
        if namespace in COLLECTIVE_NAMESPACES and name not in NOT_COLLECTIVES:
            self.calls[name] = self.calls.get(name, 0) + 1
            sent = _traffic(name, args, self.rank, self.world)
            if sent is None:
                self.uncounted.add(name)
            else:
                self.bytes[name] = self.bytes.get(name, 0.0) + sent
        return out


def _bytes_worker(rank, world, port, width, rows, results):
    """Each row: build, one step uncounted, one step counted; send the counts.

    ``CommDebugMode`` watches the counted step too, as a check on the calls counted.
    """
    from torch.distributed.tensor.debug import CommDebugMode

    _join_group(rank, world, port)
    try:
        counts = {}
        for row in rows:
            try:
                step = build_step(row, width)
            except NotImplementedError as error:
                counts[row] = str(error)
                continue
            step()
            dist.barrier()
            with CommDebugMode() as debug, CollectiveBytes(rank, world) as counter:
                step()
            counts[row] = {"calls": counter.calls, "bytes": counter.bytes,
                           "uncounted": sorted(counter.uncounted),
                           "comm_debug_calls": debug.get_total_counts()}
        results.put((rank, counts))
    finally:
        _leave_group(world)


def minimum_bytes(width, layout, world=WORLD, itemsize=4):
    """The least traffic of a step, all ranks together, from the shapes alone.

    ``layout="fsdp2"``: each matrix's shards once to its owner and once back,
    ``2 (R-1)/R`` of it; ``"ddp"``: each matrix once from its owner to the
    ``R - 1`` others.
    """
    per_element = 2 * (world - 1) / world if layout == "fsdp2" else world - 1
    return sum(per_element * m * n * itemsize for m, n in matrix_shapes(width))


def measure_bytes(width=256, timeout=TIMEOUT):
    """Collective bytes (all ranks together) and calls (per rank) of one step per row.

    Returns ``{row: {"bytes": float, "calls": {op: count}, "uncounted": [...]}}`` for
    the measured rows, the minimums as ``{"bytes": float}``, and for rows that cannot
    run here ``{row: reason}``.
    """
    measured = [row for row in BYTE_ROWS if not row.startswith("minimum")]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    deadline = time.monotonic() + timeout

    def collect(poll):
        return dict(_get(results, poll) for _ in range(WORLD))

    per_rank = _run_bounded(_bytes_worker, (WORLD, free_port(), str(width), measured, results),
                            WORLD, deadline, collect)
    report = {}
    for row in measured:
        if isinstance(per_rank[0][row], str):
            report[row] = per_rank[0][row]
            continue
        report[row] = {"bytes": sum(sum(per_rank[r][row]["bytes"].values())
                                    for r in range(WORLD)),
                       "calls": per_rank[0][row]["calls"],
                       "uncounted": per_rank[0][row]["uncounted"],
                       "comm_debug_calls": per_rank[0][row]["comm_debug_calls"]}
    for layout in ("fsdp2", "ddp"):
        report[f"minimum-{layout}"] = {"bytes": minimum_bytes(width, layout)}
    return report


# --- asv -----------------------------------------------------------------------------------


def _require_torch_distributed():
    if torch is None or not dist.is_available() or not dist.is_gloo_available():
        raise NotImplementedError("torch.distributed with gloo is not available")


class TrackDistributedMuonStep:
    """Seconds per Muon step of each row, and its ratio to Jordan's on as many processes.

    All rows of a width are measured together (``setup_cache``), interleaved, medians
    of 5 rounds after one untimed step.
    """

    params = (ROWS, WIDTHS)
    param_names = ("implementation", "width")
    timeout = TIMEOUT + 60

    def setup_cache(self):
        if torch is None or not dist.is_available() or not dist.is_gloo_available():
            return None
        return {width: measure_steps(int(width), steps=5) for width in WIDTHS}

    def setup(self, cache, row, width):
        _require_torch_distributed()
        if cache is None:
            raise NotImplementedError("the step times did not run")
        for needed in (row, PEER[row]):
            if needed not in cache[width]["seconds"]:
                reason = cache[width]["unavailable"].get(needed, "did not run")
                raise NotImplementedError(f"{needed}: {reason}")

    def track_step_seconds(self, cache, row, width):
        return statistics.median(cache[width]["seconds"][row])

    def track_ratio_to_jordan(self, cache, row, width):
        return ratio(cache[width]["seconds"], row, PEER[row])

    setup_cache.timeout = TIMEOUT + 60
    track_step_seconds.unit = "seconds"
    track_ratio_to_jordan.unit = "row / Jordan's port, same processes"


class TrackCollectiveBytes:
    """Bytes one Muon step sends between 2 ranks (all ranks together), and over the least."""

    params = (BYTE_ROWS, WIDTHS)
    param_names = ("implementation", "width")
    timeout = TIMEOUT + 60

    def setup_cache(self):
        if torch is None or not dist.is_available() or not dist.is_gloo_available():
            return None
        return {width: measure_bytes(int(width)) for width in WIDTHS}

    def setup(self, cache, row, width):
        _require_torch_distributed()
        if cache is None:
            raise NotImplementedError("the byte counts did not run")
        if isinstance(cache[width][row], str):
            raise NotImplementedError(cache[width][row])

    def track_bytes(self, cache, row, width):
        return cache[width][row]["bytes"]

    def track_ratio_to_minimum(self, cache, row, width):
        return cache[width][row]["bytes"] / cache[width][BYTE_MINIMUM[row]]["bytes"]

    setup_cache.timeout = TIMEOUT + 60
    track_bytes.unit = "bytes"
    track_ratio_to_minimum.unit = "bytes / least bytes"


# --- Script --------------------------------------------------------------------------------


RATIOS = [  # (label, row, reference): row's time over reference's, per round
    ("matsign / Jordan, 1 process", "matsign-1p", "jordan-1p"),
    ("matsign DDP / Jordan, 2 processes", "matsign-ddp-2p", "jordan-2p"),
    ("matsign FSDP2 / Jordan, 2 processes", "matsign-fsdp2-2p", "jordan-2p"),
    ("matsign DDP / FSDP2, 2 processes", "matsign-ddp-2p", "matsign-fsdp2-2p"),
    ("speed-up of 2 processes: Jordan", "jordan-1p", "jordan-2p"),
    ("speed-up of 2 processes: matsign DDP", "matsign-1p", "matsign-ddp-2p"),
    ("speed-up of 2 processes: matsign FSDP2", "matsign-1p", "matsign-fsdp2-2p"),
]



def _format(load):
    return "unknown" if load is None else f"{load:.1f}"


def print_steps(result, width, steps):
    print(f"Muon step, GPT-2-like matrices at width {width}, float32, {steps} rounds; "
          f"{cpu_model()}, {os.cpu_count()} CPUs, 1 torch thread per process, "
          f"torch {torch.__version__}; 1-minute load average {_format(result['load'][0])} "
          f"at the start, {_format(result['load'][1])} after the last round")
    seconds = result["seconds"]
    print(f"{'row':<20}{'processes':>10}{'median s':>12}{'min s':>10}")
    for row, values in seconds.items():
        print(f"{row:<20}{PROCESSES[row]:>10}{statistics.median(values):>12.4f}"
              f"{min(values):>10.4f}")
    for row, reason in result["unavailable"].items():
        print(f"{row:<20}{PROCESSES[row]:>10}  not run: {reason}")
    print("ratios (median over rounds of the per-round ratio):")
    for label, row, reference in RATIOS:
        if row in seconds and reference in seconds:
            print(f"  {label:<42}{ratio(seconds, row, reference):>8.3f}")


def print_bytes(report, width):
    print(f"Collective bytes of one Muon step, width {width}, {WORLD} ranks, "
          "all ranks together")
    print(f"{'row':<20}{'MB':>12}{'/ least':>12}  calls per rank (CommDebugMode's total)")
    for row in BYTE_ROWS:
        entry = report[row]
        if isinstance(entry, str):
            print(f"{row:<20}  not run: {entry}")
            continue
        least = report[BYTE_MINIMUM[row]]["bytes"]
        calls = ", ".join(f"{op} {n}" for op, n in sorted(entry.get("calls", {}).items()))
        extra = f" (no byte rule: {entry['uncounted']})" if entry.get("uncounted") else ""
        if "comm_debug_calls" in entry:
            extra += f" ({entry['comm_debug_calls']})"
        print(f"{row:<20}{entry['bytes'] / 1e6:>12.3f}{entry['bytes'] / least:>12.6f}  "
              f"{calls}{extra}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed rounds per row")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per part")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows")
    parser.add_argument("--no-bytes", action="store_true", help="skip the byte counts")
    parser.add_argument("--no-times", action="store_true", help="skip the step times")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args(argv)
    measured = {"width": args.width, "cpu": cpu_model()}
    if not args.no_times:
        rows = args.rows.split(",")
        measured["steps"] = measure_steps(args.width, args.steps, rows=rows,
                                          timeout=args.timeout)
        print_steps(measured["steps"], args.width, args.steps)
    if not args.no_bytes:
        measured["bytes"] = measure_bytes(args.width, timeout=args.timeout)
        print_bytes(measured["bytes"], args.width)
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=1))


if __name__ == "__main__":
    main()
