"""Keller Jordan's distributed Muon, ported here as the peer of matsign's distributed Muon.

`JordanMuon` follows the ``Muon`` and ``SingleDeviceMuon`` optimizers of
github.com/KellerJordan/Muon (``muon.py``), written anew for these benchmarks:

- the parameters are sorted by ``size()`` (largest shape first) and taken in groups
  of ``world_size``; in each group rank ``r`` updates parameter ``base + r`` alone and
  ``all_gather`` hands every rank the updated parameters of the group (the last group
  padded with a scratch tensor), so each rank orthogonalises about ``1 / world_size`` of
  the matrices and every rank ends with all of them;
- the update is EMA momentum ``buf <- lerp(buf, g, 1 - momentum)``, the Nesterov mix
  ``lerp(g, buf, momentum)``, Jordan's quintic ``(3.4445, -4.7750, 2.0315)`` for
  ``ns_steps`` steps on the wide side after dividing by ``||X||_F + eps``, scaled by
  ``sqrt(max(1, rows / cols))``, and decoupled weight decay ``p <- (1 - lr wd) p``.

Differences from the original, none of which changes a value: the compute dtype is an
option (``ns_dtype``: bfloat16 as there, or None for the gradient's own dtype, which is
what a CPU without native bfloat16 products can time), the process group is an
argument (None: one process, the ``SingleDeviceMuon`` loop), and the Nesterov mix is
not written back into ``p.grad`` (the benchmarks reuse their gradients across steps).
As there, the parameters of each group of ``world_size`` must share a shape (all_gather
takes equal shapes), which a model's parameters sorted by shape satisfy unless a shape's
count is not a multiple of the world size.

This module imports only torch, so that tests can load it by its path. Without torch it
still imports (asv imports every module of the suite to discover benchmarks), and
`JordanMuon` cannot be made.
"""

try:
    import torch
    import torch.distributed as dist
    from torch.optim import Optimizer

    BFLOAT16 = torch.bfloat16
except ImportError:
    torch = dist = BFLOAT16 = None
    Optimizer = object

__all__ = ["JordanMuon", "jordan_newton_schulz"]

JORDAN = (3.4445, -4.7750, 2.0315)  # the quintic's coefficients, as Jordan's muon.py


def jordan_newton_schulz(G, steps=5, *, eps=1e-7, dtype=BFLOAT16):
    """Jordan's quintic Newton–Schulz on ``G`` of shape (..., m, n), in ``dtype``.

    Parameters
    ----------
    G : torch.Tensor
        Matrices to orthogonalise, (..., m, n).
    steps : int, default 5
        Quintic steps.
    eps : float, default 1e-7
        Added to the Frobenius norm before dividing by it.
    dtype : torch.dtype or None, default torch.bfloat16
        Compute dtype; None computes in ``G``'s dtype.

    Returns
    -------
    torch.Tensor
        ``U S' V^T`` with ``S'`` diagonal near the identity (the quintic trades
        convergence to 1 for speed), in ``dtype``.
    """
    a, b, c = JORDAN
    X = G if dtype is None else G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:  # iterate on the wide side: the Gram matrix is the smaller one
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A  # (c A) A, associated as the original
        X = a * X + B @ X
    return X.mT if tall else X


class JordanMuon(Optimizer):
    """Keller Jordan's (distributed) Muon as a ``torch.optim.Optimizer``.

    Parameters
    ----------
    params : iterable of torch.Tensor
        Matrices (4-D conv kernels are flattened to ``(out, rest)``); no groups.
    lr : float, default 0.02
        Learning rate, in units of spectral norm per update.
    weight_decay : float, default 0.0
        Decoupled weight decay.
    momentum : float, default 0.95
        EMA momentum.
    nesterov : bool, default True
        Orthogonalise the Nesterov mix instead of the buffer.
    ns_steps : int, default 5
        Quintic steps.
    eps : float, default 1e-7
        Added to the Frobenius norm before normalising.
    ns_dtype : torch.dtype or None, default torch.bfloat16
        Compute dtype of the iteration; None uses the gradient's dtype.
    process_group : torch.distributed.ProcessGroup, optional
        The ranks sharing the work (e.g. ``torch.distributed.group.WORLD``); None is
        one process (no communication).
    """

    def __init__(self, params, lr=0.02, weight_decay=0.0, momentum=0.95, *, nesterov=True,
                 ns_steps=5, eps=1e-7, ns_dtype=BFLOAT16, process_group=None):
        params = sorted(params, key=lambda p: p.size(), reverse=True)
        if not params:
            raise ValueError("JordanMuon needs at least one parameter")
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    "nesterov": nesterov, "ns_steps": ns_steps, "eps": eps,
                    "ns_dtype": ns_dtype}
        super().__init__(params, defaults)
        self.process_group = process_group

    def step(self, closure=None):
        """One Muon step; ``closure`` (optional) re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                if self.process_group is None:
                    for p in group["params"]:
                        self._update(p, group)
                else:
                    self._step_shared(group)
        return loss

    def _step_shared(self, group):
        """Each rank updates one parameter of every group of ``world`` and gathers them."""
        world = dist.get_world_size(self.process_group)
        rank = dist.get_rank(self.process_group)
        params = group["params"]
        padded = params + [torch.empty_like(params[-1])] * (world - len(params) % world)
        for base in range(0, len(params), world):
            if base + rank < len(params):
                self._update(params[base + rank], group)
            dist.all_gather(padded[base:base + world], padded[base + rank],
                            group=self.process_group)

    def _update(self, p, group):
        if p.grad is None:  # a zero update, so that every rank still joins the all_gather
            p.grad = torch.zeros_like(p)
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        update = _direction(p.grad, state["momentum_buffer"], group)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update.reshape(p.shape), alpha=-group["lr"])


def _direction(grad, buf, group):
    """Momentum, Nesterov, the quintic and the shape scale of one parameter."""
    buf.lerp_(grad, 1 - group["momentum"])
    update = grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
    if update.ndim == 4:  # conv kernels as (out, in * kh * kw)
        update = update.view(len(update), -1)
    update = jordan_newton_schulz(update, group["ns_steps"], eps=group["eps"],
                                  dtype=group["ns_dtype"])
    return update * max(1, grad.size(-2) / grad.size(-1)) ** 0.5
