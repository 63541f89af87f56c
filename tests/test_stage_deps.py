"""`dvc.yaml` deps must cover every library module (and bundled asset) a stage can run.

A stage whose deps miss a module it imports is called up to date by `dvc repro` after that
module changed: the pipeline's results would no longer follow from its code. The import closure
is derived from the sources (every `import`, also those inside functions: a lazily imported
module still runs when its branch does), so the check stays true as the code moves.
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
    files = closure(script)
    assert files, f"{name}: found no {PACKAGE} import in {script}"
    missing = sorted(
        str(f.relative_to(ROOT)) for f in files | assets_read(files) if not covered(f, deps)
    )
    assert not missing, f"dvc.yaml stage {name!r} runs these but does not depend on them: {missing}"
    # ...and no module dep it never imports (a stale dep re-runs the stage for nothing)
    stale = [
        d
        for d in deps
        if d.startswith(f"src/{PACKAGE}/") and d.endswith(".py") and ROOT / d not in files
    ]
    assert not stale, f"dvc.yaml stage {name!r} depends on modules it never imports: {stale}"


def test_the_closure_follows_relative_lazy_and_package_imports():
    # A probe of the analysis itself on modules whose imports we know.
    submit = closure(ROOT / "stages/submit.py")
    rel = {str(f.relative_to(SRC / PACKAGE)) for f in submit}
    assert {"rle.py", "scale.py", "models/__init__.py", "models/zoo.py", "checkpoint.py"} <= rel
    assert "stain.py" in rel  # imported inside Predictor.from_checkpoints only
    assert "gallery.py" not in rel and "ensemble_search.py" not in rel


def test_stage_plumbing_imports_no_engine():
    """Every stage imports `ftuseg.stage`: it must not drag torch or the model zoo along."""
    probe = (
        "import sys; sys.path.insert(0, 'src'); import ftuseg.stage; "
        "print(','.join(m for m in ('torch', 'timm', 'sklearn', 'staintools') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_the_kernel_imports_only_what_it_runs():
    """The offline kernel runs ftuseg.kernel: no training, CLI, plotting or pipeline libraries."""
    probe = (
        "import sys; sys.path.insert(0, 'src'); import ftuseg.kernel; "
        "print(','.join(m for m in ('sklearn', 'rich', 'dvc', 'dvclive', 'hydra', 'typer', "
        "'staintools', 'matplotlib', 'ftuseg.train', 'ftuseg.ensemble_search') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
