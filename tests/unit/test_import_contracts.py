"""The layer contracts in pyproject.toml (`make lint` runs `lint-imports`): kept by the code, broken by a reverse one.

The broken case runs import-linter on a copy of the packages with one deliberate reverse import added, so the check is
shown to bite, not only to pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("autoscaler", "provisioning", "local", "azray")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (make install)")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy's packages first on the path, ahead of the repository the venv's .pth file points at.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def copy_of_the_code(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def test_the_code_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "reverse_import", "broken"),
    [
        pytest.param(
            "autoscaler/config.py",
            "from provisioning.azure import plugin  # the core reaching into a cloud plugin",
            "entrypoints -> wiring -> service -> core <- adapters",
            id="core-imports-a-cloud-plugin",
        ),
        pytest.param(
            "autoscaler/reconcile.py",
            "from autoscaler.adapters import table_store  # the core reaching into the storage adapter",
            "the core and the service import no cloud or storage SDK",
            id="core-imports-the-table-store",
        ),
        pytest.param(
            "autoscaler/service.py",
            "from autoscaler import wiring  # the service reaching up into the composition root",
            "entrypoints -> wiring -> service -> core <- adapters",
            id="service-imports-the-wiring",
        ),
    ],
)
def test_a_reverse_import_breaks_a_contract(tmp_path: Path, module: str, reverse_import: str, broken: str) -> None:
    root = copy_of_the_code(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{reverse_import}\n")
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    assert f"{broken}" in result.stdout
    assert "BROKEN" in result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout  # the report names the importer
