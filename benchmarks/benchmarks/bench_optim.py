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

``device`` is ``"cpu"`` or ``"cuda"`` (a GPU, where every row runs at GPT-2 size; CUDA
work is waited for inside each timing). ``TrackMuonAccuracy`` records how close each
row's update is to the exact ``U V^T`` of the gradient, so that time is compared at
equal accuracy. A row that cannot run here raises `NotImplementedError` in ``setup``
(asv: skipped).
"""

import math
import time

import numpy as np

from . import pin_threads, require_device, wait

try:
    import torch
except ImportError:
    torch = None

WIDTHS = ["128", "768"]
DEVICES = ["cpu", "cuda"]
ROWS = ["torch.optim.Muon", "matsign-bfloat16", "matsign-float32"]
BLOCKS = 12
VOCAB, CONTEXT = 50257, 1024


def gpt2_like_parameters(width, *, device="cpu", seed=0):
    """The matrices Muon takes and the vectors/embeddings AdamW takes, as torch Parameters.

    Returns ``(matrices, others)``, on ``device``, with Gaussian gradients.
    """
    g = torch.Generator().manual_seed(seed)

    def parameter(values):
        p = torch.nn.Parameter(values.to(device))
        p.grad = torch.randn(p.shape, generator=g).to(device)
        return p

    shapes = [(width, width)] * 4 + [(4 * width, width), (width, 4 * width)]
    matrices = [parameter(0.02 * torch.randn(s, generator=g))
                for _ in range(BLOCKS) for s in shapes]
    vocab = VOCAB if width == 768 else VOCAB * width // 768
    others = [parameter(0.02 * torch.randn(vocab, width, generator=g)),
              parameter(0.02 * torch.randn(CONTEXT, width, generator=g))]
    others += [parameter(torch.ones(width)) for _ in range(2 * BLOCKS + 1)]
    return matrices, others


def _check_device(device, row, width):
    """Skip what cannot run here: no CUDA, or GPT-2 size in emulated bfloat16."""
    require_device(device)
    if torch is None:
        raise NotImplementedError("torch is not installed")
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    slow = device == "cpu" and width == "768" and row != "matsign-float32"
    if slow and not _fast_bfloat16():
        raise NotImplementedError("this CPU has no native bfloat16 matrix product")


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


def make_muon(row, matrices, **kwargs):
    """``row``'s Muon over ``matrices``."""
    from matsign.optim.torch import Muon

    if row == "torch.optim.Muon":
        return torch.optim.Muon(matrices, **kwargs)
    dtype = torch.bfloat16 if row == "matsign-bfloat16" else None
    return Muon(matrices, ns_dtype=dtype, **kwargs)


def make_optimizers(row, matrices, others):
    """The Muon for ``row`` and the AdamW for the rest (both rows use torch's AdamW)."""
    kwargs = {"lr": 0.02, "weight_decay": 0.01, "adjust_lr_fn": "match_rms_adamw"}
    return make_muon(row, matrices, **kwargs), torch.optim.AdamW(others, lr=3e-4)


class TimeMuonStep:
    """Seconds per optimizer step (Muon on the matrices + AdamW on the rest)."""

    params = (ROWS, WIDTHS, DEVICES)
    param_names = ("implementation", "width", "device")
    timeout = 600
    number = 1
    repeat = (3, 15, 20.0)  # 3 steps at least, up to 15 within 20 s
    warmup_time = 0

    def setup(self, row, width, device):
        _check_device(device, row, width)
        pin_threads()
        matrices, others = gpt2_like_parameters(int(width), device=device)
        self.optimizers = make_optimizers(row, matrices, others)
        self.last = matrices[-1]
        for _ in range(2 if device == "cuda" else 1):  # state, kernels, workspaces: untimed
            self.time_step(row, width, device)

    def time_step(self, row, width, device):
        for opt in self.optimizers:
            opt.step()
        wait(self.last)


class TrackMuonAccuracy:
    """How far each row's first Muon update is from the exact ``U V^T`` of the gradient.

    With zero parameters, ``lr=1`` and no weight decay the first step leaves
    ``p = -scale * O``, where ``O`` is the row's orthogonalised gradient and
    ``scale = sqrt(max(1, rows / cols))`` (torch's "original" rule). ``O`` is compared in
    float64 with ``U V^T`` from NumPy's SVD of the gradient, for the first four matrices
    of each shape; the median is reported. The quintic's band (Jordan's coefficients do
    not converge) dominates both figures, and equal figures mean equal accuracy.
    """

    params = (ROWS, WIDTHS, DEVICES)
    param_names = ("implementation", "width", "device")
    timeout = 600

    def setup(self, row, width, device):
        _check_device(device, row, width)
        pin_threads()
        matrices, _ = gpt2_like_parameters(int(width), device=device)
        chosen = [p for shape in {tuple(p.shape) for p in matrices}
                  for p in [q for q in matrices if tuple(q.shape) == shape][:4]]
        for p in matrices:
            p.data.zero_()
        make_muon(row, chosen, lr=1.0, weight_decay=0.0).step()
        self.errors = [_polar_errors(p, p.grad) for p in chosen]

    def track_distance_to_polar_factor(self, row, width, device):
        return float(np.median([distance for distance, _ in self.errors]))

    def track_orthogonality_error(self, row, width, device):
        return float(np.median([orthogonality for _, orthogonality in self.errors]))

    track_distance_to_polar_factor.unit = "||O - U V^T||_F / ||U V^T||_F"
    track_orthogonality_error.unit = "max |sigma - 1|"


def _polar_errors(p, grad):
    """Relative distance of ``O = -p / scale`` to ``U V^T`` of ``grad``, and its max |σ - 1|."""
    rows, cols = p.shape
    O = -p.detach().double().cpu().numpy() / math.sqrt(max(1.0, rows / cols))
    U, _, Vh = np.linalg.svd(grad.double().cpu().numpy(), full_matrices=False)
    exact = U @ Vh
    sigma = np.linalg.svd(O, compute_uv=False)
    return (float(np.linalg.norm(O - exact) / np.linalg.norm(exact)),
            float(np.max(np.abs(sigma - 1.0))))
