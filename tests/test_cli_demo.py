"""``python -m matsign train-demo``: every optimizer trains the digits MLP well past chance."""

from __future__ import annotations

import json

import pytest

from matsign.__main__ import main


@pytest.fixture
def torch_threads():
    """The demo sets torch's thread count (``--threads``); restore it for later tests."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_demo_runs_and_learns(capsys, torch_threads):
    pytest.importorskip("sklearn")
    args = ["train-demo", "--steps", "40", "--optimizers", "adamw,muon,shampoo,soap", "--json"]
    assert main(args) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"adamw", "muon", "shampoo", "soap"}
    assert all(r["test_accuracy"] > 0.5 for r in results.values())  # chance is 0.1
