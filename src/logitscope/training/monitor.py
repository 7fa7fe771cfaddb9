"""What a run measures as it trains: the fixed PGD monitor subset and its accuracy, and the
collapse rule (a run still at chance after its first epochs)."""

from __future__ import annotations

import torch
from torch import nn

from logitscope.attacks.pgd import pgd
from logitscope.config import RunConfig
from logitscope.runtime import derive_seed


def monitor_subset(n_test: int, n: int) -> torch.Tensor:
    """The fixed test subset for per-epoch PGD accuracy (same for every run of a dataset)."""
    g = torch.Generator().manual_seed(derive_seed(0, "monitor"))
    return torch.randperm(n_test, generator=g)[: min(n, n_test)].sort().values


def pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig, device: torch.device) -> float:
    """Accuracy under PGD (eval mode, random start, step 2.5 eps / steps) on ``x``."""
    if len(x) == 0 or cfg.monitor.pgd_n == 0:
        return float("nan")
    eps, steps = cfg.attack.eps, cfg.monitor.pgd_steps
    g = torch.Generator(device).manual_seed(derive_seed(0, "monitor-pgd"))
    model.eval()
    correct = 0
    bs = cfg.monitor.eval_batch_size
    for i in range(0, len(x), bs):
        xb = x[i : i + bs].to(device).float().div_(255)
        yb = y[i : i + bs].to(device)
        xa = pgd(model, xb, yb, eps, 2.5 * eps / max(steps, 1), steps, True, g)
        with torch.no_grad():
            correct += int((model(xa).argmax(1) == yb).sum())
    return correct / len(x)


# Collapse: a run whose clean training accuracy is still at chance after its first epochs is
# not learning (PGD-AT at a large eps from scratch stalls there, e.g. MNIST at eps 0.3 with
# loss 2.30 and 11.3% accuracy: the share of its largest class, all images given one label).
# The rule: at the end of epoch COLLAPSE_CHECK_EPOCH (or the last epoch, if the run is
# shorter) the epoch's train_acc (its logit snapshot: eval mode, clean, unaugmented) is below
# COLLAPSE_FACTOR / C for C classes. 1.5 / C (15% for 10 classes) sits above what one
# constant prediction scores on roughly balanced data (MNIST's largest class: 11.2%) and far
# below what any learning run reaches by then (digits ST: over 80% after epoch 1; CIFAR-10
# PGD-AT: about 30%). Two epochs, not one: a slow first epoch (warm-up, small lr) is not yet
# a failure. The run goes on (it may still start learning); the warning is logged and kept
# in meta.json ("warnings"), shown by `logitscope runs`, until a later epoch's training
# accuracy is above the same threshold: then it is withdrawn (moved to "withdrawn_warnings",
# with the epoch that left chance). Students distilled with L1 on logits do exactly this on
# digits: 9.6% after epoch 2, then over 80% by epoch 5 (every one of the preset's 57).
COLLAPSE_CHECK_EPOCH = 2
COLLAPSE_FACTOR = 1.5
COLLAPSE_MARK = " is at chance ("  # in every collapse warning's text


def left_chance(train_acc: float, n_classes: int) -> bool:
    """Whether a recorded training accuracy is above the collapse threshold (NaN: not recorded)."""
    return n_classes >= 2 and train_acc >= COLLAPSE_FACTOR / n_classes


def collapse_warning(cfg: RunConfig, epoch: int, train_acc: float, n_classes: int) -> str | None:
    """The collapse warning of ``epoch`` (see ``COLLAPSE_CHECK_EPOCH``), or None."""
    if epoch != min(COLLAPSE_CHECK_EPOCH, cfg.epochs) or n_classes < 2 or not train_acc < COLLAPSE_FACTOR / n_classes:
        return None
    if cfg.objective == "pgd-at":
        w = max(2 * cfg.attack.warmup_epochs, 5)
        hint = (
            f"for PGD-AT try attack.warmup_epochs={w} (eps ramps up from eps/{w}; now {cfg.attack.warmup_epochs}) "
            f"or a lower optim.lr (now {cfg.optim.lr:g})"
        )
    else:
        hint = f"try a lower optim.lr (now {cfg.optim.lr:g}), and check the data and labels"
    return (
        f"training accuracy {100 * train_acc:.1f}% after epoch {epoch}{COLLAPSE_MARK}"
        f"{100 / n_classes:.1f}% for {n_classes} classes): it is not learning; {hint}"
    )
