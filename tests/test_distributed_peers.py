"""The port of Keller Jordan's distributed Muon that the benchmarks time matsign against.

``benchmarks/benchmarks/distributed_peers.py`` is a faithful peer when its 2-process run
(gloo, spawned, bounded in time) follows its 1-process run to float32 rounding, and its
1-process run follows torch.optim.Muon to bfloat16 rounding (torch.optim.Muon always
computes in bfloat16).
"""

import importlib.util
import os
import socket
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmarks" / "distributed_peers.py"
WORLD = 2
STEPS = 3
TIMEOUT = 120.0  # seconds for the spawned run, start-up included
# Tall, wide and square matrices, sorted by the port into groups of WORLD; the last
# group (the seventh matrix and a pad) is padded.
SHAPES = [(8, 8), (16, 8), (8, 16), (8, 8), (16, 8), (8, 16), (8, 8)]
TINY = [(16, 16), (16, 32), (32, 16)]


def _load_peers():
    """The port, loaded by path (it imports only torch)."""
    spec = importlib.util.spec_from_file_location("distributed_peers", PEERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peers = _load_peers()


def _trajectory(optimizer, shapes, *, steps=STEPS, seed=0, **options):
    """Initial and final parameters after ``steps`` steps on Gaussian gradients."""
    g = torch.Generator().manual_seed(seed)
    initial = [0.1 * torch.randn(s, generator=g) for s in shapes]
    params = [torch.nn.Parameter(x.clone()) for x in initial]
    opt = optimizer(params, lr=0.02, weight_decay=0.1, **options)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return initial, [p.detach().clone() for p in params]


def _relative(a, b):
    return float((a - b).norm() / b.norm())


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(rank, port):
    """One rank: the port on the process group against the port alone, same gradients."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        _, shared = _trajectory(peers.JordanMuon, SHAPES, ns_dtype=None,
                                process_group=dist.group.WORLD)
        _, alone = _trajectory(peers.JordanMuon, SHAPES, ns_dtype=None)
        eps = torch.finfo(torch.float32).eps
        for shape, a, b in zip(SHAPES, shared, alone, strict=True):
            assert _relative(a, b) <= 4 * eps, (rank, shape, _relative(a, b))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_processes_follow_one_process():
    context = torch.multiprocessing.start_processes(
        _two_ranks, args=(_free_port(),), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"the 2-process run did not finish in {TIMEOUT:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(5)


@pytest.mark.parametrize("ns_dtype", [torch.bfloat16, None], ids=["bfloat16", "float32"])
def test_one_process_follows_torch_optim_muon(ns_dtype):
    # torch.optim.Muon: the same defaults (nesterov, 5 steps, Jordan's quintic) and its
    # "original" scale sqrt(max(1, m/n)), which is the port's.
    initial, expected = _trajectory(torch.optim.Muon, TINY)
    _, ported = _trajectory(peers.JordanMuon, TINY, ns_dtype=ns_dtype)
    # Both round the quintic's products in bfloat16 (the port in float32: closer to the
    # exact iteration), associated differently; the displacements agree to a few eps.
    eps = torch.finfo(torch.bfloat16).eps
    for shape, x, a, b in zip(TINY, initial, ported, expected, strict=True):
        assert _relative(a - x, b - x) <= 8 * eps, (shape, _relative(a - x, b - x))
        assert a.dtype == torch.float32 and a.shape == shape


def test_port_sorts_by_shape_and_keeps_its_state_name():
    params = [torch.nn.Parameter(torch.zeros(s)) for s in TINY]
    opt = peers.JordanMuon(params, ns_dtype=None)
    assert [tuple(p.shape) for p in opt.param_groups[0]["params"]] == sorted(TINY, reverse=True)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(sorted(opt.state[p]) == ["momentum_buffer"] for p in params)
