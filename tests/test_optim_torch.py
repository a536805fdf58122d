"""matsign.optim.torch against the real peers: torch.optim.Muon and torch.optim.AdamW."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from matsign.optim.torch import AdamW, Lion, Muon  # noqa: E402

STEPS = 50


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices on shared cores: threading only adds contention (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(bias=False):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(12, 24, bias=bias), torch.nn.Tanh(),
              torch.nn.Linear(24, 24, bias=bias), torch.nn.Tanh(),
              torch.nn.Linear(24, 24, bias=bias), torch.nn.Tanh(),
              torch.nn.Linear(24, 8, bias=bias)]
    return torch.nn.Sequential(*layers)


def _batches(steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 12, generator=g), torch.randn(32, 8, generator=g))
            for _ in range(steps)]


def _train(model, opt, batches, scheduler=None):
    for x, y in batches:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return torch.cat([p.detach().ravel() for p in model.parameters()])


def _relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_muon_reproduces_torch_optim_muon(adjust_lr_fn):
    """bfloat16 iteration as torch's; two 24 x 24 layers stacked into one batched call."""
    kwargs = {"lr": 0.02, "weight_decay": 0.1, "adjust_lr_fn": adjust_lr_fn}
    batches = _batches(STEPS)
    peer = _model()
    expected = _train(peer, torch.optim.Muon(peer.parameters(), **kwargs), batches)
    mine = _model()
    got = _train(mine, Muon(mine.parameters(), **kwargs), batches)
    assert _relative(got, expected) <= 1e-5


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_reproduces_torch_optim_adamw(amsgrad):
    kwargs = {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.05, "amsgrad": amsgrad}
    batches = _batches(STEPS)
    peer = _model(bias=True)
    expected = _train(peer, torch.optim.AdamW(peer.parameters(), **kwargs), batches)
    mine = _model(bias=True)
    got = _train(mine, AdamW(mine.parameters(), **kwargs), batches)
    assert _relative(got, expected) <= 1e-5


def test_muon_follows_a_scheduler_like_torch():
    batches = _batches(6)
    results = []
    for cls in (torch.optim.Muon, Muon):
        model = _model()
        opt = cls(model.parameters(), lr=0.05, ns_coefficients=(3.4445, -4.7750, 2.0315))
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.3)
        results.append(_train(model, opt, batches, scheduler))
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("cls", [Muon, AdamW, Lion])
def test_state_dict_round_trip_resumes_bit_for_bit(cls):
    batches = _batches(8)
    model = _model()
    opt = cls(model.parameters(), lr=0.01)
    straight = _train(model, opt, batches)

    model = _model()
    opt = cls(model.parameters(), lr=0.01)
    _train(model, opt, batches[:4])
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = opt.state_dict()
    resumed_model = _model()
    resumed_model.load_state_dict(saved_model)
    resumed_opt = cls(resumed_model.parameters(), lr=0.5)  # lr comes back from the state dict
    resumed_opt.load_state_dict(saved_opt)
    assert torch.equal(_train(resumed_model, resumed_opt, batches[4:]), straight)


def test_muon_loads_torch_optim_muon_state():
    """A drop-in: state saved by torch.optim.Muon resumes in matsign's Muon."""
    batches = _batches(6)
    model = _model()
    peer = torch.optim.Muon(model.parameters(), lr=0.02)
    straight = _train(model, peer, batches)
    model = _model()
    peer = torch.optim.Muon(model.parameters(), lr=0.02)
    _train(model, peer, batches[:3])
    mine = Muon(model.parameters(), lr=0.02)
    mine.load_state_dict(peer.state_dict())
    assert torch.equal(_train(model, mine, batches[3:]), straight)


def test_closure_and_zero_grad():
    model = _model()
    opt = Muon(model.parameters(), lr=0.02, ns_dtype=None)
    x, y = _batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    first = opt.step(closure)
    assert float(opt.step(closure).detach()) < float(first.detach())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_param_groups_keep_their_own_settings():
    model = _model()
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    opt = Muon([{"params": layers[0].parameters(), "lr": 0.0},
                {"params": [p for m in layers[1:] for p in m.parameters()]}],
               lr=0.02, weight_decay=0.0, ns_dtype=None)
    frozen = layers[0].weight.detach().clone()
    _train(model, opt, _batches(2))
    assert torch.equal(layers[0].weight.detach(), frozen)
    assert opt.param_groups[1]["lr"] == 0.02


@pytest.mark.parametrize("cls", [Muon, AdamW, Lion])
def test_nonfinite_gradient_skips_the_step(cls):
    model = _model()
    opt = cls(model.parameters(), lr=0.01)
    _train(model, opt, _batches(2))
    before = [p.detach().clone() for p in model.parameters()]
    state = {k: v.clone() for s in opt.state.values() for k, v in s.items()}
    opt.zero_grad()
    ((model(_batches(1)[0][0]) - 1.0) ** 2).mean().backward()
    next(model.parameters()).grad[0, 0] = float("nan")
    opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(),
                                                          strict=True))
    after = {k: v for s in opt.state.values() for k, v in s.items()}
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_nonfinite_gradient_raises_on_request():
    model = _model()
    opt = AdamW(model.parameters(), nonfinite="raise")
    for p in model.parameters():
        p.grad = torch.full_like(p, float("inf"))
    with pytest.raises(ValueError, match="non-finite"):
        opt.step()
    assert not opt.state


def test_muon_flattens_conv_kernels_with_the_flattened_scale():
    conv = torch.nn.Conv2d(2, 16, 3, bias=False)  # (16, 2, 3, 3) -> 16 x 18
    conv.weight.grad = torch.randn_like(conv.weight)
    before = conv.weight.detach().clone()
    opt = Muon(conv.parameters(), lr=1.0, weight_decay=0.0, ns_dtype=None, ns_steps=30,
               ns_coefficients="quintic")
    opt.step()
    step = (before - conv.weight.detach()).reshape(16, 18).double()
    U, _, Vh = torch.linalg.svd(conv.weight.grad.reshape(16, 18).double(), full_matrices=False)
    assert torch.allclose(step, U @ Vh, atol=1e-4)  # sqrt(max(1, 16/18)) = 1


def test_muon_rejects_vectors_and_bad_options():
    with pytest.raises(ValueError, match="route"):
        Muon([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="Adjust learning rate"):
        Muon([torch.nn.Parameter(torch.zeros(3, 3))], adjust_lr_fn="bogus")


def test_lion_closed_form_two_steps():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    opt = Lion([w], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    g1, g2 = torch.tensor([1.0, -1.0, 2.0]), torch.tensor([-3.0, -1.0, 0.5])
    w.grad = g1
    opt.step()
    w1 = torch.ones(3) * (1 - 0.05) - 0.1 * torch.sign(g1)
    w.grad = g2
    opt.step()
    expected = w1 * (1 - 0.05) - 0.1 * torch.sign(0.9 * 0.01 * g1 + 0.1 * g2)
    assert torch.allclose(w.detach(), expected, atol=1e-7)


def test_import_matsign_optim_does_not_import_torch():
    code = "import sys, matsign, matsign.optim; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_train_demo_runs_and_learns(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from matsign.__main__ import main

    args = ["train-demo", "--steps", "40", "--optimizers", "adamw,muon,shampoo,soap", "--json"]
    assert main(args) == 0
    import json

    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"adamw", "muon", "shampoo", "soap"}
    assert all(r["test_accuracy"] > 0.5 for r in results.values())  # chance is 0.1
