"""`matsign.optim.plan`: the work assignment and its cost model, against independent oracles.

Oracles: exhaustive search over every assignment of tiny stacks, a round-robin deal
written here, closed forms worked out by hand (in units of ``5 * 768**3`` flops: a
768 x 768 matrix costs 6, a 768 x 3072 or 3072 x 768 one 18), and byte counts added up
by hand for small sets. ``python -m matsign plan`` through `matsign.__main__.main`.
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from matsign.__main__ import main
from matsign.optim.plan import SCHEMES, buckets, cost, model_shapes, newton_schulz_flops, split

UNIT = 5 * 768**3  # Newton-Schulz flops of 5 steps are 6 UNIT (768^2), 18 UNIT (768 x 3072)
GPT2 = [((768, 768), 48), ((3072, 768), 12), ((768, 3072), 12)]


def loads(per_stack, costs, ranks):
    return [sum(c[r] * f for c, f in zip(per_stack, costs, strict=True)) for r in range(ranks)]


def compositions(count, ranks, *, balanced):
    """Every way to deal ``count`` matrices to ``ranks``; balanced: count//ranks or one more."""
    ways = (c for c in itertools.product(range(count + 1), repeat=ranks) if sum(c) == count)
    return [c for c in ways if not balanced or all(count // ranks <= x <= -(-count // ranks)
                                                   for x in c)]


def optimum(counts, costs, ranks, *, balanced):
    """The smallest busiest-rank load over every assignment (exhaustive)."""
    choices = [compositions(k, ranks, balanced=balanced) for k in counts]
    return min(max(loads(p, costs, ranks)) for p in itertools.product(*choices))


def round_robin(counts, costs, ranks):
    """Deal matrices, costliest first, to ranks 0, 1, ..., ranks - 1, 0, ... in turn."""
    order = sorted((f for k, f in zip(counts, costs, strict=True) for _ in range(k)),
                   reverse=True)
    return max(sum(order[r::ranks]) for r in range(ranks))


TINY = [(counts, costs, ranks) for ranks in (2, 3)
        for counts in itertools.product(range(5), repeat=2)
        for costs in ((1, 1), (1, 2), (2, 3), (1, 4)) if sum(counts)]


@pytest.mark.parametrize(("counts", "costs", "ranks"), TINY)
def test_split_is_optimal_on_two_tiny_stacks(counts, costs, ranks):
    per_stack = split(counts, costs, ranks)
    assert [sum(c) for c in per_stack] == list(counts)
    busiest = max(loads(per_stack, costs, ranks))
    assert busiest == optimum(counts, costs, ranks, balanced=True)
    best = optimum(counts, costs, ranks, balanced=False)
    if best == optimum(counts, costs, ranks, balanced=True):  # the optimum respects the rule
        assert busiest == best


def test_split_is_not_always_optimal_on_five_stacks():
    # Found by the exhaustive search of this file: greedy 143, best balanced assignment 142.
    counts, costs = [8, 4, 1, 5, 8], [12, 17, 26, 16, 19]
    assert max(loads(split(counts, costs, 3), costs, 3)) == 143
    assert optimum(counts, costs, 3, balanced=True) == 142


def test_split_never_worse_than_round_robin_and_within_one_matrix_of_the_mean():
    rng = random.Random(0)
    for _ in range(300):
        ranks = rng.randint(2, 9)
        counts = [rng.randint(0, 20) for _ in range(rng.randint(1, 6))]
        costs = [rng.randint(1, 50) for _ in counts]
        per_rank = loads(split(counts, costs, ranks), costs, ranks)
        assert max(per_rank) <= round_robin(counts, costs, ranks)
        assert max(per_rank) <= sum(per_rank) / ranks + max(costs)


def test_model_shapes_count_the_published_layers():
    assert model_shapes("gpt2-small") == tuple(GPT2)
    llama8 = dict(model_shapes("llama-3-8b"))
    assert llama8 == {(4096, 4096): 2 * 32, (1024, 4096): 2 * 32, (14336, 4096): 2 * 32,
                      (4096, 14336): 32}
    llama70 = dict(model_shapes("llama-3-70b"))
    assert sum(m * n * k for (m, n), k in llama70.items()) == 80 * (
        2 * 8192**2 + 2 * 1024 * 8192 + 3 * 28672 * 8192)
    with pytest.raises(ValueError, match="unknown model 'gpt5'"):
        model_shapes("gpt5")


@pytest.mark.parametrize("ranks", [2, 4, 8])
def test_matsign_balances_gpt2_small_exactly(ranks):
    c = cost(GPT2, ranks)
    assert c.imbalance == 1.0
    assert c.flops == (((48 * 6 + 24 * 18) // ranks) * UNIT,) * ranks


def test_gpt2_small_imbalances_by_hand():
    # 8 ranks: dion's batches of 8 leave 12 = 8 + 4 tall (and wide) matrices, so every rank
    # computes 2 + 2 batches of 18 and 6 of 6 units (540) against an ideal 3600 / 8 = 450.
    assert cost(GPT2, 8, scheme="dion").imbalance == 540 / 450
    assert cost(GPT2, 8, scheme="round_robin").imbalance == 1.0  # 3 x 18 + 6 x 6 each
    # 16 ranks: round robin deals 12 tall + 4 wide, 8 wide + 8 square, 16, 16, 8 square:
    # ranks 0-7 get 2 x 18 + 3 x 6 = 54 units against an ideal 720 / 16 = 45.
    assert cost(GPT2, 16, scheme="round_robin").imbalance == 54 / 45
    assert cost(GPT2, 16, scheme="matsign").imbalance == 54 / 45  # the rule: 0-1 of 12
    assert cost(GPT2, 16, scheme="gather").imbalance == 16.0


def test_bytes_of_a_small_set_by_hand():
    # Three 4 x 6 matrices on 2 ranks; bfloat16 (2 bytes): one matrix is 48 bytes, one
    # padded shard of 2 rows 24 bytes; split gives rank 0 two matrices, rank 1 one.
    shapes = [((4, 6), 3)]
    rep = cost(shapes, 2)  # all_gather of 2 matrices from each rank
    assert (rep.sent, rep.received, rep.network, rep.memory) == (96, 96, 192, 4 * 48)
    # There: rank 1 sends 2 shards to rank 0 (48), rank 0 one shard to rank 1 (24); back
    # the other way: 72 each way per rank; rank 0 holds 2 whole matrices + 3 shards.
    sh = cost(shapes, 2, layout="sharded")
    assert (sh.sent, sh.received, sh.network, sh.memory) == (72, 72, 144, 2 * 48 + 3 * 24)
    # dion: 2 batches of 2 (the second padded), each a shard there and one back: 2 x 48.
    dion = cost(shapes, 2, scheme="dion", layout="sharded")
    assert (dion.sent, dion.received, dion.memory) == (96, 96, 2 * 48)
    gather = cost(shapes, 2, scheme="gather")  # the other rank's shard of all 3
    assert (gather.received, gather.memory) == (72, 48)
    # KellerJordan/Muon, float32: groups [A, A], [A, pad]; 96 bytes a matrix.
    rr = cost(shapes, 2, scheme="round_robin")
    assert (rr.received, rr.network, rr.memory) == (192, 384, 96)
    assert rr.flops == (2 * newton_schulz_flops((4, 6)), newton_schulz_flops((4, 6)))


def test_round_robin_ring_with_uneven_parameters():
    # One group [(4, 6), (2, 6)]: 96 and 48 float32 bytes. In a ring, rank 0 sends its own
    # 96 and receives 48. 2 pads of the last shape (72 % 2 == 0 still pads a whole group).
    rr = cost([((2, 6), 1), ((4, 6), 1)], 2, scheme="round_robin")
    assert (rr.sent, rr.received, rr.network, rr.memory) == (96, 96, 144, 2 * 48)


def test_odd_rows_pad_the_shards():
    c = cost([((5, 2), 2)], 2, layout="sharded")  # shards of 3 rows: 12 bytes
    assert (c.sent, c.received) == (((2 - 1) + 1) * 12,) * 2


def test_one_rank_communicates_nothing():
    for scheme in SCHEMES:
        c = cost(GPT2, 1, scheme=scheme)
        assert (c.sent, c.received, c.network, c.memory, c.imbalance) == (0, 0, 0, 0, 1.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scheme": "zero"}, "unknown scheme 'zero'"),
    ({"layout": "tp"}, "unknown layout 'tp'"),
    ({"scheme": "round_robin", "layout": "sharded"}, "replicated parameters only"),
])
def test_bad_options_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cost(GPT2, 4, **kwargs)


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match="ranks must be an integer >= 1; got 0"):
        cost(GPT2, 0)
    with pytest.raises(ValueError, match=r"\(\(768,\), 2\)"):
        cost([((768,), 2)], 2)
    with pytest.raises(ValueError, match="768 rows on 1024 ranks"):
        cost(GPT2, 1024, scheme="dion", layout="sharded")


def plan_json(capsys, *args):
    assert main(["plan", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_json_rows_are_the_hand_computed_figures(capsys):
    report = plan_json(capsys, "--shapes", "4x6:3", "--ranks", "2", "--layout", "sharded",
                       "--scheme", "matsign", "dion")
    matsign, dion = report["rows"]
    assert (matsign["scheme"], matsign["mb_sent"], matsign["mb_peak"]) == ("matsign", 72e-6,
                                                                           168e-6)
    assert dion["mb_received"] == 96e-6


def test_cli_table_prints_gpt2_imbalances(capsys):
    assert main(["plan", "--model", "gpt2-small", "--ranks", "8", "16", "--layout",
                 "replicated"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("gpt2-small: 72 matrices in 3 shapes")
    rows = {tuple(line.split()[1:3]): line.split()[3] for line in out.splitlines()[3:]}
    assert rows[("dion", "8")] == "1.200" and rows[("matsign", "8")] == "1.000"
    assert rows[("round_robin", "16")] == "1.200" and rows[("gather", "16")] == "16.000"
    # 8 ranks: matsign receives from 7 others 6 square, 2 tall and 2 wide matrices each.
    mb = 7 * (6 * 768**2 + 4 * 768 * 3072) * 2 / 1e6
    assert f"{mb:.1f}" in next(line for line in out.splitlines() if " matsign " in line)


def test_cli_unsupported_rows_say_why(capsys):
    assert main(["plan", "--ranks", "1024", "--layout", "sharded"]) == 0
    out = capsys.readouterr().out
    assert "n/a: dion's sharded Muon needs rows divisible by ranks" in out
    assert "n/a: scheme 'round_robin'" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "gpt5"], "unknown model 'gpt5'"),
    (["--shapes", "768by768:4"], "MxN:COUNT"),
    (["--shapes", "0x768:4"], "positive sides"),
    (["--model", "gpt2-small", "--shapes", "4x4:1"], "not both"),
    (["--layout", "tp"], "unknown layout 'tp'"),
    (["--scheme", "zero"], "unknown scheme 'zero'"),
    (["--ranks", "0"], "--ranks must be at least 1; got 0"),
    (["--bytes", "-2"], "--bytes must be at least 1; got -2"),
    (["--bytes", "0"], "--bytes must be at least 1; got 0"),
])
def test_cli_bad_options_exit_2_with_one_line(capsys, args, message):
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m matsign plan: error: ") and message in err
    assert err.count("\n") == 1


def test_replicated_stacks_share_one_padded_gather_by_hand():
    # (4, 6) x 3 and (2, 6) x 1 on 2 ranks, bfloat16. split: the (4, 6) stack 2 + 1
    # (tie: rank 0), the (2, 6) matrix to rank 1 (less work). One bucket: rank 0 holds
    # 2 x 24 elements, rank 1 24 + 12; padded to 48 elements = 96 bytes a rank; a ring
    # all_gather of 2 chunks sends and receives one chunk; the receive buffer is 2 chunks.
    c = cost([((4, 6), 3), ((2, 6), 1)], 2)
    assert (c.sent, c.received, c.network, c.memory) == (96, 96, 192, 2 * 96)


def test_buckets_close_at_the_limit_and_keep_the_rest():
    per_stack = [(3, 3), (1, 0), (5, 5), (2, 2)]  # 3, 0.5, 5, 2 matrices a rank on average
    assert buckets(per_stack, [10] * 4, limit=30) == [[0], [1, 2], [3]]
    assert buckets(per_stack, [10] * 4, limit=1e9) == [[0, 1, 2, 3]]
