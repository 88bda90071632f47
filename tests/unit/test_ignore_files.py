"""Secrets on the developer's machine stay out of git and out of the package `func azure functionapp publish` builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pathspec
import pytest

ROOT = Path(__file__).resolve().parents[2]

# Files that hold secrets or machine state: azd's environment (.env carries clusterTokenKey), the local settings with
# this machine's token key, the local provider's state (token files of local clusters).
SECRET_PATHS = [
    ".azure/dev/.env",
    ".azure/config.json",
    "local.settings.json",
    ".local-data/clusters/demo/token",
]


def _funcignore() -> pathspec.PathSpec[pathspec.Pattern]:
    return pathspec.PathSpec.from_lines("gitwildmatch", (ROOT / ".funcignore").read_text().splitlines())


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_secret_paths_are_not_published_with_the_function_app(path: str) -> None:
    assert _funcignore().match_file(path), f".funcignore lets {path} into the published package"


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_secret_paths_are_ignored_by_git(path: str) -> None:
    result = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
    assert result.returncode == 0, f".gitignore does not ignore {path}"


@pytest.mark.parametrize("path", ["function_app.py", "autoscaler/service.py", "provisioning/head/agent.py"])
def test_the_app_itself_is_published(path: str) -> None:
    assert not _funcignore().match_file(path)


@pytest.mark.parametrize("path", ["azray/cli.py", "pyproject.toml"])
def test_the_cli_and_its_packaging_stay_out_of_the_published_app(path: str) -> None:
    # The app installs requirements.txt only; the CLI is for users' machines (pip install '.[cli]').
    assert _funcignore().match_file(path)
