"""matsign.optim.torch.ModelOptimizer: one optimizer over a whole model.

Oracles: the same algorithms built by hand as separate matsign optimizers on the same
split (bitwise: the same classes run), an uninterrupted run for state_dict round trips,
torch's own StepLR on hand-built optimizers for schedulers.
"""

from __future__ import annotations

import copy
import io

import pytest

torch = pytest.importorskip("torch")

from matsign.optim.torch import AdamW, ModelOptimizer, Muon, module_labels  # noqa: E402


class Tied(torch.nn.Module):
    """A tiny language model with its output head tied to the embedding."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 8)
        self.conv = torch.nn.Conv1d(8, 8, 3, padding=1)
        self.block = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.lm_head = torch.nn.Linear(8, 11, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, tokens):
        h = self.embed(tokens)
        h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.lm_head(self.norm(torch.relu(self.block(h))))


def _sequential():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 3))


def _loss(model, seed):
    g = torch.Generator().manual_seed(seed)
    return model(torch.randn(32, 6, generator=g)).square().mean()


MUON = {"lr": 0.02, "ns_dtype": None, "weight_decay": 0.01}
ADAMW = {"lr": 3e-3}


def test_module_routing_by_type_and_identity():
    torch.manual_seed(0)
    labels = module_labels(Tied())
    assert labels == {"embed.weight": "other", "conv.weight": "matrix", "conv.bias": "other",
                      "block.weight": "matrix", "block.bias": "other", "norm.weight": "other",
                      "norm.bias": "other"}  # the tied head is the embedding, listed once
    labels = module_labels(_sequential())
    assert [k for k, v in labels.items() if v == "matrix"] == ["0.weight", "2.weight"]
    assert module_labels(_sequential(), head=None)["4.weight"] == "matrix"
    with pytest.raises(KeyError, match="not a parameter"):
        module_labels(_sequential(), head="9.weight")


def test_steps_equal_hand_built_optimizers_on_the_same_split():
    model = _sequential()
    twin = copy.deepcopy(model)
    opt = ModelOptimizer(model, matrix_options=MUON, other_options=ADAMW)
    named = dict(twin.named_parameters())
    hand = [Muon([named["0.weight"], named["2.weight"]], **MUON),
            AdamW([named[k] for k in ("0.bias", "2.bias", "4.weight", "4.bias")], **ADAMW)]
    for step in range(8):
        for m, opts in ((model, [opt]), (twin, hand)):
            for o in opts:
                o.zero_grad()
            _loss(m, step).backward()
            for o in opts:
                o.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert opt.routing == {"0.weight": "muon", "0.bias": "adamw", "2.weight": "muon",
                           "2.bias": "adamw", "4.weight": "adamw", "4.bias": "adamw"}


def _run(model, opt, steps, start=0):
    for step in range(start, start + steps):
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()


def test_state_dict_round_trips_bit_for_bit():
    model = _sequential()
    opt = ModelOptimizer(model, matrix_options=MUON, other_options=ADAMW)
    _run(model, opt, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    _run(model, opt, 3, start=3)

    resumed = _sequential()
    opt2 = ModelOptimizer(resumed, matrix_options=MUON, other_options=ADAMW)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert [g["algorithm"] for g in opt2.param_groups] == ["muon", "adamw"]
    _run(resumed, opt2, 3, start=3)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert opt2.state is opt2.optimizers["muon"].state  # one state after loading too
    assert len(opt2.state_dict()["state"]) == 6


def test_a_scheduler_reaches_every_algorithm():
    model = _sequential()
    twin = copy.deepcopy(model)
    opt = ModelOptimizer(model, matrix_options=MUON, other_options=ADAMW)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    named = dict(twin.named_parameters())
    hand = [Muon([named["0.weight"], named["2.weight"]], **MUON),
            AdamW([named[k] for k in ("0.bias", "2.bias", "4.weight", "4.bias")], **ADAMW)]
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in hand]
    for step in range(5):
        opt.zero_grad()
        for o in hand:
            o.zero_grad()
        _loss(model, step).backward()
        _loss(twin, step).backward()
        opt.step()
        for o in hand:
            o.step()
        sched.step()
        for s in scheds:
            s.step()
    assert [g["lr"] for g in opt.param_groups] == [0.02 * 0.25, 3e-3 * 0.25]
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_overrides_named_pairs_and_explicit_groups():
    model = _sequential()
    opt = ModelOptimizer(model, other="lion", matrix_options=MUON,
                         overrides={"2.weight": {"lr": 0.05}, "4.weight": "matrix"})
    assert [(g["algorithm"], g["lr"], len(g["params"])) for g in opt.param_groups] == [
        ("muon", 0.02, 2), ("muon", 0.05, 1), ("lion", 1e-4, 3)]  # by algorithm, then group
    assert opt.routing["4.weight"] == "muon"
    opt = ModelOptimizer(model.named_parameters())  # by name: the last matrix is the head
    assert opt.routing["4.weight"] == "adamw" and opt.routing["2.weight"] == "muon"
    groups = [{"params": [model[0].weight], "algorithm": "muon", "lr": 0.01},
              {"params": [model[0].bias], "algorithm": "adamw"}]
    opt = ModelOptimizer(groups)
    assert [g["algorithm"] for g in opt.param_groups] == ["muon", "adamw"]
    opt.add_param_group({"params": [model[2].weight], "algorithm": "shampoo"})
    assert sorted(opt.optimizers) == ["adamw", "muon", "shampoo"]
    assert opt.param_groups[-1] is opt.optimizers["shampoo"].param_groups[0]


def test_bad_choices_are_clear_errors():
    model = _sequential()
    with pytest.raises(ValueError, match="unknown algorithm 'sgd'"):
        ModelOptimizer(model, other="sgd")
    with pytest.raises(ValueError, match="name no parameter"):
        ModelOptimizer(model, overrides={"5.weight": "adamw"})
    with pytest.raises(ValueError, match="unknown algorithm None"):
        ModelOptimizer([{"params": [model[0].weight]}])
    with pytest.raises(ValueError, match="Muon takes matrices"):
        ModelOptimizer(model, overrides={"0.bias": "muon"})


def test_a_non_finite_gradient_skips_the_group_that_holds_it():
    """nonfinite='skip' acts per group, as each class does: the AdamW group holding the
    NaN keeps its parameters and state; Muon's group steps."""
    model = _sequential()
    opt = ModelOptimizer(model, matrix_options=MUON, other_options=ADAMW)
    _run(model, opt, 2)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    state = copy.deepcopy(opt.state_dict()["state"])
    opt.zero_grad()
    _loss(model, 7).backward()
    model[4].bias.grad[0] = float("nan")
    opt.step()
    for name in ("0.bias", "2.bias", "4.weight", "4.bias"):
        assert torch.equal(before[name], dict(model.named_parameters())[name])
    assert not torch.equal(before["0.weight"], model[0].weight)
    after = opt.state_dict()["state"]
    for index in (2, 3, 4, 5):  # the AdamW group: indices after the 2 Muon ones
        for key, value in state[index].items():
            assert torch.equal(value, after[index][key])
