"""The house rules of the layout, read from the code's own imports (module level and inside functions):
codec <- pipelines <- jobs, pipeline jobs share only through ``pipelines.common`` (training reads its data
through ``pipelines.data``), and no two modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("codec", "pipelines", "jobs")
JOBS = ("prepare", "train", "tokenize", "evaluate")
ALLOWED = {"train": {"data"}}  # pipeline job -> other pipelines packages it may use besides common


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every project module ``path`` imports (``from pkg import mod`` counts as ``pkg.mod`` when it is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in (*PACKAGES, "ray")}


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
GRAPH = {name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
RAW = {name: imports(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("codec")))
def test_codec_never_imports_ray_pipelines_or_jobs(name):
    assert not {m for m in RAW[name] if m.split(".")[0] in ("ray", "pipelines", "jobs")}


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("pipelines")))
def test_pipelines_never_import_jobs_and_jobs_share_only_through_common(name):
    assert not {m for m in RAW[name] if m.startswith("jobs")}
    parts = name.split(".")
    if len(parts) < 3:
        return
    own = parts[1]
    others = {m.split(".")[1] for m in RAW[name] if m.startswith("pipelines.") and len(m.split(".")) > 2}
    if own == "common":
        assert others <= {"common"}, f"{name} (the shared base) imports a job package: {others}"
    else:
        assert others <= {own, "common", *ALLOWED.get(own, ())}, f"{name} imports a sibling job: {others}"


def test_every_pipeline_job_has_the_same_shape():
    for job in JOBS:
        assert (ROOT / "pipelines" / job / "config.py").is_file() and (ROOT / "pipelines" / job / "driver.py").is_file()


def test_no_import_circles():
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circles = sorted(name for name in GRAPH if name in reach(name))
    assert not circles, f"modules in an import circle: {circles}"
