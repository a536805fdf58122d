"""``python -m matsign train-demo``: the digits MLP and the character-level GPT.

Every optimizer trains the digits MLP well past chance; the GPT task splits the standard
library by file, runs every optimizer for a few steps, and AdamW beats the uniform
prediction ``log(vocabulary)``.
"""

from __future__ import annotations

import json
import math

import pytest

from matsign.__main__ import main

TINY_GPT = ["--layers", "1", "--width", "32", "--heads", "2", "--context", "16",
            "--batch-size", "8", "--max-chars", "20000", "--eval-every", "5"]


@pytest.fixture
def torch_threads():
    """The demo sets torch's thread count (``--threads``); restore it for later tests."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_demo_runs_and_learns(capsys, torch_threads):
    pytest.importorskip("sklearn")
    from matsign.cli import demo

    assert main(["train-demo", "--steps", "40", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == set(demo.OPTIMIZERS)
    assert all(r["test_accuracy"] > 0.5 for r in results.values())  # chance is 0.1


def test_train_demo_rejects_unknown_optimizer(capsys):
    assert main(["train-demo", "--optimizers", "adamw,sgd"]) == 2
    assert "'sgd'" in capsys.readouterr().err
    assert main(["train-demo", "--task", "gpt", "--optimizers", "sgd"]) == 2


def test_gpt_split_is_by_file_and_disjoint():
    from matsign.cli import demo_gpt

    files = demo_gpt.source_files()
    assert files == sorted(files) and len(files) > 20  # the standard library's *.py
    train, validation = demo_gpt.split_files(files, every=10)
    assert not set(train) & set(validation)
    assert sorted(train + validation) == files
    assert len(validation) == math.ceil(len(files) / 10)
    corpus = demo_gpt.load_corpus(max_chars=5000)
    assert not set(corpus["train_files"]) & set(corpus["validation_files"])
    assert corpus["train"].shape == (5000,) and corpus["validation"].shape == (500,)


def test_gpt_encoding_covers_the_vocabulary():
    pytest.importorskip("torch")
    from matsign.cli import demo_gpt

    ids = demo_gpt.encode(demo_gpt.VOCAB + "\t\u00e9")
    assert ids.tolist() == [*range(len(demo_gpt.VOCAB)), len(demo_gpt.VOCAB), len(demo_gpt.VOCAB)]
    assert demo_gpt.VOCAB_SIZE == len(demo_gpt.VOCAB) + 1


def test_gpt_routes_embeddings_and_head_to_adamw():
    pytest.importorskip("torch")
    from matsign.cli import demo_gpt
    from matsign.optim.torch import module_labels

    labels = module_labels(demo_gpt.build_model(0, layers=1, width=32, heads=2, context=16))
    others = {"token.weight", "position.weight", "head.weight"}
    assert {k for k, v in labels.items() if v == "other" and k.endswith(".weight")
            and "ln" not in k} == others
    assert labels["blocks.0.query.weight"] == labels["blocks.0.fc.weight"] == "matrix"


def test_gpt_schedule_warms_up_and_decays_to_zero():
    torch = pytest.importorskip("torch")
    from matsign.cli import demo_gpt

    rate = demo_gpt.schedule(0.5, 10, 2)
    values = [float(rate(torch.tensor(float(t)))) for t in range(10)]
    assert values[:2] == [0.25, 0.5]
    assert values[-1] == pytest.approx(0.5 / 8)  # 1/8 of the way from 0 after the peak
    assert float(rate(torch.tensor(10.0))) == 0.0


def test_gpt_every_optimizer_runs(capsys, torch_threads):
    from matsign.cli import demo_gpt

    assert main(["train-demo", "--task", "gpt", "--steps", "3", "--json", *TINY_GPT]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == set(demo_gpt.OPTIMIZERS)
    for r in results.values():
        assert len(r["train_losses"]) == 3 and r["steps"] == [0, 3]
        assert all(map(math.isfinite, r["train_losses"] + r["validation"]))


def test_gpt_adamw_beats_the_uniform_prediction(capsys, torch_threads, tmp_path):
    pytest.importorskip("matplotlib")
    from matsign.cli import demo_gpt

    path = tmp_path / "gpt.png"
    args = ["train-demo", "--task", "gpt", "--steps", "30", "--optimizers", "adamw",
            "--json", "--plot", str(path), *TINY_GPT]
    assert main(args) == 0
    out = capsys.readouterr().out
    adamw = json.loads(out.splitlines()[0])["adamw"]
    assert adamw["steps"] == [0, 5, 10, 15, 20, 25, 30]
    assert adamw["final"] < math.log(demo_gpt.VOCAB_SIZE) - 0.5  # uniform: log(96) nats
    assert path.stat().st_size > 0 and str(path) in out
