"""Training losses for cross-encoders. They take logits, never text: tokenizing is the encoder's job.

Every loss reads a batch of *groups*: one query with ``G`` documents. ``logits`` is the model's
relevance logit for each pair, shape ``(B, G)``; ``mask`` marks real documents (groups may be
padded to the same size). What else a loss needs, and the input it is meant for:

============  =====================================  ==========================================
loss          needs                                  training data
============  =====================================  ==========================================
``bce``       ``labels`` in [0, 1]                   labelled pairs (``G = 1``), or any groups
``listwise``  the positive first in each group       groups: one positive, ``G - 1`` negatives
``ranknet``   ``labels`` (any grades)                triples, or groups with graded labels
``margin``    ``labels``; ``margin`` (default 1)     triples, or groups with graded labels
``margin-mse````teacher`` scores, positive first     distillation groups (teacher scored)
``kl``        ``teacher`` scores                     distillation groups (teacher scored)
============  =====================================  ==========================================

Example:
    >>> import torch
    >>> from crossrank.train.losses import LOSSES
    >>> logits = torch.tensor([[2.0, 0.5, -1.0]])  # one query: positive first, two negatives
    >>> float(LOSSES["listwise"](logits, labels=torch.tensor([[1.0, 0.0, 0.0]]))) < 0.3
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["LOSSES", "Loss", "needs_teacher"]

Loss = Callable[..., "torch.Tensor"]


def _torch() -> Any:
    import torch

    return torch


def _mask(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    torch = _torch()
    return torch.ones_like(logits, dtype=torch.bool) if mask is None else mask.bool()


def bce(logits: torch.Tensor, *, labels: torch.Tensor, mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
    """Return pointwise binary cross-entropy of each pair's logit against its label in [0, 1]."""
    torch = _torch()
    m = _mask(logits, mask)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return cast("Tensor", losses[m].mean())


def listwise(
    logits: torch.Tensor, *, mask: torch.Tensor | None = None, temperature: float = 1.0, **_: Any
) -> torch.Tensor:
    """Return softmax cross-entropy over each group, the positive being the first document."""
    torch = _torch()
    m = _mask(logits, mask)
    scaled = (logits / temperature).masked_fill(~m, float("-inf"))
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return cast("Tensor", torch.nn.functional.cross_entropy(scaled, target))


def _pairs(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return a ``(B, G, G)`` mask of ordered pairs (i, j) where document i should rank above j."""
    better = labels.unsqueeze(2) > labels.unsqueeze(1)
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    return better & both


def ranknet(logits: torch.Tensor, *, labels: torch.Tensor, mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
    """Return RankNet's pairwise logistic loss over every pair with different labels."""
    torch = _torch()
    pairs = _pairs(labels, _mask(logits, mask))
    diff = logits.unsqueeze(2) - logits.unsqueeze(1)
    if not pairs.any():
        return (logits * 0.0).sum()
    return cast("Tensor", torch.nn.functional.softplus(-diff[pairs]).mean())


def margin(
    logits: torch.Tensor,
    *,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    margin: float = 1.0,
    **_: Any,
) -> torch.Tensor:
    """Return the pairwise hinge loss: the better document must lead by at least ``margin``."""
    torch = _torch()
    pairs = _pairs(labels, _mask(logits, mask))
    diff = logits.unsqueeze(2) - logits.unsqueeze(1)
    if not pairs.any():
        return (logits * 0.0).sum()
    return cast("Tensor", torch.relu(margin - diff[pairs]).mean())


def margin_mse(
    logits: torch.Tensor, *, teacher: torch.Tensor, mask: torch.Tensor | None = None, **_: Any
) -> torch.Tensor:
    """Return Margin-MSE (Hofstätter et al., 2020): the student's positive-minus-negative margins
    must match the teacher's, for each negative of each group (the positive is the first)."""
    m = _mask(logits, mask)[:, 1:]
    student = logits[:, :1] - logits[:, 1:]
    target = teacher[:, :1] - teacher[:, 1:]
    return ((student - target.to(logits.dtype)) ** 2)[m].mean()


def kl(
    logits: torch.Tensor,
    *,
    teacher: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    **_: Any,
) -> torch.Tensor:
    """Return KL(teacher || student) between the softmax distributions over each group."""
    torch = _torch()
    m = _mask(logits, mask)
    s = torch.log_softmax((logits / temperature).masked_fill(~m, float("-inf")), dim=-1)
    t = torch.log_softmax((teacher.to(logits.dtype) / temperature).masked_fill(~m, float("-inf")), dim=-1)
    terms = torch.where(m, t.exp() * (t - s), torch.zeros_like(s))
    return cast("Tensor", terms.sum(dim=-1).mean() * temperature**2)


#: loss name -> function(logits, *, labels=..., teacher=..., mask=..., ...) -> scalar tensor
LOSSES: dict[str, Loss] = {
    "bce": bce,
    "listwise": listwise,
    "ranknet": ranknet,
    "margin": margin,
    "margin-mse": margin_mse,
    "kl": kl,
}


def needs_teacher(loss: str) -> bool:
    """Return whether ``loss`` learns from teacher scores rather than labels."""
    return loss in ("margin-mse", "kl")
