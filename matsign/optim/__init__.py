"""Optimizer steppers: pure ``(init, update)`` pairs on any array namespace.

Building blocks (`trace`, `scale_by_adam`, `scale_by_lion`, `orthogonalize`,
`add_decayed_weights`, `cautious`, `scale_by_shape`, `scale_by_learning_rate`) compose
with `chain` into `muon`, `adamw`, `lion`, `shampoo`, `soap` and the rest of the family;
`multi` applies steppers to (nested) dicts, lists or tuples of parameters, stacking
same-shape matrices into one batched orthogonalisation, `route` labels parameters for
Muon or AdamW/Lion, and `qk_clip` is MuonClip's QK-Clip. ``matsign.optim.torch``
(imported on demand; it needs torch) wraps them as ``torch.optim.Optimizer`` subclasses,
``matsign.optim.optax`` (needs jax and optax) as optax transformations.
"""

from ._base import (
    MATRIX_LAYOUTS,
    NONFINITE_POLICIES,
    EmptyState,
    Groups,
    MultiState,
    Stepper,
    apply_updates,
    chain,
    every_matrix,
    group_keys,
    matrix_shape,
    multi,
    stack,
    step_stacks,
    unstack,
)
from .adafactor import (
    AdafactorState,
    AdafactorUnfactoredState,
    TigerState,
    adafactor,
    scale_by_adafactor,
    scale_by_tiger,
    tiger,
)
from .alias import adamw, lion
from .clip import clip_factors, qk_clip, qk_clip_mla
from .muon import EMBEDDING_NAMES, HEAD_NAMES, muon, route
from .shampoo import ShampooState, SOAPState, scale_by_shampoo, scale_by_soap, shampoo, soap
from .transforms import (
    AdamState,
    AMSGradState,
    CountedTraceState,
    CountState,
    LionState,
    TraceState,
    add_decayed_weights,
    cautious,
    orthogonalize,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_shape,
    shape_scale,
    trace,
)

__all__ = [
    "EMBEDDING_NAMES",
    "HEAD_NAMES",
    "MATRIX_LAYOUTS",
    "NONFINITE_POLICIES",
    "AMSGradState",
    "AdafactorState",
    "AdafactorUnfactoredState",
    "AdamState",
    "CountState",
    "CountedTraceState",
    "EmptyState",
    "Groups",
    "LionState",
    "MultiState",
    "SOAPState",
    "ShampooState",
    "Stepper",
    "TigerState",
    "TraceState",
    "adafactor",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "cautious",
    "chain",
    "clip_factors",
    "every_matrix",
    "group_keys",
    "lion",
    "matrix_shape",
    "multi",
    "muon",
    "orthogonalize",
    "qk_clip",
    "qk_clip_mla",
    "route",
    "scale",
    "scale_by_adafactor",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_shampoo",
    "scale_by_shape",
    "scale_by_soap",
    "scale_by_tiger",
    "shampoo",
    "shape_scale",
    "soap",
    "stack",
    "step_stacks",
    "tiger",
    "trace",
    "unstack",
]
