"""Workspace facts that uv does not check: bounds between members, and what every member ships."""

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = sorted([*ROOT.glob("packages/*/pyproject.toml"), ROOT / "recipes" / "pyproject.toml"])


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text())["project"]


VERSIONS = {_project(p)["name"]: Version(_project(p)["version"]) for p in MEMBERS}


@pytest.mark.parametrize("pyproject", MEMBERS, ids=lambda p: p.parent.name)
def test_member_bounds_admit_the_workspace_version_and_exclude_the_next_minor(pyproject):
    # uv resolves workspace members regardless of bounds, so a stale bound only shows up
    # after publishing; catch it here.
    for raw in _project(pyproject)["dependencies"]:
        req = Requirement(raw)
        if req.name not in VERSIONS:
            continue
        current = VERSIONS[req.name]
        assert req.specifier, f"{pyproject}: {req.name} needs version bounds"
        assert current in req.specifier, f"{pyproject}: {raw} excludes {req.name} {current}"
        next_minor = Version(f"{current.major}.{current.minor + 1}.0")
        assert next_minor not in req.specifier, f"{pyproject}: {raw} has no upper bound"


@pytest.mark.parametrize("pyproject", MEMBERS, ids=lambda p: p.parent.name)
def test_member_ships_readme_changelog_and_py_typed(pyproject):
    pkg = pyproject.parent
    module = _project(pyproject)["name"].replace("-", "_")
    assert (pkg / "README.md").read_text().strip()
    assert f"## {VERSIONS[_project(pyproject)['name']]}" in (pkg / "CHANGELOG.md").read_text()
    assert (pkg / "src" / module / "py.typed").exists()
