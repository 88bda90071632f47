"""The ports: every interface the core needs from the outside world, and the typed errors that cross them.

The core (config, model, planner, lifecycle, reconcile, views, and the service above them) depends on these and on
nothing outside itself; adapters implement them and import the core, never the reverse. `make lint` holds the code to
that with import-linter (the contracts in pyproject.toml, docs/decisions/layout.md). Who implements what:

- `CloudProvider` and its errors: one plugin per cloud (`ProviderPlugin`, listed in provisioning/registry.py):
  provisioning/azure/ (the Azure SDKs), provisioning/local.py (Ray processes on 127.0.0.1).
- `StateStore` and its errors: autoscaler/adapters/table_store.py (Azure Table Storage) and, for tests,
  autoscaler/adapters/entity_store.py (`InMemoryStateStore`, the same rows in memory).
- `RayStateReader` (the head agent client) and its errors: autoscaler/adapters/head_agent.py (HTTP).
- `ReconcileQueue`: autoscaler/adapters/storage_queue.py (Azure Storage Queue, and an in-memory one for tests).

Contracts of a `CloudProvider` (every implementation passes tests/support/provider_contract.py):
- `list_instances` is ONE call to the cloud and returns every live instance of the cluster, found by tags.
  It is eventually consistent: an instance launched a moment ago may be missing for a while.
- `launch` starts an instance and returns without waiting for it to boot. It is idempotent by
  `request.request_id` / `request.instance_id`: calling it twice never creates two instances.
- `terminate` starts the deletion and returns. An instance that is already gone is success, not an error.
- `destroy_cluster` removes whatever the provider created for the cluster besides instances (networks...),
  once no instance is left; it is idempotent and reports what it removed.
Errors are the subclasses of `CloudError` below; never a bare SDK exception.

Contracts of a `StateStore` (tests/integration/test_state_contract.py runs them against both stores):
- Every update carries the ETag it read; a mismatch raises `ConflictError` and changes nothing.
- Inserting what exists raises `ConflictError`.
- Records come back with a fresh `etag`.
- Updating or deleting needs the record's etag; updating a row someone deleted raises `ConflictError`;
  deleting a row that is already gone succeeds.
- Text is never truncated: what does not fit one property is split over several; a cluster whose row
  would exceed one entity (1 MiB) raises `ConfigTooLargeError`.
- Events list newest first.
- `commit_instances` writes a cluster's instance rows together with the cluster's fence row in one
  transaction: all or nothing. Two commits from the same `read_instances` snapshot: exactly one succeeds.
- Retention: `prune_events` deletes a cluster's events older than a time or beyond its newest N;
  `purge_cluster_rows` deletes a cluster's instance rows (and fence) and events written before a time;
  `has_event_since` answers whether an event of a kind was written since a time. Each costs one partition read.
- Storage that does not answer (connection or read timeout, 5xx) raises `StorageUnavailableError`.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from autoscaler.model import (
    CloudInstance,
    ClusterRecord,
    Event,
    HeadInfo,
    InstanceRecord,
    LaunchRequest,
    RayState,
)

if TYPE_CHECKING:
    from autoscaler.config import (
        ClusterConfig,
        FieldAdjustment,
        FieldError,
        FieldErrors,
        NodeTypeConfig,
        ProviderConfig,
    )
    from autoscaler.settings import Settings
    from autoscaler.views import ReconcileMessage


# ====================================================================================================================
# The cloud
# ====================================================================================================================


class CloudError(Exception):
    """Base of every provider error. `retryable` says whether the same call may succeed later."""

    retryable: bool = True

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class CapacityError(CloudError):
    """No capacity for this size/zone/priority now (AllocationFailed, SkuNotAvailable, spot gone...).

    The planner marks the node type unavailable for `ttl_s` and falls back to another type.
    """

    def __init__(self, message: str, *, code: str = "", ttl_s: float = 3600.0) -> None:
        super().__init__(message, code=code)
        self.ttl_s = ttl_s


class QuotaError(CloudError):
    """The subscription's vCPU quota (regional, family or spot) would be exceeded."""

    def __init__(self, message: str, *, code: str = "", ttl_s: float = 3600.0) -> None:
        super().__init__(message, code=code)
        self.ttl_s = ttl_s


class ThrottledError(CloudError):
    """429: the cloud asks us to wait `retry_after_s` before the next call of this kind."""

    def __init__(self, message: str, *, code: str = "", retry_after_s: float = 0.0) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class TransientError(CloudError):
    """5xx, timeouts, resource locked by another operation: try again on a later tick."""


class InvalidRequestError(CloudError):
    """The cloud rejected the request itself (bad image, bad max price...): retrying will not help."""

    retryable = False


class NotFoundError(CloudError):
    """The instance or resource does not exist. `terminate` treats it as success."""

    retryable = False


@dataclass(frozen=True)
class DestroyReport:
    removed: tuple[str, ...] = ()  # resource ids or descriptions, in removal order
    remaining: tuple[str, ...] = ()  # what could not be removed yet (retry on the next tick)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        return not self.remaining


class CloudProvider(Protocol):
    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        """Every non-terminated instance of the cluster, in ONE cloud call."""
        ...

    def launch(self, request: LaunchRequest) -> None:
        """Start one instance; do not wait for it. Idempotent by request id."""
        ...

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        """Start deleting one instance; already gone is success."""
        ...

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        """Remove what the provider created besides instances. Called once no instance is left."""
        ...


@runtime_checkable
class LaunchesInBatches(Protocol):
    """Optional: a provider that launches and terminates many instances at once, within the cloud's write budget (Azure:
    parallel VM PUTs paced by Compute's remaining-budget headers; a scale-set node type grows by one capacity write and
    shrinks by one delete-instances call). The shell hands it every launch (and every terminate) of one tick.

    Each returns one outcome per item, in order: None when accepted, else the CloudError that `launch`/`terminate`
    would have raised for that item (ThrottledError for items not issued because the budget ran out)."""

    def launch_many(self, requests: Sequence[LaunchRequest]) -> list[CloudError | None]: ...

    def terminate_many(self, cluster_name: str, instance_ids: Sequence[str]) -> list[CloudError | None]: ...


@runtime_checkable
class RemembersHeadAddress(Protocol):
    """Optional: a provider that would otherwise pay a cloud read to learn the head's address (Azure: a NIC read)
    takes it from the cluster's stored state instead, so a fresh process (a new Functions instance) pays nothing."""

    def remember_address(self, cloud_instance_id: str, private_ip: str, public_ip: str = "") -> None: ...


# ====================================================================================================================
# One plugin per cloud (docs/adding-a-cloud.md)
# ====================================================================================================================


@dataclass(frozen=True)
class BuildContext:
    """What a plugin's factory gets besides the cluster config."""

    settings: Settings
    # A cloud credential, built on demand (the app leaves it to the plugin; tests hand in a fake one).
    credential_factory: Callable[[], Any] | None = None
    # The plugin's own extra options (the Azure plugin: `AzureSettings` fields, e.g. tests' loopback ARM endpoint).
    options: Mapping[str, Any] = field(default_factory=dict)


class NodePrices(Protocol):
    def __call__(self, node_type: NodeTypeConfig) -> tuple[float, str] | None:
        """A relative hourly price of one node of this type (only ratios between types matter) and where it came
        from, for the planner's reasons; None when this cloud cannot tell (the planner then prices its resources).
        A node type's own `cost` wins over this, and is never passed here."""
        ...


def _no_prices(node_type: NodeTypeConfig) -> tuple[float, str] | None:
    return None


@dataclass(frozen=True)
class NodeOffering:
    """What a node type launches as, for the unavailable-offerings cache: the cloud's instance size (Azure's vmSize)
    and whether its own priority is spot. Offerings that fail are avoided per (size, zone, priority)."""

    size: str
    spot: bool = False


def _offering_by_type_name(node_type_name: str, node_config: Mapping[str, Any]) -> NodeOffering:
    """A cloud without sizes or priorities: each node type is its own size, never spot."""
    return NodeOffering(size=node_type_name)


def _nothing_to_check(config: ClusterConfig, settings: Settings) -> list[FieldError]:
    return []


def _placed_as_given(config: ClusterConfig, clusters_group: str) -> tuple[ClusterConfig, list[FieldAdjustment]]:
    return config, []


def _no_rules(raw: Mapping[str, Any], errors: FieldErrors) -> None:
    return None


def _no_node_config_rules(node_config: Mapping[str, Any], path: str, errors: FieldErrors) -> None:
    return None


@dataclass(frozen=True)
class SshPolicy:
    """How a cloud's nodes are reached over SSH."""

    # A config without `auth.ssh_public_key` gets a generated key pair: its private key is returned once in the
    # create answer and stored nowhere (the service's `ssh_keygen` makes it).
    generates_key_pair: bool = False
    # What the create answer and the docs say about SSH to this cloud's nodes.
    summary: str = ""


@dataclass(frozen=True)
class ProviderPlugin:
    """Everything the control plane knows about one cloud, in one object (`provider.type` selects it).

    Registered in one place, provisioning/registry.py; the core finds a cluster's plugin by its `provider.type`
    (autoscaler/plugins.py) and never imports a plugin's module.
    """

    type: str  # the `provider.type` of its configs
    # The `provider` section: a subclass of autoscaler.config.ProviderConfig whose `type` is Literal[<type>].
    config_model: builtins.type[ProviderConfig]
    # What a config leaves out is filled from these, as Ray's `fillout_defaults` does from its defaults.yaml.
    defaults: Mapping[str, Any]
    # The provider for one cluster config; called once per (cluster, config) and kept (wiring.ProviderFactory).
    build: Callable[[ClusterConfig, BuildContext], CloudProvider]
    # Why this deployment can never build a provider for the config (the create answers 400 naming each field).
    check: Callable[[ClusterConfig, Settings], list[FieldError]] = _nothing_to_check
    # Rules on the raw `provider` section and on each node type's raw `node_config`, reported with the field errors.
    check_provider: Callable[[Mapping[str, Any], FieldErrors], None] = _no_rules
    check_node_config: Callable[[Mapping[str, Any], str, FieldErrors], None] = _no_node_config_rules
    # Keys of Ray's `provider` schema this cloud accepts and ignores (listed in `ignored_fields`, not errors).
    ignored_provider_fields: frozenset[str] = frozenset()
    # The config as this deployment runs it, and what was changed (the deployment's clusters group, e.g.).
    place: Callable[[ClusterConfig, str], tuple[ClusterConfig, list[FieldAdjustment]]] = _placed_as_given
    prices: NodePrices = _no_prices
    # The (size, spot) a node type launches as, from its name and `node_config` (raw or parsed: a mapping either way).
    offering: Callable[[str, Mapping[str, Any]], NodeOffering] = _offering_by_type_name
    ssh: SshPolicy = SshPolicy()
    # What GET /api/clusters/{name} adds to the head beyond the cloud's answer (the local token path, e.g.).
    head_info: Callable[[CloudProvider, str], HeadInfo] | None = None
    # Nodes run on the machine of the control plane: only where the deployment allows it (ALLOW_LOCAL_PROVIDER).
    runs_on_this_machine: bool = False


# ====================================================================================================================
# Cluster state
# ====================================================================================================================


class StateError(Exception):
    """Base of the store's errors."""


class ConflictError(StateError):
    """Someone else wrote first (ETag mismatch) or the row already exists. Ends the tick cleanly."""


class ConfigTooLargeError(StateError):
    """The config does not fit in one entity even when split (HTTP 413)."""


class StorageUnavailableError(StateError):
    """The storage service did not answer in time, or answered 5xx: nothing about the data, try again later (503)."""


@dataclass(frozen=True)
class InstanceSnapshot:
    """A cluster's instance rows and its fence's etag, read together (or what one commit wrote)."""

    records: tuple[InstanceRecord, ...]  # instance rows only, never the fence; in instance id order when read
    fence_etag: str  # "" when the cluster has no fence row yet (nothing was ever committed)


class StateStore(Protocol):
    def get_cluster(self, name: str) -> ClusterRecord | None: ...

    def list_clusters(self) -> list[ClusterRecord]: ...

    def insert_cluster(self, record: ClusterRecord) -> ClusterRecord: ...

    def update_cluster(self, record: ClusterRecord) -> ClusterRecord: ...

    def list_instances(self, cluster_name: str) -> list[InstanceRecord]: ...

    def insert_instance(self, record: InstanceRecord) -> InstanceRecord: ...

    def update_instance(self, record: InstanceRecord) -> InstanceRecord: ...

    def delete_instance(self, record: InstanceRecord) -> None: ...

    def read_instances(self, cluster_name: str) -> InstanceSnapshot:
        """Every instance row of the cluster and the fence etag to pass to `commit_instances`: one partition read."""
        ...

    def commit_instances(
        self, cluster_name: str, fence_etag: str, records: Sequence[InstanceRecord]
    ) -> InstanceSnapshot:
        """Insert the records whose etag is "" and replace the others if unchanged, guarded by the fence.

        The fence must still have `fence_etag` ("" = must not exist yet); otherwise, or when any replaced row changed
        or vanished, or any inserted row exists, `ConflictError` is raised and nothing is written. Returns the
        committed records with their new etags and the fence's new etag. Up to `MAX_RECORDS_PER_TRANSACTION`
        records (and 4 MiB) this is one atomic transaction; more are written as a chain of transactions, each
        carrying the fence, so a conflict can leave the earlier links written (a state a reader may see, never
        a mix with a racer's writes).
        """
        ...

    def append_event(self, event: Event) -> None: ...

    def list_events(self, cluster_name: str, limit: int = 50) -> list[Event]:
        """Newest first."""
        ...

    def has_event_since(self, cluster_name: str, kind: str, since: datetime) -> bool:
        """Whether the cluster has an event of `kind` at or after `since`."""
        ...

    def prune_events(self, cluster_name: str, *, older_than: datetime, keep_newest: int) -> int:
        """Delete the cluster's events from before `older_than` and those beyond its `keep_newest` newest; the count."""
        ...

    def purge_cluster_rows(self, cluster_name: str, *, before: datetime) -> int:
        """Delete the cluster's instance rows created before `before` (and its fence) and its events from before
        `before`; the count. The cluster row itself is the caller's (it keeps the generation, see service.py)."""
        ...


OutageClassifier = Callable[[BaseException], "str | None"]
"""Says whether an error raised by a storage SDK means "storage did not answer" (and why), or None when it does not."""

_outage_classifiers: list[OutageClassifier] = []
_classifiers_lock = threading.Lock()


def register_outage_classifier(classifier: OutageClassifier) -> None:
    """Called by a storage adapter when it is imported, so `storage_errors` knows its SDK's outage errors without
    the core importing that SDK. Registering the same classifier twice keeps one."""
    with _classifiers_lock:
        if classifier not in _outage_classifiers:
            _outage_classifiers.append(classifier)


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn an error that a registered classifier reads as "storage did not answer" (an SDK's connection or read
    failure, timeout, 5xx, throttling) into `StorageUnavailableError`; every other error passes unchanged."""
    try:
        yield
    except StorageUnavailableError:
        raise
    except Exception as error:
        for classify in tuple(_outage_classifiers):
            reason = classify(error)
            if reason is not None:
                raise StorageUnavailableError(reason[:500]) from error
        raise


# ====================================================================================================================
# The head agent
# ====================================================================================================================

DRAIN_REASONS = ("idle", "preemption")


class HeadAgentError(Exception):
    """Base of the two ways a call to the head agent gives no information about Ray."""


class HeadUnreachableError(HeadAgentError):
    """The head agent gave no usable answer: connection refused, timeout, 5xx or a malformed body."""


class HeadAuthError(HeadAgentError):
    """The head agent answered and refused the cluster token (401/403): a token, key or generation mix-up.

    Not a kind of `HeadUnreachableError`: the agent is up, and retrying with the same token cannot help."""


@dataclass(frozen=True)
class DrainResult:
    accepted: bool
    rejection_reason: str
    # False when Ray does not know the node (never joined, or long gone). The drain is then vacuously done,
    # as NotFound on terminate is success: there is nothing in Ray to drain, and `accepted` is True.
    node_known: bool = True


class RayStateReader(Protocol):
    def read_state(self, agent_url: str, token: str) -> RayState:
        """Ray's current view of the cluster. Raises HeadUnreachableError, or HeadAuthError on 401/403."""
        ...

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        """Ask Ray to drain one node; `reason` is "idle" (a busy node refuses) or "preemption" (never refused).

        An empty `ray_node_id` (the instance never joined Ray) or a node Ray does not know is vacuously drained:
        `DrainResult(accepted=True, node_known=False)`. Raises HeadUnreachableError, or HeadAuthError on 401/403;
        ValueError for a reason outside DRAIN_REASONS.
        """
        ...


# ====================================================================================================================
# The reconcile queue
# ====================================================================================================================


class ReconcileQueue(Protocol):
    def send(self, message: ReconcileMessage, *, delay_s: int = 0) -> None:
        """Enqueue; with `delay_s` the message becomes visible only after that many seconds. Raises
        `StorageUnavailableError` when the queue service does not answer in time."""
        ...
