"""Muon step time over a GPT-2-small-like parameter set: matsign (batched) vs torch.optim.Muon.

Parameters per block: four d x d matrices (attention q, k, v, o), d x 4d and 4d x d (the
MLP); 12 blocks, plus token and position embeddings and LayerNorm vectors on AdamW in
both rows. ``width`` is d: ``"768"`` is GPT-2 small; ``"128"`` keeps the same structure
at a size a CPU without native bfloat16 products can time (torch.optim.Muon always
orthogonalises in bfloat16; rows that would run emulated bfloat16 at 768 on such a CPU
are skipped). Rows:

- ``torch.optim.Muon``: torch's own optimizer (bfloat16, one matrix at a time);
- ``matsign-bfloat16``: `matsign.optim.torch.Muon` in bfloat16 (``ns_dtype=torch.bfloat16``),
  same-shape matrices stacked into one batched call;
- ``matsign-float32``: the same schedule in float32 (``ns_dtype=None``), at least as
  accurate as the bfloat16 rows;
- ``matsign``: `matsign.optim.torch.Muon` with its default ``ns_dtype`` (whatever the
  library chooses);
- ``torch-float32-port``: torch.optim.Muon's own per-matrix loop ported to float32
  (`TorchMuonFloat32`, written here), so that ``matsign-float32`` is timed against the
  same arithmetic without batching.

``device`` is ``"cpu"`` or ``"cuda"`` (a GPU, where every row runs at GPT-2 size; CUDA
work is waited for inside each timing). ``TrackMuonAccuracy`` records how close each
row's update is to the exact ``U V^T`` of the gradient, so that time is compared at
equal accuracy. A row that cannot run here raises `NotImplementedError` in ``setup``
(asv: skipped).
"""

import functools
import math

import numpy as np

from matsign.cli import timing  # the module: asv would take time_runs for a benchmark

from . import fast_bfloat16, pin_threads, require_device, sizes, wait

try:
    import torch
except ImportError:
    torch = None

WIDTHS = sizes(["128", "768"], ["32"])
DEVICES = ["cpu", "cuda"]
ROWS = ["torch.optim.Muon", "matsign-bfloat16", "matsign-float32", "matsign",
        "torch-float32-port"]
JORDAN = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's default coefficients
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
    slow = device == "cpu" and width == "768" and not fast_bfloat16()
    if slow and _runs_bfloat16(row):
        raise NotImplementedError("this CPU has no native bfloat16 matrix product")


def _runs_bfloat16(row):
    """Whether ``row`` orthogonalises in bfloat16 (for ``matsign``: its default's speed)."""
    if row == "matsign":
        return _default_is_slow()
    return row in ("torch.optim.Muon", "matsign-bfloat16")


@functools.cache
def _default_is_slow():
    """Whether matsign's default Muon steps 4x slower than float32 on a 256^2 matrix.

    The default ``ns_dtype`` may be chosen by the library; on a CPU without native
    bfloat16 products, a bfloat16 choice shows as about a hundredfold slowdown.
    """
    def step(**options):
        p = torch.nn.Parameter(torch.zeros(256, 256))
        p.grad = torch.randn(256, 256)
        return make_muon("matsign", [p], lr=0.02, **options).step

    default, float32, _ = timing.time_runs(step(), repeats=3, paired=step(ns_dtype=None))
    return timing.median_ratio(default, float32) > 4


def make_muon(row, matrices, **kwargs):
    """``row``'s Muon over ``matrices``."""
    from matsign.optim.torch import Muon

    if row == "torch.optim.Muon":
        return torch.optim.Muon(matrices, **kwargs)
    if row == "torch-float32-port":
        return TorchMuonFloat32(matrices, **kwargs)
    if row == "matsign-bfloat16":
        kwargs["ns_dtype"] = torch.bfloat16
    elif row == "matsign-float32":
        kwargs["ns_dtype"] = None
    return Muon(matrices, **kwargs)


def make_optimizers(row, matrices, others):
    """The Muon for ``row`` and the AdamW for the rest (every row uses torch's AdamW)."""
    kwargs = {"lr": 0.02, "weight_decay": 0.01, "adjust_lr_fn": "match_rms_adamw"}
    return make_muon(row, matrices, **kwargs), torch.optim.AdamW(others, lr=3e-4)


class TorchMuonFloat32:
    """torch.optim.Muon's algorithm, one matrix at a time, in float32 throughout.

    A port of torch 2.13's ``_single_tensor_muon`` and ``_zeropower_via_newtonschulz``
    with the bfloat16 cast left out: momentum by ``lerp``, Nesterov, decoupled weight
    decay, the ``adjust_lr_fn`` scale, and 5 quintic steps with ``addmm`` as torch has
    them. Only what the rows here use: ``step()`` without closure, one group.
    """

    def __init__(self, params, *, lr, weight_decay=0.1, momentum=0.95, nesterov=True,
                 eps=1e-7, ns_steps=5, adjust_lr_fn=None):
        self.params = list(params)
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.nesterov, self.eps, self.ns_steps = nesterov, eps, ns_steps
        self.adjust_lr_fn = adjust_lr_fn
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def step(self):
        """One Muon step on every parameter with a gradient."""
        with torch.no_grad():
            for p, buf in zip(self.params, self.buffers, strict=True):
                if p.grad is None:
                    continue
                buf.lerp_(p.grad, 1 - self.momentum)
                update = p.grad.lerp(buf, self.momentum) if self.nesterov else buf
                update = _newton_schulz_float32(update, self.ns_steps, self.eps)
                p.mul_(1 - self.lr * self.weight_decay)
                p.add_(update, alpha=-_adjusted_lr(self.lr, self.adjust_lr_fn, p.shape))


def _newton_schulz_float32(G, steps, eps):
    """torch.optim.Muon's quintic iteration on the wide side, in float32."""
    a, b, c = JORDAN
    X = G.to(torch.float32)
    tall = X.size(0) > X.size(1)
    X = X.T if tall else X
    X = X / X.norm().clamp(min=eps)  # a new tensor: the momentum buffer stays as it is
    for _ in range(steps):
        A = X @ X.T
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.addmm(X, B, X, beta=a)
    return X.T if tall else X


def _adjusted_lr(lr, adjust_lr_fn, shape):
    """torch.optim.Muon's learning-rate scale for a ``rows x cols`` matrix."""
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


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
