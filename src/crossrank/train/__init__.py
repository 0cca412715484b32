"""Training and distillation of cross-encoders (needs ``crossrank[torch]``).

- :mod:`crossrank.train.data`: labelled pairs, triples, and groups mined from a first stage;
- :mod:`crossrank.train.losses`: BCE, listwise softmax, RankNet, margin, Margin-MSE, KL;
- :mod:`crossrank.train.trainer`: the training loop (:func:`train`), checkpoints and resume;
- :mod:`crossrank.train.distill`: teacher scores and students made of teacher layers.
"""

from crossrank.train.data import Group, MiningReport, MiningSettings, mine_groups, read_pairs, read_triples
from crossrank.train.trainer import DevSet, TrainConfig, TrainResult, train

__all__ = [
    "DevSet",
    "Group",
    "MiningReport",
    "MiningSettings",
    "TrainConfig",
    "TrainResult",
    "mine_groups",
    "read_pairs",
    "read_triples",
    "train",
]
