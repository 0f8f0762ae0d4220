"""The command lines refuse bad input cleanly.

Hypothesis draws argument lists for every sub-command of ``neuralgraph``, ``nowcast`` and
``analysis`` (bad numbers, missing and unreadable files, unknown names, unknown and abbreviated
options) and runs each command's ``main(argv)`` in this process. Every list must either succeed
or stop with a non-zero status and a message on stderr, never with a traceback, and never through
the "unexpected error" path (which means an input reached code that did not check it). The work
itself (training, meta-training, collecting, verifying, drawing) is replaced by stand-ins that
return at once, so a valid list costs no more than its checks.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analysis.cli
import neuralgraph.cli
import nowcast.cli
from neuralgraph.cli_args import (
    ArgumentParser,
    existing_dir,
    existing_file,
    existing_path,
    output_dir,
    run_main,
    torch_device,
)

REPO = Path(__file__).resolve().parents[1]
CLIS = {"neuralgraph": neuralgraph.cli, "nowcast": nowcast.cli, "analysis": analysis.cli}
UNEXPECTED = "run with --debug for the traceback"


def call(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit status, stdout, stderr); torch's thread count is
    restored (``--threads`` changes it for the whole process)."""
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, err: str, argv: list[str]) -> None:
    assert "Traceback" not in err, (argv, err)
    if code != 0:
        assert "error:" in err or "interrupted" in err, (argv, code, err)
        assert UNEXPECTED not in err, (argv, err)


def assert_refused(result: tuple[int, str, str], *needles: str) -> str:
    """A non-zero status and one line on stderr naming every needle; returns that line."""
    code, _, err = result
    assert code != 0 and "Traceback" not in err and err.count("\n") == 1, (code, err)
    assert "error:" in err and all(needle in err for needle in needles), err
    return err


# ------------------------------------------------------------------------------ stand-ins for the work
class _Figure:
    info = {"explained_variance_ratio": [0.5, 0.25]}
    paths = ()


def _stub_compare(task, methods, **kwargs):
    return SimpleNamespace(plot=lambda path: path, table=lambda: "")


def _no_metatraining(*args, **kwargs):
    raise ValueError("meta-training is not run in this test")


def _stub_train(model, optimizer, data, steps, batch, seed, recorder):
    recorder.record(0, model)
    return 0.0, 1.0


@pytest.fixture
def light(monkeypatch, tmp_path_factory):
    """Heavy work replaced by stand-ins; the working directory is an empty scratch folder."""
    import analysis.draw
    import analysis.symmetry
    import analysis.trajectories
    from nowcast.cli import compare as cli_compare
    from nowcast.cli import metatrain as cli_metatrain

    monkeypatch.setattr(neuralgraph.cli, "verify", lambda *a, **k: "verified (stand-in)")
    monkeypatch.setattr(cli_compare, "compare", _stub_compare)
    monkeypatch.setattr(cli_metatrain, "collect", lambda *a, **k: [])
    monkeypatch.setattr(cli_metatrain, "metatrain", _no_metatraining)
    monkeypatch.setattr(cli_metatrain, "_run_experts_in_parallel", lambda jobs, progress: [cli_metatrain._expert_job(*j) for j in jobs])
    monkeypatch.setattr(analysis.symmetry, "symmetry_experiment", lambda *a, **k: SimpleNamespace(table=lambda: "", figure=None))
    for name in ("draw_adjacency", "draw_graph", "draw_lpe"):
        monkeypatch.setattr(analysis.draw, name, lambda *a, **k: SimpleNamespace(info={}, paths=()))
    monkeypatch.setattr(analysis.cli, "_train", _stub_train)
    monkeypatch.setattr(analysis.trajectories, "plot_trajectories", lambda *a, **k: _Figure())
    monkeypatch.setattr(analysis.trajectories, "plot_embeddings", lambda *a, **k: _Figure())
    monkeypatch.setattr(analysis.trajectories, "embedding_trajectory", lambda *a, **k: [])

    root = tmp_path_factory.mktemp("cli-fuzz")
    (root / "empty").mkdir()
    (root / "junk.pt").write_bytes(b"not a checkpoint")
    (root / "junk.json").write_text("{")
    torch.save({"states": torch.randn(12, 6)}, root / "states.pt")
    monkeypatch.chdir(root)
    return root


# ------------------------------------------------------------------------------ what is drawn
VALUES = [
    "0", "-1", "1", "2", "7", "x", "1e99", "nan", "inf", "-0.5", "0.2", "", "1,2", "1,,x",
    "99999999999999999999", "empty", "junk.pt", "junk.json", "states.pt", "missing", "missing/deeper.pt",
    "linefit", "linefit+", "nino", "adam,sgd", "adam,linefit+", ",", "digits", "fm16", "mlp", "gpt2",
    "nope", "tiny", "cpu", "cuda:7", "meta",
]


BASE = {
    # a valid start for each sub-command (drawn pieces are appended; a later option wins)
    "inspect": ["mlp"],
    "step": ["states.pt", "--predictor", "linefit", "--k", "1", "--out", "out.pt"],
    "compare": ["--methods", "adam", "--seeds", "1", "--out", "res"],
    "collect": ["--task", "digits", "--steps", "10", "--every", "5", "--work", "work"],
    "metatrain": ["--recipe", "tiny", "--out", "meta", "--work", "work"],
    "build-checkpoint": ["--recipe", "tiny", "--out", "built", "--work", "work"],
    "model-card": ["empty", "--append", "junk.json"],
    "draw": ["mlp"],
    "pca": ["--steps", "10", "--period", "5", "--every", "5"],
}
PATH_VALUES = {
    existing_dir: ["empty", "."],
    existing_file: ["junk.json", "states.pt"],
    existing_path: ["empty", "junk.pt", "states.pt"],
    output_dir: ["out", "empty", "junk.pt"],
    torch_device: ["cpu", "meta"],
}


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _good_values(action: argparse.Action) -> list[str]:
    """Values the option accepts (so that drawn lists also get past parsing)."""
    if action.choices:
        return [str(c) for c in action.choices]
    if action.type in PATH_VALUES:
        return PATH_VALUES[action.type]
    if action.type is None:
        return ["x", "linefit", "mlp", "digits", "adam,linefit+", "states.pt", "empty"]
    good = []
    for text in ("0", "1", "2", "5", "0.5", "1,2"):
        try:
            action.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            continue
        good.append(text)
    return good or VALUES


def _item(parser: argparse.ArgumentParser) -> st.SearchStrategy[list[str]]:
    """One drawn piece of a command line: mostly an option with a value (bad one time in four),
    sometimes a bare value, an unknown option or an abbreviated one."""
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction) and a.dest != "debug"]
    longs = sorted(o for a in options for o in a.option_strings if o.startswith("--"))

    def with_value(action: argparse.Action) -> st.SearchStrategy[list[str]]:
        flag = st.sampled_from(action.option_strings)
        if action.nargs == 0:
            return flag.map(lambda f: [f])
        good, bad = st.sampled_from(_good_values(action)), st.sampled_from(VALUES)
        value = st.integers(0, 3).flatmap(lambda i: bad if i == 0 else good)
        count = 2 if action.nargs in ("+", "*") else 1
        return st.tuples(flag, st.lists(value, min_size=1, max_size=count)).map(lambda t: [t[0], *t[1]])

    rare = [st.sampled_from(VALUES).map(lambda v: [v]), st.just(["--no-such-option"])]
    if longs:
        rare.append(st.sampled_from(longs).map(lambda o: [o[: max(3, len(o) - 2)], "1"]))
    if not options:
        return st.one_of(*rare)
    common = st.one_of(*[with_value(a) for a in options])
    return st.integers(0, 5).flatmap(lambda i: st.one_of(*rare) if i == 0 else common)


def _argv(prog: str) -> st.SearchStrategy[list[str]]:
    commands = _commands(CLIS[prog].build_parser())

    def for_command(name: str) -> st.SearchStrategy[list[str]]:
        start = st.sampled_from([[], BASE.get(name, []), BASE.get(name, [])])
        items = st.lists(_item(commands[name]), max_size=4)
        return st.tuples(start, items).map(lambda t: [name, *t[0], *(token for part in t[1] for token in part)])

    return st.one_of(*[for_command(name) for name in sorted(commands)])


# the profile (tests/conftest.py) decides whether examples are the same on every run
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(argv=_argv("neuralgraph"))
def test_neuralgraph_command_line_fuzz(light, argv):
    code, _, err = call(neuralgraph.cli.main, argv)
    assert_clean(code, err, argv)


@settings(FUZZ, max_examples=200)
@given(argv=_argv("nowcast"))
def test_nowcast_command_line_fuzz(light, argv):
    code, _, err = call(nowcast.cli.main, argv)
    assert_clean(code, err, argv)


@FUZZ
@given(argv=_argv("analysis"))
def test_analysis_command_line_fuzz(light, argv):
    code, _, err = call(analysis.cli.main, argv)
    assert_clean(code, err, argv)


# ------------------------------------------------------------------------------ named cases
def test_seeds_zero_is_refused_before_anything_is_written(light):
    err = assert_refused(call(nowcast.cli.main, ["compare", "--seeds", "0", "--out", "res"]), "--seeds", ">= 1")
    assert err.startswith("nowcast compare: error:") and not Path("res").exists()


def test_negative_counts_are_refused(light):
    assert_refused(call(nowcast.cli.main, ["compare", "--max-steps", "-5"]), "--max-steps")
    assert_refused(call(nowcast.cli.main, ["compare", "--threads", "-1"]), "--threads")
    assert_refused(call(nowcast.cli.main, ["collect", "--task", "digits", "--every", "0"]), "--every")
    assert_refused(call(nowcast.cli.main, ["metatrain", "--out", "x", "--batch", "-2"]), "--batch")
    assert_refused(call(nowcast.cli.main, ["step", "states.pt", "--predictor", "linefit", "--k", "0", "--out", "o.pt"]), "--k")
    assert_refused(call(neuralgraph.cli.main, ["inspect", "mlp", "--trials", "0"]), "--trials")
    assert_refused(call(analysis.cli.main, ["pca", "--steps", "1e99"]), "--steps", "1e99")


def test_a_missing_data_dir_is_an_error_not_a_fallback(light):
    assert_refused(call(nowcast.cli.main, ["compare", "--data-dir", "no-such-folder"]), "no-such-folder", "does not exist")
    assert_refused(call(nowcast.cli.main, ["collect", "--data-dir", "junk.pt"]), "junk.pt", "not a folder")
    from nowcast.tasks import DataNotFoundError, find_dataset

    with pytest.raises(DataNotFoundError, match="does not exist"):
        find_dataset("fashion-mnist", ("train-images-idx3-ubyte.gz",), light / "no-such-folder")


def test_a_missing_checkpoint_is_named(light):
    assert_refused(call(nowcast.cli.main, ["compare", "--methods", "adam,nino", "--nino-checkpoint", "none.pt"]), "none.pt")
    assert_refused(call(nowcast.cli.main, ["metatrain", "--out", "x", "--init-from", "none"]), "--init-from", "does not exist")
    assert_refused(call(analysis.cli.main, ["pca", "--checkpoint", "none.pt"]), "none.pt")
    assert_refused(call(nowcast.cli.main, ["step", "states.pt", "--predictor", "none.pt", "--k", "1", "--out", "o.pt"]), "none.pt")


def test_unknown_names_are_refused(light):
    assert_refused(call(neuralgraph.cli.main, ["inspect", "resnet"]), "resnet", "fm16")
    assert_refused(call(neuralgraph.cli.main, ["inspect", "mlp", "--arch", "nope"]), "nope")
    assert_refused(call(analysis.cli.main, ["draw", "resnet9000"]), "resnet9000")
    assert_refused(call(nowcast.cli.main, ["compare", "--task", "imagenet"]), "imagenet", "digits")
    assert_refused(call(nowcast.cli.main, ["compare", "--methods", "adam,sgd"]), "unknown method 'sgd'")
    assert_refused(call(nowcast.cli.main, ["collect", "--recipe", "nope"]), "nope")


def test_max_nodes_zero_is_refused(light):
    assert_refused(call(analysis.cli.main, ["draw", "mlp", "--max-nodes", "0"]), "--max-nodes", ">= 1")


def test_abbreviated_and_unknown_options_are_refused(light):
    assert_refused(call(nowcast.cli.main, ["compare", "--seeds", "1", "--seed", "7"]), "--seed")
    assert_refused(call(neuralgraph.cli.main, ["inspect", "--tri", "2"]), "--tri", "did you mean --trials")
    assert_refused(call(analysis.cli.main, ["draw", "mlp", "--max-n", "5"]), "--max-n")
    assert_refused(call(nowcast.cli.main, ["compare", "--no-such-option"]), "--no-such-option")


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCHMARK_ABBREVIATIONS = {
    "steps_to_target": ["--seeds", "1", "--seed", "7"],
    "jump_error": ["--trajectories", "x", "--checkpoints", "y", "--thread", "2"],
    "nowcast_step": ["--checkpo", "x"],
    "graph_build": ["--tri", "2"],
    "hf_coverage": ["--job", "2"],
}


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "benchmarks").glob("*.py")))
def test_benchmark_scripts_refuse_unknown_and_abbreviated_options(name, monkeypatch, light):
    script = _benchmark(name)
    source = (REPO / "benchmarks" / f"{name}.py").read_text()
    assert "allow_abbrev=False" in source or "cli_args import ArgumentParser" in source

    def run(argv: list[str]) -> int:
        monkeypatch.setattr("sys.argv", [f"{name}.py", *argv])
        return script.main(argv) if "argv" in script.main.__code__.co_varnames else script.main()

    code, _, err = call(run, ["--no-such-option"])
    assert code == 2 and "--no-such-option" in err and "Traceback" not in err
    if name in BENCHMARK_ABBREVIATIONS:
        assert_refused(call(run, BENCHMARK_ABBREVIATIONS[name]), "options are not abbreviated")


def test_steps_to_target_refuses_zero_seeds(light):
    assert_refused(call(_benchmark("steps_to_target").main, ["--seeds", "0"]), "--seeds")


# ------------------------------------------------------------------------------ the parsers themselves
def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_every_parser_refuses_abbreviations_and_has_plain_help(prog):
    for parser in _parsers(CLIS[prog].build_parser()):
        assert isinstance(parser, ArgumentParser) and parser.allow_abbrev is False, parser.prog
        text = parser.format_help()
        for markup in ("``", ":func:", ":mod:", ":class:", ":data:", ":meth:", "`"):
            assert markup not in text, (parser.prog, markup)
        assert "--debug" in text, parser.prog


# ------------------------------------------------------------------------------ --debug, unexpected errors, Ctrl-C
def test_debug_shows_the_traceback(light):
    with pytest.raises(ValueError, match="unknown method"):
        nowcast.cli.main(["compare", "--methods", "adam,sgd", "--debug"])
    with pytest.raises(ValueError, match="unknown method"):
        nowcast.cli.main(["--debug", "compare", "--methods", "adam,sgd"])


def test_an_unexpected_error_is_one_line_with_a_hint(light, monkeypatch):
    def broken(args):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(neuralgraph.cli, "_list", broken)
    code, _, err = call(neuralgraph.cli.main, ["list"])
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("neuralgraph list: error: RuntimeError: something nobody planned for") and UNEXPECTED in err
    with pytest.raises(RuntimeError):
        neuralgraph.cli.main(["list", "--debug"])


def test_ctrl_c_says_what_was_kept(light, monkeypatch):
    from nowcast.cli import compare as cli_compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_compare, "compare", interrupted)
    code, _, err = call(nowcast.cli.main, ["compare", "--methods", "adam", "--out", "res"])
    assert code == 130 and "Traceback" not in err and err.count("\n") == 1
    assert "interrupted" in err and str(Path("res") / "digits.json") in err and "--resume" in err


def test_run_main_statuses(capsys):
    args = argparse.Namespace()
    assert run_main(lambda a: 0, args, prog="p") == 0 and run_main(lambda a: None, args, prog="p") == 0
    assert run_main(lambda a: 3, args, prog="p") == 3
    assert run_main(lambda a: json.loads("{"), args, prog="p") == 2  # JSONDecodeError is a ValueError
    assert capsys.readouterr().err.startswith("p: error: Expecting property name")
    assert run_main(lambda a: {}["k"], args, prog="p") == 2
    assert capsys.readouterr().err == "p: error: k\n"
