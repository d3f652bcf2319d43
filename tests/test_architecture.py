"""The layers of the codebase: who may import whom.

trainable/ (the plain train-and-evaluate core) imports no other package of ours and no Ray;
sweeps/ and demo/ build on trainable/; benchmarks/ may use all three. Inside sweeps/, the
search and repro jobs share only sweeps' top-level modules, never each other. Read from every
import statement (top-level and inside functions), so a lazy import counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainable", "sweeps", "demo", "benchmarks")
# Which of our packages each package may import.
ALLOWED = {
    "trainable": set(),
    "sweeps": {"trainable"},
    "demo": {"trainable"},
    "benchmarks": {"trainable", "demo", "sweeps"},
}
# Sub-packages of sweeps that must not import each other.
SWEEPS_JOBS = ("sweeps.search", "sweeps.repro")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement in the file names (relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(path.relative_to(ROOT).with_suffix("").parts[: -node.level])
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_of(module: str, path: Path) -> set[str]:
    return {name for name in imported_names(path) if name.split(".")[0] in PACKAGES or name.split(".")[0] == "ray"}


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_follow_the_layers(module):
    package = module.split(".")[0]
    for name in imports_of(module, modules()[module]):
        target = name.split(".")[0]
        if target == "ray":
            assert package != "trainable", f"{module} imports {name}: the core must run without Ray"
            continue
        assert target == package or target in ALLOWED[package], f"{module} imports {name}: {package}/ may import {sorted(ALLOWED[package]) or 'none of ours'}"
        for job in SWEEPS_JOBS:
            other = [j for j in SWEEPS_JOBS if j != job][0]
            if module.startswith(job):
                assert not name.startswith(other), f"{module} imports {name}: the search and repro jobs share only sweeps' top-level modules"


def test_no_import_cycles_between_modules():
    """Module-level graph of our own imports (a submodule name counts as its module): acyclic."""
    found = modules()
    graph = {}
    for module, path in found.items():
        targets = set()
        for name in imports_of(module, path):
            while name and name not in found:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                targets.add(name)
        graph[module] = targets
    visiting, done = set(), set()

    def visit(module, trail):
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join([*trail, module])
        visiting.add(module)
        for target in sorted(graph.get(module, ())):
            visit(target, [*trail, module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_importing_every_core_module_loads_no_ray_and_none_of_the_other_packages():
    core = [module for module in modules() if module.startswith("trainable")]
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}:\n    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'sweeps', 'demo', 'benchmarks'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
