"""The cloud-config rendered for a VM: cloud-init's own schema, Azure's custom-data limit, what is shipped to the head,
the rendered scripts, and the systemd units on systemds with and without LoadCredential=."""

from __future__ import annotations

import ast
import base64
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from provisioning.azure import cloud_init
from provisioning.azure.cloud_init import (
    MAX_CUSTOM_DATA_BYTES,
    PROJECT_ROOT,
    NodeBootSpec,
    agent_source_files,
    render_cloud_config,
    render_custom_data,
    shipped_source_files,
    source_files,
)

SCHEMA_PATH = PROJECT_ROOT / "tests" / "data" / "cloud-init" / "schema-cloud-config-v1.json"
TOKEN = "secret-cluster-token"
HEAD_ADDRESS = "10.100.0.4:6379"


def boot_spec(*, is_head: bool, with_commands: bool = False, **changes: Any) -> NodeBootSpec:
    values: dict[str, Any] = {
        "cluster_name": "demo",
        "instance_id": "head0001" if is_head else "worker0001",
        "node_type": "head" if is_head else "cpu",
        "is_head": is_head,
        "resources": {"CPU": 4},
        "cluster_token": TOKEN,
        "ssh_user": "ubuntu",
        "head_address": "" if is_head else HEAD_ADDRESS,
        "control_plane_url": "https://fn.example/?code=k3y" if is_head else "",
    }
    if with_commands:
        values["initialization_commands"] = ["echo 'init' > /tmp/init", "apt-get install -y jq"]
        values["setup_commands"] = ['pip install "pandas>=2" && echo $HOME', "echo done"]
    values.update(changes)
    return NodeBootSpec(**values)


def cloud_config(spec: NodeBootSpec) -> dict[str, Any]:
    text = render_cloud_config(spec)
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    assert isinstance(document, dict)
    return document


def written_files(spec: NodeBootSpec) -> dict[str, str]:
    return {entry["path"]: entry["content"] for entry in cloud_config(spec)["write_files"]}


BOOT_SPECS = [
    pytest.param({"is_head": True}, id="head"),
    pytest.param({"is_head": False}, id="worker"),
    pytest.param({"is_head": True, "with_commands": True}, id="head-with-commands"),
    pytest.param({"is_head": False, "with_commands": True}, id="worker-with-commands"),
]


# --------------------------------------------------------------------------------------------
# cloud-init's own schema
# --------------------------------------------------------------------------------------------


@cache
def cloud_config_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def top_level_keys_the_schema_knows() -> set[str]:
    """Every key a cloud-init module's schema defines at the top of a cloud-config."""
    schema = cloud_config_schema()
    known: set[str] = set(schema.get("properties", {}))
    for reference in schema["allOf"]:
        definition = schema["$defs"][reference["$ref"].rpartition("/")[2]]
        known |= set(definition.get("properties", {}))
    return known


def schema_errors(document: object) -> list[str]:
    validator = jsonschema.Draft4Validator(cloud_config_schema())
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)
    ]
    if isinstance(document, dict):
        errors += [f"{key}: unknown top-level key" for key in document if key not in top_level_keys_the_schema_knows()]
    return errors


@pytest.mark.parametrize("spec_options", BOOT_SPECS)
def test_rendered_cloud_config_passes_cloud_inits_schema(spec_options: dict[str, Any]) -> None:
    assert schema_errors(cloud_config(boot_spec(**spec_options))) == []


def _broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = cloud_config(boot_spec(is_head=False))
    change(document)
    return document


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        pytest.param(
            _broken(lambda d: d["write_files"][0].update(permissions=0o600)), "is not of type 'string'", id="mode-int"
        ),
        pytest.param(
            _broken(lambda d: d["write_files"][0].update(mode="0600")),
            "Additional properties are not allowed",
            id="unknown-file-key",
        ),
        pytest.param(_broken(lambda d: d["write_files"][0].pop("path")), "'path' is a required property", id="no-path"),
        pytest.param(_broken(lambda d: d.update(runcmd="/opt/ray/bootstrap.sh")), "is not of type", id="runcmd-text"),
        pytest.param(_broken(lambda d: d.update(run_cmd=[["true"]])), "unknown top-level key", id="unknown-top-key"),
    ],
)
def test_cloud_inits_schema_refuses_a_broken_cloud_config(document: dict[str, Any], complaint: str) -> None:
    assert any(complaint in error for error in schema_errors(document)), schema_errors(document)


# --------------------------------------------------------------------------------------------
# Azure's custom data limit: 65,535 bytes of decoded (here: gzip-compressed) data
# --------------------------------------------------------------------------------------------


def test_custom_data_limit_is_azures_65535_bytes() -> None:
    assert MAX_CUSTOM_DATA_BYTES == 65_535


@cache
def spec_whose_custom_data_is(size_bytes: int) -> NodeBootSpec:
    """A worker spec whose compressed cloud-config is exactly `size_bytes`: a setup command of random letters
    (nearly incompressible) is lengthened until it is."""
    noise = "".join(random.Random(7).choices(string.ascii_letters + string.digits, k=4 * size_bytes))

    def spec_with(noise_chars: int) -> NodeBootSpec:
        return boot_spec(is_head=False, setup_commands=[f"echo {noise[:noise_chars]}"])

    def compressed_bytes(noise_chars: int) -> int:
        return len(cloud_init.compressed_cloud_config(spec_with(noise_chars)))

    low, high = 0, len(noise)  # compressed_bytes(low) < size_bytes <= compressed_bytes(high)
    while high - low > 1:
        middle = (low + high) // 2
        if compressed_bytes(middle) < size_bytes:
            low = middle
        else:
            high = middle
    for noise_chars in range(high, high + 64):  # one more character may add two bytes: take the next that fits
        if compressed_bytes(noise_chars) == size_bytes:
            return spec_with(noise_chars)
    raise AssertionError(f"no setup command gives {size_bytes} bytes of custom data")


def test_custom_data_of_exactly_65535_bytes_is_accepted() -> None:
    custom_data = render_custom_data(spec_whose_custom_data_is(MAX_CUSTOM_DATA_BYTES))
    assert len(base64.b64decode(custom_data)) == 65_535


def test_custom_data_one_byte_over_the_limit_is_refused_with_its_size() -> None:
    with pytest.raises(ValueError, match="65536 bytes"):
        render_custom_data(spec_whose_custom_data_is(MAX_CUSTOM_DATA_BYTES + 1))


# --------------------------------------------------------------------------------------------
# What the head gets of this repository
# --------------------------------------------------------------------------------------------


def test_the_head_gets_the_agent_without_the_control_planes_model() -> None:
    shipped = agent_source_files()
    assert "provisioning/head/agent.py" in shipped
    assert "autoscaler/shapes.py" in shipped
    assert "autoscaler/model.py" not in shipped
    files = written_files(boot_spec(is_head=True))
    assert {path.removeprefix(cloud_init.CONTROL_DIR + "/") for path in files if "/control/" in path} == set(
        shipped_source_files()
    )
    assert set(shipped) < set(shipped_source_files())


def test_a_worker_gets_the_preempt_watch_and_no_agent_sources() -> None:
    shipped = {
        path.removeprefix(cloud_init.CONTROL_DIR + "/")
        for path in written_files(boot_spec(is_head=False))
        if "/control/" in path
    }
    assert shipped == set(source_files(cloud_init.PREEMPT_WATCH_MODULE))
    assert shipped == {
        "provisioning/__init__.py",
        "provisioning/head/__init__.py",
        "provisioning/head/preempt_watch.py",
    }


def test_shipped_modules_import_only_the_standard_library_and_each_other() -> None:
    shipped = shipped_source_files()
    shipped_modules = {path.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for path in shipped}
    outside: list[str] = []
    for path in shipped:
        for node in ast.walk(ast.parse((PROJECT_ROOT / path).read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and name not in shipped_modules:
                    outside.append(f"{path}: {name}")
    assert outside == []


# --------------------------------------------------------------------------------------------
# The rendered scripts and units
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec_options", BOOT_SPECS)
def test_every_rendered_script_is_valid_bash(spec_options: dict[str, Any], tmp_path: Path) -> None:
    scripts = {
        path: content for path, content in written_files(boot_spec(**spec_options)).items() if path.endswith(".sh")
    }
    assert {"/opt/ray/bootstrap.sh", "/opt/ray/boot-functions.sh", "/opt/ray/systemd-credentials.sh"} <= set(scripts)
    for path, content in scripts.items():
        script = tmp_path / Path(path).name
        script.write_text(content)
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{path}: {checked.stderr}"


@pytest.mark.parametrize("is_head", [True, False], ids=["head", "worker"])
def test_the_token_is_written_only_to_its_root_only_file(is_head: bool) -> None:
    document = cloud_config(boot_spec(is_head=is_head, with_commands=True))
    holding_token = [entry for entry in document["write_files"] if TOKEN in entry["content"]]
    assert [(entry["path"], entry["permissions"], entry["owner"]) for entry in holding_token] == [
        ("/etc/ray/cluster-token", "0600", "root:root")
    ]
    assert TOKEN not in json.dumps(document["runcmd"])


@pytest.mark.parametrize("is_head", [True, False], ids=["head", "worker"])
def test_units_use_no_specifier_that_systemd_247_lacks(is_head: bool) -> None:
    # %d (the credentials directory) came with systemd 248: with it, a 247 would refuse to load the unit.
    units = {
        path: text for path, text in written_files(boot_spec(is_head=is_head)).items() if path.endswith(".service")
    }
    assert units
    for path, text in units.items():
        assert "%d" not in text, path
        assert "LoadCredential=cluster-token:/etc/ray/cluster-token" in text, path


@pytest.mark.parametrize(
    ("is_head", "agent_url"),
    [(True, "http://127.0.0.1:8270"), (False, "http://10.100.0.4:8270")],
    ids=["head", "worker"],
)
def test_every_vm_runs_the_preempt_watch_on_azures_scheduled_events_naming_its_vm(
    is_head: bool, agent_url: str
) -> None:
    spec = boot_spec(is_head=is_head)
    files = written_files(spec)
    unit = files["/etc/systemd/system/ray-preempt-watch.service"]
    [exec_start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    vm_name = "ray-demo-head0001" if is_head else "ray-demo-worker0001"
    assert exec_start == (
        "ExecStart=/usr/bin/python3 -m provisioning.head.preempt_watch"
        ' --scheduled-events-url "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"'
        f" --vm-name ${{VM_NAME}} --instance-id ${{RAY_CLOUD_INSTANCE_ID}} --agent-url {agent_url}"
    )
    assert "EnvironmentFile=/etc/ray/node.env" in unit
    assert node_env(files["/opt/ray/bootstrap.sh"]) == {"RAY_CLOUD_INSTANCE_ID": spec.instance_id, "VM_NAME": vm_name}
    assert "User=ubuntu" in unit
    assert "systemctl enable --now ray-preempt-watch.service" in files["/opt/ray/bootstrap.sh"]
    assert TOKEN not in unit


def test_a_given_vm_name_is_what_the_watch_looks_for() -> None:
    bootstrap = written_files(boot_spec(is_head=False, vm_name="pool_3"))["/opt/ray/bootstrap.sh"]
    assert node_env(bootstrap)["VM_NAME"] == "pool_3"


def test_a_scale_set_vm_takes_its_instance_id_and_name_from_the_instance_metadata_at_boot() -> None:
    files = written_files(boot_spec(is_head=False, instance_id="ray-demo-cpu", name_from_metadata=True))
    assert "ray-demo-cpu" not in files["/opt/ray/bootstrap.sh"]  # one custom data for every VM of the set
    assert node_env(files["/opt/ray/bootstrap.sh"], metadata_name="ray-demo-cpu_1a2b3c4d") == {
        "RAY_CLOUD_INSTANCE_ID": "ray-demo-cpu_1a2b3c4d",
        "VM_NAME": "ray-demo-cpu_1a2b3c4d",
    }
    assert "EnvironmentFile=/etc/ray/node.env" in files["/etc/systemd/system/ray-node.service"]


def node_env(bootstrap: str, *, metadata_name: str = "") -> dict[str, str]:
    """Run the part of bootstrap.sh that settles this VM's instance id and name, with /etc/ray in a temporary folder
    and a `curl` that answers as Azure's instance metadata would (a test never calls the real address)."""
    start = bootstrap.index('INSTANCE_ID="')
    end_instance = bootstrap.index("\n", bootstrap.index('VM_NAME="')) + 1
    block_start = bootstrap.index("# A scale set's VM boots")
    block_end = bootstrap.index(">/etc/ray/node.env") + len(">/etc/ray/node.env")
    with tempfile.TemporaryDirectory() as folder:
        fake_bin = Path(folder, "bin")
        fake_bin.mkdir()
        curl = fake_bin / "curl"
        curl.write_text(f"#!/bin/sh\necho {metadata_name}\n")
        curl.chmod(0o755)
        script = (
            "set -euo pipefail\n"
            + bootstrap[start:end_instance]
            + bootstrap[block_start:block_end].replace("/etc/ray", f"{folder}/etc")
        )
        subprocess.run(
            ["bash", "-c", script], check=True, env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
        )
        lines = Path(folder, "etc", "node.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_boot_phases_go_to_the_head_agent_on_the_heads_private_ip() -> None:
    worker_boot = written_files(boot_spec(is_head=False))["/opt/ray/bootstrap.sh"]
    head_boot = written_files(boot_spec(is_head=True))["/opt/ray/bootstrap.sh"]
    assert 'BOOT_PHASE_URL="http://10.100.0.4:8270/v1/boot-phase"' in worker_boot
    assert 'BOOT_PHASE_URL="http://127.0.0.1:8270/v1/boot-phase"' in head_boot


# --------------------------------------------------------------------------------------------
# systemd with and without LoadCredential= (systemd-credentials.sh, run with a fake systemctl)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def rendered(tmp_path: Path) -> Callable[[bool], Path]:
    """Writes the rendered /opt/ray files of a head or a worker into a directory of their own."""

    def render(is_head: bool) -> Path:
        target = tmp_path / ("head" if is_head else "worker")
        target.mkdir()
        for path, content in written_files(boot_spec(is_head=is_head)).items():
            if path.startswith("/opt/ray/") or path.startswith("/etc/systemd/"):
                (target / Path(path).name).write_text(content)
        return target

    return render


def fake_commands(directory: Path, scripts: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, body in scripts.items():
        command = directory / name
        command.write_text("#!/bin/bash\n" + body)
        command.chmod(0o755)
    return directory


def run_systemd_credentials(rendered_dir: Path, systemd_version_line: str, unit_dir: Path) -> str:
    fakes = fake_commands(rendered_dir / "fake-bin", {"systemctl": f"echo '{systemd_version_line}'\n"})
    unit_dir.mkdir(exist_ok=True)
    finished = subprocess.run(
        ["bash", str(rendered_dir / "systemd-credentials.sh"), str(unit_dir)],
        env={**os.environ, "PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=True,
    )
    return finished.stdout


@pytest.mark.parametrize(
    "version_line", ["systemd 247 (247.3-7+deb11u4)", "systemd 249 (249.11-0ubuntu3.12)", "systemd 255 (255.4-1)"]
)
def test_systemd_247_and_later_get_no_credentials_drop_in(
    rendered: Callable[[bool], Path], tmp_path: Path, version_line: str
) -> None:
    unit_dir = tmp_path / "units"
    output = run_systemd_credentials(rendered(True), version_line, unit_dir)
    assert list(unit_dir.iterdir()) == []
    assert "has LoadCredential=" in output


@pytest.mark.parametrize(
    ("is_head", "expected_units"),
    [(True, ["ray-head-agent", "ray-node", "ray-preempt-watch"]), (False, ["ray-node", "ray-preempt-watch"])],
    ids=["head", "worker"],
)
def test_systemd_245_gets_a_drop_in_that_copies_the_token_for_each_unit(
    rendered: Callable[[bool], Path], tmp_path: Path, is_head: bool, expected_units: list[str]
) -> None:
    unit_dir = tmp_path / "units"
    run_systemd_credentials(rendered(is_head), "systemd 245 (245.4-4ubuntu3.22)", unit_dir)
    drop_ins = sorted(unit_dir.glob("*.service.d/*.conf"))
    assert [path.parent.name.removesuffix(".service.d") for path in drop_ins] == expected_units
    for path, unit in zip(drop_ins, expected_units, strict=True):
        text = path.read_text()
        assert TOKEN not in text
        assert f"RuntimeDirectory={unit}-credentials\n" in text
        assert f"Environment=CREDENTIALS_DIRECTORY=/run/{unit}-credentials\n" in text
        copy = f"ExecStartPre=+/usr/bin/install -m 0400 -o ubuntu /etc/ray/cluster-token /run/{unit}-credentials/"
        assert copy in text


def test_a_systemd_version_that_cannot_be_read_gets_the_drop_in(
    rendered: Callable[[bool], Path], tmp_path: Path
) -> None:
    unit_dir = tmp_path / "units"
    run_systemd_credentials(rendered(False), "", unit_dir)
    assert sorted(path.name for path in unit_dir.iterdir()) == ["ray-node.service.d", "ray-preempt-watch.service.d"]


@pytest.mark.parametrize("credentials_directory", ["/run/credentials/ray-node.service", "/run/ray-node-credentials"])
def test_ray_reads_the_token_from_the_units_credentials_directory(
    rendered: Callable[[bool], Path], tmp_path: Path, credentials_directory: str
) -> None:
    worker = rendered(False)
    fakes = fake_commands(
        tmp_path / "fake-bin",
        {"ray": 'echo "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"\n', "hostname": "echo 10.100.0.5\n"},
    )
    finished = subprocess.run(
        ["bash", str(worker / "start-ray.sh")],
        env={
            **os.environ,
            "PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}",
            "CREDENTIALS_DIRECTORY": credentials_directory,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert finished.stdout.strip() == f"RAY_AUTH_TOKEN_PATH={credentials_directory}/cluster-token"


@pytest.fixture
def systemd_analyze() -> str:
    command = shutil.which("systemd-analyze")
    if command is None:
        pytest.skip("systemd-analyze is not installed")
    return command


@pytest.mark.parametrize("is_head", [True, False], ids=["head", "worker"])
def test_units_and_the_old_systemd_drop_in_parse_cleanly(
    rendered: Callable[[bool], Path], tmp_path: Path, systemd_analyze: str, is_head: bool
) -> None:
    files = rendered(is_head)
    unit_dir = tmp_path / "units"
    run_systemd_credentials(files, "systemd 245 (245.4-4ubuntu3.22)", unit_dir)
    for unit in sorted(files.glob("*.service")):
        # systemd-analyze wants the programs to exist: point the units at the rendered copies.
        (unit_dir / unit.name).write_text(unit.read_text().replace("/opt/ray/", f"{files}/"))
        for script in files.glob("*.sh"):
            script.chmod(0o755)
    verified = subprocess.run(
        [systemd_analyze, "verify", *sorted(str(unit) for unit in unit_dir.glob("*.service"))],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
        capture_output=True,
        text=True,
        check=False,
    )
    complaints = [line for line in verified.stderr.splitlines() if "ray" in line or "Unknown" in line]
    assert (verified.returncode, complaints) == (0, [])


def test_a_node_starts_with_its_types_labels_in_rays_key_value_form() -> None:
    arguments = cloud_init.ray_start_arguments(boot_spec(is_head=False, labels={"zone": "1", "team.io/accel": "none"}))

    assert "--labels=team.io/accel=none,zone=1" in arguments


def test_a_node_without_labels_gets_no_labels_argument() -> None:
    assert not any(
        argument.startswith("--labels") for argument in cloud_init.ray_start_arguments(boot_spec(is_head=False))
    )
