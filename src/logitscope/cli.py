"""The ``logitscope`` command: one subcommand per stage. It only parses and calls."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from logitscope.config import DATASET_RUN_PRESET, RUN_PRESETS, ConfigError, RunConfig, parse_float, run_preset
from logitscope.fileio.errors import DamagedFileError

log = logging.getLogger("logitscope")

# Convenience flags of `train`/`distill` and the config keys they set.
RUN_FLAGS = {
    "dataset": ("data.name", str),
    "data_dir": ("data.data_dir", str),
    "model": ("model.name", str),
    "method": ("method", str),
    "epochs": ("epochs", int),
    "seed": ("seed", int),
    "name": ("name", str),
    "lr": ("optim.lr", parse_float),
    "batch_size": ("optim.batch_size", int),
    "eps": ("attack.eps", parse_float),
    "step_size": ("attack.step_size", parse_float),
    "steps": ("attack.steps", int),
    "device": ("device", str),
}


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"run preset ({', '.join(RUN_PRESETS)}); default from --dataset")
    for flag, (key, _) in RUN_FLAGS.items():
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=f"sets {key}")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, e.g. optim.milestones=[100,150]",
    )
    p.add_argument("--out", default="runs", help="folder of run folders (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run of the same config")


def config_from_args(args: argparse.Namespace, extra: dict[str, object] | None = None) -> RunConfig:
    dataset = args.dataset or "digits"
    preset = args.preset or DATASET_RUN_PRESET.get(dataset, "digits")
    overrides: dict[str, object] = {}
    for flag, (key, conv) in RUN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            try:
                overrides[key] = conv(value)
            except ValueError as exc:
                raise ConfigError(f"--{flag.replace('_', '-')} {value!r}: {exc}") from exc
    overrides.update(extra or {})
    cfg = run_preset(preset, **overrides)
    return cfg.with_overrides(list(args.set)) if args.set else cfg


def cmd_train(args: argparse.Namespace) -> int:
    from logitscope.distill.distillation import train_run

    cfg = config_from_args(args)
    run = train_run(cfg, out=args.out, resume=args.resume)
    print(json.dumps(run.summary()))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from logitscope.store.runs import list_runs

    runs = list_runs(args.folder)
    if (Path(args.folder) / "plan" / "preset.json").is_file():  # a reproduce folder: its plan's state first
        from logitscope.plan.reproduce import plan_state

        print(plan_state(Path(args.folder)))
    if not runs:
        print(f"no runs in {args.folder}")
        return 0
    rows = [r.summary() for r in runs]
    cols = ["run", "method", "status", "epoch", "test_acc", "pgd_acc", "warning"]
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in rows:  # the warning (training's first, or -) last: long, and read whole
        print("  ".join(_fmt(r[c]).ljust(widths[c]) for c in cols).rstrip())
    return 0


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from logitscope.evaluation import evaluate

    result = evaluate(
        args.run,
        epoch=args.epoch,
        eps=parse_float(args.eps) if args.eps is not None else None,
        n=args.n,
        protocol=args.protocol,
        n_iter=args.n_iter,
        n_restarts=args.n_restarts,
        batch_size=args.batch_size,
        seed=args.seed,
        split=args.split,
    )
    print(json.dumps(result))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from logitscope.distill.distillation import distill_config, train_student

    base = config_from_args(args)
    cfg = distill_config(
        base,
        teacher=args.teacher,
        teacher_epoch=args.teacher_epoch,
        transform=args.transform,
        k=args.k,
        loss=args.loss,
        passes=args.passes,
        hybrid_order=args.hybrid_order,
        temperature=parse_float(args.temperature),
    )
    run = train_student(cfg, out=args.out, resume=args.resume)
    print(json.dumps(run.summary()))
    return 0


def analysis_groups(runs: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """``logitscope analyze``'s runs as (ST, AT and students), by their configs."""
    from logitscope.store.runs import Run

    loaded = [Run(r) for r in runs]
    imported = [r.dir.name for r in loaded if r.imported]
    if imported:
        raise ValueError(
            f"run {imported[0]} is imported: say which runs are standard and which robust with "
            "logitscope compare --st RUN... --at RUN..."
        )
    st = [r.dir for r in loaded if r.config.objective == "standard"]
    at = [r.dir for r in loaded if r.config.objective != "standard"]
    if not st or not at:
        raise ValueError(f"{len(st)} ST and {len(at)} AT/student runs given: expected at least one of each")
    names = {r.config.data.name for r in loaded}
    if len(names) > 1:
        raise ValueError(f"runs of several datasets {sorted(names)}: expected runs of one dataset")
    return st, at


def cmd_analyze(args: argparse.Namespace) -> int:
    from logitscope.analysis.analyze import analyze
    from logitscope.data import load_data
    from logitscope.report.build import logit_figures
    from logitscope.store.runs import Run

    st, at = analysis_groups(args.runs)
    cfg = Run(st[0]).config
    out = Path(args.out) if args.out else st[0].parent / "analysis"
    result = analyze(st, at, args.epoch, out, class_names=load_data(cfg.data).class_names, dataset=cfg.data.name)
    drawn, _ = logit_figures(out, out, None, analysis_dir=out)
    print(json.dumps({**result, "figures": {k: str(v) for k, v in drawn.items()}}, default=str)[:2000])
    return 0


def cmd_manifolds(args: argparse.Namespace) -> int:
    from logitscope.manifolds.geometry import measure_geometry
    from logitscope.report.build import manifold_figures
    from logitscope.store.runs import Run

    loaded = [Run(r) for r in args.runs]
    eps = parse_float(args.eps) if args.eps else loaded[0].config.attack.eps
    out = Path(args.out) if args.out else loaded[0].dir.parent / "manifolds"
    labelled = {r.dir.name: (r.dir, args.epoch) for r in loaded}
    result = measure_geometry(labelled, eps, args.p, args.m, out_dir=out)
    drawn, _ = manifold_figures(result, out)
    print(json.dumps({**result, "figures": {k: str(v) for k, v in drawn.items()}}, default=str)[:2000])
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    from logitscope.report.figures_theory import draw_theory_figures
    from logitscope.theory.model import write_theory

    out_dir = Path(args.out)
    result = write_theory(out_dir, n_classes=args.classes)
    draw_theory_figures(out_dir, out_dir)
    print(json.dumps({k: result[k] for k in result if k in ("thresholds",)}, default=str))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from logitscope.plan.executors import default_jobs
    from logitscope.plan.reproduce import reproduce

    return reproduce(
        preset=args.preset,
        out=Path(args.out),
        overrides=list(args.set),
        data_dir=args.data_dir,
        dry_run=args.dry_run,
        only=args.only,
        executor=args.executor,
        address=args.address,
        jobs=args.jobs or default_jobs(),
    )


def cmd_import(args: argparse.Namespace) -> int:
    from logitscope.importing import import_file

    run = import_file(
        args.name,
        dataset=args.dataset,
        model_file=args.model,
        factory=args.factory,
        weights=args.weights,
        layers=[n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None,
        data_dir=args.data_dir,
        out=args.out,
        eps=parse_float(args.eps) if args.eps is not None else None,
        device=args.device,
    )
    print(json.dumps({**run.summary(), "path": str(run.dir), "layers": list(run.config.source.layers)}))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from logitscope.compare import compare

    result = compare(
        args.st,
        args.at,
        args.out,
        n=args.n,
        n_iter=args.n_iter,
        manifolds=args.manifolds,
        n_manifolds=args.p,
        n_points=args.m,
        device=args.device,
        eps=args.eps,
    )
    print(json.dumps(result))
    return 1 if result["failed"] else 0


def cmd_report(args: argparse.Namespace) -> int:
    from logitscope.plan.reproduce import rebuild_report

    path = rebuild_report(Path(args.out))
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="logitscope", description="What adversarial training puts into a network's logits."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train_parsers(sub)
    _add_distill_parser(sub)
    _add_analysis_parsers(sub)
    _add_reproduce_parser(sub)
    _add_import_parser(sub)
    _add_compare_parsers(sub)
    return p


Subparsers = argparse._SubParsersAction  # what `add_subparsers` returns


def _add_train_parsers(sub: Subparsers) -> None:
    """``train``, ``runs`` and ``evaluate``."""
    t = sub.add_parser("train", help="train an ST or PGD-AT model, keeping every epoch's logits")
    _add_run_flags(t)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("runs", help="list runs with status and last epoch")
    r.add_argument("folder", nargs="?", default="runs")
    r.set_defaults(func=cmd_runs)

    e = sub.add_parser("evaluate", help="robustness protocol: APGD-CE then APGD-DLR, per-sample records")
    e.add_argument("run")
    e.add_argument("--epoch", type=int)
    e.add_argument("--eps", help="L-inf radius, e.g. 8/255 (default: the run's training eps)")
    e.add_argument("--n", type=int, help="first n images of the split (default: all)")
    e.add_argument("--split", default="test", help="test | val (the run's data.val_per_class hold-out)")
    e.add_argument("--protocol", default="paper", help="paper | autoattack | odi")
    e.add_argument("--n-iter", type=int, default=100)
    e.add_argument("--n-restarts", type=int, default=1)
    e.add_argument("--batch-size", type=int, default=500)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_evaluate)


def _add_distill_parser(sub: Subparsers) -> None:
    d = sub.add_parser("distill", help="distil a teacher's (transformed) logits into a student on clean inputs")
    _add_run_flags(d)
    d.add_argument("--teacher", required=True, help="teacher run folder")
    d.add_argument("--teacher-epoch", type=int)
    d.add_argument(
        "--transform",
        default="none",
        help="none | fix-k-permute | fix-k-average | correct-fix-1 | correct-fix-1-average | hybrid",
    )
    d.add_argument("--k", type=int, default=1)
    d.add_argument("--loss", default="l1", help="l1 | kl | mse")
    d.add_argument("--temperature", default="1")
    d.add_argument("--passes", type=int, default=1, help="augmented passes averaged into each target")
    d.add_argument("--hybrid-order", help="ST teacher run whose class order hybrid uses")
    d.set_defaults(func=cmd_distill)


def _add_analysis_parsers(sub: Subparsers) -> None:
    """``analyze``, ``manifolds`` and ``theory``."""
    a = sub.add_parser("analyze", help="logit analyses and their figures over runs")
    a.add_argument("runs", nargs="+")
    a.add_argument("--epoch", type=int)
    a.add_argument("--out", help="output folder (default: analysis/ beside the first run)")
    a.set_defaults(func=cmd_analyze)

    m = sub.add_parser("manifolds", help="MFTMA of adversarial L-inf balls per layer")
    m.add_argument("runs", nargs="+")
    m.add_argument("--epoch", type=int)
    m.add_argument("--eps")
    m.add_argument("--p", type=int, default=50, help="exemplar images (manifolds)")
    m.add_argument("--m", type=int, default=20, help="points per eps-ball")
    m.add_argument("--out")
    m.set_defaults(func=cmd_manifolds)

    th = sub.add_parser("theory", help="appendix C's analytical model: figures C.1-C.3 and checks")
    th.add_argument("--classes", type=int, default=10)
    th.add_argument("--out", default="theory")
    th.set_defaults(func=cmd_theory)


def _add_reproduce_parser(sub: Subparsers) -> None:
    rp = sub.add_parser("reproduce", help="the whole paper from one command (resumable)")
    rp.add_argument(
        "--preset", default="digits", help="digits | cifar10-quick | cifar10-paper | cifar100-paper | a YAML file"
    )
    rp.add_argument("--out", default="out", help="output folder (runs, report)")
    rp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset value, e.g. train.epochs=50"
    )
    rp.add_argument("--data-dir", help="dataset folder (the CIFAR and mnist presets)")
    rp.add_argument("--dry-run", action="store_true", help="print the plan with what is done")
    rp.add_argument(
        "--only", action="append", help="run only stages of this kind (train, evaluate, ...) and what they need"
    )
    rp.add_argument("--executor", default="local", help="local | ray")
    rp.add_argument("--address", help="Ray cluster address (default: start a local one)")
    rp.add_argument("--jobs", type=int, help="local worker processes (default: CPU cores without CUDA, else 1)")
    rp.set_defaults(func=cmd_reproduce)


def _add_import_parser(sub: Subparsers) -> None:
    im = sub.add_parser("import", help="import a model trained elsewhere as a run (TorchScript, or factory + weights)")
    im.add_argument("name", help="readable run name (the folder is NAME-<hash> under --out)")
    src = im.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="TorchScript file (torch.jit.save of a scripted or traced model)")
    src.add_argument("--factory", help="module:function or path/file.py:function building the architecture")
    im.add_argument("--weights", help="state_dict for --factory: .safetensors, or .pt (loaded with weights_only=True)")
    im.add_argument("--dataset", default="digits", help="digits | cifar10 | cifar100 | idx | npz (default: digits)")
    im.add_argument("--data-dir", help="dataset folder or file (CIFAR, idx, npz)")
    im.add_argument("--layers", help="comma-separated module names tapped by the manifold analysis (default: children)")
    im.add_argument("--eps", help="the run's L-inf radius, e.g. 8/255 (default: the dataset's preset)")
    im.add_argument("--out", default="runs", help="folder of run folders (default: runs)")
    im.add_argument("--device", default="auto")
    im.set_defaults(func=cmd_import)


def _add_compare_parsers(sub: Subparsers) -> None:
    """``compare`` and ``report``."""
    cp = sub.add_parser("compare", help="section 4.1's analyses, claims and a report for ST runs against AT runs")
    cp.add_argument("--st", nargs="+", required=True, help="standard run folders (trained or imported)")
    cp.add_argument("--at", nargs="+", required=True, help="robust run folders (trained or imported)")
    cp.add_argument("--out", default="compare", help="output folder (default: compare)")
    cp.add_argument("--n", type=int, help="evaluate the first n test images (default: all)")
    cp.add_argument("--n-iter", type=int, default=100, help="APGD iterations per attack (default: 100)")
    cp.add_argument(
        "--eps", type=parse_float, help="radius of every run, e.g. 8/255 (default: the runs' own; they must agree)"
    )
    cp.add_argument("--manifolds", action="store_true", help="also the manifold analysis of the first ST and AT run")
    cp.add_argument("--p", type=int, default=50, help="manifold exemplars (with --manifolds)")
    cp.add_argument("--m", type=int, default=20, help="points per eps-ball (with --manifolds)")
    cp.add_argument("--device", default="auto")
    cp.set_defaults(func=cmd_compare)

    rep = sub.add_parser("report", help="rebuild the report from the stores alone")
    rep.add_argument("out", help="the reproduce output folder")
    rep.set_defaults(func=cmd_report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DamagedFileError, ValueError, FileNotFoundError, KeyError) as exc:
        # One line, never a traceback: a DamagedFileError already says "<file>: <what>; <what to do>".
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"logitscope: error: {str(msg).splitlines()[0] if msg else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("logitscope: interrupted; rerun the same command (with --resume for train) to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
