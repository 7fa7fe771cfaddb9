"""GPU fast path against a reference-style loop, side by side in one run.

CIFAR-shaped random uint8 data with the paper's settings (ResNet-18, batch 128, SGD 0.1,
PGD-10 at eps 8/255, step 2/255). Prints seconds per ST and PGD-10 AT epoch for

- ours: the training engine (data on the device as uint8, batched augmentation, bf16 autocast
  with fp32 master weights, channels_last, torch.compile with eager fallback, input-only
  gradients in the attack, no host sync in the step loop);
- reference-style: fp32, a per-image DataLoader pipeline (numpy crop/flip per image), and an
  attack that calls ``loss.backward()`` so it also computes weight gradients, as common
  reference code does;

images/s of the APGD protocol (ours; and pyautoattack's APGD-CE + APGD-DLR when installed),
bf16-vs-fp32 evaluation agreement, and a projection for the paper's 136 runs (assumed: 6 ST,
6 AT and 124 distillation runs of 200 epochs; a student epoch costs about an ST epoch).
Goals on an H100: AT epoch <= 8 s, >= 5x the reference-style loop, 136 runs < 15 GPU-hours.

    python benchmarks/gpu_epoch.py [--quick] [--n-train 45000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from logitscope.attacks.protocol import evaluate_model
from logitscope.config import ProtocolConfig, run_preset
from logitscope.data import Augment
from logitscope.models import build_model
from logitscope.training import objectives, perf

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def our_epoch(x: torch.Tensor, y: torch.Tensor, method: str, device: torch.device, fast: bool) -> float:
    """One epoch of the engine's loop (the same objective, augmentation and switches)."""
    cfg = run_preset("cifar10-paper", method=method, device=str(device))
    p = cfg.perf if fast else type(cfg.perf)()
    model = build_model("resnet18", 10, 3, MEAN, STD).to(device)
    fwd = perf.prepare(model, p)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    obj = objectives.standard if method == "st" else objectives.pgd_at(cfg.attack)
    aug = Augment(4, True)
    xd, yd = x.to(device), y.to(device)
    g = torch.Generator(device).manual_seed(0)

    def run(n_batches: int | None) -> float:
        order = torch.randperm(len(yd), generator=g, device=device)
        sync(device)
        t0 = time.perf_counter()
        for b, i in enumerate(range(0, len(yd), 128)):
            if n_batches is not None and b >= n_batches:
                break
            idx = order[i : i + 128]
            xb = perf.to_format(aug(xd[idx], g).float().div_(255), p)
            with perf.autocast(p, device):
                loss = obj(fwd, xb, yd[idx], idx, g, (0, len(idx), len(idx)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        return time.perf_counter() - t0

    run(5)  # warm-up: compilation, cuDNN autotuning
    return run(None)


class PerImageDataset(torch.utils.data.Dataset):
    """The common reference pipeline: one numpy crop and flip per image, in Python."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y, self.rng = x, y, np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = np.pad(self.x[i], ((0, 0), (4, 4), (4, 4)))
        a, b = self.rng.integers(0, 9, 2)
        img = img[:, a : a + 32, b : b + 32]
        if self.rng.random() < 0.5:
            img = img[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img)).float() / 255, int(self.y[i])


def reference_epoch(x: torch.Tensor, y: torch.Tensor, method: str, device: torch.device) -> float:
    model = build_model("resnet18", 10, 3, MEAN, STD).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    loader = torch.utils.data.DataLoader(
        PerImageDataset(x.numpy(), y.numpy()),
        batch_size=128,
        shuffle=True,
        num_workers=min(4, os.cpu_count() or 1),
        pin_memory=device.type == "cuda",
    )
    eps, step = 8 / 255, 2 / 255
    sync(device)
    t0 = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        if method == "at":
            delta = (torch.rand_like(xb) * 2 - 1) * eps
            for _ in range(10):
                delta.requires_grad_(True)
                loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
                loss.backward()  # weight gradients too, as reference code does
                delta = (delta + step * delta.grad.sign()).clamp(-eps, eps).detach()
            model.zero_grad()
            xb = (xb + delta).clamp(0, 1)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def protocol_rate(device: torch.device, n: int, precision: str) -> tuple[float, np.ndarray]:
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3, MEAN, STD).to(device).eval()
    x = torch.rand(n, 3, 32, 32, device=device)
    y = model(x).argmax(1).detach()  # all clean-correct: the protocol attacks every image
    cfg = ProtocolConfig(eps=8 / 255, n_iter=100, batch_size=500, precision=precision)
    sync(device)
    t0 = time.perf_counter()
    res = evaluate_model(model, x, y, cfg)
    sync(device)
    return n / (time.perf_counter() - t0), res.robust


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a small subset (CPU smoke run)")
    ap.add_argument("--n-train", type=int, default=45_000)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = 128 if args.quick else args.n_train
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 10, n))
    scale = 45_000 / n
    out: dict[str, object] = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "n_train": n}
    for method in ("st", "at"):
        ours = our_epoch(x, y, method, device, fast=device.type == "cuda") * scale
        ref = reference_epoch(x, y, method, device) * scale
        out[f"{method}_epoch_s_ours"] = round(ours, 2)
        out[f"{method}_epoch_s_reference"] = round(ref, 2)
        out[f"{method}_speedup"] = round(ref / ours, 2)
    n_eval = 20 if args.quick else 2000
    rate32, rob32 = protocol_rate(device, n_eval, "fp32")
    out["apgd_protocol_images_per_s_fp32"] = round(rate32, 1)
    if device.type == "cuda":
        rate16, rob16 = protocol_rate(device, n_eval, "bf16")
        out["apgd_protocol_images_per_s_bf16"] = round(rate16, 1)
        out["bf16_fp32_robust_agreement"] = float((rob16 == rob32).mean())
    hours = (6 * out["st_epoch_s_ours"] + 6 * out["at_epoch_s_ours"] + 124 * out["st_epoch_s_ours"]) * 200 / 3600
    out["projected_136_runs_gpu_hours"] = round(hours, 2)
    out["goals"] = {
        "at_epoch_le_8s": out["at_epoch_s_ours"] <= 8,
        "at_speedup_ge_5x": out["at_speedup"] >= 5,
        "paper_under_15_gpu_hours": hours < 15,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
