"""The cluster config: Ray's cluster YAML (legacy keys included) as frozen pydantic models.

A config is parsed and validated once, here, at the boundary; everything downstream trusts it. What is a cloud's own
(the `provider` section's model, the defaults, the rules on `node_config`) comes from the plugin its `provider.type`
names (autoscaler/plugins.py; Azure's is provisioning/azure/plugin.py).
The story of `parse_cluster_config`:

1. read the body (YAML or JSON) with limits on size, nesting and alias expansion;
2. check that the document is plain JSON-like data (string keys, finite numbers, no dates or bytes);
3. sort every key into "used", "ignored" (only meaningful to Ray's SSH-driven launcher) or "unknown" (an error);
4. fill what the config leaves out as Ray does (`fillout_defaults` over the plugin's copy of Ray's `defaults.yaml`,
   legacy `head_node`/`worker_nodes` rewritten into node types, per-type worker bounds filled);
5. validate field by field with pydantic, then the rules that span fields (head type exists, min <= max, ...) and
   the plugin's rules, collecting every failing path before raising one `ConfigError`.

Paths are dotted; a key that is not a plain identifier is shown in brackets, so the worker bound of the
default worker type reads `available_node_types['ray.worker.default'].max_workers`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    create_model,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from autoscaler.ports import ProviderPlugin

# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------

MAX_CONFIG_BYTES = 1024 * 1024
"""A cluster config is a few kilobytes; anything above this is rejected before parsing."""

MAX_NESTING_DEPTH = 64
"""Deepest nesting accepted (Ray's own configs nest about 6 levels)."""

MAX_EXPANDED_NODES = 20_000
"""Values in the document once YAML aliases are expanded: stops 'billion laughs' alias bombs."""

MAX_WORKERS_LIMIT = 10_000
"""Upper bound on any worker count, far above what one resource group can hold."""

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One failing field: `path` is dotted (`provider.location`), "" for the document itself."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(document)'}: {self.message}"


@dataclass(frozen=True)
class FieldAdjustment:
    """A field the control plane uses with another value than the one given, and why (shown in the create answer)."""

    path: str
    given: str
    used: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.given!r} -> {self.used!r} ({self.reason})"


class ConfigError(Exception):
    """The config is invalid; `errors` holds every failing field, in document order."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        lines = "\n".join(f"- {error}" for error in self.errors)
        super().__init__(f"invalid cluster config ({len(self.errors)} error(s)):\n{lines}")


PathPart = str | int

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(parts: Iterable[PathPart]) -> str:
    """`("available_node_types", "ray.worker.default", "max_workers")` ->
    `available_node_types['ray.worker.default'].max_workers`."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _join(prefix: str, parts: Iterable[PathPart]) -> str:
    """A path below an already formatted prefix."""
    suffix = format_path(parts)
    if not prefix:
        return suffix
    if not suffix or suffix.startswith("["):
        return prefix + suffix
    return f"{prefix}.{suffix}"


def join_path(prefix: str, parts: Iterable[PathPart]) -> str:
    """A path below an already formatted prefix (plugins report their fields' errors with it)."""
    return _join(prefix, parts)


class FieldErrors:
    """Collects field errors once each, in the order they are found (plugins' config rules add theirs here)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], None] = {}

    def add(self, path: str, message: str) -> None:
        self._seen.setdefault((path, message), None)

    def add_validation_error(self, prefix: str, error: ValidationError) -> None:
        for detail in error.errors(include_url=False):
            self.add(_join(prefix, detail["loc"]), _pydantic_message(detail["type"], detail["msg"]))

    def __bool__(self) -> bool:
        return bool(self._seen)

    def as_list(self) -> list[FieldError]:
        return [FieldError(path, message) for path, message in self._seen]


def _pydantic_message(error_type: str, message: str) -> str:
    if error_type == "missing":
        return "required"
    if error_type == "extra_forbidden":
        return "unknown field"
    if error_type in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping"
    return message.removeprefix("Value error, ")


# --------------------------------------------------------------------------------------------
# Field rules (named so that error messages and tests can refer to them)
# --------------------------------------------------------------------------------------------

STORED_CONFIG_CONTEXT = "stored_config"
"""Validation context key: set (to True) when a config is read back from storage rather than taken at the API."""


def _reading_stored(info: ValidationInfo) -> bool:
    """Whether this validation reads a stored config (`ClusterConfig.from_json`): the config passed the API's rules of
    the release that stored it, so today's value rules (which may have grown stricter) are not applied again."""
    return isinstance(info.context, Mapping) and info.context.get(STORED_CONFIG_CONTEXT) is True


def reading_stored(info: ValidationInfo) -> bool:
    """`_reading_stored`, for plugins' validators: a stored config passed its own release's value rules."""
    return _reading_stored(info)


CLUSTER_NAME_RULE = (
    "must be 1-40 characters of lowercase letters, digits and hyphens, start with a letter and not end with "
    "a hyphen (it becomes part of Azure resource names and tag values)"
)
_CLUSTER_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")

NODE_TYPE_NAME_RULE = "must be 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit"
_NODE_TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Ray's node label rules (ray/_private/label_utils.py LABEL_REGEX, LABEL_PREFIX_REGEX).
_LABEL_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL = re.compile(_LABEL_PART)
_LABEL_PREFIX = re.compile(rf"{_LABEL_PART}(\.{_LABEL_PART})*")
_RAY_LABEL_PREFIX = "ray.io/"
# Azure refuses these admin user names for Linux VMs.
_RESERVED_SSH_USERS = frozenset(
    {
        "1", "123", "a", "actuser", "adm", "admin", "admin1", "admin2", "administrator", "aspnet", "backup",
        "console", "david", "guest", "john", "owner", "root", "server", "sql", "support", "support_388945a0",
        "sys", "test", "test1", "test2", "test3", "user", "user1", "user2", "user3", "user4", "user5",
    }
)  # fmt: skip

# Azure accepts only RSA (2048 bits or more) and Ed25519 public keys for Linux VMs (Compute answers InvalidParameter).
_SSH_KEY_TYPES = frozenset({"ssh-rsa", "ssh-ed25519"})
MIN_RSA_KEY_BITS = 2048


def is_valid_cluster_name(name: str) -> bool:
    """Whether `name` follows CLUSTER_NAME_RULE (also used to check names in URLs)."""
    return bool(_CLUSTER_NAME.fullmatch(name))


def _check_ssh_public_key(value: str) -> str:
    key = value.strip()
    if _looks_like_file_path(key):
        raise ValueError(
            "looks like a file path, but the control plane cannot read files on your machine: paste the key's "
            "contents instead (e.g. the output of `cat ~/.ssh/id_ed25519.pub`)"
        )
    fields = key.split()
    if "\n" in key or len(fields) < 2 or fields[0] not in _SSH_KEY_TYPES:
        raise ValueError(
            "must be one OpenSSH public key line such as 'ssh-ed25519 AAAA... comment' "
            f"(key types: {', '.join(sorted(_SSH_KEY_TYPES))})"
        )
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key data after the key type is not valid base64") from None
    # The blob starts with the key type again, as a length-prefixed string: a cheap integrity check.
    embedded_length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + embedded_length].decode("ascii", errors="replace") != fields[0]:
        raise ValueError(f"the key data does not hold a {fields[0]} key")
    if fields[0] == "ssh-rsa" and _rsa_modulus_bits(blob) < MIN_RSA_KEY_BITS:
        raise ValueError(f"RSA keys must have at least {MIN_RSA_KEY_BITS} bits (Azure refuses shorter ones)")
    return key


def _rsa_modulus_bits(blob: bytes) -> int:
    """Bit length of an OpenSSH RSA public key's modulus: the blob is string type, mpint e, mpint n."""
    offset = 0
    fields: list[bytes] = []
    for _ in range(3):
        length = int.from_bytes(blob[offset : offset + 4], "big")
        fields.append(blob[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return int.from_bytes(fields[2], "big").bit_length()


def _looks_like_file_path(text: str) -> bool:
    if text.startswith(("/", "~", "./", "../", ".\\", "..\\")) or re.match(r"[A-Za-z]:[\\/]", text):
        return True
    return " " not in text and (text.endswith((".pub", ".pem", ".key")) or "/" in text or "\\" in text)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    # strict: YAML already yields typed values, so "5" for a count is a mistake rather than a number.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_fields_of_stored_configs(cls, data: Any, info: ValidationInfo) -> Any:
        """A stored config may hold fields this release does not know: added by a later release (read during a
        rollback) or removed since it was stored. They are dropped, so they shape nothing; the API stays strict."""
        if _reading_stored(info) and isinstance(data, Mapping):
            return {key: value for key, value in data.items() if key in cls.model_fields}
        return data


class NodeTypeConfig(_Frozen):
    """One entry of `available_node_types`, with our planner extensions."""

    resources: dict[str, float]
    min_workers: int = Field(default=0, ge=0, le=MAX_WORKERS_LIMIT)
    max_workers: int = Field(ge=0, le=MAX_WORKERS_LIMIT)  # filled from the cluster's max_workers when left out
    node_config: dict[str, Any]
    labels: dict[str, str] = Field(default_factory=dict)
    # Ray's per-type overrides of the cluster-wide lists (workers only, as in Ray).
    initialization_commands: list[str] | None = None
    worker_setup_commands: list[str] | None = None
    # Ours, used by the planner.
    idle_timeout_s: float | None = Field(default=None, gt=0)
    launch_timeout_s: float | None = Field(default=None, gt=0)
    cost: float | None = Field(default=None, ge=0)  # relative price per hour, to prefer cheaper types
    fallback: str | None = None  # the worker type to try when this one has no capacity
    # A spot type may launch at regular priority while every zone's spot offering of its size is avoided (capacity,
    # quota or evictions): "regular". Off by default: regular VMs cost several times more.
    spot_fallback: Literal["regular"] | None = None

    @field_validator("labels")
    @classmethod
    def _ray_label_rules(cls, labels: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """Ray 2.60's label rules (ray/_private/label_utils.py): a node started with a label Ray refuses would not
        start at all."""
        if _reading_stored(info):
            return labels
        for key, value in labels.items():
            prefix, _, name = key.rpartition("/")
            if key.startswith(_RAY_LABEL_PREFIX):
                raise ValueError(f"label key {key!r}: the prefix {_RAY_LABEL_PREFIX!r} is reserved for Ray")
            if (prefix and (len(prefix) > 253 or not _LABEL_PREFIX.fullmatch(prefix))) or not _LABEL.fullmatch(name):
                raise ValueError(
                    f"label key {key!r}: at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
                    "letter or digit, optionally after a DNS prefix and '/'"
                )
            if value and not _LABEL.fullmatch(value):
                raise ValueError(
                    f"label {key!r}: value {value!r} must be at most 63 letters, digits, '-', '_' or '.', starting and "
                    "ending with a letter or digit"
                )
        return labels

    @field_validator("resources")
    @classmethod
    def _resources_not_negative(cls, resources: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        if _reading_stored(info):
            return resources
        negative = sorted(name for name, amount in resources.items() if amount < 0)
        if negative:
            raise ValueError(f"amounts must be >= 0 (negative: {', '.join(negative)})")
        if any(not name for name in resources):
            raise ValueError("resource names must not be empty")
        return resources


ConfigModel = _Frozen
"""The base of the config's models, for plugins' models too: frozen, strict, unknown keys refused at the API and
dropped from stored configs."""


class ProviderConfig(_Frozen):
    """The `provider` section as the core sees it. Its `type` names the cloud's plugin (autoscaler/plugins.py), whose
    subclass of this model holds the rest of the section (provisioning/registry.py lists them): a config's `provider`
    is always an instance of the subclass its `type` selects, a union keyed on `type` that plugins extend."""

    type: str

    if TYPE_CHECKING:
        # The rest of the section is the plugin's subclass's, which only the plugin knows. To a type checker a field
        # it does not see here reads as text (what most provider keys are); code that relies on a field's own type
        # narrows first, as the plugins do (`isinstance(config.provider, AzureProviderConfig)`).
        def __getattr__(self, name: str) -> str: ...

    def zones(self) -> list[str]:
        """The availability zones to spread nodes over; [] lets the cloud pick."""
        return []

    def node_shape(self) -> dict[str, Any]:
        """What of this section shapes a node, hashed into its `node_hash` (docs/decisions/config-hash.md). Fields at
        their default are left out, so a field a plugin adds later with a default changes no node's hash."""
        return {"type": self.type, **self.model_dump(mode="json", exclude_defaults=True)}


class AuthConfig(_Frozen):
    ssh_user: str = "ubuntu"
    ssh_public_key: str | None = None  # the key's contents, never a path

    @field_validator("ssh_user")
    @classmethod
    def _azure_admin_user_name(cls, value: str, info: ValidationInfo) -> str:
        if _reading_stored(info):
            return value
        if not _SSH_USER.fullmatch(value):
            raise ValueError("must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter or '_'")
        if value in _RESERVED_SSH_USERS:
            raise ValueError(f"{value!r} is reserved by Azure for Linux VMs")
        return value

    @field_validator("ssh_public_key")
    @classmethod
    def _public_key_contents(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A stored key passed the rules of its day (older releases took ECDSA keys, for one): kept as it is.
        if value is None or _reading_stored(info):
            return value
        return _check_ssh_public_key(value)


@dataclass(frozen=True)
class NodeCommands:
    """What a node runs at boot, in order: initialization, setup, then start Ray."""

    initialization: list[str]
    setup: list[str]
    start_ray: list[str]


class AutostopConfig(_Frozen):
    """Ours: remove every instance (head included) of a cluster idle this long; `down: true` deletes it instead."""

    idle_minutes: float = Field(gt=0, le=7 * 24 * 60)
    down: bool = False


class ClusterConfig(_Frozen):
    cluster_name: str
    max_workers: int = Field(ge=0, le=MAX_WORKERS_LIMIT)
    upscaling_speed: float = Field(ge=0)
    idle_timeout_minutes: float = Field(ge=0)
    # Ours: Ray's AUTOSCALER_CONSERVE_GPU_NODES, per cluster. True (Ray's default): demand that asks for no GPU goes
    # to GPU node types only when no other type fits it.
    conserve_gpu_nodes: bool = True
    # Ours: stop (or delete) the cluster after this long without pending demand, busy nodes or running Ray jobs.
    # None (the default) never does; as a default it enters neither config_hash nor any node_hash.
    autostop: AutostopConfig | None = None
    provider: SerializeAsAny[ProviderConfig]  # dumped as the plugin's model, with all its fields
    auth: AuthConfig
    available_node_types: dict[str, NodeTypeConfig] = Field(min_length=1)
    head_node_type: str
    initialization_commands: list[str]
    setup_commands: list[str]
    head_setup_commands: list[str]
    worker_setup_commands: list[str]
    head_start_ray_commands: list[str]
    worker_start_ray_commands: list[str]

    @field_validator("cluster_name")
    @classmethod
    def _azure_safe_name(cls, value: str, info: ValidationInfo) -> str:
        if not is_valid_cluster_name(value) and not _reading_stored(info):
            raise ValueError(CLUSTER_NAME_RULE)
        return value

    @field_validator("provider", mode="wrap")
    @classmethod
    def _provider_of_its_type(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """`provider.type` selects the model: the registered plugin's. An unknown type fails at `provider.type`
        naming the registered ones. (A subclass that pins `provider` to one model, as tests of later releases do,
        gets that model.)"""
        if cls.model_fields["provider"].annotation is not ProviderConfig or isinstance(value, ProviderConfig):
            return handler(value)
        from autoscaler.plugins import providers

        registry = providers()
        plugin = registry.get(value.get("type")) if isinstance(value, Mapping) else None
        if plugin is None:
            return _provider_type_model(registry.types()).model_validate(value)  # raises, naming provider.type
        return plugin.config_model.model_validate(value, context=info.context)

    def worker_node_types(self) -> dict[str, NodeTypeConfig]:
        """Every type that may be launched as a worker (the head type only if its max_workers > 0)."""
        return {
            name: node_type
            for name, node_type in self.available_node_types.items()
            if name != self.head_node_type or node_type.max_workers > 0
        }

    def idle_timeout_s_for(self, node_type: str) -> float:
        """The type's own idle_timeout_s, else the cluster's idle_timeout_minutes. KeyError for unknown types."""
        own = self.available_node_types[node_type].idle_timeout_s
        return own if own is not None else self.idle_timeout_minutes * 60.0

    def commands_for(self, node_type: str, *, is_head: bool) -> NodeCommands:
        """The boot commands, combined as Ray does: setup_commands run before head/worker_setup_commands,
        and a worker type's own initialization_commands / worker_setup_commands replace the cluster-wide ones."""
        if is_head:
            return NodeCommands(
                initialization=list(self.initialization_commands),
                setup=self.setup_commands + self.head_setup_commands,
                start_ray=list(self.head_start_ray_commands),
            )
        own = self.available_node_types[node_type]
        return NodeCommands(
            initialization=list(
                own.initialization_commands if own.initialization_commands is not None else self.initialization_commands
            ),
            setup=list(
                own.worker_setup_commands
                if own.worker_setup_commands is not None
                else self.setup_commands + self.worker_setup_commands
            ),
            start_ray=list(self.worker_start_ray_commands),
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces) of the normalized config."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False)

    # -- hashes (docs/decisions/config-hash.md) ----------------------------------------------------------------------

    def config_hash(self) -> str:
        """The cluster's identity: `v2:` + sha256 of every field that differs from its default. POST tells "the same
        config again" from "another config" with it (`is_same_config`); nodes are judged by `node_hash`, not by this.
        A field added later with a default leaves it unchanged for every config that does not set the field."""
        return _versioned_hash(self.model_dump(mode="json", exclude_defaults=True))

    def is_same_config(self, stored_hash: str) -> bool:
        """Whether `stored_hash` (a cluster row's `config_hash`) names this config. A hash of the unversioned scheme
        (releases before v2) is compared with that scheme's formula, which holds while the config's fields are the
        ones of the release that stored it: fields added since (`FIELDS_ADDED_SINCE_V1`) are left out of it while
        they have their default, as that release had no such field."""
        if hash_version(stored_hash) == LEGACY_HASH_VERSION:
            document = self.model_dump(mode="json")
            for name in FIELDS_ADDED_SINCE_V1:
                if getattr(self, name) == type(self).model_fields[name].get_default(call_default_factory=True):
                    document.pop(name, None)
            for node_name, node_type in self.available_node_types.items():
                for name in NODE_TYPE_FIELDS_ADDED_SINCE_V1:
                    if getattr(node_type, name) == NodeTypeConfig.model_fields[name].get_default():
                        document["available_node_types"][node_name].pop(name, None)
            text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
            candidates = {self.to_json(), text}
            return any(stored_hash == hashlib.sha256(c.encode("utf-8")).hexdigest() for c in candidates)
        return stored_hash == self.config_hash()

    def node_hash(self, node_type: str, *, is_head: bool) -> str:
        """What a node of `node_type` launched in this role is made of: `v2:` + sha256 of `node_shape`.
        Stored on each instance row at launch; a node is outdated when it differs (`is_outdated_node_hash`).
        KeyError for a type that is not in the config."""
        return _versioned_hash(self.node_shape(node_type, is_head=is_head))

    def node_shape(self, node_type: str, *, is_head: bool) -> dict[str, Any]:
        """Every input of the VM a node of `node_type` gets (its ARM template, custom data and tags), and nothing
        else: planner settings (worker bounds, timeouts, cost, fallback, upscaling) and other node types change no
        VM, so changing them replaces no node. Commands are the ones this node runs, as `commands_for` combines
        them, so a worker type with its own `worker_setup_commands` ignores the cluster's `setup_commands`.

        A field added to the config later must not enter this document when it has its default value (or must come
        with a new HASH_VERSION): otherwise every stored node would count as outdated after the deploy."""
        own = self.available_node_types[node_type]
        commands = self.commands_for(node_type, is_head=is_head)
        return {
            "node_type": node_type,
            "role": "head" if is_head else "worker",
            "resources": dict(own.resources),
            "labels": dict(own.labels),
            "node_config": own.node_config,
            "commands": {
                "initialization": commands.initialization,
                "setup": commands.setup,
                "start_ray": commands.start_ray,
            },
            "auth": {"ssh_user": self.auth.ssh_user, "ssh_public_key": self.auth.ssh_public_key},
            "provider": self.provider.node_shape(),
        }

    def worker_node_hashes(self) -> dict[str, str]:
        """`node_hash` of every type that may be launched as a worker, by type name (what the planner compares)."""
        return {name: self.node_hash(name, is_head=False) for name in self.worker_node_types()}

    # -- storage ------------------------------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, text: str) -> ClusterConfig:
        """The inverse of `to_json`, for configs read back from storage, read leniently: fields this release does not
        know (left by an older release or written by a newer one) are dropped, and the API's value rules of today
        are not applied again (the config passed those of the release that stored it). Types are still checked.
        Raises ConfigError."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise ConfigError([FieldError("", f"not valid JSON: {error}")]) from None
        try:
            return cls.model_validate(document, context={STORED_CONFIG_CONTEXT: True})
        except ValidationError as error:
            errors = FieldErrors()
            errors.add_validation_error("", error)
            raise ConfigError(errors.as_list()) from None


# --------------------------------------------------------------------------------------------
# Config hashes
# --------------------------------------------------------------------------------------------

HASH_VERSION = "v2"
"""The scheme of `config_hash` and `node_hash`, written before the digest (`v2:<sha256 hex>`)."""

FIELDS_ADDED_SINCE_V1 = ("conserve_gpu_nodes", "autostop")
"""Top-level config fields that releases of the unversioned hash scheme did not have (see `is_same_config`)."""
NODE_TYPE_FIELDS_ADDED_SINCE_V1 = ("spot_fallback",)
"""The same, for fields of each node type."""

LEGACY_HASH_VERSION = "v1"
"""The unversioned scheme of earlier releases: a bare sha256 hex digest of the whole config's JSON."""

_LEGACY_HASH = re.compile(r"[0-9a-f]{64}")


def hash_version(config_hash: str) -> str:
    """`v2` for `v2:...`, `v1` for a bare 64-hex digest (earlier releases), "" for no hash, else the prefix."""
    if not config_hash:
        return ""
    if _LEGACY_HASH.fullmatch(config_hash):
        return LEGACY_HASH_VERSION
    version, separator, _ = config_hash.partition(":")
    return version if separator else ""


def is_outdated_node_hash(stored: str, current: str) -> bool:
    """Whether a node launched with `stored` (its instance row's `config_hash`) is outdated against `current`
    (`ClusterConfig.node_hash` of its type and role today).

    Only hashes of the same scheme are compared. A node whose hash is of another scheme (written by an earlier
    release, or by a later one before a rollback) or has none is current: its hash cannot tell what changed, and
    replacing nodes because the control plane was upgraded is the failure this versioning exists to prevent.
    (Within one cluster generation the config never changes, so such a node was launched from the stored config.)"""
    if not stored or not current:
        return False
    return hash_version(stored) == hash_version(current) and stored != current


def _versioned_hash(document: object) -> str:
    text = json.dumps(_canonical(document), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{HASH_VERSION}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def _canonical(value: object) -> object:
    """JSON-like data with whole floats as integers, so `CPU: 2` and `CPU: 2.0` (or a field that becomes a float in
    a later release) hash alike."""
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class ParsedConfig:
    config: ClusterConfig
    ignored_fields: tuple[str, ...]  # dotted paths the user gave that this control plane does not use


# --------------------------------------------------------------------------------------------
# Defaults: each provider plugin brings Ray's defaults.yaml of its cloud (`ProviderPlugin.defaults`)
# --------------------------------------------------------------------------------------------

LEGACY_HEAD_NODE_TYPE = "ray-legacy-head-node-type"  # ray.autoscaler.tags.NODE_TYPE_LEGACY_HEAD
LEGACY_WORKER_NODE_TYPE = "ray-legacy-worker-node-type"  # ray.autoscaler.tags.NODE_TYPE_LEGACY_WORKER
AGGRESSIVE_UPSCALING_SPEED = 99999.0  # what Ray's autoscaler uses for autoscaling_mode: aggressive

# --------------------------------------------------------------------------------------------
# Which keys mean what
# --------------------------------------------------------------------------------------------

_COMMAND_LISTS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
_USED_TOP_LEVEL = frozenset(ClusterConfig.model_fields)
_LEGACY_TOP_LEVEL = frozenset(
    {"head_node", "worker_nodes", "min_workers", "initial_workers", "target_utilization_fraction", "autoscaling_mode"}
)
# Meaningful only to Ray's SSH-driven launcher (file sync, docker over SSH) or set by Ray's CLI.
_IGNORED_TOP_LEVEL = frozenset(
    {
        "docker",
        "file_mounts",
        "cluster_synced_files",
        "file_mounts_sync_continuously",
        "rsync_exclude",
        "rsync_filter",
        "metadata",
        "no_restart",
        "restart_only",
    }
)
_USED_AUTH = frozenset(AuthConfig.model_fields)
_IGNORED_AUTH = frozenset({"ssh_private_key", "ssh_proxy_command", "ssh_proxy_use_node_id"})
_USED_NODE_TYPE = frozenset(NodeTypeConfig.model_fields)
_IGNORED_NODE_TYPE = frozenset({"docker", "priority"})

# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_cluster_config(body: bytes | str | Mapping[str, Any], content_type: str | None = None) -> ParsedConfig:
    """Parse and validate a cluster config (YAML, or JSON when `content_type` says so). Raises ConfigError."""
    document = body if isinstance(body, Mapping) else _load_document(body, content_type)
    _check_plain_data(document)
    if not isinstance(document, Mapping):
        raise ConfigError([FieldError("", f"must be a mapping of config fields, not {_kind(document)}")])

    errors = FieldErrors()
    ignored: list[str] = []
    user = _sort_keys(document, errors, ignored)
    merged = _fill_defaults(user, errors)
    config = _validate(merged, errors)
    if errors or config is None:
        raise ConfigError(_legacy_paths_as_written(errors.as_list(), user))
    return ParsedConfig(config=config, ignored_fields=tuple(ignored))


# --- 1. reading the body --------------------------------------------------------------------


def _load_document(body: bytes | str, content_type: str | None) -> object:
    size_bytes = len(body) if isinstance(body, bytes) else len(body.encode("utf-8", errors="surrogatepass"))
    if size_bytes > MAX_CONFIG_BYTES:
        raise ConfigError([FieldError("", f"is {size_bytes} bytes; a config may be at most {MAX_CONFIG_BYTES}")])
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ConfigError([FieldError("", f"must be UTF-8 text ({error})")]) from None
    else:
        text = body
    if content_type is not None and "json" in content_type.lower():
        return _load_json(text)
    return _load_yaml(text)


def _load_json(text: str) -> object:
    def reject_constant(name: str) -> object:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError) as error:
        raise ConfigError([FieldError("", f"not valid JSON: {error}")]) from None


class _LimitExceededError(Exception):
    pass


class _GuardedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that stops at MAX_NESTING_DEPTH and MAX_EXPANDED_NODES while composing, and reads
    dates as text (a config has no dates: `imageVersion: 2024-01-01` means a string)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_NESTING_DEPTH:
            raise _LimitExceededError(f"nests deeper than {MAX_NESTING_DEPTH} levels")
        if self._nodes > MAX_EXPANDED_NODES:
            raise _LimitExceededError(f"holds more than {MAX_EXPANDED_NODES} values")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# Dates read as text: set outside the class body because PyYAML declares the table per instance.
_GuardedLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(text: str) -> object:
    loader: _GuardedLoader | None = None
    try:
        loader = _GuardedLoader(text)  # the reader already rejects control characters here
        return loader.get_single_data()
    except _LimitExceededError as error:
        raise ConfigError([FieldError("", str(error))]) from None
    except RecursionError:
        raise ConfigError([FieldError("", f"nests deeper than {MAX_NESTING_DEPTH} levels")]) from None
    # PyYAML raises more than YAMLError on garbage (ValueError from `!!int x`, TypeError from odd tags...):
    # whatever the parser trips on is the input's fault.
    except Exception as error:
        raise ConfigError([FieldError("", f"not valid YAML: {error}")]) from None
    finally:
        if loader is not None:
            loader.dispose()


# --- 2. plain data only ---------------------------------------------------------------------


def _check_plain_data(document: object) -> None:
    """Reject alias bombs, cycles and values JSON cannot hold (dates, bytes, sets, NaN, non-string keys)."""
    _check_expansion(document)
    errors = FieldErrors()
    stack: list[tuple[object, tuple[PathPart, ...]]] = [(document, ())]
    while stack:
        value, parts = stack.pop()
        if isinstance(value, Mapping):
            for key, child in value.items():
                if isinstance(key, str):
                    stack.append((child, (*parts, key)))
                else:
                    errors.add(format_path((*parts, str(key))), f"keys must be text, not {_kind(key)}")
        elif isinstance(value, list):
            stack.extend((child, (*parts, index)) for index, child in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            errors.add(format_path(parts), "must be a finite number")
        elif value is not None and not isinstance(value, str | int | float | bool):
            errors.add(
                format_path(parts), f"must be text, a number, a boolean, a list or a mapping, not {_kind(value)}"
            )
    if errors:
        raise ConfigError(sorted(errors.as_list(), key=lambda error: error.path))


def _check_expansion(document: object) -> None:
    """Expanded size and depth, computed over the shared object graph (a YAML alias is a shared object)."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (expanded values, expanded depth)
    expanding: set[int] = set()
    stack: list[tuple[object, bool]] = [(document, False)]
    while stack:
        value, children_done = stack.pop()
        if not isinstance(value, Mapping | list) or id(value) in measured:
            continue
        children = list(value.values()) if isinstance(value, Mapping) else value
        if children_done:
            expanding.discard(id(value))
            sizes = [measured.get(id(child), (1, 0)) for child in children]
            total = 1 + sum(size for size, _ in sizes)
            depth = 1 + max((child_depth for _, child_depth in sizes), default=0)
            if total > MAX_EXPANDED_NODES:
                raise ConfigError([FieldError("", f"holds more than {MAX_EXPANDED_NODES} values once aliases expand")])
            if depth > MAX_NESTING_DEPTH:
                raise ConfigError([FieldError("", f"nests deeper than {MAX_NESTING_DEPTH} levels")])
            measured[id(value)] = (total, depth)
        elif id(value) in expanding:
            raise ConfigError([FieldError("", "contains itself (a recursive YAML alias)")])
        else:
            expanding.add(id(value))
            stack.append((value, True))
            stack.extend((child, False) for child in children)


def _kind(value: object) -> str:  # noqa: PLR0911 -- one return per JSON kind named in errors: a lookup table would hide the order
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__  # bytes, set, datetime...


# --- 3. used, ignored, unknown --------------------------------------------------------------


def _sort_keys(document: Mapping[str, Any], errors: FieldErrors, ignored: list[str]) -> dict[str, Any]:
    """Deep copies of the keys this control plane uses; ignored keys listed, unknown keys reported."""
    used_top_level = _USED_TOP_LEVEL | _used_legacy_keys(document)
    ignored_top_level = _IGNORED_TOP_LEVEL | (_LEGACY_TOP_LEVEL - used_top_level)
    user = _used_keys(document, (), used_top_level, ignored_top_level, errors=errors, ignored=ignored)
    # The provider section's keys are its plugin's (the default plugin's when the type is missing or unknown, which
    # is then the one error reported about it).
    plugin = _plugin_or_default(user.get("provider"))
    used_provider = frozenset(plugin.config_model.model_fields) if plugin is not None else frozenset({"type"})
    ignored_provider = plugin.ignored_provider_fields if plugin is not None else frozenset()
    for section, used_keys, ignored_keys in (
        ("provider", used_provider, ignored_provider),
        ("auth", _USED_AUTH, _IGNORED_AUTH),
    ):
        if isinstance(user.get(section), Mapping):
            user[section] = _used_keys(
                user[section], (section,), used_keys, ignored_keys, errors=errors, ignored=ignored
            )
    node_types = user.get("available_node_types")
    if isinstance(node_types, dict):
        for name, node_type in node_types.items():
            path = format_path(("available_node_types", name))
            if not _NODE_TYPE_NAME.fullmatch(name):
                errors.add(path, f"node type names {NODE_TYPE_NAME_RULE}")
            if isinstance(node_type, Mapping):
                node_types[name] = _used_keys(
                    node_type,
                    ("available_node_types", name),
                    _USED_NODE_TYPE,
                    _IGNORED_NODE_TYPE,
                    errors=errors,
                    ignored=ignored,
                )
    return user


def _used_legacy_keys(document: Mapping[str, Any]) -> frozenset[str]:
    """The legacy keys Ray would still act on in this document (the others it drops or ignores)."""
    used = set()
    if "available_node_types" not in document:
        used |= {"head_node", "worker_nodes"}
        if "head_node" in document or "worker_nodes" in document:
            used.add("min_workers")  # Ray drops a top-level min_workers unless it rewrites legacy node types
    if not _is_number(document.get("upscaling_speed")) or not document.get("upscaling_speed"):
        used.add("autoscaling_mode")
        if document.get("autoscaling_mode") != "aggressive":
            used.add("target_utilization_fraction")
    return frozenset(used)


def _used_keys(
    section: Mapping[str, Any],
    parts: tuple[PathPart, ...],
    used_keys: frozenset[str],
    ignored_keys: frozenset[str],
    *,
    errors: FieldErrors,
    ignored: list[str],
) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in section.items():
        if key in used_keys:
            kept[key] = copy.deepcopy(value)
        elif key in ignored_keys:
            ignored.append(format_path((*parts, key)))
        else:
            known = sorted(used_keys - _LEGACY_TOP_LEVEL)
            errors.add(format_path((*parts, key)), f"unknown field (known fields: {', '.join(known)})")
    return kept


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- 4. defaults and legacy keys, as Ray fills them -----------------------------------------


def _fill_defaults(user: dict[str, Any], errors: FieldErrors) -> dict[str, Any]:
    """Ray's `prepare_config` minus the SSH parts: `fillout_defaults` (a shallow merge over the provider's
    defaults, legacy node types rewritten) then `fill_node_type_min_max_workers`. The six command lists are kept
    as written; `ClusterConfig.commands_for` combines them as Ray's `merge_setup_commands` does."""
    plugin = _plugin_or_default(user.get("provider"))
    defaults: Mapping[str, Any] = plugin.defaults if plugin is not None else {}

    # Ray reads `provider` before merging defaults, so a config without one fails there too.
    merged = {key: copy.deepcopy(value) for key, value in defaults.items() if key in _USED_TOP_LEVEL - {"provider"}}
    merged.update({key: value for key, value in user.items() if key in _USED_TOP_LEVEL})
    if "available_node_types" not in user and ("head_node" in user or "worker_nodes" in user):
        _rewrite_legacy_node_types(merged, user, defaults, errors)
    merged["upscaling_speed"] = _upscaling_speed(user, errors)
    _fill_node_type_min_max_workers(merged)
    return merged


def _rewrite_legacy_node_types(
    merged: dict[str, Any], user: Mapping[str, Any], defaults: Mapping[str, Any], errors: FieldErrors
) -> None:
    """Ray's `merge_legacy_yaml_with_defaults`: `head_node` / `worker_nodes` are node_configs (with an optional
    `resources`); an empty one keeps the default type's data. A missing one counts as empty (Ray raises KeyError)."""
    default_types: Mapping[str, Any] = defaults["available_node_types"]
    default_head_name: str = defaults["head_node_type"]
    default_worker_name = next(name for name in default_types if name != default_head_name)

    legacy: dict[str, dict[str, Any]] = {}
    for key in ("head_node", "worker_nodes"):
        value = user.get(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            errors.add(key, f"must be a mapping (a legacy node_config), not {_kind(value)}")
            value = {}
        legacy[key] = dict(value)

    head_info = copy.deepcopy(default_types[default_head_name])
    if legacy["head_node"]:
        node_config = legacy["head_node"]
        resources = node_config.pop("resources", None) or {}
        head_info = {"node_config": node_config, "resources": resources, "min_workers": 0, "max_workers": 0}
    worker_info = copy.deepcopy(default_types[default_worker_name])
    if legacy["worker_nodes"]:
        node_config = legacy["worker_nodes"]
        resources = node_config.pop("resources", None) or {}
        worker_info = {
            "node_config": node_config,
            "resources": resources,
            "min_workers": user.get("min_workers", 0),
            # max_workers: the cluster's, filled below as for any worker type
        }
    merged["available_node_types"] = {LEGACY_HEAD_NODE_TYPE: head_info, LEGACY_WORKER_NODE_TYPE: worker_info}
    merged["head_node_type"] = LEGACY_HEAD_NODE_TYPE


def _upscaling_speed(user: Mapping[str, Any], errors: FieldErrors) -> object:
    """Ray's autoscaler takes `upscaling_speed` when set and non-zero, else legacy `autoscaling_mode: aggressive`
    (99999), else legacy `target_utilization_fraction` f (1/f - 1), else 1.0. Ray's defaults merge fills
    upscaling_speed before the autoscaler looks, which leaves the legacy keys dead; we follow the autoscaler's
    evident intent and apply them when the config leaves upscaling_speed out."""
    speed = user.get("upscaling_speed")
    if speed is not None and not _is_number(speed):
        return speed  # pydantic reports the type
    if speed:
        return speed
    mode = user.get("autoscaling_mode")
    if mode is not None and not isinstance(mode, str):
        errors.add("autoscaling_mode", f"must be text ('default' or 'aggressive'), not {_kind(mode)}")
    elif mode == "aggressive":
        return AGGRESSIVE_UPSCALING_SPEED
    fraction = user.get("target_utilization_fraction")
    if fraction is not None:
        if not _is_number(fraction) or not 0 < fraction <= 1:
            errors.add("target_utilization_fraction", "must be a number > 0 and <= 1")
        else:
            return 1 / max(fraction, 0.001) - 1
    return 1.0


def _fill_node_type_min_max_workers(merged: dict[str, Any]) -> None:
    """Ray's `fill_node_type_min_max_workers`: min 0; max 0 for the head type, the cluster's max otherwise."""
    node_types = merged.get("available_node_types")
    if not isinstance(node_types, Mapping):
        return
    cluster_max = merged.get("max_workers")
    # An invalid cluster max is reported once, at max_workers, not again under every node type.
    usable_cluster_max = cluster_max if _is_number(cluster_max) and isinstance(cluster_max, int) else 0
    for name, data in node_types.items():
        if not isinstance(data, dict):
            continue
        data.setdefault("min_workers", 0)
        data.setdefault("max_workers", 0 if name == merged.get("head_node_type") else usable_cluster_max)


# --- 5. validation --------------------------------------------------------------------------


def _validate(merged: dict[str, Any], errors: FieldErrors) -> ClusterConfig | None:
    config: ClusterConfig | None = None
    try:
        config = ClusterConfig.model_validate(merged)
    except ValidationError as error:
        errors.add_validation_error("", error)

    # Rules spanning fields run on the raw values (type-checked where they look), so they are reported
    # together with the field errors of the same config.
    # The provider's own rules come from its plugin; an unknown type has none (its one error is the type).
    provider = merged.get("provider")
    plugin = _plugin_of(provider)
    if plugin is not None and isinstance(provider, Mapping):
        plugin.check_provider(provider, errors)
    raw_node_types = merged.get("available_node_types")
    if isinstance(raw_node_types, Mapping):
        for name, raw in raw_node_types.items():
            if isinstance(raw, Mapping):
                _check_node_type_rules(raw, name, plugin, errors)
    _check_cluster_rules(merged, errors)
    return config


def _plugin_of(provider: object) -> ProviderPlugin | None:
    """The plugin of a raw `provider` section's type, or None when it names no registered one."""
    from autoscaler.plugins import providers

    return providers().get(provider.get("type")) if isinstance(provider, Mapping) else None


def _plugin_or_default(provider: object) -> ProviderPlugin | None:
    """The plugin whose keys and defaults a raw config is read with: its type's, else the default plugin's."""
    from autoscaler.plugins import providers

    return _plugin_of(provider) or providers().default()


@cache
def _provider_type_model(types: tuple[str, ...]) -> type[BaseModel]:
    """A model that accepts only a registered `type` (and any other key): validating with it reports an unknown or
    missing type at `provider.type` ("Input should be 'azure' or 'local'"), or a section that is no mapping."""
    if not types:
        raise ValueError("no provider plugin is registered (provisioning/registry.py)")
    allowed: Any = Literal[types]
    return create_model("ProviderConfig", __config__=ConfigDict(extra="allow", strict=True), type=(allowed, ...))


def _check_node_type_rules(
    raw: Mapping[str, Any], name: str, plugin: ProviderPlugin | None, errors: FieldErrors
) -> None:
    prefix = format_path(("available_node_types", name))
    min_workers, max_workers = raw.get("min_workers"), raw.get("max_workers")
    # A negative bound is already an error of its own; comparing it would only repeat it.
    if isinstance(min_workers, int) and isinstance(max_workers, int) and min_workers > max_workers >= 0:
        errors.add(_join(prefix, ("min_workers",)), f"must be <= max_workers ({max_workers})")

    node_config = raw.get("node_config")
    if plugin is not None and isinstance(node_config, Mapping):
        plugin.check_node_config(node_config, _join(prefix, ("node_config",)), errors)
        if raw.get("spot_fallback") is not None and not plugin.offering(name, node_config).spot:
            errors.add(_join(prefix, ("spot_fallback",)), "applies only to a node type whose own priority is spot")


def _check_cluster_rules(merged: Mapping[str, Any], errors: FieldErrors) -> None:
    head_node_type = merged.get("head_node_type")
    raw_node_types = merged.get("available_node_types")
    if not isinstance(raw_node_types, Mapping):
        return
    if isinstance(head_node_type, str) and head_node_type not in raw_node_types:
        errors.add(
            "head_node_type", f"{head_node_type!r} is not one of available_node_types ({_names(raw_node_types)})"
        )

    cluster_max = merged.get("max_workers")
    if _is_number(cluster_max) and isinstance(cluster_max, int) and cluster_max >= 0:
        sum_min_workers = sum(
            raw["min_workers"]
            for raw in raw_node_types.values()
            if isinstance(raw, Mapping) and _is_number(raw.get("min_workers")) and raw["min_workers"] > 0
        )
        if sum_min_workers > cluster_max:
            errors.add("max_workers", f"must be >= the sum of the node types' min_workers ({sum_min_workers})")

    fallbacks: dict[str, str] = {
        name: raw["fallback"]
        for name, raw in raw_node_types.items()
        if isinstance(raw, Mapping) and isinstance(raw.get("fallback"), str)
    }
    for name, fallback in fallbacks.items():
        problem = _fallback_problem(name, fallback, head_node_type, raw_node_types, fallbacks)
        if problem:
            errors.add(format_path(("available_node_types", name, "fallback")), problem)


def _fallback_problem(
    name: str,
    fallback: str,
    head_node_type: object,
    raw_node_types: Mapping[str, Any],
    fallbacks: Mapping[str, str],
) -> str | None:
    if fallback == name:
        return "must name another node type, not the type itself"
    if fallback not in raw_node_types:
        return f"{fallback!r} is not one of available_node_types ({_names(raw_node_types)})"
    target = raw_node_types[fallback]
    if fallback == head_node_type and isinstance(target, Mapping) and target.get("max_workers") == 0:
        return f"{fallback!r} is the head type with max_workers 0, so it is never launched as a worker"
    chain = [name]
    current: str | None = fallback
    while current is not None:
        if current in chain:
            return f"fallbacks go round in a loop: {' -> '.join([*chain, current])}"
        chain.append(current)
        current = fallbacks.get(current)
    return None


def _names(node_types: Mapping[str, Any]) -> str:
    return ", ".join(sorted(node_types))


def _legacy_paths_as_written(errors: list[FieldError], user: Mapping[str, Any]) -> list[FieldError]:
    """Errors inside node types rewritten from legacy keys point at the keys the user wrote."""
    if "available_node_types" in user or not ("head_node" in user or "worker_nodes" in user):
        return errors
    rewrites: list[tuple[str, str]] = []
    for type_name, legacy_key in ((LEGACY_HEAD_NODE_TYPE, "head_node"), (LEGACY_WORKER_NODE_TYPE, "worker_nodes")):
        if user.get(legacy_key):
            prefix = format_path(("available_node_types", type_name))
            rewrites += [(f"{prefix}.node_config", legacy_key), (f"{prefix}.resources", f"{legacy_key}.resources")]
    worker_prefix = format_path(("available_node_types", LEGACY_WORKER_NODE_TYPE))
    rewrites += [(f"{worker_prefix}.min_workers", "min_workers"), (f"{worker_prefix}.max_workers", "max_workers")]
    rewritten: list[FieldError] = []
    for error in errors:
        path = error.path
        for old, new in rewrites:
            if path == old or path.startswith((old + ".", old + "[")):
                path = new + path[len(old) :]
                break
        rewritten.append(FieldError(path, error.message))
    return list(dict.fromkeys(rewritten))
