"""QK-Clip on a small attention layer: recomputed logits are the oracle.

After the clip every head's largest logit on the recorded inputs is at most tau (equal
to tau, to rounding, for the clipped heads) and the other heads' weights are bitwise
unchanged. The logits are recomputed here in float64 NumPy from the clipped weights.
"""

from __future__ import annotations

import numpy as np
import pytest

from matsign import optim
from matsign._xp import to_numpy

HEADS, HEAD_DIM, D_MODEL, TOKENS = 4, 3, 8, 10


def _as(backend, a):
    return backend.asarray(a, "float64" if "float64" in backend.dtypes else "float32")


def _layer(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, TOKENS, D_MODEL))  # a batch of two sequences
    w_q = rng.standard_normal((HEADS * HEAD_DIM, D_MODEL))
    w_k = rng.standard_normal((HEADS * HEAD_DIM, D_MODEL))
    w_q[:HEAD_DIM] *= 6.0  # head 0 and head 2 have exploding logits
    w_k[2 * HEAD_DIM:3 * HEAD_DIM] *= 5.0
    return x, w_q, w_k


def max_logits(x, w_q, w_k, heads=HEADS, kv_heads=HEADS, orientation="out_in"):
    """max over batch and (i, j) of q_i . k_j / sqrt(head_dim), per query head."""
    if orientation == "in_out":
        w_q, w_k = w_q.T, w_k.T
    q = (x @ w_q.T).reshape(*x.shape[:2], heads, -1)
    k = (x @ w_k.T).reshape(*x.shape[:2], kv_heads, -1)
    k = np.repeat(k, heads // kv_heads, axis=2)
    logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1])
    return logits.max(axis=(0, 2, 3))


@pytest.mark.parametrize("alpha", [0.5, 0.0, 1.0, 0.3])
def test_clipped_heads_reach_tau_and_the_others_are_unchanged(backend, alpha):
    x, w_q, w_k = _layer()
    before = max_logits(x, w_q, w_k)
    tau = float(np.sort(before)[1] + np.sort(before)[2]) / 2  # two heads above, two below
    over = before > tau
    assert over.sum() == 2
    q, k = optim.qk_clip(_as(backend, w_q), _as(backend, w_k), _as(backend, before),
                         threshold=tau, num_heads=HEADS, alpha=alpha)
    q, k = to_numpy(q), to_numpy(k)
    after = max_logits(x, q, k)
    rtol = 1e-12 if "float64" in backend.dtypes else 1e-5
    np.testing.assert_allclose(after[over], tau, rtol=rtol)
    np.testing.assert_allclose(after[~over], before[~over], rtol=rtol)
    for h in np.flatnonzero(~over):  # untouched heads: the same bits
        rows = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        np.testing.assert_array_equal(q[rows], to_numpy(_as(backend, w_q))[rows])
        np.testing.assert_array_equal(k[rows], to_numpy(_as(backend, w_k))[rows])
    for h in np.flatnonzero(over):  # the split of gamma between query and key
        rows = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        gamma = tau / before[h]
        np.testing.assert_allclose(q[rows], w_q[rows] * gamma**alpha, rtol=rtol)
        np.testing.assert_allclose(k[rows], w_k[rows] * gamma ** (1 - alpha), rtol=rtol)


def test_flax_layout_and_grouped_query_attention(backend):
    """(d_model, heads * head_dim) kernels; 2 key heads shared by 4 query heads: the
    keys stay, each query head takes its whole gamma, logits still land on tau."""
    x, w_q, _ = _layer(1)
    w_k = np.random.default_rng(2).standard_normal((2 * HEAD_DIM, D_MODEL))
    before = max_logits(x, w_q, w_k, kv_heads=2)
    tau = float(np.median(before))
    q, k = optim.qk_clip(_as(backend, w_q.T), _as(backend, w_k.T), _as(backend, before),
                         threshold=tau, num_heads=HEADS, num_kv_heads=2,
                         orientation="in_out")
    np.testing.assert_array_equal(to_numpy(k), to_numpy(_as(backend, w_k.T)))
    after = max_logits(x, to_numpy(q), to_numpy(k), kv_heads=2, orientation="in_out")
    rtol = 1e-12 if "float64" in backend.dtypes else 1e-5
    np.testing.assert_allclose(after, np.minimum(before, tau), rtol=rtol)


def test_mla_rules_scale_every_term_of_the_logit(backend):
    """q^C . k^C + q^R . k^R with a shared rotary key: after the clip each head's max
    logit is tau (the clipped ones) and the shared key is not an argument at all."""
    rng = np.random.default_rng(3)
    latent, rope = 6, 2
    c = rng.standard_normal((2, TOKENS, latent))           # the compressed latent
    loud = np.repeat([5.0, 1.0, 1.0, 4.0], HEAD_DIM)[:, None]  # heads 0 and 3 explode
    w_qc = rng.standard_normal((HEADS * HEAD_DIM, latent)) * loud
    w_qr = rng.standard_normal((HEADS * rope, latent))
    w_kc = rng.standard_normal((HEADS * HEAD_DIM, latent))
    w_kr = rng.standard_normal((rope, latent))               # shared by every head

    def logits(qc, qr, kc):
        Qc = (c @ qc.T).reshape(2, TOKENS, HEADS, HEAD_DIM)
        Qr = (c @ qr.T).reshape(2, TOKENS, HEADS, rope)
        Kc = (c @ kc.T).reshape(2, TOKENS, HEADS, HEAD_DIM)
        Kr = c @ w_kr.T
        s = np.einsum("bihd,bjhd->bhij", Qc, Kc) + np.einsum("bihd,bjd->bhij", Qr, Kr)
        return s.max(axis=(0, 2, 3)) / np.sqrt(HEAD_DIM + rope)

    before = logits(w_qc, w_qr, w_kc)
    tau = float(np.sort(before)[-2] - 1e-3)
    out = optim.qk_clip_mla(*(_as(backend, w) for w in (w_qc, w_qr, w_kc)),
                            _as(backend, before), threshold=tau, num_heads=HEADS)
    after = logits(*(to_numpy(w) for w in out))
    rtol = 1e-12 if "float64" in backend.dtypes else 1e-5
    np.testing.assert_allclose(after, np.minimum(before, tau), rtol=rtol)


def test_bad_arguments_are_clear_errors():
    w = np.ones((4, 3))
    logits = np.array([1.0, 2.0])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="threshold"):
            optim.qk_clip(w, w, logits, threshold=bad, num_heads=2)
    with pytest.raises(ValueError, match="alpha"):
        optim.qk_clip(w, w, logits, threshold=1.0, num_heads=2, alpha=1.5)
    with pytest.raises(ValueError, match="do not split into 3 heads"):
        optim.qk_clip(w, w, np.ones(3), threshold=1.0, num_heads=3)
    with pytest.raises(ValueError, match="evenly"):
        optim.qk_clip(w, w, logits, threshold=1.0, num_heads=2, num_kv_heads=3)
    with pytest.raises(ValueError, match="orientation"):
        optim.qk_clip(w, w, logits, threshold=1.0, num_heads=2, orientation="fan_in")


def test_inputs_are_not_modified_and_jit_traces():
    x, w_q, w_k = _layer()
    copies = w_q.copy(), w_k.copy()
    logits = max_logits(x, w_q, w_k)
    optim.qk_clip(w_q, w_k, logits, threshold=1.0, num_heads=HEADS)
    np.testing.assert_array_equal(w_q, copies[0])
    np.testing.assert_array_equal(w_k, copies[1])
    jax = pytest.importorskip("jax")
    clip = jax.jit(lambda q, k, s: optim.qk_clip(q, k, s, threshold=1.0, num_heads=HEADS))
    q, k = clip(*(jax.numpy.asarray(a) for a in (w_q, w_k, logits)))
    ref_q, ref_k = optim.qk_clip(w_q, w_k, logits, threshold=1.0, num_heads=HEADS)
    np.testing.assert_allclose(np.asarray(q), ref_q, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(k), ref_k, rtol=1e-5)
    mla = jax.jit(lambda a, b, c, s: optim.qk_clip_mla(a, b, c, s, threshold=1.0,
                                                          num_heads=HEADS))
    out = mla(*(jax.numpy.asarray(a) for a in (w_q, w_q, w_k, logits)))
    for got, want in zip(out, optim.qk_clip_mla(w_q, w_q, w_k, logits, threshold=1.0,
                                                num_heads=HEADS), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 0.25])
def test_qk_factors_are_the_closed_form_split_of_gamma(backend, alpha):
    logits = np.array([400.0, 50.0, 100.0, 150.0])
    gamma = np.minimum(1.0, 100.0 / logits)  # the closed form, tau = 100
    q, k = optim.qk_factors(_as(backend, logits), threshold=100.0, num_heads=4, alpha=alpha)
    np.testing.assert_allclose(to_numpy(q), gamma**alpha, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(k), gamma ** (1 - alpha), rtol=1e-6)
    q, k = optim.qk_factors(_as(backend, logits), threshold=100.0, num_heads=4, num_kv_heads=2)
    np.testing.assert_allclose(to_numpy(q), gamma, rtol=1e-6)  # grouped keys: all on q
    assert k is None
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        optim.qk_factors(_as(backend, logits[:3]), threshold=100.0, num_heads=4)


def test_qk_factors_trace_under_jit():
    jax = pytest.importorskip("jax")
    logits = np.array([400.0, 50.0, 100.0, 150.0])
    q, k = jax.jit(lambda s: optim.qk_factors(s, threshold=100.0, num_heads=4))(logits)
    gamma = np.minimum(1.0, 100.0 / logits)
    np.testing.assert_allclose(np.asarray(q), np.sqrt(gamma), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(k), np.sqrt(gamma), rtol=1e-6)


def test_the_torch_helper_clips_in_place():
    """qk_clip_ writes the functional result into the modules' weights (same bits)."""
    torch = pytest.importorskip("torch")
    from matsign.optim.torch import qk_clip_

    x, w_q, w_k = _layer()
    q = torch.nn.Linear(D_MODEL, HEADS * HEAD_DIM, bias=False, dtype=torch.float64)
    k = torch.nn.Linear(D_MODEL, HEADS * HEAD_DIM, bias=False, dtype=torch.float64)
    with torch.no_grad():
        q.weight.copy_(torch.from_numpy(w_q))
        k.weight.copy_(torch.from_numpy(w_k))
    logits = max_logits(x, w_q, w_k)
    tau = float(np.median(logits))
    gamma = qk_clip_(q, k.weight, torch.from_numpy(logits), threshold=tau, num_heads=HEADS)
    want_q, want_k = optim.qk_clip(w_q, w_k, logits, threshold=tau, num_heads=HEADS)
    np.testing.assert_array_equal(q.weight.detach().numpy(), want_q)
    np.testing.assert_array_equal(k.weight.detach().numpy(), want_k)
    np.testing.assert_allclose(gamma.numpy(), np.minimum(1.0, tau / logits), rtol=1e-12)
    assert q.weight.requires_grad  # still a parameter


def test_the_torch_helper_checks_both_weights_before_writing_either():
    torch = pytest.importorskip("torch")
    from matsign.optim.torch import qk_clip_

    q, k = torch.ones(HEADS * HEAD_DIM, D_MODEL), torch.ones(HEADS * HEAD_DIM - 2, D_MODEL)
    with pytest.raises(ValueError, match="does not split into 4 heads"):
        qk_clip_(q, k, torch.full((HEADS,), 400.0), threshold=100.0, num_heads=HEADS)
    assert torch.equal(q, torch.ones(HEADS * HEAD_DIM, D_MODEL))  # the query is untouched
