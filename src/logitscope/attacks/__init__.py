"""Attacks: PGD/FGSM (training and baselines), APGD (CE, DLR, targeted DLR), ODI-PGD, and the
paper's robustness protocol (APGD-CE then APGD-DLR) with per-sample records. Its settings,
`logitscope.config.ProtocolConfig`, are shared with the preset and the evaluation stage."""

from logitscope.attacks.apgd import AttackResult, apgd
from logitscope.attacks.odi import odi_pgd
from logitscope.attacks.pgd import fgsm, pgd
from logitscope.attacks.protocol import Protocol, ProtocolResult, evaluate_model

__all__ = ["AttackResult", "Protocol", "ProtocolResult", "apgd", "evaluate_model", "fgsm",
           "odi_pgd", "pgd"]
