"""Auto-PGD (Croce & Hein, ICML 2020) with per-image seeding and early exit.

APGD is PGD with momentum 0.75 and a step size that starts at ``2 * eps`` and is halved at
checkpoints ``w_j`` (the first after 22% of the iterations, then at gaps shrinking by 3% down
to 6%) when either condition of the paper holds: (1) the loss went up in at most ``rho`` of
the steps since the last checkpoint, or (2) the step size was not reduced at the last
checkpoint and the best loss has not improved since. A reduction restarts from the best
point. Losses: cross-entropy, DLR (eq. 6 of the paper) and targeted DLR (APGD-T, targets the
classes ranked 2nd, 3rd, ... by the clean logits).

Every detail of one run follows the authors' reference implementation (the ``pyautoattack``
package), so from the same starting point our run takes the same steps. Two things differ,
both without changing any image's verdict:

- Early exit: an image leaves the batch at the first iterate that is misclassified, and
  that point is its result. Later iterates of a broken image cannot un-break it, so the
  verdict equals the one of running every iteration; a non-robust model costs a few
  gradient evaluations per image instead of ``n_iter + 1``.
- Seeding: the random start of each image is drawn from its own stream, keyed by
  ``(seed, stream, restart, global sample index)``, so results do not depend on the batch
  size or on which other images share the batch.

Only input gradients are computed (``torch.autograd.grad`` on the input), never weight
gradients. The caller chooses the model's mode; `logitscope.attacks.protocol` puts it in
eval mode and runs the checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from logitscope.attacks.checks import Model, check_zero_gradients, min_classes
from logitscope.config import NORMS, check_eps

Norm = Literal["Linf", "L2"]
LossName = Literal["ce", "dlr", "dlr-targeted"]

LOSSES: tuple[str, ...] = ("ce", "dlr", "dlr-targeted")
# Random streams: one per attack, so that two attacks on one image start from different points.
STREAMS: dict[str, int] = {"ce": 1, "dlr": 2, "dlr-targeted": 10, "odi-start": 100, "odi-w": 101}
_TINY = 1e-12


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy: (B, K) logits, (B,) labels -> (B,)."""
    return F.cross_entropy(logits, y, reduction="none")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio, eq. (6) of Croce & Hein (2020): (B, K), (B,) -> (B,).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, with ``z_pi`` the logits sorted in
    decreasing order; invariant to shifting and rescaling the logits. Needs K >= 3.
    """
    z, order = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None])[:, 0]
    top_is_y = order[:, -1] == y
    z_other = torch.where(top_is_y, z[:, -2], z[:, -1])
    return -(z_y - z_other) / (z[:, -1] - z[:, -3] + _TINY)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR of APGD-T: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``; needs K >= 4."""
    z = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, y_target[:, None])[:, 0]
    return -(z_y - z_t) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + _TINY)


def checkpoint_schedule(n_iter: int) -> dict[int, int]:
    """Iterations (0-based) after which the step size may be halved, mapped to the number of
    iterations since the previous checkpoint (the window of condition 1).

    As the reference: first window ``max(int(0.22 n), 1)``, each next one shorter by
    ``max(int(0.03 n), 1)`` down to ``max(int(0.06 n), 1)``. For n = 100: 21, 40, 56, 69, ...
    """
    k = max(int(0.22 * n_iter), 1)
    k_min = max(int(0.06 * n_iter), 1)
    decrement = max(int(0.03 * n_iter), 1)
    schedule: dict[int, int] = {}
    i = k - 1
    while i < n_iter:
        schedule[i] = k
        k = max(k - decrement, k_min)
        i += k
    return schedule


def per_sample_noise(
    shape: Sequence[int],
    indices: torch.Tensor | np.ndarray | Sequence[int],
    key: Sequence[int],
    kind: Literal["uniform", "normal"] = "uniform",
) -> torch.Tensor:
    """One independent random tensor of ``shape`` per sample, keyed by ``(*key, index)``.

    Each sample's numbers depend only on its key and global index (NumPy's SeedSequence
    hashes the integers), never on the batch it travels in.

    Returns:
        (len(indices), *shape) float32 CPU tensor: uniform in [0, 1) or standard normal.
    """
    key = [int(k) for k in key]
    if any(k < 0 for k in key):
        raise ValueError(f"random key {key}: expected non-negative integers (seed >= 0)")
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
    out = np.empty((len(idx), *shape), dtype=np.float32)
    for row, i in enumerate(idx.tolist()):
        rng = np.random.default_rng([*key, i])
        if kind == "uniform":
            out[row] = rng.random(tuple(shape), dtype=np.float32)
        else:
            out[row] = rng.standard_normal(tuple(shape), dtype=np.float32)
    return torch.from_numpy(out)


def _flat_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of (B, ...) as (B, 1, ..., 1), computed as the reference does."""
    flat = v.flatten(1)
    n = flat.abs().max(1).values if norm == "Linf" else (flat**2).sum(-1).sqrt()
    return n.view(-1, *[1] * (v.dim() - 1))


def random_start(x: torch.Tensor, eps: float, norm: Norm, indices: torch.Tensor, key: Sequence[int]) -> torch.Tensor:
    """APGD's starting point: a random direction rescaled to norm ``eps``, clipped to [0, 1].

    L-inf: ``t ~ U[-1, 1)^d`` rescaled so that its largest coordinate is ``eps``; L2:
    ``t ~ N(0, I)`` rescaled to L2 norm ``eps`` (as the reference).

    Args:
        x: (B, ...) clean images in [0, 1].
        indices: (B,) global sample indices (seed the per-image streams).
        key: integers identifying the draw, e.g. ``(seed, stream, restart)``.
    """
    kind = "uniform" if norm == "Linf" else "normal"
    t = per_sample_noise(x.shape[1:], indices, key, kind).to(device=x.device, dtype=x.dtype)
    if norm == "Linf":
        t = 2 * t - 1
    return (x + eps * (t / (_flat_norm(t, norm) + _TINY))).clamp(0.0, 1.0)


@dataclass(frozen=True)
class AttackResult:
    """Per-image outcome of an attack on B images.

    Attributes:
        x_adv: (B, ...) the first misclassified point found for broken images, the
            highest-loss point for the others; always in the eps-ball and in [0, 1].
        logits: (B, K) float32 logits at ``x_adv``.
        broken: (B,) bool, True where ``x_adv`` is misclassified.
        loss: (B,) float32 the attack's loss at ``x_adv``.
        n_grad: (B,) int64 gradient evaluations (forward + input backward) spent per image.
    """

    x_adv: torch.Tensor
    logits: torch.Tensor
    broken: torch.Tensor
    loss: torch.Tensor
    n_grad: torch.Tensor


class Outputs:
    """Result buffers of an attack on B images, filled as images break or finish."""

    def __init__(self, x: torch.Tensor, n_classes: int) -> None:
        b = x.shape[0]
        self.x_adv = x.detach().clone()
        self.logits = torch.zeros(b, n_classes, device=x.device, dtype=torch.float32)
        self.broken = torch.zeros(b, device=x.device, dtype=torch.bool)
        self.loss = torch.full((b,), -float("inf"), device=x.device, dtype=torch.float32)
        self.n_grad = torch.zeros(b, device=x.device, dtype=torch.int64)

    def put(
        self,
        where: torch.Tensor,
        x_adv: torch.Tensor,
        logits: torch.Tensor,
        loss: torch.Tensor,
        broken: bool | torch.Tensor,
    ) -> None:
        """Write rows ``where`` (a (b,) index tensor) of every buffer."""
        self.x_adv[where] = x_adv
        self.logits[where] = logits.float()
        self.loss[where] = loss.float()
        self.broken[where] = broken

    def merge(self, where: torch.Tensor, run: AttackResult) -> None:
        """Fold in a run on rows ``where``: broken images take its point; unbroken images keep
        the point of highest loss over runs (the losses of one attack share one scale)."""
        take = run.broken | (run.loss > self.loss[where])
        rows = where[take]
        self.put(rows, run.x_adv[take], run.logits[take], run.loss[take], run.broken[take])
        self.n_grad[where] += run.n_grad

    def result(self) -> AttackResult:
        return AttackResult(self.x_adv, self.logits, self.broken, self.loss, self.n_grad)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for the attack's forward and backward passes (None: off)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def input_gradient(
    model: Model,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (B, K) float32, per-sample loss (B,) and its input gradient (B, ...) at ``x``.

    One forward and one backward to the input only (``torch.autograd.grad``).
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with _autocast(x.device, amp_dtype):
            logits = model(xg)
        logits = logits.float()
        loss = loss_fn(logits)
        (grad,) = torch.autograd.grad(loss.sum(), xg)
    return logits.detach(), loss.detach(), grad.detach()


def _project(v: torch.Tensor, x0: torch.Tensor, eps: float, norm: str, lo, hi) -> torch.Tensor:
    """Projection onto the eps-ball around ``x0`` intersected with [0, 1], as the reference.

    L-inf: clipping to ``[max(x0 - eps, 0), min(x0 + eps, 1)]`` (``lo``, ``hi``) selects the
    same floats as the reference's clip to the ball, then to the box. L2: rescale to norm
    ``eps`` if longer, then clip to the box.
    """
    if norm == "Linf":
        return torch.clamp(v, lo, hi)
    d = v - x0
    n = _flat_norm(d, "L2")
    return (x0 + d / (n + _TINY) * torch.clamp(n, max=eps)).clamp(0.0, 1.0)


@torch.no_grad()
def apgd_run(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    x_start: torch.Tensor,
    eps: float,
    *,
    norm: Norm = "Linf",
    loss: LossName = "ce",
    n_iter: int = 100,
    rho: float = 0.75,
    y_target: torch.Tensor | None = None,
    early_exit: bool = True,
    amp_dtype: torch.dtype | None = None,
) -> AttackResult:
    """One APGD run (no restart) from the given starting points.

    Args:
        model: maps (B, ...) images in [0, 1] to (B, K) logits.
        x: (B, ...) clean images in [0, 1].
        y: (B,) int64 labels.
        x_start: (B, ...) starting points in the eps-ball around ``x`` and in [0, 1]
            (`random_start` draws the reference's).
        eps: radius of the ball, in the [0, 1] pixel scale.
        norm: "Linf" or "L2".
        loss: "ce", "dlr" or "dlr-targeted" (then ``y_target`` (B,) is required).
        n_iter: iterations after the starting point (the reference's ``n_iter``).
        rho: condition 1 threshold (fraction of increasing steps).
        early_exit: stop each image at its first misclassified iterate. False runs every
            iteration for every image (same verdicts; for tests and timing).
        amp_dtype: autocast dtype for the model's passes (None: the model's own precision).

    Returns:
        `AttackResult` for the B images.
    """
    eps = check_eps(eps)
    if norm not in NORMS or loss not in LOSSES:
        raise ValueError(f"norm={norm!r}, loss={loss!r}: expected a norm in {NORMS}, a loss in {LOSSES}")
    if (loss == "dlr-targeted") != (y_target is not None):
        raise ValueError("y_target is needed with loss='dlr-targeted' and only then")
    if n_iter < 1:
        raise ValueError(f"n_iter={n_iter}: expected at least 1 iteration")
    x0 = x.detach()
    yt = y_target if y_target is not None else y

    def loss_of(y_: torch.Tensor, yt_: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        if loss == "ce":
            return lambda z: ce_loss(z, y_)
        if loss == "dlr":
            return lambda z: dlr_loss(z, y_)
        return lambda z: dlr_targeted_loss(z, y_, yt_)

    # The state of the active images; `act` maps them to rows of the outputs.
    xa = x_start.detach()
    logits, loss_val, grad = input_gradient(model, xa, loss_of(y, yt), amp_dtype)
    if loss != "ce":
        check_zero_gradients(grad)
    out = Outputs(x0, logits.shape[1])
    out.n_grad.fill_(1)
    view = (-1, *[1] * (x0.dim() - 1))
    st = {
        "act": torch.arange(x0.shape[0], device=x0.device),
        "x0": x0,
        "y": y,
        "yt": yt,
        "lo": (x0 - eps).clamp(min=0.0),
        "hi": (x0 + eps).clamp(max=1.0),
        "x": xa,
        "x_prev": xa,
        "grad": grad,
        "x_best": xa,
        "grad_best": grad,
        "logits_best": logits,
        "loss_best": loss_val,
        "step": torch.full((x0.shape[0],), 2.0 * eps, device=x0.device, dtype=x0.dtype),
        # The reference compares the first iterate's loss with an unfilled (zero) entry of
        # its loss history; we do the same so that every step matches it.
        "loss_prev": torch.zeros_like(loss_val) if n_iter > 1 else torch.full_like(loss_val, float("inf")),
        "n_up": torch.zeros_like(loss_val),
        "reduced_last": torch.ones_like(loss_val, dtype=torch.bool),
        "loss_best_last": loss_val,
        "done": torch.zeros_like(loss_val, dtype=torch.bool),
    }
    st = retire_broken(st, out, xa, logits, loss_val, n_evals=1, early_exit=early_exit)
    schedule = checkpoint_schedule(n_iter)
    for i in range(n_iter):
        if st["act"].numel() == 0:
            break
        a = 0.75 if i > 0 else 1.0
        xa, x_prev, lo, hi = st["x"], st["x_prev"], st["lo"], st["hi"]
        step = st["step"].view(view)
        if norm == "Linf":
            x1 = _project(xa + step * torch.sign(st["grad"]), st["x0"], eps, norm, lo, hi)
        else:
            g = st["grad"]
            x1 = _project(xa + step * (g / (_flat_norm(g, "L2") + _TINY)), st["x0"], eps, norm, lo, hi)
        x_new = _project(xa + (x1 - xa) * a + (xa - x_prev) * (1 - a), st["x0"], eps, norm, lo, hi)
        logits, loss_val, grad = input_gradient(model, x_new, loss_of(st["y"], st["yt"]), amp_dtype)
        better = loss_val > st["loss_best"]
        bv = better.view(view)
        st["x_best"] = torch.where(bv, x_new, st["x_best"])
        st["grad_best"] = torch.where(bv, grad, st["grad_best"])
        st["logits_best"] = torch.where(better[:, None], logits, st["logits_best"])
        st["loss_best"] = torch.where(better, loss_val, st["loss_best"])
        st["n_up"] = st["n_up"] + (loss_val > st["loss_prev"])
        st["loss_prev"] = loss_val
        st["x_prev"], st["x"], st["grad"] = xa, x_new, grad
        if i in schedule:
            k = schedule[i]
            reduce = (st["n_up"] <= k * rho) | (~st["reduced_last"] & (st["loss_best_last"] >= st["loss_best"]))
            rv = reduce.view(view)
            st["step"] = torch.where(reduce, st["step"] / 2.0, st["step"])
            st["x"] = torch.where(rv, st["x_best"], st["x"])
            st["grad"] = torch.where(rv, st["grad_best"], st["grad"])
            st["reduced_last"] = reduce
            st["loss_best_last"] = st["loss_best"]
            st["n_up"] = torch.zeros_like(st["n_up"])
        st = retire_broken(st, out, x_new, logits, loss_val, n_evals=i + 2, early_exit=early_exit)
    unbroken = ~st["done"]
    rows = st["act"][unbroken]
    out.put(rows, st["x_best"][unbroken], st["logits_best"][unbroken], st["loss_best"][unbroken], False)
    out.n_grad[rows] = n_iter + 1
    return out.result()


def retire_broken(
    st: dict[str, torch.Tensor],
    out: Outputs,
    x_eval: torch.Tensor,
    logits: torch.Tensor,
    loss_val: torch.Tensor,
    n_evals: int,
    early_exit: bool,
) -> dict[str, torch.Tensor]:
    """Record the images whose point ``x_eval`` (where ``logits`` were computed) is
    misclassified for the first time; with ``early_exit`` drop them from the active state.

    ``st`` holds the active images' state, batch dimension first, with at least ``act``
    (their rows in ``out``), ``y`` (labels) and ``done`` (already recorded). One host sync.
    """
    new = (logits.argmax(1) != st["y"]) & ~st["done"]
    if not bool(new.any()):
        return st
    rows = st["act"][new]
    out.put(rows, x_eval[new], logits[new], loss_val[new], True)
    out.n_grad[rows] = n_evals
    if not early_exit:
        st["done"] = st["done"] | new
        return st
    keep = (~new).nonzero().squeeze(1)
    return {name: t.index_select(0, keep) for name, t in st.items()}


def target_classes(clean_logits: torch.Tensor, n_target_classes: int) -> Iterator[tuple[int, torch.Tensor]]:
    """APGD-T's targets: for rank r = 2 .. n_target_classes + 1, the class ranked r-th by the
    clean logits of each image; yields (r, (B,) int64)."""
    order = clean_logits.sort(dim=1).indices
    for rank in range(2, n_target_classes + 2):
        yield rank, order[:, -rank]


@torch.no_grad()
def apgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: Norm = "Linf",
    loss: LossName = "ce",
    n_iter: int = 100,
    n_restarts: int = 1,
    n_target_classes: int = 9,
    rho: float = 0.75,
    seed: int = 0,
    indices: torch.Tensor | None = None,
    clean_logits: torch.Tensor | None = None,
    early_exit: bool = True,
    amp_dtype: torch.dtype | None = None,
) -> AttackResult:
    """APGD-CE, APGD-DLR or APGD-T on B images, with restarts on the images not yet broken.

    Each restart of each image starts from `random_start` keyed by ``(seed, stream,
    restart, indices[i])``; APGD-T runs ``n_restarts`` restarts for each of the
    ``n_target_classes`` targets in turn (as the reference). Unbroken images keep the point of
    highest loss over all restarts and targets.

    Args:
        model: maps (B, ...) images in [0, 1] to (B, K) logits; used as is (mode untouched).
        x: (B, ...) clean images in [0, 1], normally the correctly classified ones.
        y: (B,) int64 labels.
        eps: radius of the ball, in the [0, 1] pixel scale.
        norm: "Linf" or "L2".
        loss: "ce" (APGD-CE), "dlr" (APGD-DLR) or "dlr-targeted" (APGD-T).
        n_iter: iterations per run. n_restarts: runs per image (per target for APGD-T).
        n_target_classes: targets of APGD-T (at most K - 1).
        seed: non-negative integer; with ``indices`` it fixes every random start.
        indices: (B,) global sample indices (default ``0 .. B-1``).
        clean_logits: (B, K) logits at ``x`` (APGD-T ranks targets by them); computed if None.
        early_exit: see `apgd_run`.
        amp_dtype: autocast dtype for the model's passes (None: off).

    Returns:
        `AttackResult`; ``n_grad`` sums the gradient evaluations of every run.
    """
    eps = check_eps(eps)
    if n_restarts < 1:
        raise ValueError(f"n_restarts={n_restarts}: expected at least 1")
    indices = torch.arange(x.shape[0]) if indices is None else torch.as_tensor(indices)
    if indices.shape != (x.shape[0],):
        raise ValueError(f"indices of shape {tuple(indices.shape)}: expected ({x.shape[0]},)")
    if clean_logits is None:
        clean_logits = model(x).float()
    n_classes = clean_logits.shape[1]
    if loss in LOSSES and n_classes < min_classes(loss):
        raise ValueError(f"loss={loss!r} needs at least {min_classes(loss)} classes: the model has {n_classes}")
    if loss == "dlr-targeted" and not 1 <= n_target_classes <= n_classes - 1:
        raise ValueError(f"n_target_classes={n_target_classes}: expected 1 to {n_classes - 1} (K - 1)")
    out = Outputs(x, n_classes)
    if loss == "dlr-targeted":
        targets: Iterator[tuple[int, torch.Tensor | None]] = target_classes(clean_logits, n_target_classes)
    else:
        targets = iter([(0, None)])
    for rank, y_target in targets:
        for restart in range(n_restarts):
            todo = (~out.broken).nonzero().squeeze(1)
            if todo.numel() == 0:
                return out.result()
            start = random_start(x[todo], eps, norm, indices[todo.cpu()], (seed, STREAMS[loss] + rank, restart))
            run = apgd_run(
                model,
                x[todo],
                y[todo],
                start,
                eps,
                norm=norm,
                loss=loss,
                n_iter=n_iter,
                rho=rho,
                y_target=None if y_target is None else y_target[todo],
                early_exit=early_exit,
                amp_dtype=amp_dtype,
            )
            out.merge(todo, run)
    return out.result()
