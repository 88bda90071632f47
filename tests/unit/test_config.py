"""The cluster config parser: Ray's Azure cluster YAML, its defaults, its legacy keys, and every way to get it wrong."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from autoscaler.config import (
    AGGRESSIVE_UPSCALING_SPEED,
    CLUSTER_NAME_RULE,
    HASH_VERSION,
    LEGACY_HEAD_NODE_TYPE,
    LEGACY_WORKER_NODE_TYPE,
    MAX_CONFIG_BYTES,
    AuthConfig,
    ClusterConfig,
    ConfigError,
    FieldError,
    NodeTypeConfig,
    ParsedConfig,
    format_path,
    hash_version,
    is_outdated_node_hash,
    is_valid_cluster_name,
    parse_cluster_config,
)
from provisioning.azure.plugin import AZURE_DEFAULTS, AzureProviderConfig, node_arm_parameters

EXAMPLE_FULL = Path(__file__).resolve().parents[1] / "data" / "example-full.yaml"
RAY_AUTOSCALER_DIR = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/ray/autoscaler"

DELETE = object()  # marks a key to remove in `changed`

IMAGE = {
    "imagePublisher": "microsoft-dsvm",
    "imageOffer": "ubuntu-2204",
    "imageSku": "2204-gen2",
    "imageVersion": "latest",
}
HEAD = "ray.head.default"
CPU = "ray.worker.cpu"
GPU = "ray.worker.gpu"

BASE: dict[str, Any] = {
    "cluster_name": "demo",
    "max_workers": 6,
    "provider": {"type": "azure", "location": "westus2", "resource_group": "rg-demo"},
    "auth": {"ssh_user": "ubuntu"},
    "available_node_types": {
        HEAD: {
            "resources": {"CPU": 2},
            "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D2s_v3", **IMAGE}},
        },
        CPU: {
            "min_workers": 0,
            "max_workers": 4,
            "resources": {"CPU": 4},
            "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE, "priority": "Spot"}},
        },
        GPU: {
            "max_workers": 2,
            "resources": {"CPU": 6, "GPU": 1},
            "node_config": {"azure_arm_parameters": {"vmSize": "Standard_NC6s_v3", **IMAGE}},
            "fallback": CPU,
        },
    },
    "head_node_type": HEAD,
}


def changed(base: dict[str, Any], *edits: tuple[tuple[str, ...], object]) -> dict[str, Any]:
    """A deep copy of `base` with each (path, value) set, or removed when value is DELETE."""
    result = copy.deepcopy(base)
    for path, value in edits:
        parent = result
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
        if value is DELETE:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    return result


def arm(node_type: str, field: str) -> tuple[str, ...]:
    return ("available_node_types", node_type, "node_config", "azure_arm_parameters", field)


def node(node_type: str, field: str) -> tuple[str, ...]:
    return ("available_node_types", node_type, field)


def arm_path(node_type: str, field: str) -> str:
    return format_path(arm(node_type, field))


def node_path(node_type: str, field: str) -> str:
    return format_path(node(node_type, field))


def openssh_public_key(key_type: str, comment: str = "me@laptop", *, rsa_bits: int = 2048) -> str:
    """A well-formed OpenSSH public key line (type, then base64 of a blob that starts with the type; for RSA, the
    blob then holds e and an n of `rsa_bits` bits)."""
    blob = _ssh_string(key_type.encode())
    if key_type == "ssh-rsa":
        modulus = (1 << (rsa_bits - 1)) | 1
        blob += _ssh_string((65537).to_bytes(3, "big")) + _ssh_string(b"\x00" + modulus.to_bytes(rsa_bits // 8, "big"))
    else:
        blob += _ssh_string(bytes(range(32)))
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}"


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def error_paths(body: object, content_type: str | None = None) -> set[str]:
    with pytest.raises(ConfigError) as raised:
        parse_cluster_config(body, content_type)  # type: ignore[arg-type]
    return {error.path for error in raised.value.errors}


def billion_laughs() -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]" for level in range(1, 9)]
    return "\n".join(lines) + "\n"


MINIMAL_YAML = (
    "cluster_name: demo\nprovider: {type: azure, location: westus2, resource_group: rg}\nauth: {ssh_user: ubuntu}\n"
)

# --------------------------------------------------------------------------------------------
# Invalid configs: every failing path is reported
# --------------------------------------------------------------------------------------------

INVALID_CASES: list[Any] = [
    # -- the document itself
    pytest.param(b"\xff\xfe\x00\xc3garbage", None, {""}, id="bytes-not-utf8"),
    pytest.param("- a\n- b\n", None, {""}, id="yaml-list-not-mapping"),
    pytest.param("just some text", None, {""}, id="yaml-scalar-not-mapping"),
    pytest.param("", None, {""}, id="empty-document"),
    pytest.param("a: [1, 2\n", None, {""}, id="yaml-syntax-error"),
    pytest.param("a: !!int abc\n", None, {""}, id="yaml-bad-explicit-tag"),
    pytest.param("a: !!python/object:os.system {}\n", None, {""}, id="yaml-unsafe-tag"),
    pytest.param("#" * (MAX_CONFIG_BYTES + 1), None, {""}, id="too-big"),
    pytest.param("a: " + "[" * 200 + "]" * 200 + "\n", None, {""}, id="too-deeply-nested"),
    pytest.param(billion_laughs(), None, {""}, id="alias-bomb"),
    pytest.param("a: &a [*a]\n", None, {""}, id="recursive-alias"),
    pytest.param("{not json", "application/json", {""}, id="json-syntax-error"),
    pytest.param('{"cluster_name": "demo", "max_workers": NaN}', "application/json", {""}, id="json-nan"),
    pytest.param("[" * 5000 + "]" * 5000, "application/json; charset=utf-8", {""}, id="json-too-deep"),
    pytest.param(MINIMAL_YAML + "metadata: !!binary aGVsbG8=\n", None, {"metadata"}, id="binary-value"),
    pytest.param(MINIMAL_YAML + "max_workers: .nan\n", None, {"max_workers"}, id="yaml-nan"),
    pytest.param(MINIMAL_YAML + "1: one\n", None, {"['1']"}, id="non-text-key"),
    # -- top-level fields
    pytest.param(changed(BASE, (("cluster_name",), "Demo")), None, {"cluster_name"}, id="cluster-name-uppercase"),
    pytest.param(changed(BASE, (("cluster_name",), "a" * 41)), None, {"cluster_name"}, id="cluster-name-too-long"),
    pytest.param(changed(BASE, (("cluster_name",), "demo-")), None, {"cluster_name"}, id="cluster-name-hyphen-end"),
    pytest.param(changed(BASE, (("cluster_name",), "1demo")), None, {"cluster_name"}, id="cluster-name-digit-start"),
    pytest.param(
        changed(BASE, (("cluster_name",), "my_cluster")), None, {"cluster_name"}, id="cluster-name-underscore"
    ),
    pytest.param(changed(BASE, (("cluster_name",), 123)), None, {"cluster_name"}, id="cluster-name-number"),
    pytest.param(changed(BASE, (("max_workers",), -1)), None, {"max_workers"}, id="max-workers-negative"),
    pytest.param(changed(BASE, (("max_workers",), "6")), None, {"max_workers"}, id="max-workers-text"),
    pytest.param(changed(BASE, (("max_workers",), True)), None, {"max_workers"}, id="max-workers-boolean"),
    pytest.param(changed(BASE, (("upscaling_speed",), -0.5)), None, {"upscaling_speed"}, id="upscaling-negative"),
    pytest.param(
        changed(BASE, (("idle_timeout_minutes",), -5)), None, {"idle_timeout_minutes"}, id="idle-timeout-negative"
    ),
    pytest.param(changed(BASE, (("max_worker",), 3)), None, {"max_worker"}, id="unknown-top-level-field"),
    pytest.param(changed(BASE, (("setup_commands",), "pip install x")), None, {"setup_commands"}, id="commands-text"),
    pytest.param(changed(BASE, (("setup_commands",), [1])), None, {"setup_commands[0]"}, id="command-not-text"),
    pytest.param(
        changed(BASE, (("head_node_type",), "ray.head.big")), None, {"head_node_type"}, id="head-type-unknown"
    ),
    pytest.param(
        changed(BASE, (("available_node_types",), {})),
        None,
        {"available_node_types", "head_node_type"},
        id="no-node-types",
    ),
    pytest.param(
        changed(BASE, (node(CPU, "min_workers"), 4), (node(GPU, "min_workers"), 2), (("max_workers",), 5)),
        None,
        {"max_workers"},
        id="sum-of-min-workers-above-max",
    ),
    # -- provider
    pytest.param(changed(BASE, (("provider",), DELETE)), None, {"provider"}, id="provider-missing"),
    pytest.param(changed(BASE, (("provider",), "azure")), None, {"provider"}, id="provider-not-mapping"),
    pytest.param(changed(BASE, (("provider", "type"), "aws")), None, {"provider.type"}, id="provider-type-aws"),
    pytest.param(
        changed(BASE, (("provider", "location"), DELETE), (("provider", "resource_group"), DELETE)),
        None,
        {"provider.location", "provider.resource_group"},
        id="azure-without-location-and-group",
    ),
    pytest.param(
        changed(BASE, (("provider", "resource_group"), "rg.")), None, {"provider.resource_group"}, id="group-ends-dot"
    ),
    pytest.param(
        changed(BASE, (("provider", "subscription_id"), "my-sub")),
        None,
        {"provider.subscription_id"},
        id="subscription-not-guid",
    ),
    pytest.param(
        changed(BASE, (("provider", "subnet_id"), "/subscriptions/x/subnets/y")),
        None,
        {"provider.subnet_id"},
        id="subnet-id-not-resource-id",
    ),
    pytest.param(
        changed(BASE, (("provider", "ssh_allowed_cidrs"), ["10.0.0.0/8", "not-a-cidr", "10.0.0.1/8", "1.2.3.4/33"])),
        None,
        {"provider.ssh_allowed_cidrs[1]", "provider.ssh_allowed_cidrs[2]", "provider.ssh_allowed_cidrs[3]"},
        id="bad-cidrs",
    ),
    pytest.param(
        changed(BASE, (("provider", "ssh_allowed_cidrs"), "10.0.0.0/8")),
        None,
        {"provider.ssh_allowed_cidrs"},
        id="cidrs-not-list",
    ),
    pytest.param(
        changed(BASE, (("provider", "availability_zone"), "east")),
        None,
        {"provider.availability_zone"},
        id="zone-not-number",
    ),
    pytest.param(
        changed(BASE, (("provider", "use_internal_ips"), "yes")),
        None,
        {"provider.use_internal_ips"},
        id="internal-ips-text",
    ),
    pytest.param(
        changed(BASE, (("provider", "resource_grup"), "rg")), None, {"provider.resource_grup"}, id="provider-typo"
    ),
    pytest.param(
        changed(BASE, (("provider", "launch_delay_s"), 2.0)),
        None,
        {"provider.launch_delay_s"},
        id="launch-delay-on-azure",
    ),
    pytest.param(
        changed(BASE, (("provider",), {"type": "local", "launch_delay_s": -1})),
        None,
        {"provider.launch_delay_s"},
        id="launch-delay-negative",
    ),
    # -- auth
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), "~/.ssh/id_ed25519.pub")),
        None,
        {"auth.ssh_public_key"},
        id="public-key-is-path",
    ),
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), "hello")), None, {"auth.ssh_public_key"}, id="public-key-garbage"
    ),
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), "ssh-ed25519 !!!notbase64")),
        None,
        {"auth.ssh_public_key"},
        id="public-key-bad-base64",
    ),
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), openssh_public_key("ssh-rsa").replace("ssh-rsa", "ssh-ed25519", 1))),
        None,
        {"auth.ssh_public_key"},
        id="public-key-type-mismatch",
    ),
    # Azure takes only RSA of 2048 bits or more and Ed25519 for Linux VMs.
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), openssh_public_key("ssh-rsa", rsa_bits=1024))),
        None,
        {"auth.ssh_public_key"},
        id="public-key-rsa-too-short",
    ),
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), openssh_public_key("ecdsa-sha2-nistp256"))),
        None,
        {"auth.ssh_public_key"},
        id="public-key-ecdsa-refused-by-azure",
    ),
    pytest.param(
        changed(BASE, (arm(CPU, "osDiskType"), "Premium_SSD")),
        None,
        {arm_path(CPU, "osDiskType")},
        id="os-disk-type-unknown",
    ),
    pytest.param(
        changed(BASE, (arm(CPU, "imageId"), "/images/ray")),
        None,
        {arm_path(CPU, "imageId")},
        id="image-id-not-a-resource-id",
    ),
    # Ray's node label rules: a node started with a label Ray refuses would not start.
    pytest.param(
        changed(BASE, (node(CPU, "labels"), {"ray.io/accelerator": "x"})),
        None,
        {node_path(CPU, "labels")},
        id="label-key-reserved-by-ray",
    ),
    pytest.param(
        changed(BASE, (node(CPU, "labels"), {"zone": "a,b"})),
        None,
        {node_path(CPU, "labels")},
        id="label-value-with-a-comma",
    ),
    pytest.param(
        changed(BASE, (node(CPU, "labels"), {"-bad": "x"})), None, {node_path(CPU, "labels")}, id="label-key-invalid"
    ),
    pytest.param(changed(BASE, (("auth", "ssh_user"), "root")), None, {"auth.ssh_user"}, id="ssh-user-reserved"),
    pytest.param(changed(BASE, (("auth", "ssh_user"), "Ubuntu User")), None, {"auth.ssh_user"}, id="ssh-user-invalid"),
    pytest.param(changed(BASE, (("auth", "password"), "x")), None, {"auth.password"}, id="auth-unknown-field"),
    # -- node types
    pytest.param(
        changed(BASE, (node(CPU, "min_workers"), 5)), None, {node_path(CPU, "min_workers")}, id="min-above-max"
    ),
    pytest.param(
        changed(BASE, (node(CPU, "min_workers"), -1)), None, {node_path(CPU, "min_workers")}, id="min-negative"
    ),
    pytest.param(
        changed(BASE, (node(CPU, "max_workers"), -1)),
        None,
        {node_path(CPU, "max_workers")},
        id="max-negative",
    ),
    pytest.param(
        changed(BASE, (node(CPU, "resources"), {"CPU": -4})),
        None,
        {node_path(CPU, "resources")},
        id="resource-negative",
    ),
    pytest.param(
        changed(BASE, (node(CPU, "resources"), {"CPU": "four"})),
        None,
        {node_path(CPU, "resources") + ".CPU"},
        id="resource-text",
    ),
    pytest.param(
        changed(BASE, (node(CPU, "resources"), DELETE)), None, {node_path(CPU, "resources")}, id="resources-missing"
    ),
    pytest.param(
        changed(BASE, (node(CPU, "node_config"), DELETE)),
        None,
        {node_path(CPU, "node_config")},
        id="node-config-missing",
    ),
    pytest.param(
        changed(BASE, (node(CPU, "node_config"), {})),
        None,
        {node_path(CPU, "node_config") + ".azure_arm_parameters"},
        id="arm-parameters-missing-on-azure",
    ),
    pytest.param(changed(BASE, (arm(CPU, "vmSize"), DELETE)), None, {arm_path(CPU, "vmSize")}, id="vm-size-missing"),
    pytest.param(
        changed(BASE, (arm(CPU, "vmSize"), "Standard D4s")), None, {arm_path(CPU, "vmSize")}, id="vm-size-invalid"
    ),
    pytest.param(changed(BASE, (arm(CPU, "priority"), "Cheap")), None, {arm_path(CPU, "priority")}, id="bad-priority"),
    pytest.param(
        changed(BASE, (arm(CPU, "evictionPolicy"), "Stop")),
        None,
        {arm_path(CPU, "evictionPolicy")},
        id="bad-eviction-policy",
    ),
    pytest.param(
        changed(BASE, (arm(GPU, "evictionPolicy"), "Delete")),
        None,
        {arm_path(GPU, "evictionPolicy")},
        id="eviction-policy-on-regular",
    ),
    pytest.param(
        changed(BASE, (arm(CPU, "billingProfile"), {"maxPrice": 0})),
        None,
        {arm_path(CPU, "billingProfile") + ".maxPrice"},
        id="max-price-zero",
    ),
    pytest.param(
        changed(BASE, (arm(CPU, "billingProfile"), {"maxPrice": -2})),
        None,
        {arm_path(CPU, "billingProfile") + ".maxPrice"},
        id="max-price-below-minus-one",
    ),
    pytest.param(
        changed(BASE, (arm(GPU, "billingProfile"), {"maxPrice": -1})),
        None,
        {arm_path(GPU, "billingProfile")},
        id="billing-profile-on-regular",
    ),
    pytest.param(
        changed(BASE, (arm(CPU, "imagePublisher"), DELETE), (arm(CPU, "imageSku"), DELETE)),
        None,
        {arm_path(CPU, "imagePublisher"), arm_path(CPU, "imageSku")},
        id="image-incomplete-without-image-id",
    ),
    pytest.param(
        changed(BASE, (arm(CPU, "osDiskSizeGB"), 0)), None, {arm_path(CPU, "osDiskSizeGB")}, id="os-disk-size-zero"
    ),
    pytest.param(
        changed(BASE, (node(GPU, "fallback"), "ray.worker.tpu")),
        None,
        {node_path(GPU, "fallback")},
        id="fallback-unknown",
    ),
    pytest.param(changed(BASE, (node(GPU, "fallback"), GPU)), None, {node_path(GPU, "fallback")}, id="fallback-self"),
    pytest.param(
        changed(BASE, (node(CPU, "fallback"), GPU)),
        None,
        {node_path(CPU, "fallback"), node_path(GPU, "fallback")},
        id="fallback-loop",
    ),
    pytest.param(
        changed(BASE, (node(GPU, "fallback"), HEAD)), None, {node_path(GPU, "fallback")}, id="fallback-to-head-type"
    ),
    pytest.param(
        changed(BASE, (node(GPU, "idle_timeout_s"), 0)),
        None,
        {node_path(GPU, "idle_timeout_s")},
        id="idle-timeout-s-zero",
    ),
    pytest.param(
        changed(BASE, (node(GPU, "launch_timeout_s"), -1)),
        None,
        {node_path(GPU, "launch_timeout_s")},
        id="launch-timeout-negative",
    ),
    pytest.param(changed(BASE, (node(GPU, "cost"), -0.1)), None, {node_path(GPU, "cost")}, id="cost-negative"),
    pytest.param(
        changed(BASE, (node(GPU, "min_worker"), 1)), None, {node_path(GPU, "min_worker")}, id="node-type-unknown-field"
    ),
    pytest.param(
        changed(BASE, (node(GPU, "labels"), {"zone": 1})),
        None,
        {node_path(GPU, "labels") + ".zone"},
        id="label-not-text",
    ),
    pytest.param(
        changed(BASE, (("available_node_types", "gpu workers"), BASE["available_node_types"][GPU])),
        None,
        {"available_node_types['gpu workers']"},
        id="node-type-name-with-space",
    ),
    pytest.param(
        changed(BASE, (("available_node_types", GPU), "big")),
        None,
        {format_path(("available_node_types", GPU))},
        id="node-type-not-mapping",
    ),
    # -- legacy keys
    pytest.param(
        {"provider": BASE["provider"], "head_node": "Standard_D2s_v3"},
        None,
        {"head_node"},
        id="legacy-head-not-mapping",
    ),
    pytest.param(
        changed(BASE, (("target_utilization_fraction",), 2)),
        None,
        {"target_utilization_fraction"},
        id="legacy-utilization-above-one",
    ),
    pytest.param(
        {"provider": BASE["provider"], "worker_nodes": {"azure_arm_parameters": {**IMAGE}}},
        None,
        {"worker_nodes.azure_arm_parameters.vmSize"},
        id="legacy-worker-error-at-written-path",
    ),
    pytest.param(
        {
            "provider": BASE["provider"],
            "max_workers": 2,
            "min_workers": 5,
            "worker_nodes": {"azure_arm_parameters": {}},
        },
        None,
        {
            "min_workers",
            "max_workers",
            "worker_nodes.azure_arm_parameters.vmSize",
            "worker_nodes.azure_arm_parameters.imagePublisher",
            "worker_nodes.azure_arm_parameters.imageOffer",
            "worker_nodes.azure_arm_parameters.imageSku",
        },
        id="legacy-min-workers-above-max",
    ),
    # -- many mistakes at once: all of them reported
    pytest.param(
        changed(
            BASE,
            (("cluster_name",), "Bad Name"),
            (("provider", "location"), DELETE),
            (("auth", "ssh_public_key"), "/home/me/.ssh/id_rsa.pub"),
            (node(CPU, "min_workers"), 9),
            (arm(GPU, "priority"), "Sometimes"),
            (node(GPU, "fallback"), "nope"),
            (("head_node_type",), "missing"),
        ),
        None,
        {
            "cluster_name",
            "provider.location",
            "auth.ssh_public_key",
            node_path(CPU, "min_workers"),
            "max_workers",
            arm_path(GPU, "priority"),
            node_path(GPU, "fallback"),
            "head_node_type",
        },
        id="every-error-reported-together",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "expected_paths"), INVALID_CASES)
def test_invalid_config_reports_exactly_the_failing_paths(
    body: object, content_type: str | None, expected_paths: set[str]
):
    assert error_paths(body, content_type) == expected_paths


def test_there_are_at_least_forty_invalid_cases():
    assert len(INVALID_CASES) >= 40


def test_config_error_text_lists_every_path_and_message():
    bad = changed(BASE, (("cluster_name",), "Bad"), (("max_workers",), -1))
    with pytest.raises(ConfigError) as raised:
        parse_cluster_config(bad)
    text = str(raised.value)
    assert f"cluster_name: {CLUSTER_NAME_RULE}" in text
    assert "max_workers: " in text
    assert len(raised.value.errors) == 2


@pytest.mark.parametrize(
    ("edit", "path", "words"),
    [
        pytest.param((("auth", "ssh_public_key"), "~/.ssh/id.pub"), "auth.ssh_public_key", "paste", id="path-key"),
        pytest.param((("auth", "ssh_public_key"), "C:\\keys\\id.pub"), "auth.ssh_public_key", "paste", id="windows"),
        pytest.param((("cluster_name",), "X"), "cluster_name", "lowercase letters", id="name-rule"),
        pytest.param(
            (("provider", "ssh_allowed_cidrs"), ["10.1.2.3/8"]),
            "provider.ssh_allowed_cidrs[0]",
            "10.0.0.0/8",
            id="cidr-hint",
        ),
        pytest.param((("provider", "type"), "gcp"), "provider.type", "'azure' or 'local'", id="provider-types"),
        pytest.param((node(GPU, "fallback"), GPU), node_path(GPU, "fallback"), "another node type", id="fallback-self"),
    ],
)
def test_error_message_tells_how_to_fix(edit: tuple[tuple[str, ...], object], path: str, words: str):
    with pytest.raises(ConfigError) as raised:
        parse_cluster_config(changed(BASE, edit))
    messages = {error.path: error.message for error in raised.value.errors}
    assert words in messages[path]


def test_cluster_name_rule_is_shared_with_url_checks():
    assert is_valid_cluster_name("ray-demo-1")
    assert not is_valid_cluster_name("ray-demo-")
    assert not is_valid_cluster_name("")


def test_keys_with_dots_are_shown_in_brackets_and_plain_keys_dotted():
    assert format_path(("available_node_types", "ray.worker.default", "max_workers")) == (
        "available_node_types['ray.worker.default'].max_workers"
    )
    assert format_path(("available_node_types", "gpu_workers", "resources", "GPU")) == (
        "available_node_types.gpu_workers.resources.GPU"
    )
    assert format_path(("setup_commands", 2)) == "setup_commands[2]"


# --------------------------------------------------------------------------------------------
# Valid configs
# --------------------------------------------------------------------------------------------

VALID_CASES: list[Any] = [
    pytest.param(BASE, None, id="three-node-types"),
    pytest.param(MINIMAL_YAML, None, id="minimal-yaml"),
    pytest.param(json.dumps(BASE), "application/json", id="json-body"),
    pytest.param(json.dumps(BASE).encode(), None, id="json-as-yaml-bytes"),
    pytest.param(b"\xef\xbb\xbf" + MINIMAL_YAML.encode(), None, id="utf8-bom"),
    pytest.param({"cluster_name": "local-demo", "provider": {"type": "local"}}, None, id="minimal-local"),
    pytest.param(
        changed(BASE, (("provider", "launch_delay_s"), DELETE), (("provider", "type"), "local")),
        None,
        id="local-with-azure-node-configs",
    ),
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), openssh_public_key("ssh-ed25519"))), None, id="ed25519-key"
    ),
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), openssh_public_key("ssh-rsa", ""))), None, id="rsa-key-no-comment"
    ),
    pytest.param(
        changed(BASE, (("auth", "ssh_public_key"), openssh_public_key("ssh-ed25519") + "\n")),
        None,
        id="key-trailing-newline",
    ),
    pytest.param(
        changed(
            BASE,
            (arm(GPU, "imagePublisher"), DELETE),
            (arm(GPU, "imageOffer"), DELETE),
            (arm(GPU, "imageSku"), DELETE),
            (arm(GPU, "imageVersion"), DELETE),
            (
                arm(GPU, "imageId"),
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/img/providers/Microsoft.Compute/images/ray",
            ),
        ),
        None,
        id="image-id",
    ),
    pytest.param(
        changed(
            BASE,
            (arm(CPU, "evictionPolicy"), "Delete"),
            (arm(CPU, "billingProfile"), {"maxPrice": -1}),
            (arm(GPU, "priority"), "Low"),
            (arm(GPU, "billingProfile"), {"maxPrice": 0.35}),
        ),
        None,
        id="spot-and-low-with-prices",
    ),
    pytest.param(
        changed(
            BASE,
            (arm(CPU, "osDiskSizeGB"), 128),
            (arm(CPU, "osDiskType"), "Premium_LRS"),
            (arm(CPU, "enableAcceleratedNetworking"), True),
            (arm(CPU, "availability_zone"), "none"),
        ),
        None,
        id="extra-arm-parameters",
    ),
    pytest.param(
        changed(
            BASE,
            (("provider", "subscription_id"), "00000000-0000-0000-0000-000000000000"),
            (
                ("provider", "subnet_id"),
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net-rg/providers/"
                "Microsoft.Network/virtualNetworks/vnet1/subnets/ray",
            ),
            (("provider", "ssh_allowed_cidrs"), ["203.0.113.0/24", "198.51.100.7", "2001:db8::/32"]),
            (("provider", "availability_zone"), "1,2,3"),
            (("provider", "use_internal_ips"), True),
        ),
        None,
        id="network-options",
    ),
    pytest.param(
        changed(
            BASE,
            (node(GPU, "idle_timeout_s"), 120),
            (node(GPU, "launch_timeout_s"), 900.5),
            (node(GPU, "cost"), 3.06),
            (node(CPU, "cost"), 0),
            (node(GPU, "labels"), {"accelerator": "v100"}),
            (node(GPU, "worker_setup_commands"), ["nvidia-smi"]),
        ),
        None,
        id="planner-extensions",
    ),
    pytest.param(changed(BASE, (node(HEAD, "max_workers"), 1)), None, id="head-type-also-worker"),
    pytest.param(
        "cluster_name: demo\nprovider: {type: azure, location: westus2, resource_group: rg}\n"
        "available_node_types:\n"
        "  head:\n"
        "    resources: {CPU: 2}\n"
        "    node_config:\n"
        "      azure_arm_parameters: &vm\n"
        "        {vmSize: Standard_D2s_v3, imagePublisher: p, imageOffer: o, imageSku: s, imageVersion: 2024-01-01}\n"
        "  worker: {resources: {CPU: 2}, node_config: {azure_arm_parameters: {<<: *vm, priority: Spot}}}\n"
        "head_node_type: head\n"
        "metadata: {}\n",
        None,
        id="yaml-anchors-and-merge-keys",
    ),
]


@pytest.mark.parametrize(("body", "content_type"), VALID_CASES)
def test_valid_config_parses(body: object, content_type: str | None):
    parsed = parse_cluster_config(body, content_type)  # type: ignore[arg-type]
    assert isinstance(parsed, ParsedConfig)
    assert parsed.config.head_node_type in parsed.config.available_node_types


@pytest.mark.parametrize(("body", "content_type"), VALID_CASES)
def test_to_json_then_from_json_gives_the_same_config(body: object, content_type: str | None):
    config = parse_cluster_config(body, content_type).config  # type: ignore[arg-type]
    assert ClusterConfig.from_json(config.to_json()) == config
    assert ClusterConfig.from_json(config.to_json()).to_json() == config.to_json()


def test_example_full_parses_unchanged_with_launcher_fields_ignored():
    parsed = parse_cluster_config(EXAMPLE_FULL.read_bytes())
    config = parsed.config

    assert parsed.ignored_fields == (
        "docker",
        "file_mounts",
        "cluster_synced_files",
        "file_mounts_sync_continuously",
        "rsync_exclude",
        "rsync_filter",
        "head_node",
        "worker_nodes",
    )
    assert config.cluster_name == "default"
    assert (config.max_workers, config.upscaling_speed, config.idle_timeout_minutes) == (2, 1.0, 5.0)
    assert config.head_node_type == "ray.head.default"
    assert isinstance(config.provider, AzureProviderConfig)
    assert (config.provider.location, config.provider.resource_group) == ("westus2", "ray-cluster")
    head = config.available_node_types["ray.head.default"]
    worker = config.available_node_types["ray.worker.default"]
    assert (head.min_workers, head.max_workers) == (0, 0)  # Ray fills the head type's max with 0
    assert (worker.min_workers, worker.max_workers) == (0, 2)
    worker_vm = node_arm_parameters(worker)
    assert worker_vm is not None
    assert worker_vm.is_spot
    assert worker_vm.vmSize == "Standard_D2s_v3"
    assert config.initialization_commands == ["touch ~/.sudo_as_admin_successful"]
    assert config.setup_commands == []
    assert config.worker_start_ray_commands[1] == "ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076"
    assert set(config.worker_node_types()) == {"ray.worker.default"}


@pytest.mark.parametrize(
    ("edit", "ignored"),
    [
        pytest.param((("auth", "ssh_private_key"), "~/.ssh/id"), "auth.ssh_private_key", id="private-key"),
        pytest.param((("provider", "cache_stopped_nodes"), False), "provider.cache_stopped_nodes", id="cache-stopped"),
        pytest.param((("provider", "msi_name"), "ray-msi"), "provider.msi_name", id="msi-name"),
        pytest.param((("provider", "msi_resource_group"), "rg"), "provider.msi_resource_group", id="msi-group"),
        pytest.param((node(GPU, "docker"), {"worker_image": "x"}), f"{node_path(GPU, 'docker')}", id="node-docker"),
        pytest.param((("initial_workers",), 1), "initial_workers", id="initial-workers"),
        pytest.param((("min_workers",), 1), "min_workers", id="min-workers-with-node-types"),
        pytest.param((("head_node",), {"azure_arm_parameters": {}}), "head_node", id="legacy-head-with-node-types"),
        pytest.param((("upscaling_speed",), 2.0), None, id="upscaling-speed-used"),
    ],
)
def test_launcher_only_fields_are_listed_as_ignored(edit: tuple[tuple[str, ...], object], ignored: str | None):
    parsed = parse_cluster_config(changed(BASE, edit))
    assert parsed.ignored_fields == ((ignored,) if ignored else ())


def test_legacy_scaling_keys_are_ignored_when_upscaling_speed_is_set():
    body = changed(BASE, (("upscaling_speed",), 2.0), (("autoscaling_mode",), "aggressive"))
    body["target_utilization_fraction"] = 0.5
    parsed = parse_cluster_config(body)
    assert parsed.config.upscaling_speed == 2.0
    assert parsed.ignored_fields == ("autoscaling_mode", "target_utilization_fraction")


def test_input_mapping_is_not_modified():
    body = changed(BASE, (("head_node",), {}), (("file_mounts",), {}))
    before = copy.deepcopy(body)
    parse_cluster_config(body)
    assert body == before


# --------------------------------------------------------------------------------------------
# Ray's defaults and legacy translation, compared with Ray's own functions
# --------------------------------------------------------------------------------------------


def ray_filled(config: dict[str, Any]) -> dict[str, Any]:
    """What Ray's prepare_config produces for the node types (fillout_defaults + fill_node_type_min_max_workers)."""
    from ray.autoscaler._private.util import fill_node_type_min_max_workers, fillout_defaults

    filled = fillout_defaults(copy.deepcopy(config))
    fill_node_type_min_max_workers(filled)
    return filled


def our_node_types(config: ClusterConfig) -> dict[str, dict[str, Any]]:
    """Our node types with our own extensions left out, in Ray's shape."""
    return {
        name: node_type.model_dump(exclude_none=True, exclude={"labels"})
        for name, node_type in config.available_node_types.items()
    }


def test_embedded_azure_defaults_match_installed_ray():
    ray_defaults = yaml.safe_load((RAY_AUTOSCALER_DIR / "azure/defaults.yaml").read_text())
    assert ray_defaults == AZURE_DEFAULTS


def test_minimal_config_gets_rays_default_node_types_and_commands():
    minimal = yaml.safe_load(MINIMAL_YAML)
    config = parse_cluster_config(MINIMAL_YAML).config
    expected = ray_filled(minimal)

    assert our_node_types(config) == expected["available_node_types"]
    assert config.head_node_type == expected["head_node_type"] == "ray.head.default"
    assert (config.max_workers, config.upscaling_speed, config.idle_timeout_minutes) == (
        expected["max_workers"],
        expected["upscaling_speed"],
        expected["idle_timeout_minutes"],
    )
    for name in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands"):  # fmt: skip
        assert getattr(config, name) == expected[name], name


LEGACY_CASES = [
    pytest.param(
        {
            "max_workers": 3,
            "min_workers": 1,
            "head_node": {"azure_arm_parameters": {"vmSize": "Standard_D8s_v3", **IMAGE}, "resources": {"CPU": 8}},
            "worker_nodes": {"azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE, "priority": "Spot"}},
        },
        id="head-and-workers",
    ),
    pytest.param({"head_node": {}, "worker_nodes": {}}, id="both-empty"),
    pytest.param(
        {"head_node": {}, "worker_nodes": {"azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE}}},
        id="workers-only",
    ),
]


@pytest.mark.parametrize("legacy", LEGACY_CASES)
def test_legacy_head_and_worker_nodes_translate_as_ray_does(legacy: dict[str, Any]):
    body = {"cluster_name": "legacy", "provider": BASE["provider"], **legacy}
    config = parse_cluster_config(body).config
    expected = ray_filled(body)

    assert our_node_types(config) == expected["available_node_types"]
    assert config.head_node_type == expected["head_node_type"] == LEGACY_HEAD_NODE_TYPE
    assert LEGACY_WORKER_NODE_TYPE in config.worker_node_types()


def test_legacy_worker_nodes_alone_is_accepted_though_ray_would_fail():
    body = {
        "provider": BASE["provider"],
        "worker_nodes": {"azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE}},
    }
    config = parse_cluster_config(body).config
    assert config.available_node_types[LEGACY_WORKER_NODE_TYPE].node_config["azure_arm_parameters"]["vmSize"] == (
        "Standard_D4s_v3"
    )
    assert config.available_node_types[LEGACY_HEAD_NODE_TYPE].resources == {"CPU": 2}


@pytest.mark.parametrize(
    ("legacy", "speed"),
    [
        pytest.param({"autoscaling_mode": "aggressive"}, AGGRESSIVE_UPSCALING_SPEED, id="aggressive"),
        pytest.param({"autoscaling_mode": "default"}, 1.0, id="default-mode"),
        pytest.param({"target_utilization_fraction": 0.5}, 1.0, id="half-utilization"),
        pytest.param({"target_utilization_fraction": 0.8}, 0.25, id="eighty-percent"),
        pytest.param({"autoscaling_mode": "aggressive", "target_utilization_fraction": 0.8}, 99999.0, id="both"),
        pytest.param({"upscaling_speed": 0}, 1.0, id="zero-speed-is-rays-default"),
        pytest.param({}, 1.0, id="nothing"),
    ],
)
def test_legacy_scaling_keys_become_upscaling_speed_as_in_rays_autoscaler(legacy: dict[str, Any], speed: float):
    config = parse_cluster_config({**BASE, **legacy}).config
    assert config.upscaling_speed == pytest.approx(speed)


# --------------------------------------------------------------------------------------------
# The config's own questions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "zones"),
    [
        pytest.param(None, [], id="absent"),
        pytest.param("", [], id="empty"),
        pytest.param("auto", [], id="auto"),
        pytest.param("none", [], id="none"),
        pytest.param("1,2,3", ["1", "2", "3"], id="three"),
        pytest.param(" 2 , 3", ["2", "3"], id="spaces"),
        pytest.param(1, ["1"], id="yaml-number"),
    ],
)
def test_zones_come_from_availability_zone(zone: object, zones: list[str]):
    body = changed(BASE, (("provider", "availability_zone"), DELETE if zone is None else zone))
    assert parse_cluster_config(body).config.provider.zones() == zones


def test_idle_timeout_is_the_types_own_or_the_clusters():
    body = changed(BASE, (node(GPU, "idle_timeout_s"), 90), (("idle_timeout_minutes",), 2))
    config = parse_cluster_config(body).config
    assert config.idle_timeout_s_for(GPU) == 90
    assert config.idle_timeout_s_for(CPU) == 120


@pytest.mark.parametrize(
    ("head_max_workers", "workers"),
    [pytest.param(DELETE, {CPU, GPU}, id="head-max-filled-zero"), pytest.param(2, {HEAD, CPU, GPU}, id="head-max-two")],
)
def test_worker_node_types_include_the_head_type_only_when_it_may_be_a_worker(
    head_max_workers: object, workers: set[str]
):
    config = parse_cluster_config(changed(BASE, (node(HEAD, "max_workers"), head_max_workers))).config
    assert set(config.worker_node_types()) == workers


def test_commands_for_combine_the_lists_as_ray_does():
    body = changed(
        BASE,
        (("initialization_commands",), ["init"]),
        (("setup_commands",), ["common"]),
        (("head_setup_commands",), ["head"]),
        (("worker_setup_commands",), ["worker"]),
        (("head_start_ray_commands",), ["start head"]),
        (("worker_start_ray_commands",), ["start worker"]),
        (node(GPU, "worker_setup_commands"), ["gpu only"]),
        (node(GPU, "initialization_commands"), ["gpu init"]),
    )
    config = parse_cluster_config(body).config
    head = config.commands_for(HEAD, is_head=True)
    cpu = config.commands_for(CPU, is_head=False)
    gpu = config.commands_for(GPU, is_head=False)
    assert (head.initialization, head.setup, head.start_ray) == (["init"], ["common", "head"], ["start head"])
    assert (cpu.initialization, cpu.setup, cpu.start_ray) == (["init"], ["common", "worker"], ["start worker"])
    assert (gpu.initialization, gpu.setup) == (["gpu init"], ["gpu only"])


def test_node_type_gives_its_azure_arm_parameters():
    config = parse_cluster_config(changed(BASE, (arm(CPU, "billingProfile"), {"maxPrice": -1}))).config
    parameters = node_arm_parameters(config.available_node_types[CPU])
    assert parameters is not None
    assert parameters.is_spot
    assert parameters.billingProfile is not None
    assert parameters.billingProfile.maxPrice == -1
    local = parse_cluster_config({"provider": {"type": "local"}}).config
    assert node_arm_parameters(local.available_node_types["ray.worker.default"]) is None


# --------------------------------------------------------------------------------------------
# Hash and JSON
# --------------------------------------------------------------------------------------------


def test_config_hash_is_stable_across_formats_and_key_order():
    from_mapping = parse_cluster_config(BASE).config
    from_json = parse_cluster_config(json.dumps(BASE), "application/json").config
    from_yaml = parse_cluster_config(yaml.safe_dump(BASE, sort_keys=True)).config
    reordered = dict(reversed(list(BASE.items())))
    assert (
        from_mapping.config_hash()
        == from_json.config_hash()
        == from_yaml.config_hash()
        == parse_cluster_config(reordered).config.config_hash()
    )
    assert from_mapping.config_hash().startswith(f"{HASH_VERSION}:")
    assert len(from_mapping.config_hash()) == len("v2:") + 64


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param((("cluster_name",), "demo2"), id="name"),
        pytest.param((("max_workers",), 7), id="max-workers"),
        pytest.param((("idle_timeout_minutes",), 6), id="idle-timeout"),
        pytest.param((("provider", "location"), "eastus"), id="location"),
        pytest.param((node(CPU, "max_workers"), 3), id="type-max"),
        pytest.param((arm(CPU, "vmSize"), "Standard_D8s_v3"), id="vm-size"),
        pytest.param((node(GPU, "cost"), 2.0), id="cost"),
        pytest.param((("setup_commands",), ["echo hi"]), id="commands"),
    ],
)
def test_config_hash_changes_when_a_field_changes(edit: tuple[tuple[str, ...], object]):
    assert (
        parse_cluster_config(changed(BASE, edit)).config.config_hash()
        != parse_cluster_config(BASE).config.config_hash()
    )


def test_config_hash_ignores_launcher_only_fields():
    with_launcher_fields = changed(BASE, (("file_mounts",), {"/a": "/b"}), (("auth", "ssh_private_key"), "k"))
    assert (
        parse_cluster_config(with_launcher_fields).config.config_hash()
        == parse_cluster_config(BASE).config.config_hash()
    )


def test_is_same_config_tells_the_same_config_from_another_also_for_hashes_of_earlier_releases():
    config = parse_cluster_config(BASE).config
    other = parse_cluster_config(changed(BASE, (("max_workers",), 7))).config
    assert config.is_same_config(config.config_hash())
    assert not config.is_same_config(other.config_hash())
    # A cluster row of a release before v2 holds a bare sha256 of the whole config's JSON.
    legacy = hashlib.sha256(config.to_json().encode()).hexdigest()
    assert config.is_same_config(legacy)
    assert not other.is_same_config(legacy)


# --------------------------------------------------------------------------------------------
# Node hashes: what a node is made of, per node type and role (docs/decisions/config-hash.md)
# --------------------------------------------------------------------------------------------

# The v2 digests of BASE, pinned: if one changes, the hashed document changed, and every node stored with the old
# digest would count as outdated after the deploy. Change the document only with a new HASH_VERSION (or add a field
# to it only when it differs from its default).
BASE_CONFIG_HASH = "v2:101f3f34aa131cf5a4ea9c5105b7c7ed67f5f16d72e7ff547615ecc880179b71"
BASE_NODE_HASHES = {
    (HEAD, True): "v2:8929d3bc7061559d07028a87f1ce91a9e8c2c5292fb7d75d15a42059f20aa479",
    (CPU, False): "v2:ffb295049ee494fa67a8b63394ae1c3db4a7822d97adcda115d0052846657113",
    (GPU, False): "v2:d864ad39b34bafca456bc0eaf6ebe5a334b81b7efceeeade26e36a961127b422",
}


def node_hashes(body: dict[str, Any]) -> dict[tuple[str, bool], str]:
    config = parse_cluster_config(body).config
    return {(name, is_head): config.node_hash(name, is_head=is_head) for name, is_head in BASE_NODE_HASHES}


def test_hashes_of_base_are_the_pinned_v2_digests():
    config = parse_cluster_config(BASE).config
    assert config.config_hash() == BASE_CONFIG_HASH
    assert node_hashes(BASE) == BASE_NODE_HASHES
    assert config.worker_node_hashes() == {CPU: BASE_NODE_HASHES[CPU, False], GPU: BASE_NODE_HASHES[GPU, False]}


def test_node_hash_is_stable_across_formats_storage_and_whole_floats():
    from_yaml = parse_cluster_config(yaml.safe_dump(BASE)).config
    stored = ClusterConfig.from_json(from_yaml.to_json())
    as_floats = parse_cluster_config(changed(BASE, (node(CPU, "resources"), {"CPU": 4.0}))).config
    for (name, is_head), pinned in BASE_NODE_HASHES.items():
        assert (
            from_yaml.node_hash(name, is_head=is_head)
            == stored.node_hash(name, is_head=is_head)
            == as_floats.node_hash(name, is_head=is_head)
            == pinned
        )


def test_a_type_launched_as_head_and_as_worker_has_two_hashes():
    config = parse_cluster_config(changed(BASE, (node(HEAD, "max_workers"), 1))).config
    assert config.node_hash(HEAD, is_head=True) != config.node_hash(HEAD, is_head=False)


WITH_OWN_SETUP = changed(BASE, (node(GPU, "worker_setup_commands"), ["pip install torch"]))


@pytest.mark.parametrize(
    ("edit", "changed_nodes"),
    [
        pytest.param((arm(CPU, "vmSize"), "Standard_D8s_v3"), {(CPU, False)}, id="vm-size"),
        pytest.param((arm(CPU, "imageVersion"), "2024.01.01"), {(CPU, False)}, id="image"),
        pytest.param((arm(GPU, "priority"), "Spot"), {(GPU, False)}, id="priority"),
        pytest.param((arm(CPU, "osDiskSizeGB"), 128), {(CPU, False)}, id="disk"),
        pytest.param(
            (
                node(CPU, "node_config"),
                {
                    "azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE, "priority": "Spot"},
                    "tags": {"team": "a"},
                },
            ),
            {(CPU, False)},
            id="node-config",
        ),
        pytest.param((node(CPU, "resources"), {"CPU": 8}), {(CPU, False)}, id="resources"),
        pytest.param((node(GPU, "labels"), {"accelerator": "v100"}), {(GPU, False)}, id="labels"),
        pytest.param((node(CPU, "initialization_commands"), ["echo own"]), {(CPU, False)}, id="own-initialization"),
        pytest.param((node(CPU, "worker_setup_commands"), ["echo own"]), {(CPU, False)}, id="own-worker-setup"),
        pytest.param((("head_setup_commands",), ["echo head"]), {(HEAD, True)}, id="head-setup"),
        pytest.param((("head_start_ray_commands",), ["ray start --head"]), {(HEAD, True)}, id="head-start"),
        pytest.param((("worker_setup_commands",), ["echo w"]), {(CPU, False)}, id="cluster-worker-setup"),
        pytest.param((("worker_start_ray_commands",), ["ray start"]), {(CPU, False), (GPU, False)}, id="worker-start"),
        pytest.param((("setup_commands",), ["echo all"]), {(HEAD, True), (CPU, False)}, id="setup"),
        pytest.param((("initialization_commands",), ["echo all"]), set(BASE_NODE_HASHES), id="initialization"),
        pytest.param((("auth", "ssh_user"), "rayuser"), set(BASE_NODE_HASHES), id="ssh-user"),
        pytest.param(
            (
                ("auth", "ssh_public_key"),
                "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519" + bytes(36)).decode(),
            ),
            set(BASE_NODE_HASHES),
            id="ssh-key",
        ),
        pytest.param((("provider", "location"), "eastus"), set(BASE_NODE_HASHES), id="location"),
        pytest.param((("provider", "resource_group"), "rg-other"), set(BASE_NODE_HASHES), id="resource-group"),
        pytest.param((("provider", "availability_zone"), "1,2"), set(BASE_NODE_HASHES), id="zones"),
        pytest.param((("provider", "use_internal_ips"), True), set(BASE_NODE_HASHES), id="internal-ips"),
        pytest.param((("provider", "ssh_allowed_cidrs"), ["10.0.0.0/8"]), set(BASE_NODE_HASHES), id="ssh-cidrs"),
        pytest.param(
            (
                ("provider", "subnet_id"),
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net/"
                "providers/Microsoft.Network/virtualNetworks/vnet/subnets/ray",
            ),
            set(BASE_NODE_HASHES),
            id="subnet",
        ),
    ],
)
def test_node_hash_changes_for_what_shapes_that_node_only(
    edit: tuple[tuple[str, ...], object], changed_nodes: set[tuple[str, bool]]
):
    """GPU has its own worker_setup_commands here, so the cluster's setup lists do not reach it."""
    before, after = node_hashes(WITH_OWN_SETUP), node_hashes(changed(WITH_OWN_SETUP, edit))
    assert {key for key in before if before[key] != after[key]} == changed_nodes


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param((node(CPU, "min_workers"), 1), id="min-workers"),
        pytest.param((node(CPU, "max_workers"), 3), id="type-max-workers"),
        pytest.param((node(CPU, "idle_timeout_s"), 30.0), id="idle-timeout-s"),
        pytest.param((node(CPU, "launch_timeout_s"), 900.0), id="launch-timeout-s"),
        pytest.param((node(GPU, "cost"), 2.0), id="cost"),
        pytest.param((node(GPU, "fallback"), DELETE), id="fallback"),
        pytest.param((("max_workers",), 9), id="cluster-max-workers"),
        pytest.param((("upscaling_speed",), 3.0), id="upscaling-speed"),
        pytest.param((("idle_timeout_minutes",), 1), id="idle-timeout-minutes"),
        pytest.param((("file_mounts",), {"/a": "/b"}), id="launcher-only-field"),
        pytest.param(
            (
                ("available_node_types", "ray.worker.extra"),
                {
                    "resources": {"CPU": 1},
                    "max_workers": 1,
                    "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D2s_v3", **IMAGE}},
                },
            ),
            id="another-node-type",
        ),
    ],
)
def test_node_hash_ignores_planner_settings_and_other_node_types(edit: tuple[tuple[str, ...], object]):
    assert node_hashes(changed(BASE, edit)) == node_hashes(BASE)


class ProviderOfALaterRelease(AzureProviderConfig):
    spot_restore: bool = False


class AuthOfALaterRelease(AuthConfig):
    ssh_certificate: str | None = None


class NodeTypeOfALaterRelease(NodeTypeConfig):
    priority_class: str = "normal"


class ClusterConfigOfALaterRelease(ClusterConfig):
    """A later release adds fields with defaults everywhere: the stored configs of this one hash as before."""

    provider: ProviderOfALaterRelease
    auth: AuthOfALaterRelease
    available_node_types: dict[str, NodeTypeOfALaterRelease]  # type: ignore[assignment]
    preemption_notice_s: float = 30.0


def test_fields_added_later_with_their_defaults_change_no_hash():
    config = parse_cluster_config(BASE).config
    later = ClusterConfigOfALaterRelease.from_json(config.to_json())
    assert later.to_json() != config.to_json()  # the unversioned hash (sha256 of this) would change
    assert later.config_hash() == config.config_hash()
    assert later.is_same_config(config.config_hash())
    for name, is_head in BASE_NODE_HASHES:
        assert later.node_hash(name, is_head=is_head) == config.node_hash(name, is_head=is_head)


@pytest.mark.parametrize(
    ("value", "version"),
    [
        pytest.param("", "", id="none"),
        pytest.param("ab" * 32, "v1", id="bare-sha256"),
        pytest.param("v2:" + "ab" * 32, "v2", id="v2"),
        pytest.param("v3:whatever", "v3", id="later"),
        pytest.param("old-config", "", id="unversioned-text"),
    ],
)
def test_hash_version(value: str, version: str):
    assert hash_version(value) == version


@pytest.mark.parametrize(
    ("stored", "current", "outdated"),
    [
        pytest.param("v2:aa", "v2:aa", False, id="same"),
        pytest.param("v2:aa", "v2:bb", True, id="changed"),
        pytest.param("", "v2:bb", False, id="no-stored-hash"),
        pytest.param("ab" * 32, "v2:bb", False, id="earlier-release"),
        pytest.param("v3:cc", "v2:bb", False, id="later-release-then-rollback"),
        pytest.param("old-config", "current-config", True, id="same-scheme-without-version"),
    ],
)
def test_is_outdated_node_hash_compares_hashes_of_one_scheme_only(stored: str, current: str, outdated: bool):
    assert is_outdated_node_hash(stored, current) is outdated


def test_to_json_is_sorted_compact_json():
    text = parse_cluster_config(BASE).config.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    ("text", "path"),
    [
        pytest.param("not json", "", id="not-json"),
        pytest.param("[]", "", id="not-object"),
        pytest.param('{"cluster_name": "demo"}', "provider", id="missing-fields"),
    ],
)
def test_from_json_rejects_damaged_text_with_config_error(text: str, path: str):
    with pytest.raises(ConfigError) as raised:
        ClusterConfig.from_json(text)
    assert path in {error.path for error in raised.value.errors}


def stored_json(edit: Any) -> str:
    """BASE as the store holds it, then changed as a document (what another release may have written)."""
    document = json.loads(parse_cluster_config(BASE).config.to_json())
    return json.dumps(edit(document))


def with_unknown_fields(document: dict[str, Any]) -> dict[str, Any]:
    document["spot_restore_policy"] = "eager"  # a later release's field
    document["available_node_types"][CPU]["priority_class"] = "high"
    document["provider"]["boot_diagnostics"] = True  # as left by a release that had it, before it was removed
    document["auth"]["ssh_certificate"] = None
    return document


def test_stored_config_with_unknown_fields_loads_without_them():
    config = ClusterConfig.from_json(stored_json(with_unknown_fields))
    assert config == parse_cluster_config(BASE).config
    assert node_hashes(BASE) == {
        (name, is_head): config.node_hash(name, is_head=is_head) for name, is_head in BASE_NODE_HASHES
    }


def test_the_same_body_at_the_api_is_refused_with_each_unknown_field():
    with pytest.raises(ConfigError) as raised:
        parse_cluster_config(stored_json(with_unknown_fields), "application/json")
    unknown = {error.path for error in raised.value.errors if error.message.startswith("unknown field")}
    assert unknown == {
        "spot_restore_policy",
        node_path(CPU, "priority_class"),
        "provider.boot_diagnostics",
        "auth.ssh_certificate",
    }


def test_model_validation_outside_storage_stays_strict():
    document = with_unknown_fields(json.loads(parse_cluster_config(BASE).config.to_json()))
    with pytest.raises(ValidationError) as raised:
        ClusterConfig.model_validate(document)
    assert {error["type"] for error in raised.value.errors()} == {"extra_forbidden"}


def test_stored_config_that_todays_rules_refuse_still_loads():
    """The previous release took ECDSA keys (Azure refuses them; this release does too, at the API): a cluster stored
    with one must still tick, so it can at least be deleted."""
    ecdsa = "ecdsa-sha2-nistp256 " + base64.b64encode(b"\0\0\0\x13ecdsa-sha2-nistp256" + bytes(8)).decode()

    def with_ecdsa_key(document: dict[str, Any]) -> dict[str, Any]:
        document["auth"]["ssh_public_key"] = ecdsa
        return document

    assert ClusterConfig.from_json(stored_json(with_ecdsa_key)).auth.ssh_public_key == ecdsa
    with pytest.raises(ConfigError) as raised:
        parse_cluster_config(stored_json(with_ecdsa_key), "application/json")
    assert {error.path for error in raised.value.errors} == {"auth.ssh_public_key"}


def test_stored_config_types_are_still_checked():
    def with_text_count(document: dict[str, Any]) -> dict[str, Any]:
        document["max_workers"] = "6"
        del document["head_node_type"]
        return document

    with pytest.raises(ConfigError) as raised:
        ClusterConfig.from_json(stored_json(with_text_count))
    assert {error.path for error in raised.value.errors} == {"max_workers", "head_node_type"}


def test_field_error_is_a_value():
    assert FieldError("a.b", "bad") == FieldError("a.b", "bad")
    assert str(FieldError("", "bad")) == "(document): bad"


# --------------------------------------------------------------------------------------------
# Nothing but ConfigError, whatever arrives
# --------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)

FUZZED_PATHS = [
    ("cluster_name",),
    ("max_workers",),
    ("upscaling_speed",),
    ("provider",),
    ("provider", "type"),
    ("provider", "availability_zone"),
    ("provider", "ssh_allowed_cidrs"),
    ("auth",),
    ("auth", "ssh_public_key"),
    ("available_node_types",),
    node(CPU, "resources"),
    node(CPU, "min_workers"),
    node(GPU, "fallback"),
    node(GPU, "node_config"),
    arm(CPU, "billingProfile"),
    arm(CPU, "priority"),
    ("head_node_type",),
    ("head_node",),
    ("worker_nodes",),
    ("target_utilization_fraction",),
    ("setup_commands",),
]


def parses_or_raises_config_error(body: object, content_type: str | None = None) -> None:
    failure: ConfigError | None = None
    try:
        parse_cluster_config(body, content_type)  # type: ignore[arg-type]
    except ConfigError as error:
        failure = error
    if failure is not None:
        assert failure.errors
        assert all(isinstance(item, FieldError) for item in failure.errors)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_config_error(body: bytes):
    parses_or_raises_config_error(body)
    parses_or_raises_config_error(body, "application/json")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_nothing_but_config_error(body: str):
    parses_or_raises_config_error(body)
    parses_or_raises_config_error(body, "application/json")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="{}[]:,-&*!|>'\"#%@` \n\tabc01.~<=?", max_size=120))
def test_yaml_punctuation_soup_raises_nothing_but_config_error(body: str):
    parses_or_raises_config_error(body)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(FUZZED_PATHS), json_values)
def test_any_value_in_any_field_raises_nothing_but_config_error(path: tuple[str, ...], value: object):
    body = changed(BASE, (path, value))
    parses_or_raises_config_error(body)
    parses_or_raises_config_error(yaml.safe_dump(body, allow_unicode=True))


def test_date_like_yaml_values_stay_text():
    body = MINIMAL_YAML.replace("auth: {ssh_user: ubuntu}\n", "") + (
        "available_node_types:\n"
        "  head: {resources: {CPU: 2}, node_config: {azure_arm_parameters: "
        "{vmSize: Standard_D2s_v3, imagePublisher: p, imageOffer: o, imageSku: s, imageVersion: 2024-01-01}}}\n"
        "head_node_type: head\n"
    )
    parameters = node_arm_parameters(parse_cluster_config(body).config.available_node_types["head"])
    assert parameters is not None
    assert parameters.imageVersion == "2024-01-01"


def test_arm_parameters_we_do_not_model_are_kept_for_the_renderer():
    body = changed(BASE, (arm(CPU, "enableAcceleratedNetworking"), True), (arm(CPU, "availability_zone"), "none"))
    config = ClusterConfig.from_json(parse_cluster_config(body).config.to_json())
    parameters = node_arm_parameters(config.available_node_types[CPU])
    assert parameters is not None
    assert parameters.model_extra == {"enableAcceleratedNetworking": True, "availability_zone": "none"}
