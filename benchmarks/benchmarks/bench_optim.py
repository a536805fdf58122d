"""Muon step time over a GPT-2-small-like parameter set: matsign (batched) vs torch.optim.Muon.

Parameters per block: four d x d matrices (attention q, k, v, o), d x 4d and 4d x d (the
MLP); 12 blocks, plus token and position embeddings and LayerNorm vectors on AdamW in
both rows. ``width`` is d: ``"768"`` is GPT-2 small; ``"128"`` keeps the same structure
at a size a CPU without native bfloat16 products can time (torch.optim.Muon always
orthogonalises in bfloat16). Rows:

- ``torch.optim.Muon``: torch's own optimizer (bfloat16, one matrix at a time);
- ``matsign-bfloat16``: `matsign.optim.torch.Muon`, the same arithmetic (bit for bit),
  same-shape matrices stacked into one batched call;
- ``matsign-float32``: the same schedule in float32 (``ns_dtype=None``), at least as
  accurate as the bfloat16 rows.

A row that cannot run here raises `NotImplementedError` in ``setup`` (asv: skipped).
"""

import time

from . import THREADS

try:
    import torch
except ImportError:
    torch = None

WIDTHS = ["128", "768"]
ROWS = ["torch.optim.Muon", "matsign-bfloat16", "matsign-float32"]
BLOCKS = 12
VOCAB, CONTEXT = 50257, 1024


def gpt2_like_parameters(width, *, seed=0):
    """The matrices Muon takes and the vectors/embeddings AdamW takes, as torch Parameters.

    Returns ``(matrices, others)``.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = [(width, width)] * 4 + [(4 * width, width), (width, 4 * width)]
    matrices = [torch.nn.Parameter(0.02 * torch.randn(s, generator=g))
                for _ in range(BLOCKS) for s in shapes]
    vocab = VOCAB if width == 768 else VOCAB * width // 768
    others = [torch.nn.Parameter(0.02 * torch.randn(vocab, width, generator=g)),
              torch.nn.Parameter(0.02 * torch.randn(CONTEXT, width, generator=g))]
    others += [torch.nn.Parameter(torch.ones(width)) for _ in range(2 * BLOCKS + 1)]
    for p in matrices + others:
        p.grad = torch.randn(p.shape, generator=g)
    return matrices, others


def _fast_bfloat16():
    """Whether a 256^3 bfloat16 product is at least half as fast as float32 here."""
    a = torch.randn(256, 256)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x
        start = time.perf_counter()
        x @ x
        times[dtype] = time.perf_counter() - start
    return times[torch.bfloat16] <= 2 * times[torch.float32]


def make_optimizers(row, matrices, others):
    """The Muon for ``row`` and the AdamW for the rest (both rows use torch's AdamW)."""
    from matsign.optim.torch import Muon

    kwargs = {"lr": 0.02, "weight_decay": 0.01, "adjust_lr_fn": "match_rms_adamw"}
    if row == "torch.optim.Muon":
        muon = torch.optim.Muon(matrices, **kwargs)
    else:
        dtype = torch.bfloat16 if row == "matsign-bfloat16" else None
        muon = Muon(matrices, ns_dtype=dtype, **kwargs)
    return muon, torch.optim.AdamW(others, lr=3e-4)


class TimeMuonStep:
    """Seconds per optimizer step (Muon on the matrices + AdamW on the rest)."""

    params = (ROWS, WIDTHS)
    param_names = ("implementation", "width")
    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self, row, width):
        if torch is None:
            raise NotImplementedError("torch is not installed")
        torch.set_num_threads(THREADS)
        if width == "768" and row != "matsign-float32" and not _fast_bfloat16():
            raise NotImplementedError("this CPU has no native bfloat16 matrix product")
        matrices, others = gpt2_like_parameters(int(width))
        self.optimizers = make_optimizers(row, matrices, others)
        for opt in self.optimizers:
            opt.step()  # state allocated outside the timing

    def time_step(self, row, width):
        for opt in self.optimizers:
            opt.step()
