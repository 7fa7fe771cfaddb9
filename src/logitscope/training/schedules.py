"""The per-epoch schedule of a run: its learning rate, and which epochs checkpoint, store
logits, take a snapshot and measure the PGD monitor (pure functions of the config)."""

from __future__ import annotations

from logitscope.config import RunConfig
from logitscope.training.monitor import COLLAPSE_CHECK_EPOCH


def learning_rate(cfg: RunConfig, epoch: int) -> float:
    """Step schedule: lr times gamma for every milestone already passed (epochs are 1-based)."""
    passed = sum(1 for m in cfg.optim.milestones if epoch > m)
    return cfg.optim.lr * cfg.optim.gamma**passed


def should_checkpoint(cfg: RunConfig, epoch: int) -> bool:
    every = cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0
    return bool(every) or epoch in cfg.checkpoint_epochs or epoch == cfg.epochs


def stores_logits(cfg: RunConfig, epoch: int) -> bool:
    """Whether ``epoch``'s logits are stored: every ``store.logits_every``-th epoch, and every
    epoch whose checkpoint is kept (the epochs teachers, students and analyses are taken at)."""
    return epoch % cfg.store.logits_every == 0 or should_checkpoint(cfg, epoch)


def takes_snapshot(cfg: RunConfig, epoch: int) -> bool:
    """Whether ``epoch`` ends with a logit snapshot of every split (its accuracies): the epochs
    whose logits are stored, and the collapse check's epoch (`COLLAPSE_CHECK_EPOCH`). Other
    epochs (``store.logits_every > 1``) record their accuracies as nan: a forward pass over
    every image that nothing keeps is a third of a small student's epoch."""
    return stores_logits(cfg, epoch) or epoch == min(COLLAPSE_CHECK_EPOCH, cfg.epochs)


def monitors_pgd(cfg: RunConfig, epoch: int) -> bool:
    """Whether ``epoch`` measures the PGD monitor: every ``monitor.pgd_every``-th and the last."""
    return epoch % cfg.monitor.pgd_every == 0 or epoch == cfg.epochs
