"""Reproduce presets and overrides: every bad one is a one-line error before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from plan_helpers import TINY

from logitscope.cli import main
from logitscope.config import ConfigError
from logitscope.plan.graph import build_plan, resolve_preset, validate_plan_inputs
from logitscope.plan.preset import SECTIONS, apply_preset_overrides, load_preset, preset_names
from logitscope.plan.reproduce import reproduce


def cli_error(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    """Run ``logitscope reproduce --out OUT ARGS``: expect exit 2, one stderr line, no output folder."""
    rc = main(["reproduce", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("logitscope: error: "), err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    return lines[0]


def test_builtin_presets_load_and_build_the_paper_graph(tmp_path):
    assert preset_names() == [
        "cifar10-paper",
        "cifar10-quick",
        "cifar10-smoke",
        "cifar100-paper",
        "cifar100-smoke",
        "digits",
        "mnist",
    ]
    for name in preset_names():
        preset = load_preset(name)
        assert tuple(preset) == SECTIONS, name
        plan = build_plan(preset, tmp_path)
        n_seeds = len(preset["seeds"])
        n_sweep = len(preset["distill"]["sweep_seeds"]) * len(preset["teacher"]["epochs"]) * 2  # L1 and KL
        rule = preset["teacher"]["fixed_epoch"] is None
        n_val = n_sweep // 2 if rule else 0  # the rule's validation evaluations of the L1 students
        at_teacher = preset["analysis"]["epoch"] == "teacher"  # the analyses wait for the teacher epoch
        n_cross = len(preset["crosscheck"]["protocols"])  # the ST run's; the others wait for the teacher
        kinds = [s.kind for s in plan.stages.values()]
        # before the teacher choice: ST and AT runs and their evaluations, the sweep and its
        # evaluations, the choice, the logit analyses, the theory and the report (which waits for all)
        assert kinds.count("train") == 2 * n_seeds, name
        assert kinds.count("distill") == n_sweep, name
        assert kinds.count("evaluate") == 2 * n_seeds + n_sweep + n_val + n_cross, name
        assert kinds.count("analyze") == (0 if at_teacher else 1), name
        assert len(kinds) == 4 * n_seeds + 2 * n_sweep + n_val + n_cross + 4 - at_teacher, name
        waits = ("distill", "evaluate", "manifolds") + (("analyze",) if at_teacher else ())
        assert plan.pending and plan.waits_on == {"choose-teacher": waits}, name
        # a kind whose stages appear after the teacher choice: the choice and what it needs
        # (the rule: the L1 sweep students' validation evaluations; a fixed epoch: nothing)
        loss = preset["distill"]["loss"]
        sweep_l1 = {n for n in plan.stages if n.startswith(("distill-sweep-", "eval-val-")) and f"-{loss}-" in n}
        teachers = {f"train-at-s{s}" for s in preset["distill"]["sweep_seeds"]}
        choice = {"choose-teacher", *teachers, *sweep_l1} if rule else {"choose-teacher"}
        assert {s.name for s in plan.select(["choose"])} == choice, name
        assert {s.name for s in plan.select(["report"])} == set(plan.stages), name
        if at_teacher:
            assert {s.name for s in plan.select(["analyze"])} == {s.name for s in plan.select(["choose"])}, name
    # digits: 3 seeds; a sweep of 3 seeds x 4 teacher epochs x 2 losses (24 students, 24
    # evaluations, 12 validation ones), 2 cross-checks of the ST run, 4 more (choose, analyze,
    # theory, report)
    assert len(build_plan(load_preset("digits"), tmp_path).stages) == 4 * 3 + 2 * 24 + 12 + 2 + 4
    assert not (tmp_path / "plan").exists()  # building a plan writes nothing


# What a smoke preset may change against its paper preset: sizes only (images, epochs and the
# epochs that follow from them, seeds, width, batch, attack iterations, P, M, n_t, dichotomies).
SIZE_KEYS = {
    "epochs",
    "checkpoint_epochs",
    "seed",
    "name",
    "distill.teacher",
    "distill.teacher_epoch",
    "distill.hybrid_order",  # a run id: it follows from the sizes
    "distill.hybrid_order_epoch",
    "optim.milestones",
    "optim.batch_size",
    "model.width",
    "data.val_per_class",
    "data.train_per_class",
    "data.test_per_class",
    "monitor.pgd_n",
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_smoke_presets_are_the_paper_graph_shrunk_in_sizes_only(tmp_path, dataset):
    """Every stage of the paper preset's graph has its smoke twin (epochs and seeds aside) doing
    the same work with the same settings but sizes."""
    import re

    paper, smoke = load_preset(f"{dataset}-paper"), load_preset(f"{dataset}-smoke")
    plans = {
        "paper": build_plan(paper, tmp_path, assume_teacher=paper["teacher"]["fixed_epoch"]),
        "smoke": build_plan(smoke, tmp_path, assume_teacher=smoke["teacher"]["fixed_epoch"]),
    }

    def generalised(plan):  # stage names with epochs and seeds generalised -> its first stage (seed 0)
        out = {}
        for n, s in plan.stages.items():
            out.setdefault(re.sub(r"-[es]\d+", "-N", n), s)
        return out

    smoke_stages, paper_stages = generalised(plans["smoke"]), generalised(plans["paper"])
    assert {n: (s.kind, s.fn) for n, s in smoke_stages.items()} == {n: (s.kind, s.fn) for n, s in paper_stages.items()}
    assert not plans["smoke"].pending
    for name, stage in smoke_stages.items():
        if "config" in stage.params:
            a, b = _flat(stage.params["config"]), _flat(paper_stages[name].params["config"])
            changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} - SIZE_KEYS
            assert not changed, (name, {k: (a.get(k), b.get(k)) for k in changed})
    ms, mp = plans["smoke"].stages["manifolds"].params, plans["paper"].stages["manifolds"].params
    assert ms["simulate"] and mp["simulate"] and ms["models"].keys() == mp["models"].keys()
    assert smoke["crosscheck"]["protocols"] == paper["crosscheck"]["protocols"]
    assert smoke["theory"] == paper["theory"] and smoke["analysis"] == paper["analysis"]


def test_yaml_file_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert load_preset(str(path)) == TINY
    (tmp_path / "bad.yml").write_text(yaml.safe_dump({**TINY, "extra": 1}))
    with pytest.raises(ConfigError, match="unknown section 'extra'"):
        load_preset(str(tmp_path / "bad.yml"))
    (tmp_path / "short.yaml").write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "theory"}))
    with pytest.raises(ConfigError, match="missing section 'theory'"):
        load_preset(str(tmp_path / "short.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_preset(str(tmp_path / "list.yaml"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_preset(str(tmp_path / "missing.yaml"))


def test_overrides_are_typed_by_the_preset():
    p = apply_preset_overrides(
        TINY,
        [
            "train.epochs=7",
            "evaluate.eps=8/255",
            "seeds=[3, 4]",
            "teacher.fixed_epoch=2",
            "evaluate.n=null",
            "train.set.optim.lr=0.1",
            "distill.set.distill.bn_mode=batch",
        ],
    )
    assert p["train"]["epochs"] == 7 and p["evaluate"]["eps"] == pytest.approx(8 / 255)
    assert p["seeds"] == [3, 4] and p["teacher"]["fixed_epoch"] == 2 and p["evaluate"]["n"] is None
    assert p["train"]["set"]["optim.lr"] == "0.1"  # parsed to the RunConfig field's type later
    assert p["distill"]["set"] == {"distill.bn_mode": "batch"}
    assert TINY["train"]["epochs"] == 2 and "optim.lr" not in TINY["train"]["set"]  # a copy


def test_set_keys_reach_the_run_configs_and_their_keys(tmp_path):
    base = build_plan(TINY, tmp_path)
    lr = build_plan(resolve_preset_dict(["train.set.optim.lr=0.1"]), tmp_path)
    for name in ("train-st-s0", "train-at-s0", *[n for n in base.stages if n.startswith("distill-")]):
        assert lr.stages[name].params["config"]["optim"]["lr"] == 0.1, name
        assert lr.stages[name].key != base.stages[name].key, name
    assert base.stages["train-at-s0"].params["config"]["optim"]["lr"] == 0.05
    # an evaluation setting leaves every training stage's key alone
    ev = build_plan(resolve_preset_dict(["evaluate.n_iter=7"]), tmp_path)
    for name, stage in base.stages.items():
        changed = ev.stages[name].key != stage.key
        assert changed == (stage.kind in ("evaluate", "choose", "analyze", "report")), name
    # the sweep students take distill.set; ST and AT do not
    bn = build_plan(resolve_preset_dict(["distill.set.distill.bn_mode=batch"]), tmp_path)
    assert bn.stages["distill-sweep-e1-l1-s0"].params["config"]["distill"]["bn_mode"] == "batch"
    assert bn.stages["train-at-s0"].key == base.stages["train-at-s0"].key


def resolve_preset_dict(overrides: list[str]) -> dict:
    return apply_preset_overrides(TINY, overrides)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.epoch=3"], "unknown key 'train.epoch': train has checkpoint_epochs, epochs, preset, set"),
        (["--set", "bogus=1"], "unknown key 'bogus'"),
        (["--set", "train.epochs=abc"], "train.epochs='abc': expected an integer"),
        (["--set", "seeds=3"], "seeds='3': expected a list"),
        (["--set", "evaluate.eps=big"], "evaluate.eps='big': expected a number"),
        (["--set", "teacher.fixed_epoch"], "expected KEY=VALUE"),
        (["--set", "train.set.optim.lr=abc"], "optim.lr='abc': expected a number"),
        (["--set", "train.set.optim.bogus=1"], "unknown key 'optim.bogus'"),
        (["--set", "distill.set.distill.loss=l3"], "distill.loss='l3': expected l1, kl or mse"),
        (["--set", "seeds=[]"], "seeds=[]: expected at least one seed"),
        (["--set", "distill.sweep_seeds=[5]"], "distill.sweep_seeds has 5"),
        (["--set", "distill.ks=[0]"], "k=0: expected an integer >= 1"),
        (["--set", "distill.ks=[1, 11]"], "distill.ks has 11: expected k <= 10"),
        (["--set", "evaluate.n_iter=0"], "n_iter=0: expected a positive integer"),
        (["--set", "evaluate.n=0"], "evaluate.n=0"),
        (["--set", "teacher.epochs=[0, 2]"], "teacher.epochs has 0"),
        (["--set", "teacher.fixed_epoch=5"], "teacher.fixed_epoch=5: expected one of teacher.epochs"),
        (["--preset", "nope"], "unknown preset 'nope': expected one of cifar10-paper"),
        (["--preset", "/nonexistent/mine.yaml"], "preset file /nonexistent/mine.yaml does not exist"),
        (["--only", "bogus"], "--only 'bogus': expected one of train"),
        (["--executor", "slurm"], "unknown executor 'slurm'"),
        (["--address", "ray://head:10001"], "--address is for --executor ray"),
        (["--preset", "cifar10-quick"], "cifar10 needs --data-dir"),
        (["--preset", "mnist"], "the idx dataset needs --data-dir"),
        (["--preset", "cifar10-quick", "--data-dir", "/nonexistent"], "data folder /nonexistent does not exist"),
        (["--set", "analysis.epoch=last"], "analysis.epoch='last': expected an integer, null or 'teacher'"),
        (["--set", "analysis.epoch=3"], "analysis.epoch=3: expected an epoch between 1 and train.epochs=2"),
        (
            ["--set", "train.set.data.val_per_class=0"],
            "the teacher rule (appendix A.3) needs a validation split and digits holds none out "
            "(data.val_per_class=0): set train.set: {data.val_per_class: N}",
        ),
        (["--set", "distill.set.data.val_per_class=5"], "distill.set gives the students data.val_per_class=5"),
        (["--preset", "digits", "--set", "crosscheck.n=0"], "crosscheck.n=0: expected a positive number"),
        (["--preset", "digits", "--set", "crosscheck.n=398"], "crosscheck.n=398: expected at most the 397 test"),
        (["--preset", "digits", "--set", "evaluate.n=40"], "crosscheck.n=50: expected at most evaluate.n=40"),
        (["--preset", "digits", "--set", "crosscheck.models=[st, teacher]"], "crosscheck.models has 'teacher'"),
        (["--preset", "digits", "--set", "crosscheck.protocols=[paper]"], "crosscheck.protocols has 'paper'"),
        (["--preset", "digits", "--set", "crosscheck.protocols=odi"], "crosscheck.protocols='odi': expected a list"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path, tiny_preset, capsys, args, message):
    if "--preset" not in args:
        args = ["--preset", str(tiny_preset), *args]
    line = cli_error(capsys, tmp_path / "out", *args)
    assert message in line


def test_mnist_preset_plans_the_paper_graph_on_idx_files(tmp_path, idx_digits_dir, capsys):
    out = tmp_path / "out"
    small = ["--data-dir", str(idx_digits_dir), "--dry-run", "--out", str(out)]
    # the preset's 500 validation images per class need MNIST's 6,000 per class, not 1,400 images
    line = cli_error(capsys, out, "--preset", "mnist", *small)
    assert "class 0 has 139 images: cannot hold out 500 for validation" in line
    fit = ["--set", "train.set.data.val_per_class=20", "--set", "evaluate.n=300", "--set", "crosscheck.n=100"]
    assert main(["reproduce", "--preset", "mnist", *small, *fit]) == 0
    printed = capsys.readouterr().out
    assert "train-at-s2" in printed and "choose-teacher" in printed and not out.exists()
    preset = resolve_preset("mnist", fit[1::2], str(idx_digits_dir))
    at = build_plan(preset, out, str(idx_digits_dir)).stages["train-at-s0"].params["config"]
    assert at["model"]["name"] == "mnist-cnn" and at["data"]["data_dir"] == str(idx_digits_dir.resolve())
    assert at["attack"]["eps"] == pytest.approx(0.3) and at["attack"]["warmup_epochs"] == 10
    assert preset["evaluate"]["eps"] == pytest.approx(0.3)  # the robustness protocol at the training eps


def test_bad_input_raises_from_python_too(tmp_path, tiny_preset):
    with pytest.raises(ConfigError, match="expected an integer"):
        reproduce(str(tiny_preset), tmp_path / "out", overrides=["train.epochs=2.5"])
    with pytest.raises(FileNotFoundError, match="/nonexistent"):
        reproduce("cifar10-paper", tmp_path / "out", data_dir="/nonexistent")
    with pytest.raises(ValueError, match="--only 'evaluation'"):
        validate_plan_inputs(resolve_preset(str(tiny_preset), [], None), None, tmp_path / "out", ["evaluation"])
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_plan_and_creates_nothing(tmp_path, tiny_preset, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "--preset", str(tiny_preset), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert not out.exists()
    states = {line.split()[2]: line.split()[0] for line in lines if line.split()[0] in ("done", "ready", "waiting")}
    assert {n for n, state in states.items() if state == "ready"} == {"train-st-s0", "train-at-s0"}
    assert states["eval-train-at-s0-e2"] == states["distill-sweep-e2-kl-s0"] == states["choose-teacher"] == "waiting"
    assert len(states) == 18
    end = lines.index("0/18 stages done; 1 group(s) pending")  # then the preflight
    assert lines[end - 1].startswith("pending  students")
    assert lines[end + 1].startswith("data: scikit-learn's embedded digits") and lines[end + 2].startswith("device: ")
    store = lines[end + 3]
    assert store.startswith("store: about") and "0.0 MB already written" in store and "free under" in store
    assert any(line.startswith("cost: image passes") for line in lines[end:])
    # --only shows the part of the plan it would run
    assert main(["reproduce", "--preset", str(tiny_preset), "--out", str(out), "--dry-run", "--only", "train"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    end = lines.index("0/2 stages done")
    assert [line.split()[2] for line in lines[:end]] == ["train-st-s0", "train-at-s0"]
    assert not out.exists()


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        ("evaluate", "n_iter", "abc", "expected an integer"),
        ("evaluate", "n_iter", 2.5, "expected an integer"),
        ("evaluate", "eps", True, "expected a number"),
        ("distill", "ks", 3, "expected a list"),
        ("distill", "ks", [1, "two"], "expected a list"),
        ("manifolds", "simulate", "yes", "expected true or false"),
        ("manifolds", "eps", "big", "expected a number or null"),
        ("analysis", "epoch", 2.0, "expected an integer or a string or null"),
        ("train", "set", [1], "expected a mapping"),
    ],
)
def test_yaml_file_values_are_type_checked(tmp_path, section, key, value, expected):
    import yaml

    from logitscope.config import ConfigError
    from logitscope.plan.preset import load_preset

    preset = load_preset("digits")
    preset[section][key] = value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(preset))
    with pytest.raises(ConfigError, match=f"{section}.{key}=.*{expected}"):
        load_preset(str(path))
    preset[section][key] = load_preset("digits")[section][key]
    path.write_text(yaml.safe_dump(preset))
    assert load_preset(str(path))[section][key] == load_preset("digits")[section][key]


def test_simulate_models_must_name_figure_5s_models(tmp_path):
    preset = resolve_preset("digits", ["manifolds.simulate_models=[ST teacher, my student]"], None)
    with pytest.raises(ConfigError, match="manifolds.simulate_models: 'my student': expected some of ST teacher"):
        build_plan(preset, tmp_path)


def test_a_preset_file_names_its_unknown_and_missing_keys(tmp_path):
    import yaml

    from logitscope.config import ConfigError
    from logitscope.plan.preset import load_preset

    preset = load_preset("digits")
    preset["evaluate"]["n_iters"] = 100
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(preset))
    with pytest.raises(ConfigError, match="unknown key evaluate.n_iters: expected one of eps, n_iter, n_restarts"):
        load_preset(str(path))
    del preset["evaluate"]["n_iters"], preset["evaluate"]["eps"]
    path.write_text(yaml.safe_dump(preset))
    with pytest.raises(ConfigError, match=r"mine.yaml: missing key evaluate.eps$"):
        load_preset(str(path))


def test_every_built_in_preset_reads_as_typed_sections_that_keep_its_values():
    """The typed sections hold the file's values as written (lists as tuples), so the plan's
    stage parameters, and so its cache keys, are what the file says."""
    from logitscope.config import Preset, to_plain
    from logitscope.plan.preset import load_preset, preset_names

    for name in preset_names():
        raw = load_preset(name)
        typed = Preset.from_dict(raw, name)
        plain = to_plain(typed)
        for section, values in raw.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    assert plain[section][key] == value and type(plain[section][key]) is type(value), (name, key)
        assert typed.evaluate.protocol_settings() == {
            k: raw["evaluate"][k] for k in ("eps", "n_iter", "n_restarts", "n", "batch_size")
        }
