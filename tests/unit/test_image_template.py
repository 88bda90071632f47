"""The Packer template of the Ray node image (infra/image/ray-node.pkr.hcl), checked offline.

The first two tests read the template as text and need nothing installed: they keep the preinstalled Ray version and
venv path equal to what the nodes would otherwise install at boot, so the two cannot drift. The others parse the
template as HCL2 with python-hcl2 and check its structure; they are skipped where python-hcl2 is not installed.
Nothing here runs Packer or talks to Azure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from provisioning.azure.cloud_init import DEFAULT_RAY_VERSION
from provisioning.azure.vm_template import DEFAULT_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "infra" / "image" / "ray-node.pkr.hcl"
TEMPLATES_DIR = REPO_ROOT / "provisioning" / "head" / "templates"
REQUIREMENTS_DEV = REPO_ROOT / "requirements-dev.txt"


def template_variable_default(name: str) -> str:
    block = re.search(rf'^variable\s+"{name}"\s*\{{(.*?)^\}}', TEMPLATE.read_text(), re.MULTILINE | re.DOTALL)
    assert block is not None, f"no variable {name!r} in {TEMPLATE.name}"
    default = re.search(r'^\s*default\s*=\s*"([^"]*)"', block.group(1), re.MULTILINE)
    assert default is not None, f"variable {name!r} has no string default"
    return default.group(1)


def template_local(name: str) -> str:
    local = re.search(rf'^\s*{name}\s*=\s*"([^"]*)"', TEMPLATE.read_text(), re.MULTILINE)
    assert local is not None, f"no local {name!r} in {TEMPLATE.name}"
    return local.group(1)


def shell_template(name: str) -> str:
    """A boot template as the shell sees it (string.Template writes a literal `$` as `$$`)."""
    return (TEMPLATES_DIR / name).read_text().replace("$$", "$")


# ------------------------------------------------------------------------------------------ drift (no dependency)


def test_image_preinstalls_the_ray_version_the_nodes_would_install_at_boot() -> None:
    (pinned,) = re.findall(r"^ray\[default\]==(\S+)$", REQUIREMENTS_DEV.read_text(), re.MULTILINE)

    assert template_variable_default("ray_version") == DEFAULT_RAY_VERSION == pinned


def test_image_installs_ray_in_the_venv_the_boot_scripts_look_in() -> None:
    bootstrap = shell_template("bootstrap.sh")
    ray_home = re.search(r"^RAY_HOME=(\S+)$", bootstrap, re.MULTILINE)
    assert ray_home is not None

    venv = template_local("ray_venv")

    # bootstrap.sh skips the install when this file is executable; start-ray.sh runs it.
    assert '[ ! -x "$RAY_HOME/venv/bin/ray" ]' in bootstrap
    assert venv == f"{ray_home.group(1)}/venv"
    assert f"{venv}/bin/ray" in shell_template("start-ray.sh")


# ------------------------------------------------------------------------------------------ structure (python-hcl2)


def unquoted(value: str) -> str:
    """python-hcl2 keeps HCL string literals with their quotes and escapes; HCL's escapes are JSON's here."""
    text: str = json.loads(value) if value.startswith('"') else value
    return text


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 parses the template; see requirements-dev.txt")
    with TEMPLATE.open() as handle:
        parsed: dict[str, Any] = hcl2.load(handle)
    return parsed


@pytest.fixture(scope="module")
def source(template: dict[str, Any]) -> dict[str, Any]:
    (sources,) = template["source"]
    builder: dict[str, Any] = sources['"azure-arm"']['"ray_node"']
    return builder


def test_template_starts_from_the_ubuntu_image_the_provider_boots_by_default(source: dict[str, Any]) -> None:
    image = {field: unquoted(source[f"image_{field}"]) for field in ("publisher", "offer", "sku", "version")}

    assert image == DEFAULT_IMAGE
    assert unquoted(source["os_type"]) == "Linux"


def test_template_publishes_a_version_of_a_compute_gallery_image_definition(source: dict[str, Any]) -> None:
    (destination,) = source["shared_image_gallery_destination"]

    assert {field: destination[field] for field in ("gallery_name", "image_name", "image_version")} == {
        "gallery_name": "${var.gallery_name}",
        "image_name": "${var.image_definition}",
        "image_version": "${var.image_version}",
    }
    assert destination["replication_regions"] == ["${var.location}"]


def test_template_installs_the_pinned_ray_into_the_venv(template: dict[str, Any]) -> None:
    (build,) = template["build"]
    install = build["provisioner"][0]['"shell"']

    environment = [unquoted(item) for item in install["environment_vars"]]
    commands = [unquoted(item) for item in install["inline"]]

    assert {"RAY_VERSION=${var.ray_version}", "RAY_VENV=${local.ray_venv}"} <= set(environment)
    assert 'python3 -m venv "$RAY_VENV"' in commands
    assert '"$RAY_VENV/bin/pip" install -q --no-cache-dir "ray[default]==$RAY_VERSION"' in commands


def test_template_generalizes_the_vm_after_everything_else(template: dict[str, Any]) -> None:
    (build,) = template["build"]
    last = build["provisioner"][-1]['"shell"']

    (command,) = [unquoted(item) for item in last["inline"]]

    assert command.startswith("/usr/sbin/waagent -force -deprovision+user")
