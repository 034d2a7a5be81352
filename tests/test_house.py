"""The house keeps its shape (ARCHITECTURE.md): lint and format (ruff), the wings' layers
and the pure core (import-linter), type hints on the pure wings (mypy), no import circles,
no private name crossing a wing, and a public namespace of the user's vocabulary only."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import orchkit as ok

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WINGS = ("_base", "_spec", "_engine", "_runtimes", "_studies", "_views")


def tool(name: str, *args: str, cwd: Path = ROOT, env: dict | None = None):
    exe = BIN / name
    if not exe.exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=240, env=env
    )


def test_ruff_lint_and_format_are_clean():
    lint = tool("ruff", "check", "--no-cache", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = tool("ruff", "format", "--no-cache", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_the_wings_contracts_hold():
    out = tool("lint-imports", "--no-cache")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout, out.stdout


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "orchkit", tmp_path / "orchkit", ignore=shutil.ignore_patterns("__pycache__", "data")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    "where, line, broken",
    [
        ("_spec/plan.py", "from .._studies import montecarlo", "Wings import only"),
        ("_engine/core.py", "import asyncio", "The scheduling core is pure"),
        ("_runtimes/sim.py", "from ..service import _app", "Wings import only"),
    ],
)
def test_the_contracts_fail_when_an_import_breaks_them(tmp_path, where, line, broken):
    """The checks are not vacuous: one upward (or impure) import added to a copy of the
    package breaks its contract."""
    root = copy_of_the_package(tmp_path)
    path = root / "orchkit" / where
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "\n" + rest)
    env = {"PATH": str(BIN), "PYTHONPATH": str(root)}
    out = tool("lint-imports", "--no-cache", cwd=root, env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{broken}" in out.stdout and "BROKEN" in out.stdout, out.stdout


def test_the_pure_wings_type_check():
    out = tool("mypy", "--no-incremental", "--cache-dir", "/dev/null")
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_import_circles():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("orchkit", exclude_type_checking_imports=True)
    mods = [m for m in graph.modules if m.startswith("orchkit.") or m == "orchkit"]
    circles = []
    for m in mods:
        for other in graph.find_modules_directly_imported_by(m):
            if other.startswith("orchkit") and graph.find_shortest_chain(other, m):
                circles.append((m, other))
    assert circles == []


def imports_of(path: Path):
    """(module imported, names) of every ``from X import names`` in ``path``, X absolute."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []


def home(module: str) -> str:
    """The wing (or host) a module lives in: orchkit._spec.plan -> orchkit._spec."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_no_private_name_crosses_a_wing():
    found = []
    for path in sorted((ROOT / "orchkit").rglob("*.py")):
        me = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for line, module, names in imports_of(path):
            if not module.startswith("orchkit") or home(module) == home(me):
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            inner = [p for p in module.split(".")[2:] if p.startswith("_")]
            if private or inner:
                found.append(f"{path.relative_to(ROOT)}:{line}: {module} {private or inner}")
    assert found == []


def test_tests_import_the_public_api_or_a_wings_public_names():
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for line, module, names in imports_of(path):
            if not module.startswith("orchkit"):
                continue
            parts = module.split(".")
            # orchkit, orchkit.<public>, or orchkit.<wing>.<public module>
            bad_module = any(p.startswith("_") for p in parts[2:]) or (
                len(parts) > 1
                and parts[1].startswith("_")
                and parts[1] not in WINGS
                and parts[1] != "_worker"
            )
            private = [n for n in names if n.startswith("_")]
            if bad_module or private:
                found.append(f"{path.name}:{line}: {module} {private}")
    assert found == []


def test_dir_lists_the_users_vocabulary_only():
    names = dir(ok)
    assert names == sorted(
        {*ok.__all__, "agents", "analytics", "examples", "executors", "testing", "__version__"}
    )
    for leak in ("Any", "TYPE_CHECKING", "importlib", "annotations", *WINGS):
        assert leak not in names
    for name in ok.__all__:
        assert getattr(ok, name) is not None


def test_inputs_are_normalised_once_and_shared_by_every_trial():
    """A study's front door: a dotted change rebuilds only the input it names; a Plan
    passes through untouched (no second validation), and the compiled form is reused."""
    from orchkit._engine.prepared import Prepared
    from orchkit._spec.inputs import StudyInputs

    plan = ok.examples.plan("parallel_analysis")
    base = StudyInputs.of(plan, ok.examples.models())
    assert base.plan is plan
    timed = base.with_values({"steps.*.timeout": 5000})
    assert timed.models is base.models and timed.plan is not plan
    wider = base.with_values({"agents.*.capacity": 4})
    assert wider.plan is plan and wider.models is not base.models
    assert Prepared.of(wider).compiled[0] is Prepared.of(base).compiled[0]
    with pytest.raises(ok.PlanValidationError, match="policies"):
        base.with_values({"breakers.*.openMs": 5})  # no policies were given
