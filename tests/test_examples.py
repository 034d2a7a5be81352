"""SPEC §12.1–12.3 in the checkout: ok.examples, package data, the CLI's version, help and
missing-extra messages (tests/test_wheel.py repeats the essentials from an installed wheel)."""

from __future__ import annotations

import importlib.util
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import orchkit as ok
from orchkit import agents
from orchkit.cli import main

SEED = [
    "graceful_degradation",
    "learning_activity",
    "ml_with_gpt4_fallback",
    "parallel_analysis",
    "retry_example",
    "session_initialization",
]


def test_names_are_the_seed_plans_and_each_loads_as_written():
    assert ok.examples.names() == SEED
    for name in SEED:
        path = ok.examples.path(name)
        assert path.parent.parent.name == "data" and path.parent.parent.parent.name == "orchkit"
        plan = ok.examples.plan(name)
        assert plan.to_dict() == ok.Plan.model_validate(json.loads(path.read_text())).to_dict()
    assert ok.examples.plan("parallel_analysis").id == "multi_analysis_999"


def test_models_serve_every_example_plan():
    models = ok.examples.models()
    for name in SEED:
        models.check_plan(ok.examples.plan(name))  # raises if an agent id has no model
    result = ok.simulate(ok.examples.plan("parallel_analysis"), models, seed=1)
    assert result.status == "succeeded"


def test_the_agents_read_their_data_from_the_package():
    from orchkit.agents.learning import DEFAULT_DATA_DIR

    assert DEFAULT_DATA_DIR == ok.examples.models_path().parent.parent / "learners"
    assert (DEFAULT_DATA_DIR / "interactions.csv").stat().st_size > 100_000
    # the speech agent's module imports TensorFlow: check its file without importing it
    speech = ok.examples.models_path().parent.parent / "speech"
    assert (speech / "fluency_model.npz").exists() and (speech / "fluency_train.csv").exists()


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "._/-\\ ", max_size=30))
def test_an_unknown_name_is_a_value_error_listing_the_examples(name):
    if name in SEED:
        return
    with pytest.raises(ValueError, match="examples: .*parallel_analysis") as info:
        ok.examples.path(name)  # "../agents/default" must not reach another file
    assert repr(name) in str(info.value)


def test_a_name_that_is_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="name must be a str"):
        ok.examples.plan(3)


def test_cli_version_help_and_examples(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"orchkit {ok.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "exit codes:" in text and "orchkit examples" in text
    assert main(["examples"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == SEED
    ids = ok.examples.ids()
    assert [line.split()[1:3] for line in lines[:-1]] == [["plan", ids[n]] for n in SEED]
    assert main(["examples", "--path", "retry_example"]) == 0
    assert capsys.readouterr().out.strip() == str(ok.examples.path("retry_example"))
    assert main(["examples", "--path", "nope"]) == 2
    assert "no example plan named 'nope'" in capsys.readouterr().err


def test_cli_takes_an_example_name_for_a_plan_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "retry_example"]) == 0
    assert "plan 'resilient_plan' is valid" in capsys.readouterr().out
    assert main(["validate", "no_such_plan"]) == 2
    assert "cannot read plan file" in capsys.readouterr().err


def test_an_example_is_named_by_its_name_or_its_plan_id_and_a_typo_lists_them(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert ok.examples.ids()["parallel_analysis"] == "multi_analysis_999"
    assert ok.examples.plan("multi_analysis_999") == ok.examples.plan("parallel_analysis")
    assert main(["validate", "multi_analysis_999"]) == 0
    assert "plan 'multi_analysis_999' is valid" in capsys.readouterr().out
    assert main(["validate", "parallel_analysys"]) == 2  # a typo
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'parallel_analysis'?" in err
    for name, plan_id in ok.examples.ids().items():  # the names, each with its plan id
        assert f"{name} (plan {plan_id})" in err
    assert main(["validate", "multi_analysis_99"]) == 2  # close to a plan id: its name
    assert "did you mean 'parallel_analysis'?" in capsys.readouterr().err
    assert main(["validate", "missing.json"]) == 2  # a file's path: the file's error
    assert "cannot read plan file missing.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="did you mean 'retry_example'"):
        ok.examples.path("retry_exampel")


def test_simulate_needs_no_models_for_an_example(capsys):
    """The shipped models are the default: no --models to find on first contact."""
    assert main(["simulate", "parallel_analysis", "--runs", "500", "--seed", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    mc = ok.monte_carlo(
        ok.examples.plan("parallel_analysis"),
        ok.examples.models(),
        runs=500,
        seed=2,
        progress=False,
    )
    assert got["plan_id"] == "multi_analysis_999"
    assert got["metrics"]["makespan_p95_ms"]["value"] == pytest.approx(
        mc.summary()["makespan_p95_ms"]
    )


def test_the_demo_reads_its_own_numbers_and_says_where_its_files_are(capsys, tmp_path):
    assert main(["demo", "--runs", "2000", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "busy_ms" not in out and ".000" not in out  # rounded, and labelled
    assert "times in ms" in out and "wait for a slot: mean, p95 (ms)" in out
    assert "success_rate              " in out and "%" in out
    # the capacity study it ran, again: its busiest agent is the bottleneck it names
    study = ok.monte_carlo(
        ok.examples.plan("parallel_analysis"),
        ok.examples.models(),
        seed=1,
        workload=ok.Workload(rate_per_s=1.0, horizon_ms=600_000),
        progress=False,
    )
    agents = study.summary().agents.dropna(subset=["utilisation"])
    top = agents.loc[agents["utilisation"].idxmax()]
    ending = " ".join(out.strip().split("\n\n")[-1].split())  # the last paragraph
    assert ending.startswith(
        f"The bottleneck is {top['agent_id']}: {top['utilisation']:.0%} busy with its "
        f"{int(top['capacity'])} slots at 1 run/s"
    ), ending
    assert ending.count(". ") == 2 and ending.endswith(".")  # three sentences
    assert "Try next: more tutor-agent-123 slots" in ending and "tutor_analysis" in ending
    demo = tmp_path / "demo"
    for name in ("gantt.html", "makespan.html", "runs.csv"):
        assert f"{demo}/{name}" in ending and (demo / name).exists()


def test_run_without_tensorflow_takes_a_simulated_speech_agent(without, capsys, tmp_path):
    without("tensorflow")
    assert main(["run", "parallel_analysis", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'orchkit[speech]'" in err
    assert "or stand in a simulated one: orchkit run parallel_analysis --simulate speech" in err
    code = main(["run", "parallel_analysis", "--simulate", "speech", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "plan 'multi_analysis_999': succeeded" in out
    assert "speech_analysis          succeeded  analyze_speech_progress" in out
    assert err.startswith("warning: --simulate speech: speech-agent-123 simulated")
    assert str(ok.examples.models_path()) in err
    spans = (tmp_path / "o" / "multi_analysis_999_spans.csv").read_text()
    assert "speech-agent-123" in spans
    assert main(["run", "parallel_analysis", "--simulate", "speach"]) == 2
    assert "kinds: learning, tutor, speech, all" in capsys.readouterr().err
    agent = agents.for_plan(
        ok.examples.plan("parallel_analysis"), ok.examples.models(), simulate=["speech"]
    )
    assert [type(a).__name__ for a in agent][1] == "SyntheticAgent"
    with pytest.raises(ok.PlanValidationError, match="needs agent models"):
        agents.make_agent("speech-agent-1", simulate=["speech"])


@pytest.fixture
def without(monkeypatch):
    """Make find_spec report the given top-level modules as not installed."""
    real = importlib.util.find_spec

    def hide(*modules):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name.split(".")[0] in modules else real(name, *a),
        )

    return hide


def test_missing_extra_is_one_line_naming_it(without, capsys, tmp_path):
    without("tensorflow", "pyarrow")
    with pytest.raises(ok.MissingDependencyError, match=r"pip install 'orchkit\[speech\]'"):
        agents.SpeechAnalysisAgent  # noqa: B018 - the attribute's import raises
    assert main(["run", "parallel_analysis", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'orchkit[speech]'" in err
    assert main(["run", "retry_example", "--format", "parquet", "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'orchkit[parquet]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
