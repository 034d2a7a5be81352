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
