"""The paper's robustness protocol (section 3), with per-sample records and resume.

"Adversarial accuracy" in the paper is the accuracy after the first two attacks of the
AutoAttack suite: APGD-CE on every correctly classified test image, then APGD-DLR on the
images still correct. `Protocol` runs that cascade (``protocol="paper"``) batch by batch with
a pinned seed, and two cross-checks the paper uses on a few models: the full standard
AutoAttack through the authors' package (``"autoattack"``, an optional extra) and ODI-PGD
(``"odi"``).

Per image it records the label, the clean logits, the logits at the final point (the first
adversarial point found; for unbroken images the highest-loss point of the last attack, but
the clean point under ``"autoattack"``, whose package returns none; for misclassified images
the clean logits), the robust flag, which attack broke it (``broken_by``:
-1 misclassified clean, 0 robust, 1 APGD-CE, 2 APGD-DLR, 3 another attack) and the L-inf
norm of the perturbation. Every image's randomness is keyed by its index, so results do not
depend on the batch size (but for ``"autoattack"``, whose package seeds per call), and an
evaluation killed midway resumes from its state file to the same result.

Checks (`logitscope.attacks.checks`) always run: eval mode, randomized models, logits rather
than probabilities, class counts, eps-ball and box of every returned point, robust <= clean,
and a gradient-masking warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from logitscope.attacks import checks
from logitscope.attacks.apgd import AttackResult, apgd
from logitscope.attacks.autoattack_ref import autoattack_standard
from logitscope.attacks.odi import odi_pgd
from logitscope.config import ProtocolConfig
from logitscope.fileio.atomic import atomic_save_npz, load_npz

logger = logging.getLogger(__name__)

AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}  # config.PRECISIONS
MISCLASSIFIED, ROBUST, BY_APGD_CE, BY_APGD_DLR, BY_OTHER = -1, 0, 1, 2, 3
# The attacks of each protocol in order, with the broken_by code of the images each breaks.
STAGES: dict[str, tuple[tuple[str, int], ...]] = {
    "paper": (("apgd-ce", BY_APGD_CE), ("apgd-dlr", BY_APGD_DLR)),
    "autoattack": (("apgd-ce", BY_APGD_CE), ("apgd-t/fab-t/square", BY_OTHER)),
    "odi": (("odi-pgd", BY_OTHER),),
}
RECORD_KEYS = ("label", "clean_logits", "adv_logits", "robust", "broken_by", "linf", "n_grad")


@dataclass(frozen=True)
class ProtocolResult:
    """Per-sample results of a robustness evaluation of N images with K classes.

    Attributes:
        label: (N,) int64.
        clean_logits: (N, K) float32 logits on the clean images.
        adv_logits: (N, K) float32 logits at the final point (see the module docstring).
        robust: (N,) bool, correctly classified at the final point (and clean).
        broken_by: (N,) int8: -1 misclassified clean, 0 robust, 1 APGD-CE, 2 APGD-DLR,
            3 another attack.
        linf: (N,) float32 L-inf norm of the final perturbation (0 where clean).
        n_grad: (N,) int64 gradient evaluations (forward + input backward) spent per image.
        config: the settings.
    """

    label: np.ndarray
    clean_logits: np.ndarray
    adv_logits: np.ndarray
    robust: np.ndarray
    broken_by: np.ndarray
    linf: np.ndarray
    n_grad: np.ndarray
    config: ProtocolConfig

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.broken_by != MISCLASSIFIED)) if len(self.label) else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(np.mean(self.robust)) if len(self.label) else float("nan")

    @property
    def accuracy_after(self) -> dict[str, float]:
        """Accuracy after each attack of the cascade, in order, starting with "clean"."""
        out = {"clean": self.clean_accuracy}
        for name, code in STAGES[self.config.protocol]:
            still = (self.broken_by == ROBUST) | (self.broken_by > code)
            out[name] = float(np.mean(still)) if len(self.label) else float("nan")
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the records as one ``.npz`` (atomic), with ``eps``, ``seed``, ``protocol`` and
        the full ``config`` (JSON) as scalar arrays."""
        return atomic_save_npz(
            path,
            **{k: getattr(self, k) for k in RECORD_KEYS},
            eps=np.float64(self.config.eps),
            seed=np.int64(self.config.seed),
            protocol=np.str_(self.config.protocol),
            config=np.str_(json.dumps(self.config.to_dict(), sort_keys=True)),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProtocolResult:
        d = load_npz(path)
        missing = [k for k in (*RECORD_KEYS, "config") if k not in d]
        if missing:
            raise KeyError(f"{path}: not a robustness record, missing {missing}")
        config = ProtocolConfig.from_dict(json.loads(str(d["config"])))
        return cls(**{k: d[k] for k in RECORD_KEYS}, config=config)


class Protocol:
    """A robustness evaluation with fixed settings; ``run`` applies it to a model.

    Example::

        result = Protocol(ProtocolConfig(eps=8 / 255)).run(model, x_test, y_test)
        result.clean_accuracy, result.robust_accuracy, result.accuracy_after
    """

    def __init__(self, config: ProtocolConfig | None = None) -> None:
        self.config = config or ProtocolConfig()

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        state_path: str | os.PathLike | None = None,
        progress: bool | None = None,
    ) -> ProtocolResult:
        """Evaluate ``model`` on N images.

        Args:
            model: maps (B, C, H, W) float images in [0, 1] to (B, K) logits; evaluated in eval
                mode (its mode is restored afterwards).
            x: (N, C, H, W) float images in [0, 1] (or uint8), on any device; batches move
                to the model's device.
            y: (N,) integer labels.
            state_path: if given, progress is saved there (atomically) after every batch, and
                a run finding the file resumes from it; the file records the settings, the
                data and the model and refuses a mismatch.
            progress: show a progress bar (None: when on a terminal).

        Returns:
            `ProtocolResult`.
        """
        cfg = self.config
        x = checks.check_images(x)
        y = checks.check_labels(torch.as_tensor(y), x.shape[0])
        n = x.shape[0]
        device = _device_of(model, x)
        fingerprint = _fingerprint(cfg, model, x, y)
        with checks.eval_mode(model), _memory_format(model, x, cfg, device) as layout:
            state = _State.open(state_path, fingerprint)
            todo = np.flatnonzero(~state.done)
            if len(todo):
                self._check_model(model, x[torch.from_numpy(todo[:16])].to(device, memory_format=layout))
            bar = tqdm(total=n, initial=n - len(todo), unit="img", disable=None if progress is None else not progress)
            bar.set_description(f"{cfg.protocol} {cfg.norm} eps={cfg.eps:.4g}")
            for start in range(0, len(todo), cfg.batch_size):
                idx = torch.from_numpy(todo[start : start + cfg.batch_size])
                records = self._batch(model, x[idx].to(device, memory_format=layout), y[idx].to(device), idx)
                state.update(idx.numpy(), records)
                bar.update(len(idx))
                bar.set_postfix(robust=f"{state.robust[state.done].mean():.3f}")
            bar.close()
            result = state.result(cfg)
            checks.check_accuracies(
                torch.from_numpy(result.broken_by != MISCLASSIFIED), torch.from_numpy(result.robust)
            )
            checks.check_gradient_masking(model, x, y, torch.from_numpy(result.robust), cfg.eps, cfg.norm)
        logger.info(
            "%s eps=%g on %d images: clean %.4f, robust %.4f",
            cfg.protocol,
            cfg.eps,
            n,
            result.clean_accuracy,
            result.robust_accuracy,
        )
        return result

    def _check_model(self, model: nn.Module, x: torch.Tensor) -> None:
        checks.check_deterministic(model, x, self.config.allow_randomized)
        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
        losses = {"paper": ("dlr",), "autoattack": ("dlr-targeted",), "odi": ()}[self.config.protocol]
        checks.check_n_classes(n_classes, losses)

    @torch.no_grad()
    def _batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> dict[str, np.ndarray]:
        """Records (`RECORD_KEYS`) of one batch: x (B, ...), y (B,), idx (B,) global indices."""
        cfg = self.config
        clean = model(x).float()
        checks.check_logits(clean, y)
        correct = clean.argmax(1) == y
        x_adv, adv_logits = x.clone(), clean.clone()
        broken_by = torch.where(correct, ROBUST, MISCLASSIFIED).to(torch.int8)
        n_grad = torch.zeros_like(y)
        if cfg.protocol == "autoattack":
            rows = correct.nonzero()[:, 0]
            if rows.numel():
                adv, codes = autoattack_standard(
                    model, x[rows], y[rows], cfg.eps, norm=cfg.norm, seed=cfg.seed, n_classes=clean.shape[1]
                )
                hit = codes != ROBUST
                x_adv[rows], broken_by[rows] = adv, codes
                adv_logits[rows[hit]] = model(adv[hit]).float()
        else:
            todo = correct.nonzero()[:, 0]
            for name, code in STAGES[cfg.protocol]:
                if todo.numel() == 0:
                    break
                res = self._attack(name, model, x[todo], y[todo], idx[todo.cpu()], clean[todo])
                fooled = res.broken
                logits = res.logits
                if AMP_DTYPES[cfg.precision] is not None:
                    logits = model(res.x_adv).float()
                    fooled = logits.argmax(1) != y[todo]
                x_adv[todo], adv_logits[todo] = res.x_adv, logits
                n_grad[todo] += res.n_grad
                broken_by[todo[fooled]] = code
                todo = todo[~fooled]
        linf = checks.perturbation_norms(x_adv, x, cfg.eps, cfg.norm)
        records = {
            "label": y,
            "clean_logits": clean,
            "adv_logits": adv_logits,
            "robust": broken_by == ROBUST,
            "broken_by": broken_by,
            "linf": linf,
            "n_grad": n_grad,
        }
        return {k: v.cpu().numpy() for k, v in records.items()}

    def _attack(
        self,
        name: str,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor,
        clean: torch.Tensor,
    ) -> AttackResult:
        cfg = self.config
        amp = AMP_DTYPES[cfg.precision]
        if name == "odi-pgd":
            return odi_pgd(
                model,
                x,
                y,
                cfg.eps,
                restarts=cfg.odi_restarts,
                odi_steps=cfg.odi_steps,
                odi_step_size=cfg.odi_step_size,
                steps=cfg.odi_pgd_steps,
                step_size=cfg.odi_pgd_step_size,
                seed=cfg.seed,
                indices=idx,
                amp_dtype=amp,
            )
        return apgd(
            model,
            x,
            y,
            cfg.eps,
            norm=cfg.norm,
            loss="ce" if name == "apgd-ce" else "dlr",
            n_iter=cfg.n_iter,
            n_restarts=cfg.n_restarts,
            seed=cfg.seed,
            indices=idx,
            clean_logits=clean,
            amp_dtype=amp,
        )


def evaluate_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: ProtocolConfig | None = None,
    state_path: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> ProtocolResult:
    """``Protocol(config).run(model, x, y, state_path)``: see `Protocol.run`."""
    return Protocol(config).run(model, x, y, state_path=state_path, progress=progress)


class _State:
    """Per-sample records filled batch by batch, mirrored to a state file when one is given."""

    def __init__(self, path: Path | None, fingerprint: str, n: int) -> None:
        self.path, self.fingerprint, self.n = path, fingerprint, n
        self.done = np.zeros(n, dtype=bool)
        self.arrays: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, path: str | os.PathLike | None, fingerprint: str) -> _State:
        n = json.loads(fingerprint)["n"]
        state = cls(None if path is None else Path(path), fingerprint, n)
        if state.path is None or not state.path.exists():
            return state
        d = load_npz(state.path)
        if "fingerprint" not in d or "done" not in d:
            raise ValueError(f"{state.path}: not a robustness state file (no fingerprint)")
        old, new = json.loads(str(d["fingerprint"])), json.loads(fingerprint)
        if old != new:
            diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            raise ValueError(
                f"{state.path} was written for different {', '.join(diff)} "
                f"({old.get(diff[0])!r} != {new.get(diff[0])!r}): delete it or use another path"
            )
        state.done = d["done"]
        state.arrays = {k: d[k] for k in RECORD_KEYS if k in d}
        logger.info("resuming from %s: %d of %d images done", state.path, state.done.sum(), n)
        return state

    @property
    def robust(self) -> np.ndarray:
        return self.arrays["robust"] if self.arrays else np.zeros(self.n, dtype=bool)

    def update(self, idx: np.ndarray, records: dict[str, np.ndarray]) -> None:
        for k, v in records.items():
            if k not in self.arrays:
                self.arrays[k] = np.zeros((self.n, *v.shape[1:]), dtype=v.dtype)
            self.arrays[k][idx] = v
        self.done[idx] = True
        if self.path is not None:
            atomic_save_npz(self.path, fingerprint=np.str_(self.fingerprint), done=self.done, **self.arrays)

    def result(self, config: ProtocolConfig) -> ProtocolResult:
        if not self.arrays:  # no image at all
            empty = {"label": np.int64, "robust": bool, "broken_by": np.int8, "linf": np.float32}
            arrays = {k: np.zeros(0, dtype=empty.get(k, np.int64)) for k in RECORD_KEYS}
            arrays["clean_logits"] = arrays["adv_logits"] = np.zeros((0, 0), dtype=np.float32)
            return ProtocolResult(**arrays, config=config)
        return ProtocolResult(**{k: self.arrays[k] for k in RECORD_KEYS}, config=config)


@contextlib.contextmanager
def _memory_format(
    model: nn.Module, x: torch.Tensor, cfg: ProtocolConfig, device: torch.device
) -> Iterator[torch.memory_format]:
    """Run the block with the model's 4-D weights in the configured layout, their original
    tensors put back afterwards; yields the layout to give the images. Falls back to contiguous
    if the model cannot run channels-last (e.g. a ``.view`` of its activations)."""
    want = cfg.memory_format
    if want == "auto":
        on_cpu, bf16 = device.type == "cpu", cfg.precision == "bf16"
        want = "channels_last" if on_cpu or (device.type == "cuda" and bf16) else "contiguous"
    weights = [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4]
    if want == "contiguous" or x.dim() != 4 or not weights or cfg.protocol == "autoattack":
        yield torch.contiguous_format
        return
    originals = [t.data for t in weights]
    layout = torch.channels_last
    try:
        model.to(memory_format=torch.channels_last)
        try:
            with torch.no_grad():
                model(x[:2].to(device, memory_format=torch.channels_last))
        except RuntimeError as err:
            logger.info("model cannot run channels-last (%s): evaluating contiguous", str(err).splitlines()[0])
            layout = torch.contiguous_format
        if layout == torch.contiguous_format:
            for t, data in zip(weights, originals, strict=True):
                t.data = data
        yield layout
    finally:
        for t, data in zip(weights, originals, strict=True):
            t.data = data


def _device_of(model: nn.Module, x: torch.Tensor) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return x.device


def _digest(tensors: list[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fingerprint(cfg: ProtocolConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    """JSON of what determines the results: settings, data and model weights."""
    return json.dumps(
        {
            **cfg.result_settings(),
            "n": int(x.shape[0]),
            "images": _digest([("x", x)]),
            "labels": _digest([("y", y)]),
            "model": _digest(sorted(model.state_dict().items())),
        },
        sort_keys=True,
    )
