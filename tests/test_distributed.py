"""matsign.optim.torch on torch.distributed: gloo on the CPU, 2 and 4 local processes.

The oracle is the single-process run of the same optimizer on the same parameters and
gradients, computed in each worker without a process group. Every spawn runs all
scenarios in one process group (one start-up per world size), is bounded in time
(`TIMEOUT`, the children are killed past it) and uses loopback addresses only.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import traceback

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

TIMEOUT = 300.0  # seconds per spawn, all scenarios together
STEPS = 10
# Muon's matrices: same shapes, mixed shapes, rows that do not divide by 2 or 4 ranks
# (7 rows on 4 ranks: 2, 2, 2, 1; 5 rows: 2, 2, 1 and an empty shard), a conv kernel.
MATRICES = [(16, 12)] * 3 + [(12, 16)] * 2 + [(7, 10), (5, 6), (6, 2, 3, 3)]
VECTORS = [(7,), (16,)]  # for the element-wise optimizers and Shampoo/SOAP


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _optimizer(name, params, **extra):
    from matsign.optim import torch as mt

    if name == "Muon":
        return mt.Muon(params, lr=0.02, weight_decay=0.01, ns_dtype=None,
                       adjust_lr_fn="match_rms_adamw", **extra)
    if name == "Muon-bfloat16":
        return mt.Muon(params, lr=0.02, weight_decay=0.01, **extra)
    if name == "Muon-split":  # per-block directions and scales inside the matrix work
        return mt.Muon(params, lr=0.02, weight_decay=0.01, ns_dtype=None, split=2, **extra)
    if name == "AdamW":
        return mt.AdamW(params, lr=0.01, **extra)
    if name == "Lion":
        return mt.Lion(params, lr=0.01, weight_decay=0.1, **extra)
    if name == "Shampoo":
        return mt.Shampoo(params, lr=0.01, every=3, **extra)
    return mt.SOAP(params, lr=0.01, every=3, **extra)


def _shapes(name):
    if name == "Muon-split":  # even rows: two blocks each
        return [s for s in MATRICES if s[0] % 2 == 0]
    return MATRICES if name.startswith("Muon") else MATRICES + VECTORS


def _initial(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def _gradients(shapes, step):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=g) for s in shapes]


def _reference(name, steps=STEPS, nan_step=None):
    """The single-process run: plain tensors, no group."""
    shapes = _shapes(name)
    params = [torch.nn.Parameter(w) for w in _initial(shapes)]
    opt = _optimizer(name, params)
    for step in range(steps):
        for p, grad in zip(params, _gradients(shapes, step), strict=True):
            p.grad = grad
        if step == nan_step:
            params[0].grad = params[0].grad.clone()
            params[0].grad[0, 0] = math.nan
        opt.step()
    return [p.detach() for p in params]


class _Sharded(torch.nn.Module):
    def __init__(self, initial):
        super().__init__()
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(w.clone()) for w in initial])


def _sharded_params(shapes):
    from torch.distributed.fsdp import fully_shard

    model = _Sharded(_initial(shapes))
    fully_shard(model)
    return model, list(model.weights)


def _set_gradients(params, grads, sharded):
    from torch.distributed.tensor import distribute_tensor

    for p, grad in zip(params, grads, strict=True):
        p.grad = distribute_tensor(grad, p.device_mesh, p.placements) if sharded else grad


def _full(params):
    return [p.full_tensor() if hasattr(p, "full_tensor") else p.detach() for p in params]


def _relative(got, want):
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return worst


def _same_on_every_rank(tensors):
    """Whether every rank holds bit for bit the same tensors (gathered to compare)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def _run(name, layout, steps=STEPS, nan_step=None, nan_rank=1):
    """``steps`` distributed steps; returns the full parameters afterwards."""
    shapes = _shapes(name)
    if layout == "sharded":
        _, params = _sharded_params(shapes)
        opt = _optimizer(name, params)
    else:
        params = [torch.nn.Parameter(w) for w in _initial(shapes)]
        opt = _optimizer(name, params, process_group=dist.group.WORLD)
    for step in range(steps):
        grads = _gradients(shapes, step)
        _set_gradients(params, grads, layout == "sharded")
        if step == nan_step and dist.get_rank() == nan_rank:
            local = params[0].grad.to_local() if layout == "sharded" else params[0].grad
            if local.numel():
                local.view(-1)[0] = math.nan
        opt.step()
    return _full(params)


def _scenario_matches(name, layout):
    got = _run(name, layout)
    return {"relative": _relative(got, _reference(name)),
            "same_on_every_rank": _same_on_every_rank(got)}


def _scenario_buckets(name):
    """DDP with buckets of a few hundred elements: many all_gathers in flight per step."""
    import matsign.optim._torch_distributed as transport

    bucket, transport.BUCKET = transport.BUCKET, 200
    try:
        return _scenario_matches(name, "replicated")
    finally:
        transport.BUCKET = bucket


def _scenario_nan(name, layout):
    got = _run(name, layout, nan_step=3)
    return {"relative": _relative(got, _reference(name, nan_step=3)),
            "same_on_every_rank": _same_on_every_rank(got)}


def _scenario_checkpoint(name):
    """5 steps, save by torch.distributed.checkpoint, load into a fresh model, 5 more."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    shapes = _shapes(name)
    folder = os.path.join(os.environ["MATSIGN_TEST_DIR"], f"checkpoint-{name}")
    model, params = _sharded_params(shapes)
    opt = _optimizer(name, params)
    for step in range(5):
        _set_gradients(params, _gradients(shapes, step), True)
        opt.step()
    dcp.save({"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)},
             checkpoint_id=folder)
    fresh, fresh_params = _sharded_params(shapes)  # the initial weights: loading must restore
    fresh_opt = _optimizer(name, fresh_params)
    state = {"model": fresh.state_dict(), "optim": get_optimizer_state_dict(fresh, fresh_opt)}
    dcp.load(state, checkpoint_id=folder)
    fresh.load_state_dict(state["model"])
    set_optimizer_state_dict(fresh, fresh_opt, state["optim"])
    for step in range(5, 10):
        for ps, o in ((params, opt), (fresh_params, fresh_opt)):
            _set_gradients(ps, _gradients(shapes, step), True)
            o.step()
    got, want = _full(fresh_params), _full(params)
    return {"equal": all(torch.equal(a, b) for a, b in zip(got, want, strict=True))}


def _scenario_flops(layout):
    """Newton–Schulz flops each rank computes in a Muon step on GPT-2 small's structure.

    Width 8 instead of 768 (the same 12 blocks of four d x d, d x 4d and 4d x d): the
    balance depends on the shapes' proportions only. Counted by wrapping the iteration.
    """
    import matsign.optim.transforms as transforms

    counted = []

    def counting(G, *args, **kwargs):
        *lead, m, n = G.shape
        a, b = min(m, n), max(m, n)
        counted.append(math.prod(lead) * 5 * (4 * a * a * b + 2 * a ** 3))
        return newton_schulz(G, *args, **kwargs)

    newton_schulz, transforms.newton_schulz = transforms.newton_schulz, counting
    try:
        d = 8
        shapes = [(d, d)] * 4 * 12 + [(d, 4 * d)] * 12 + [(4 * d, d)] * 12
        if layout == "sharded":
            _, params = _sharded_params(shapes)
            opt = _optimizer("Muon", params)
        else:
            params = [torch.nn.Parameter(w) for w in _initial(shapes)]
            opt = _optimizer("Muon", params, process_group=dist.group.WORLD)
        _set_gradients(params, _gradients(shapes, 0), layout == "sharded")
        opt.step()
    finally:
        transforms.newton_schulz = newton_schulz
    mine = torch.tensor([float(sum(counted))], dtype=torch.float64)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return {"flops": [float(f) for f in every]}


QK_HEADS, QK_HEAD_DIM = 3, 3  # 9 rows: 5 + 4 on 2 ranks, 3 + 3 + 3 + 0 on 4 (heads straddle)
QK_LOGITS = [400.0, 50.0, 150.0]  # tau = 100: heads 0 and 2 are clipped


def _scenario_qk_clip(kv_heads):
    """qk_clip_ on FSDP2-sharded projections against qk_clip on the full weights."""
    from torch.distributed.fsdp import fully_shard

    from matsign import optim
    from matsign.optim.torch import qk_clip_

    g = torch.Generator().manual_seed(7)
    w_q = torch.randn(QK_HEADS * QK_HEAD_DIM, 5, generator=g)
    w_k = torch.randn(kv_heads * QK_HEAD_DIM, 5, generator=g)
    logits = torch.tensor(QK_LOGITS)
    model = _Sharded([w_q, w_k])
    fully_shard(model)
    q, k = model.weights
    gamma = qk_clip_(q, k, logits, threshold=100.0, num_heads=QK_HEADS, num_kv_heads=kv_heads)
    want_q, want_k = optim.qk_clip(w_q, w_k, logits, threshold=100.0, num_heads=QK_HEADS,
                                   num_kv_heads=kv_heads)
    got_q, got_k = _full([q, k])
    return {"sharded": type(q).__name__ == "DTensor",
            "equal": bool(torch.equal(got_q, want_q) and torch.equal(got_k, want_k)),
            "changed": not torch.equal(got_q, w_q), "gamma": gamma.tolist()}


OPTIMIZERS = ["Muon", "AdamW", "Lion", "Shampoo", "SOAP"]
LAYOUTS = ["replicated", "sharded"]
CHECKPOINTED = ["Muon", "AdamW", "Shampoo", "SOAP"]


def _scenarios():
    out = {}
    for name in OPTIMIZERS:
        for layout in LAYOUTS:
            out[f"matches/{name}/{layout}"] = (_scenario_matches, name, layout)
    for layout in LAYOUTS:
        out[f"matches/Muon-bfloat16/{layout}"] = (_scenario_matches, "Muon-bfloat16", layout)
        out[f"matches/Muon-split/{layout}"] = (_scenario_matches, "Muon-split", layout)
        out[f"nan/Muon/{layout}"] = (_scenario_nan, "Muon", layout)
    out["nan/AdamW/sharded"] = (_scenario_nan, "AdamW", "sharded")
    out["nan/Shampoo/sharded"] = (_scenario_nan, "Shampoo", "sharded")
    for layout in LAYOUTS:
        out[f"flops/{layout}"] = (_scenario_flops, layout)
    out["buckets/Muon"] = (_scenario_buckets, "Muon")
    out["qk_clip/mha"] = (_scenario_qk_clip, QK_HEADS)
    out["qk_clip/gqa"] = (_scenario_qk_clip, 1)
    out["buckets/Muon-bfloat16"] = (_scenario_buckets, "Muon-bfloat16")
    for name in CHECKPOINTED:
        out[f"checkpoint/{name}"] = (_scenario_checkpoint, name)
    return out


def _worker(rank, world, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      MATSIGN_TEST_DIR=folder)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    try:
        for key, (scenario, *args) in _scenarios().items():
            try:
                results[key] = scenario(*args)
            except Exception:  # noqa: BLE001  (reported to the test that asks for it)
                results[key] = {"error": traceback.format_exc()}
                dist.barrier()
    finally:
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
        dist.destroy_process_group()


def _spawn(world):
    folder = tempfile.mkdtemp(prefix=f"matsign-dist{world}-")
    context = mp.start_processes(_worker, args=(world, _free_port(), folder), nprocs=world,
                                 join=False, start_method="spawn")
    deadline = TIMEOUT
    import time

    start = time.monotonic()
    while not context.join(timeout=max(0.0, deadline - (time.monotonic() - start))):
        if time.monotonic() - start >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{world} processes did not finish within {TIMEOUT:.0f} s")
    ranks = []
    for rank in range(world):
        with open(os.path.join(folder, f"rank{rank}.json")) as f:
            ranks.append(json.load(f))
    return ranks


@pytest.fixture(scope="module", params=[2, 4], ids=["2-ranks", "4-ranks"])
def ranks(request):
    return _spawn(request.param)


def _result(ranks, key):
    found = ranks[0][key]
    assert "error" not in found, found["error"]
    return found


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_distributed_step_matches_the_single_process_run(ranks, name, layout):
    found = _result(ranks, f"matches/{name}/{layout}")
    assert found["relative"] <= 1e-5  # float32 compute, 10 steps
    assert found["same_on_every_rank"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_split_muon_matches_the_single_process_run(ranks, layout):
    """Blocks orthogonalised and scaled inside the matrix work, so the DDP gather and the
    FSDP2 exchange carry finished directions."""
    found = _result(ranks, f"matches/Muon-split/{layout}")
    assert found["relative"] <= 1e-5
    assert found["same_on_every_rank"]


@pytest.mark.parametrize("name", ["Muon", "Muon-bfloat16"])
def test_replicated_results_gathered_a_bucket_at_a_time_match(ranks, name):
    found = _result(ranks, f"buckets/{name}")  # every stack in a bucket of its own or two
    assert found["relative"] <= 1e-5
    assert found["same_on_every_rank"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bfloat16_muon_communicates_without_changing_a_bit(ranks, layout):
    # the bfloat16 iteration's input and output are bfloat16 values: sent as such, exact
    found = _result(ranks, f"matches/Muon-bfloat16/{layout}")
    assert found["relative"] <= 1e-5
    assert found["same_on_every_rank"]


@pytest.mark.parametrize("key", ["nan/Muon/replicated", "nan/Muon/sharded", "nan/AdamW/sharded",
                                 "nan/Shampoo/sharded"])
def test_a_nan_on_one_rank_skips_the_step_on_every_rank(ranks, key):
    found = _result(ranks, key)
    assert found["relative"] <= 1e-5  # the reference skipped the same step
    assert found["same_on_every_rank"]


@pytest.mark.parametrize("name", CHECKPOINTED)
def test_checkpoint_resumes_bit_for_bit(ranks, name):
    assert _result(ranks, f"checkpoint/{name}")["equal"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_muon_flops_are_balanced_on_gpt2_small(ranks, layout):
    flops = _result(ranks, f"flops/{layout}")["flops"]
    d = 8  # per block: four d x d (5 * 6 d^3 each), d x 4d and 4d x d (5 * 18 d^3 each)
    total = 12 * (4 * 30 + 2 * 90) * d ** 3
    assert sum(flops) == total  # every matrix computed once, by one rank
    assert max(flops) == min(flops) == total / len(flops)  # 48, 12, 12 split evenly


@pytest.mark.parametrize("attention", ["mha", "gqa"])
def test_qk_clip_on_sharded_weights_matches_the_full_weights(ranks, attention):
    found = _result(ranks, f"qk_clip/{attention}")
    assert found["sharded"]
    assert found["equal"]  # bit for bit: each rank scales its rows by their head's factor
    assert found["changed"]
    np.testing.assert_allclose(found["gamma"], np.minimum(1.0, 100.0 / np.array(QK_LOGITS)),
                               rtol=1e-6)
