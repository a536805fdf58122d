"""Element-wise optimizers as chains: AdamW and Lion."""

from __future__ import annotations

from collections.abc import Callable

from .._typing import Array
from ._base import Stepper, chain
from .transforms import (
    add_decayed_weights,
    cautious,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_lion,
)

__all__ = ["adamw", "lion"]


def adamw(
    learning_rate: float | Callable[[Array], Array | float] = 1e-3, *, b1: float = 0.9,
    b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01, amsgrad: bool = False,
    cautious_mask: bool = False, cautious_weight_decay: bool = False,
) -> Stepper:
    """AdamW with the defaults of torch.optim.AdamW.

    Parameters
    ----------
    learning_rate : float or callable, default 1e-3
        A constant or a schedule of the step count.
    b1, b2 : float
        Moment decay rates.
    eps : float, default 1e-8
        Added to ``sqrt(v_hat)``.
    weight_decay : float, default 0.01
        Decoupled: the step subtracts ``learning_rate * weight_decay * param``.
    amsgrad : bool, default False
        Divide by the running maximum of the second moment.
    cautious_mask : bool, default False
        Mask the Adam direction where it disagrees in sign with the gradient (`cautious`).
    cautious_weight_decay : bool, default False
        Decay only where the update and the parameter share a sign.

    Returns
    -------
    Stepper

    References
    ----------
    Loshchilov and Hutter, Decoupled Weight Decay Regularization (arXiv:1711.05101).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> opt = optim.adamw(0.1, weight_decay=0.0)
    >>> w = np.array([1.0, -1.0])
    >>> u, _ = opt.update(np.array([0.5, -4.0]), opt.init(w), w)
    >>> np.round(u, 6)
    array([-0.1,  0.1])
    """
    direction = scale_by_adam(b1, b2, eps, amsgrad=amsgrad)
    return chain(
        cautious(direction) if cautious_mask else direction,
        add_decayed_weights(weight_decay, cautious=cautious_weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def lion(
    learning_rate: float | Callable[[Array], Array | float] = 1e-4, *, b1: float = 0.9,
    b2: float = 0.99, weight_decay: float = 0.0, cautious_mask: bool = False,
    cautious_weight_decay: bool = False,
) -> Stepper:
    """Lion: the sign of an interpolated momentum, with decoupled weight decay.

    Parameters
    ----------
    learning_rate : float or callable, default 1e-4
        A constant or a schedule of the step count (typically 3-10x below AdamW's).
    b1, b2 : float
        See `scale_by_lion`.
    weight_decay : float, default 0.0
        Decoupled weight decay (typically 3-10x above AdamW's).
    cautious_mask : bool, default False
        Mask the direction where it disagrees in sign with the gradient.
    cautious_weight_decay : bool, default False
        Decay only where the update and the parameter share a sign.

    Returns
    -------
    Stepper

    References
    ----------
    Chen et al., Symbolic Discovery of Optimization Algorithms (arXiv:2302.06675).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> opt = optim.lion(0.01)
    >>> w = np.zeros(2)
    >>> opt.update(np.array([3.0, -0.1]), opt.init(w), w)[0]
    array([-0.01,  0.01])
    """
    direction = scale_by_lion(b1, b2)
    return chain(
        cautious(direction) if cautious_mask else direction,
        add_decayed_weights(weight_decay, cautious=cautious_weight_decay),
        scale_by_learning_rate(learning_rate),
    )
