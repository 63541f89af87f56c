"""`dvc.yaml` deps must cover every library module (and bundled asset) a stage can run.

A stage whose deps miss a module it imports is called up to date by `dvc repro` after that
module changed: the pipeline's results would no longer follow from its code. The import closure
is derived from the sources (every `import`, also those inside functions: a lazily imported
module still runs when its branch does), so the check stays true as the code moves. A dep may
cover more than the closure only at subpackage granularity (a folder the stage imports from);
a single-module dep the stage never imports is stale. The package's import graph has no cycles,
between modules or between subpackages.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "ftuseg"
# What every stage imports first; it only puts its checkout's src/ on sys.path.
BOOTSTRAP = "_checkout"


def module_file(dotted: str) -> Path | None:
    """The source file of a dotted module name inside the package, or None (not ours)."""
    if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def dotted_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Dotted names of everything ``path`` imports (any depth in the file), relative resolved."""
    is_package = path.name == "__init__.py"
    here = dotted_name(path) if path.is_relative_to(SRC) else ""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            # `from pkg import sub` imports the submodule when `sub` is one
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def closure(script: Path) -> set[Path]:
    """Every package source file a stage script can import, with the packages' __init__ files."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        current = todo.pop()
        for name in imported_modules(current):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                file = module_file(".".join(parts[:i]))
                if file is not None and file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen


ASSET_RE = re.compile(r'"assets"(?:\s*/\s*"([^"]+)")?')


def assets_read(files: set[Path]) -> set[Path]:
    """Bundled data folders read through importlib.resources by these modules."""
    needed = set()
    for file in files:
        text = file.read_text()
        if f'resources.files("{PACKAGE}")' not in text:
            continue
        for match in ASSET_RE.finditer(text):
            sub = match.group(1)
            needed.add(SRC / PACKAGE / "assets" / sub if sub else SRC / PACKAGE / "assets")
    return needed


def docstring_only(path: Path) -> bool:
    """An ``__init__.py`` holding nothing but its docstring: importing it runs no code, so it
    cannot change a stage's results and needs no dep."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body
    )


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_script(stage: dict) -> Path:
    words = stage["cmd"].split()
    assert words[0] == "python", stage["cmd"]
    return ROOT / words[1]


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == ROOT / d or path.is_relative_to(ROOT / d) for d in deps if "$" not in d)


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_cover_the_modules_it_imports(name):
    stage = stages()[name]
    script = stage_script(stage)
    deps = [str(d) for d in stage["deps"]]
    assert covered(script, deps), f"{name}: its own script {script.name} is not a dep"
    # Every stage imports stages/_checkout.py first: it pins the CPU, so it shapes every output.
    checkout = ROOT / "stages" / f"{BOOTSTRAP}.py"
    assert covered(checkout, deps), f"{name}: {checkout.name} (the CPU pin) is not a dep"
    assert "cpu" in [str(p) for p in stage["params"]], f"{name}: the cpu params are not a dep"
    files = closure(script) | closure(checkout)
    assert files, f"{name}: found no {PACKAGE} import in {script}"
    needed = {f for f in files if not docstring_only(f)} | assets_read(files)
    missing = sorted(str(f.relative_to(ROOT)) for f in needed if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {name!r} runs these but does not depend on them: {missing}"
    # ...and no module dep it never imports (a stale dep re-runs the stage for nothing)
    stale = [
        d
        for d in deps
        if d.startswith(f"src/{PACKAGE}/") and d.endswith(".py") and ROOT / d not in files
    ]
    assert not stale, f"dvc.yaml stage {name!r} depends on modules it never imports: {stale}"
    # ...and a folder dep only for a subpackage the stage imports from
    package = SRC / PACKAGE
    unused = [
        d
        for d in deps
        if (ROOT / d).is_dir()
        and (ROOT / d).is_relative_to(package)
        and (ROOT / d) != package
        and d != f"src/{PACKAGE}/assets"
        and not (ROOT / d).is_relative_to(package / "assets")
        and not any(f.is_relative_to(ROOT / d) for f in files)
    ]
    assert not unused, f"dvc.yaml stage {name!r} depends on subpackages it never imports: {unused}"


def module_graph() -> dict[str, set[str]]:
    """Dotted module -> the package modules it imports (any depth in the file)."""
    graph = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        mine = set()
        for name in imported_modules(path):
            file = module_file(name)
            if file is not None and file != path:
                mine.add(dotted_name(file))
        graph[dotted_name(path)] = mine
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path of nodes, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else PACKAGE


def test_no_import_cycles_between_modules():
    # Imports of a package's __init__ by its own modules are the package itself, not a cycle.
    graph = {
        m: {n for n in deps if not m.startswith(n + ".")} for m, deps in module_graph().items()
    }
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_import_cycles_between_subpackages():
    graph: dict[str, set[str]] = {}
    for module, deps in module_graph().items():
        here = subpackage(module)
        graph.setdefault(here, set()).update(
            subpackage(d) for d in deps if subpackage(d) not in (here, PACKAGE)
        )
    assert find_cycle(graph) is None, f"subpackage cycle: {' -> '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_closure_follows_relative_lazy_and_package_imports():
    # A probe of the analysis itself on modules whose imports we know.
    submit = closure(ROOT / "stages/submit.py")
    rel = {f.relative_to(SRC / PACKAGE).as_posix() for f in submit}
    assert {"core/rle.py", "core/scale.py", "models/__init__.py", "models/zoo.py"} <= rel
    assert "models/checkpoint.py" in rel
    assert "domain/normalize.py" in rel  # imported inside Predictor.from_checkpoints only
    assert "ensemble/gallery.py" not in rel and "ensemble/search.py" not in rel


def test_stage_plumbing_imports_no_engine():
    """Every stage imports `ftuseg.core.stage`: it must not drag torch or the model zoo along."""
    probe = (
        "import sys; sys.path.insert(0, 'src'); import ftuseg.core.stage; "
        "print(','.join(m for m in ('torch', 'timm', 'sklearn', 'staintools') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_the_kernel_imports_only_what_it_runs():
    """The offline kernel runs ftuseg.kaggle.runtime: no training, CLI, plotting or pipeline code."""
    probe = (
        "import sys; sys.path.insert(0, 'src'); import ftuseg.kaggle.runtime; "
        "print(','.join(m for m in ('sklearn', 'rich', 'dvc', 'dvclive', 'hydra', 'typer', "
        "'staintools', 'matplotlib', 'ftuseg.train', 'ftuseg.ensemble', 'ftuseg.data.prepare') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
