"""Bad input to RemoteAgent and `orchkit worker`: clear errors, exit 2, never a hang."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_server import free_port

import orchkit as ok
from orchkit import OrchkitError
from orchkit._worker import agent_context, load_factory, parse_agents
from orchkit.agents.remote import json_context

pytestmark = pytest.mark.timeout(60)


def worker_cli(capsys, *args: str) -> tuple[int, str]:
    """`orchkit worker ARGS` in this process: (exit code, stderr)."""
    from orchkit.cli import main

    code = main(["worker", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--redis", "localhost:6379", "--agents", "a"], "--redis must be a Redis URL"),
        (["--redis", "redis://127.0.0.1:1/0", "--agents", " , "], "--agents ' , ': give one"),
        (
            ["--redis", "redis://127.0.0.1:1/0", "--agents", "a", "--concurrency", "0"],
            "--concurrency must be an int >= 1",
        ),
        (
            ["--redis", "redis://127.0.0.1:1/0", "--agents", "a", "--lock-ms", "5"],
            "--lock-ms must be an int >= 100",
        ),
        (
            ["--redis", "redis://127.0.0.1:1/0", "--agents", "a", "--factory", "nocolon"],
            "use module:function",
        ),
        (
            ["--redis", "redis://127.0.0.1:1/0", "--agents", "a", "--factory", "os:no_such_fn"],
            "module 'os' has no function 'no_such_fn'",
        ),
        (
            ["--redis", "redis://127.0.0.1:1/0", "--agents", "robot-1"],
            "no built-in agent serves 'robot-1'",
        ),
    ],
)
def test_worker_rejects_bad_arguments_with_one_line_and_exit_2(capsys, args, message):
    code, err = worker_cli(capsys, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1


def test_worker_and_remote_agent_fail_fast_when_redis_is_down(capsys):
    url = f"redis://127.0.0.1:{free_port()}/0"
    t0 = time.monotonic()
    code, err = worker_cli(capsys, "--redis", url, "--agents", "x", "--factory", "os:getcwd")
    assert code == 2 and f"cannot reach Redis at {url}" in err
    with pytest.raises(ok.AgentError, match="cannot reach Redis"):
        asyncio.run(ok.Orchestrator().register_agent(ok.RemoteAgent("x", redis=url)))
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"redis": "127.0.0.1:6379"}, "redis must be a Redis URL"),
        ({"redis": None}, "redis must be a Redis URL"),
        ({"redis": "redis://h/0", "queue": ""}, "queue must be a non-empty string"),
        ({"redis": "redis://h/0", "capacity": 0}, "capacity must be an int >= 1"),
    ],
)
def test_remote_agent_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ok.RemoteAgent("a", **kwargs)


@settings(derandomize=True, max_examples=200)
@given(st.lists(st.text(alphabet="ab-*, \t", max_size=6), max_size=6).map(",".join))
def test_parse_agents_keeps_order_drops_blanks_and_duplicates(text):
    expected = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not expected:
        with pytest.raises(ValueError, match="--agents"):
            parse_agents(text)
    else:
        assert parse_agents(text) == expected


@settings(derandomize=True, max_examples=200)
@given(st.text(alphabet="abos.:_ 1", max_size=12))
def test_load_factory_returns_a_callable_or_says_what_is_wrong(spec):
    try:
        fn = load_factory(spec)
    except OrchkitError as exc:
        assert str(exc).startswith(f"--factory {spec!r}")
    else:
        assert callable(fn)


@settings(derandomize=True, max_examples=100)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
            max_leaves=6,
        ),
        max_size=3,
    ),
    st.integers(1, 5),
    st.one_of(st.integers(), st.text(max_size=5), st.tuples(st.integers())),
)
def test_the_job_context_is_json_and_round_trips_to_the_agents_context(data, attempt, run_id):
    import json

    results = {sid: ok.AgentResponse(action="a", confidence=0.5, data=d) for sid, d in data.items()}
    context = {
        "plan_id": "p",
        "step_id": "s",
        "attempt": attempt,
        "run_id": run_id,
        "job_id": "j",
        "results": results,
    }
    wire = json.loads(json.dumps(json_context(context)))
    back = agent_context(wire)
    assert back["results"] == results
    assert back["attempt"] == attempt and back["plan_id"] == "p" and back["job_id"] == "j"
    assert back["run_id"] == (run_id if isinstance(run_id, (int, str)) else str(run_id))
