"""ODI-PGD: PGD from output-diversified starting points (Tashiro, Song & Ermon, NeurIPS 2020).

Each restart draws a random direction ``w ~ U[-1, 1]^K`` in logit space and first takes
``odi_steps`` signed-gradient steps of size ``odi_step_size`` that maximise ``w . f(x')``
(output diversified sampling), which spreads the restarts' starting points far more than
input-space noise does; then ``steps`` PGD steps of size ``step_size`` on the margin loss
``max_{j != y} z_j - z_y``. The authors' evaluation: 20 restarts, 2 ODI steps of size eps,
20 PGD steps of size eps/4 (2/255 at 8/255), margin loss.

Differences from the authors' script, each making the attack no weaker: every evaluated
point is checked (they check only each restart's last point), so an image is broken as soon
as any iterate is misclassified (and leaves the batch: early exit); the uniform start is
clipped to [0, 1] before the first pass. Randomness is per image, keyed by ``(seed, stream,
restart, global sample index)`` as in `logitscope.attacks.apgd`.
"""

from __future__ import annotations

import torch

from logitscope.attacks.apgd import (
    STREAMS,
    AttackResult,
    Outputs,
    input_gradient,
    per_sample_noise,
    retire_broken,
)
from logitscope.attacks.checks import Model
from logitscope.config import check_eps


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} z_j - z_y`` per sample: (B, K), (B,) -> (B,); positive iff misclassified."""
    z_y = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], -float("inf"))
    return others.amax(1) - z_y


@torch.no_grad()
def odi_pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    restarts: int = 20,
    odi_steps: int = 2,
    odi_step_size: float | None = None,
    steps: int = 20,
    step_size: float | None = None,
    seed: int = 0,
    indices: torch.Tensor | None = None,
    early_exit: bool = True,
    amp_dtype: torch.dtype | None = None,
) -> AttackResult:
    """L-inf ODI-PGD on B images; restarts only on the images not yet broken.

    Args:
        model: maps (B, ...) images in [0, 1] to (B, K) logits; used as is.
        x: (B, ...) clean images in [0, 1]. y: (B,) int64 labels.
        eps: L-inf radius, in the [0, 1] pixel scale.
        restarts: restarts per image (each with its own ``w`` and uniform start).
        odi_steps, odi_step_size: ODI steps and their size (default ``eps``).
        steps, step_size: PGD steps on the margin loss and their size (default ``eps / 4``).
        seed: non-negative integer; with ``indices`` (B,) global sample indices (default
            ``0 .. B-1``) it fixes every random draw.
        early_exit: stop each image at its first misclassified point (False: run every
            step; same verdicts).
        amp_dtype: autocast dtype for the model's passes (None: off).

    Returns:
        `AttackResult`; unbroken images keep their highest-margin point over all restarts.
    """
    eps = check_eps(eps)
    odi_step_size = eps if odi_step_size is None else float(odi_step_size)
    step_size = eps / 4 if step_size is None else float(step_size)
    if restarts < 1 or odi_steps < 0 or steps < 0:
        raise ValueError(
            f"restarts={restarts}, odi_steps={odi_steps}, steps={steps}: expected restarts >= 1 "
            "and non-negative step counts"
        )
    indices = torch.arange(x.shape[0]) if indices is None else torch.as_tensor(indices)
    x = x.detach()
    n_classes = model(x[:1]).shape[1] if x.shape[0] else 0
    out = Outputs(x, n_classes)
    for restart in range(restarts):
        todo = (~out.broken).nonzero()[:, 0]
        if todo.numel() == 0:
            break
        run = _odi_run(
            model,
            x[todo],
            y[todo],
            eps,
            n_classes,
            noise_key=(seed, restart),
            indices=indices[todo.cpu()],
            step_sizes=[odi_step_size] * odi_steps + [step_size] * steps,
            odi_steps=odi_steps,
            early_exit=early_exit,
            amp_dtype=amp_dtype,
        )
        out.merge(todo, run)
    return out.result()


def _odi_run(
    model: Model,
    x0: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    n_classes: int,
    *,
    noise_key: tuple[int, int],
    indices: torch.Tensor,
    step_sizes: list[float],
    odi_steps: int,
    early_exit: bool,
    amp_dtype: torch.dtype | None,
) -> AttackResult:
    """One ODI-PGD restart on B images: ``step_sizes`` lists the size of every step, the
    first ``odi_steps`` of them on ``w . f(x')``; ``noise_key`` is (seed, restart)."""
    seed, restart = noise_key
    view = (-1, *[1] * (x0.dim() - 1))
    lo, hi = (x0 - eps).clamp(min=0.0), (x0 + eps).clamp(max=1.0)
    u = per_sample_noise(x0.shape[1:], indices, (seed, STREAMS["odi-start"], restart))
    x = torch.clamp(x0 + (2 * u.to(x0) - 1) * eps, lo, hi)
    w = per_sample_noise((n_classes,), indices, (seed, STREAMS["odi-w"], restart))
    out = Outputs(x0, n_classes)
    st = {
        "act": torch.arange(x0.shape[0], device=x0.device),
        "y": y,
        "done": torch.zeros_like(y, dtype=torch.bool),
        "w": (2 * w - 1).to(device=x0.device),
        "lo": lo,
        "hi": hi,
        "x": x,
        "x_best": x,
        "logits_best": torch.zeros(x0.shape[0], n_classes, device=x0.device),
        "loss_best": torch.full((x0.shape[0],), -float("inf"), device=x0.device),
    }
    # Evaluation i gives the logits at the i-th point and, but for the last, the gradient
    # for the next step: len(step_sizes) gradient passes plus one forward.
    for i in range(len(step_sizes) + 1):
        if st["act"].numel() == 0:
            break
        x = st["x"]
        if i == len(step_sizes):
            logits, grad = model(x).float(), None
        elif i < odi_steps:
            logits, _, grad = input_gradient(model, x, lambda z, w=st["w"]: (z * w).sum(1), amp_dtype)
        else:
            logits, _, grad = input_gradient(model, x, lambda z, y=st["y"]: margin_loss(z, y), amp_dtype)
        margin = margin_loss(logits, st["y"])
        better = margin > st["loss_best"]
        st["x_best"] = torch.where(better.view(view), x, st["x_best"])
        st["logits_best"] = torch.where(better[:, None], logits, st["logits_best"])
        st["loss_best"] = torch.where(better, margin, st["loss_best"])
        if grad is not None:
            st["x"] = torch.clamp(x + step_sizes[i] * torch.sign(grad), st["lo"], st["hi"])
        st = retire_broken(st, out, x, logits, margin, n_evals=i + 1, early_exit=early_exit)
    unbroken = ~st["done"]
    rows = st["act"][unbroken]
    out.put(rows, st["x_best"][unbroken], st["logits_best"][unbroken], st["loss_best"][unbroken], False)
    out.n_grad[rows] = len(step_sizes) + 1
    return out.result()
