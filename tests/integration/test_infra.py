"""Offline checks of the infrastructure code (infra/, azure.yaml, host.json).

Every Bicep file parses; checkov (run from .venv-infra, see infra/checks.mk) finds zero failed checks on infra/;
the custom roles' action lists are minimal-looking (sorted, unique, no wildcards) and are what the Bicep loads;
the app settings the code reads are set; host.json carries the queue settings. Broken copies of a module prove the
same checks catch a syntax error, shared-key access and a storage firewall open to the internet.
Nothing here talks to Azure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from lark.exceptions import UnexpectedInput
from pycep import BicepParser

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
BICEP_FILES = sorted(INFRA_DIR.rglob("*.bicep"))
ROLE_ACTION_FILES = sorted((INFRA_DIR / "roles").glob("*.json"))
CLUSTER_ACTIONS_FILE = INFRA_DIR / "roles" / "autoscaler-actions.json"
CHECKOV_CONFIG = INFRA_DIR / "checkov" / "config.yaml"
DEFAULT_CHECKOV_BIN = REPO_ROOT / ".venv-infra" / "bin" / "checkov"
CHECKOV_TIMEOUT_S = 120

# Built-in roles the app's identity must never hold: the custom roles replace them.
CONTRIBUTOR_ROLE_ID = "b24988ac-6180-42a0-ab88-20f7382dd24c"
VIRTUAL_MACHINE_CONTRIBUTOR_ROLE_ID = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c"
OWNER_ROLE_ID = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"

# An ARM action: resource provider namespace, resource type segments, and a verb or `<name>/action`.
ARM_ACTION = re.compile(r"^Microsoft\.[A-Za-z]+(/[A-Za-z]+)+/(read|write|delete|action)$")


def parse_bicep(path: Path) -> dict[str, Any]:
    # pycep types its result as nested TypedDicts; the tests walk it as plain JSON.
    return cast("dict[str, Any]", BicepParser().parse(file_path=path))


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


# --- every Bicep file parses --------------------------------------------------------------------------------------


def test_infra_has_the_entry_point_and_its_modules() -> None:
    names = {relative(path) for path in BICEP_FILES}
    assert {"infra/main.bicep", "infra/app/function.bicep", "infra/app/cluster-access.bicep"} <= names


@pytest.mark.parametrize("bicep_file", BICEP_FILES, ids=relative)
def test_bicep_file_parses(bicep_file: Path) -> None:
    parsed = parse_bicep(bicep_file)
    assert parsed["resources"] or parsed.get("modules")


def test_main_template_deploys_at_subscription_scope() -> None:
    parsed = parse_bicep(INFRA_DIR / "main.bicep")
    assert parsed["globals"]["scope"]["value"] == "subscription"


def test_bicep_with_a_syntax_error_fails_to_parse(tmp_path: Path) -> None:
    broken = tmp_path / "storage.bicep"
    broken.write_text(
        replace_once(
            (INFRA_DIR / "app" / "storage.bicep").read_text(),
            "resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {",
            # The `=` forgotten: a typo the Bicep compiler rejects too.
            "resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' {",
        )
    )
    with pytest.raises(UnexpectedInput):
        parse_bicep(broken)


# --- azd wiring ---------------------------------------------------------------------------------------------------


def test_azure_yaml_deploys_the_repository_root_as_the_python_function_service_api() -> None:
    project = yaml.safe_load((REPO_ROOT / "azure.yaml").read_text())
    assert project["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    assert project["infra"]["path"] == "infra"


def test_parameters_file_feeds_azd_environment_into_existing_parameters_only() -> None:
    parameters = json.loads((INFRA_DIR / "main.parameters.json").read_text())["parameters"]
    declared = parse_bicep(INFRA_DIR / "main.bicep")["parameters"]
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert set(parameters) <= set(declared)


def test_cluster_token_key_is_a_secure_parameter_azd_generates_once() -> None:
    parameter = parse_bicep(INFRA_DIR / "main.bicep")["parameters"]["clusterTokenKey"]
    decorators = {decorator["type"]: decorator.get("argument") for decorator in parameter["decorators"]}
    assert "secure" in decorators
    assert decorators["metadata"]["azd"]["type"] == "generate"
    # A default (e.g. newGuid()) would rotate the key, and break running clusters' tokens, on every deployment.
    assert parameter["default"] is None


def test_reconcile_schedule_defaults_to_every_15_seconds() -> None:
    parameter = parse_bicep(INFRA_DIR / "main.bicep")["parameters"]["reconcileSchedule"]
    assert parameter["default"] == "*/15 * * * * *"


def test_outputs_name_the_function_app_its_url_and_the_clusters_resource_group() -> None:
    outputs = parse_bicep(INFRA_DIR / "main.bicep")["outputs"]
    assert {"FUNCTION_APP_NAME", "FUNCTION_APP_URL", "CLUSTERS_RESOURCE_GROUP"} <= set(outputs)


# --- the app's settings -------------------------------------------------------------------------------------------


def app_settings() -> dict[str, str]:
    resources = parse_bicep(INFRA_DIR / "app" / "function.bicep")["resources"]
    (settings,) = (
        resource["config"]["properties"]
        for resource in resources.values()
        if resource["type"] == "Microsoft.Web/sites/config" and resource["config"]["name"] == "appsettings"
    )
    return {name: str(value) for name, value in settings.items()}


def is_exactly(expected: str) -> Callable[[str], bool]:
    return lambda value: value == expected


def starts_with(prefix: str) -> Callable[[str], bool]:
    return lambda value: value.startswith(prefix)


def is_set(value: str) -> bool:
    return bool(value)


APP_SETTING_CASES: list[tuple[str, Callable[[str], bool]]] = [
    ("AzureWebJobsStorage__accountName", is_set),
    ("AzureWebJobsStorage__credential", is_exactly("managedidentity")),
    ("AzureWebJobsStorage__clientId", is_set),
    ("RECONCILE_SCHEDULE", is_set),
    ("CLUSTERS_SUBSCRIPTION_ID", is_set),
    ("CLUSTERS_RESOURCE_GROUP", is_set),
    ("FUNCTION_SUBNET_ID", is_set),
    ("CLUSTER_TOKEN_KEY", starts_with("@Microsoft.KeyVault(SecretUri=")),
    ("AZURE_CLIENT_ID", is_set),
    ("ALLOW_LOCAL_PROVIDER", is_exactly("false")),
    ("CONTROL_PLANE_URL", starts_with("https://")),
    ("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", starts_with("ClientId=")),
]


@pytest.mark.parametrize(("setting", "acceptable"), APP_SETTING_CASES, ids=[case[0] for case in APP_SETTING_CASES])
def test_function_app_sets_the_setting_the_code_reads(setting: str, acceptable: Callable[[str], bool]) -> None:
    settings = app_settings()
    assert setting in settings
    assert acceptable(settings[setting]), settings[setting]


def test_no_connection_string_or_account_key_in_app_settings() -> None:
    # Identity-based storage: the bare AzureWebJobsStorage (a connection string) must not be set.
    assert "AzureWebJobsStorage" not in app_settings()


# --- role action lists --------------------------------------------------------------------------------------------


def load_actions(path: Path) -> list[str]:
    actions = json.loads(path.read_text())
    assert isinstance(actions, list)
    assert all(isinstance(action, str) for action in actions)
    return actions


@pytest.mark.parametrize("actions_file", ROLE_ACTION_FILES, ids=relative)
def test_action_list_is_non_empty_sorted_and_unique(actions_file: Path) -> None:
    actions = load_actions(actions_file)
    assert actions
    assert actions == sorted(actions)
    assert len(actions) == len(set(actions))


@pytest.mark.parametrize("actions_file", ROLE_ACTION_FILES, ids=relative)
def test_action_list_names_single_actions_without_wildcards(actions_file: Path) -> None:
    actions = load_actions(actions_file)
    assert [action for action in actions if "*" in action] == []
    assert [action for action in actions if not ARM_ACTION.match(action)] == []


def test_cluster_actions_cover_what_the_provider_starts_with() -> None:
    actions = set(load_actions(CLUSTER_ACTIONS_FILE))
    assert {
        "Microsoft.Compute/virtualMachines/read",
        "Microsoft.Compute/virtualMachines/write",
        "Microsoft.Compute/virtualMachines/delete",
        "Microsoft.Network/networkInterfaces/join/action",
        "Microsoft.Network/virtualNetworks/subnets/join/action",
        "Microsoft.Network/networkSecurityGroups/join/action",
        "Microsoft.Network/publicIPAddresses/join/action",
        "Microsoft.Compute/disks/delete",
    } <= actions


def role_definition_action_sources(bicep_file: Path) -> list[Any]:
    resources = parse_bicep(bicep_file)["resources"].values()
    return [
        permission["actions"]
        for resource in resources
        if resource["type"] == "Microsoft.Authorization/roleDefinitions"
        for permission in resource["config"]["properties"]["permissions"]
    ]


def test_every_custom_role_loads_its_actions_from_a_roles_file() -> None:
    loaded_files: set[Path] = set()
    for bicep_file in BICEP_FILES:
        for source in role_definition_action_sources(bicep_file):
            # A literal list here would be a second copy that the provider comparison test cannot see.
            assert source["function"]["type"] == "load_json_content", relative(bicep_file)
            loaded_files.add((bicep_file.parent / source["function"]["parameters"]["file_path"]).resolve())
    assert loaded_files == {path.resolve() for path in ROLE_ACTION_FILES}


@pytest.mark.parametrize(
    "role_id",
    [CONTRIBUTOR_ROLE_ID, VIRTUAL_MACHINE_CONTRIBUTOR_ROLE_ID, OWNER_ROLE_ID],
    ids=["Contributor", "Virtual Machine Contributor", "Owner"],
)
def test_no_broad_built_in_role_is_assigned(role_id: str) -> None:
    assert [relative(path) for path in BICEP_FILES if role_id in path.read_text().lower()] == []


# --- host.json ----------------------------------------------------------------------------------------------------


def test_host_json_is_version_2_with_a_poison_threshold_for_queues() -> None:
    host = json.loads((REPO_ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    max_dequeue_count = host["extensions"]["queues"]["maxDequeueCount"]
    assert isinstance(max_dequeue_count, int)
    assert max_dequeue_count >= 1


# --- checkov ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckovFailure:
    check_id: str
    resource: str
    file_path: str


@dataclass(frozen=True)
class CheckovRun:
    exit_code: int
    failures: list[CheckovFailure]
    parsing_errors: list[str]
    output: str


def checkov_binary() -> Path:
    binary = Path(os.environ.get("CHECKOV_BIN", DEFAULT_CHECKOV_BIN))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if binary.exists():
        return binary
    if os.environ.get("CI"):
        pytest.fail(f"checkov is missing at {binary}: `make infra-tools` installs it, and CI must run it")
    pytest.skip(f"checkov is not installed at {binary}; run `make infra-tools` (under CI this is a failure)")


def run_checkov(directory: Path) -> CheckovRun:
    environment = {
        **os.environ,
        # Exit non-zero on files checkov cannot parse, and never contact the network (update check, mappings).
        "CKV_PARSE_ERROR_FAIL": "true",
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
        "BC_SKIP_MAPPING": "TRUE",
    }
    completed = subprocess.run(
        [
            str(checkov_binary()),
            "--config-file",
            str(CHECKOV_CONFIG),
            "--directory",
            str(directory),
            "--output",
            "json",
        ],
        cwd=REPO_ROOT,  # the config names its custom policy folder relative to the repository root
        env=environment,
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT_S,
        check=False,
    )
    reports = json.loads(completed.stdout)
    failures: list[CheckovFailure] = []
    parsing_errors: list[str] = []
    for report in reports if isinstance(reports, list) else [reports]:
        results = report.get("results", {})
        failures += [
            CheckovFailure(failure["check_id"], failure["resource"], failure["file_path"])
            for failure in results.get("failed_checks", [])
        ]
        parsing_errors += results.get("parsing_errors", [])
    return CheckovRun(completed.returncode, failures, parsing_errors, completed.stdout + completed.stderr)


@pytest.fixture(scope="module")
def checkov_on_infra() -> CheckovRun:
    return run_checkov(INFRA_DIR)


def test_checkov_finds_no_failed_check_in_infra(checkov_on_infra: CheckovRun) -> None:
    assert checkov_on_infra.failures == []
    assert checkov_on_infra.parsing_errors == []
    assert checkov_on_infra.exit_code == 0, checkov_on_infra.output


def test_every_checkov_skip_gives_a_reason() -> None:
    skip_comment = re.compile(r"checkov:skip=([A-Z0-9_]+)(.*)")
    unexplained = [
        f"{relative(path)}: {match.group(1)}"
        for path in BICEP_FILES
        for match in skip_comment.finditer(path.read_text())
        if len(match.group(2).lstrip(": ").strip()) < 20
    ]
    assert unexplained == []


def replace_once(text: str, old: str, new: str) -> str:
    # Fails loudly when a module changes shape, instead of silently testing an unbroken copy.
    assert text.count(old) == 1, f"expected exactly one {old!r}"
    return text.replace(old, new)


STORAGE_MODULE = INFRA_DIR / "app" / "storage.bicep"
STORAGE_ACCOUNT_TYPE = "Microsoft.Storage/storageAccounts@2023-05-01"

# Each case: a copy of the storage module with one weakness, and the check that must catch it.
BROKEN_STORAGE_CASES: list[tuple[str, str, str, str]] = [
    ("shared_key_on", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true", "CKV2_RAYAZ_1"),
    ("shared_key_default", "    allowSharedKeyAccess: false\n", "", "CKV2_RAYAZ_1"),
    ("firewall_open", "defaultAction: 'Deny'", "defaultAction: 'Allow'", "CKV_AZURE_35"),
    ("old_tls", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'", "CKV_AZURE_44"),
]
SYNTAX_ERROR_FILE = "storage_syntax_error.bicep"


@pytest.fixture(scope="module")
def checkov_on_broken_copies(tmp_path_factory: pytest.TempPathFactory) -> CheckovRun:
    """One checkov run over a folder of deliberately broken copies, plus an intact copy as the control."""
    folder = tmp_path_factory.mktemp("broken-infra")
    original = STORAGE_MODULE.read_text()
    shutil.copy(STORAGE_MODULE, folder / "storage_intact.bicep")
    for case_name, old, new, _ in BROKEN_STORAGE_CASES:
        (folder / f"storage_{case_name}.bicep").write_text(replace_once(original, old, new))
    (folder / SYNTAX_ERROR_FILE).write_text(
        original + "\nresource broken 'Microsoft.Storage/storageAccounts@2023-05-01'\n"
    )
    return run_checkov(folder)


def failed_check_ids(run: CheckovRun, file_name: str) -> set[str]:
    return {failure.check_id for failure in run.failures if failure.file_path.endswith(f"/{file_name}")}


@pytest.mark.parametrize(
    ("case_name", "old", "new", "check_id"), BROKEN_STORAGE_CASES, ids=[case[0] for case in BROKEN_STORAGE_CASES]
)
def test_checkov_fails_a_storage_account_with_a_weakness(
    checkov_on_broken_copies: CheckovRun, case_name: str, old: str, new: str, check_id: str
) -> None:
    assert check_id in failed_check_ids(checkov_on_broken_copies, f"storage_{case_name}.bicep")
    assert checkov_on_broken_copies.exit_code != 0


def test_checkov_passes_the_intact_copy_of_the_storage_module(checkov_on_broken_copies: CheckovRun) -> None:
    # The control: the failures above come from the edits, not from the copy being outside infra/.
    assert failed_check_ids(checkov_on_broken_copies, "storage_intact.bicep") == set()


def test_checkov_reports_a_bicep_file_it_cannot_parse(checkov_on_broken_copies: CheckovRun) -> None:
    assert [error for error in checkov_on_broken_copies.parsing_errors if error.endswith(SYNTAX_ERROR_FILE)]
