"""Use cases behind the triggers: create / get / list / destroy / request-reconcile / tick / poison.

Handlers in function_app.py parse input and call one method here. The use cases speak the domain: their errors
(below) say what went wrong, with no HTTP status; function_app.py alone answers them as problem+json. What differs
by cloud (placement, whether it may run here, SSH) is asked of the cluster's plugin (autoscaler/plugins.py).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, Protocol, TypeVar

from pydantic import ValidationError

from autoscaler.config import (
    ClusterConfig,
    ConfigError,
    FieldAdjustment,
    FieldError,
    ParsedConfig,
    is_valid_cluster_name,
    parse_cluster_config,
)
from autoscaler.model import ClusterRecord, ClusterStatus, Event, InstanceRecord
from autoscaler.plugins import ProviderRegistry
from autoscaler.plugins import providers as default_providers
from autoscaler.ports import (
    ConfigTooLargeError,
    ConflictError,
    InstanceSnapshot,
    ProviderPlugin,
    ReconcileQueue,
    SshPolicy,
    StateStore,
    StorageUnavailableError,
    storage_errors,
)
from autoscaler.reconcile import ReconcileDeps, TickResult, describe_error, pending_bundles_of, reconcile
from autoscaler.timeline import build_series, render_svg
from autoscaler.tokens import bearer_token, tokens_match
from autoscaler.views import (
    AcceptedResponse,
    AdjustedField,
    ClusterList,
    ClusterSummary,
    ClusterView,
    CreateResponse,
    ReconcileMessage,
    ReconcileReason,
    UpdateResponse,
    WakeRequest,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
HTTP_RETRIES_ON_CONFLICT = 5  # HTTP writes race with ticks; they re-read and retry a few times
# A tick that leaves something in flight (a launch, a drain, a terminate, a cluster being created or deleted) asks for
# another look a few seconds later, so those progress at the pace of the cloud rather than of the timer. Settled
# clusters cost nothing extra. Duplicates are harmless: ticks are level-triggered.
FOLLOW_UP_DELAY_S = 3
MAX_FOLLOW_UPS = 60
DEFAULT_TIMELINE_HOURS = 6.0
MIN_TIMELINE_HOURS, MAX_TIMELINE_HOURS = 0.05, 168.0  # events are kept 7 days at most (Retention.event_max_age)
STORAGE_RETRY_AFTER_S = 10  # the Retry-After of a 503: outages seen last tens of seconds; a client should come back


class ServiceError(Exception):
    """A use case refused a request or could not serve it, said in the domain's terms: what went wrong and, in
    `errors`, each failing field. Only the entry point (function_app.py) turns these into HTTP answers."""

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class InvalidRequest(ServiceError):
    """The request itself is wrong (a config that does not validate, one this deployment cannot run, a bad body)."""


class Unauthorized(ServiceError):
    """The request carries no credentials."""


class Forbidden(ServiceError):
    """The credentials do not allow this (a wrong token, or another cluster's)."""


class NotFound(ServiceError):
    """What the request names does not exist."""


class ClusterNotFound(NotFound):
    """No cluster of that name (or a name no cluster can have)."""


class Conflict(ServiceError):
    """The request contradicts the current state, or the state kept changing under it."""


class ClusterConflict(Conflict):
    """Another config under the same name, or a cluster that kept changing while the request was retried."""


class PayloadTooLarge(ServiceError):
    """The config, or the row it would make, is larger than the limit."""


class StorageUnavailable(ServiceError):
    """Table or Queue storage did not answer in time: nothing is wrong with the request, try again later."""

    retry_after_s = STORAGE_RETRY_AFTER_S  # when to come back


P = ParamSpec("P")
R = TypeVar("R")


def _storage_guarded(method: Callable[P, R]) -> Callable[P, R]:
    """An HTTP use case whose store or queue does not answer raises `StorageUnavailable` (503 + Retry-After)."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with storage_errors():  # a queue that raises the SDK's own errors is storage too
                return method(*args, **kwargs)
        except StorageUnavailableError as error:
            raise StorageUnavailable(f"cluster state is unavailable right now: {error}") from error

    return guarded


class ProviderCheck(Protocol):
    def __call__(self, config: ClusterConfig) -> list[FieldError]:
        """Why this deployment can never build a provider for `config` (one error per field); [] when it can."""
        ...


class SshKeyGenerator(Protocol):
    def __call__(self) -> tuple[str, str]:
        """(public key in OpenSSH format, private key in OpenSSH PEM)."""
        ...


@dataclass(frozen=True)
class Created:
    response: CreateResponse


@dataclass(frozen=True)
class Retention:
    """How long what the control plane writes is kept (app settings in wiring.py; docs/deploy.md lists them)."""

    event_max_age: timedelta = timedelta(days=7)
    events_per_cluster: int = 500
    deleted_cluster_rows: timedelta = timedelta(hours=24)  # a deleted cluster's rows stay viewable this long
    poison_event_window: timedelta = timedelta(hours=1)  # at most one `poison` event per cluster per window
    # Housekeeping rides on the timer's fan-out, a few clusters per run, each at most once per interval: its cost
    # is a few partition reads per run, never a scan of everything every 15 s.
    prune_interval: timedelta = timedelta(hours=1)
    clusters_per_timer_run: int = 5


class GuardedStore:
    """Any `StateStore`, whose "storage did not answer" errors arrive as `StorageUnavailableError` whatever the
    backend raised (an SDK's ServiceRequestError from a store that does not translate them itself, say: the storage
    adapters register how to recognise their SDK's outages, `autoscaler.ports.register_outage_classifier`). The
    service wraps its store in one, so the reconcile shell and the HTTP use cases tell an outage from a failing
    cluster."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner

    def get_cluster(self, name: str) -> ClusterRecord | None:
        with storage_errors():
            return self.inner.get_cluster(name)

    def list_clusters(self) -> list[ClusterRecord]:
        with storage_errors():
            return self.inner.list_clusters()

    def insert_cluster(self, record: ClusterRecord) -> ClusterRecord:
        with storage_errors():
            return self.inner.insert_cluster(record)

    def update_cluster(self, record: ClusterRecord) -> ClusterRecord:
        with storage_errors():
            return self.inner.update_cluster(record)

    def list_instances(self, cluster_name: str) -> list[InstanceRecord]:
        with storage_errors():
            return self.inner.list_instances(cluster_name)

    def insert_instance(self, record: InstanceRecord) -> InstanceRecord:
        with storage_errors():
            return self.inner.insert_instance(record)

    def update_instance(self, record: InstanceRecord) -> InstanceRecord:
        with storage_errors():
            return self.inner.update_instance(record)

    def delete_instance(self, record: InstanceRecord) -> None:
        with storage_errors():
            self.inner.delete_instance(record)

    def read_instances(self, cluster_name: str) -> InstanceSnapshot:
        with storage_errors():
            return self.inner.read_instances(cluster_name)

    def commit_instances(
        self, cluster_name: str, fence_etag: str, records: Sequence[InstanceRecord]
    ) -> InstanceSnapshot:
        with storage_errors():
            return self.inner.commit_instances(cluster_name, fence_etag, records)

    def append_event(self, event: Event) -> None:
        with storage_errors():
            self.inner.append_event(event)

    def list_events(self, cluster_name: str, limit: int = 50) -> list[Event]:
        with storage_errors():
            return self.inner.list_events(cluster_name, limit)

    def has_event_since(self, cluster_name: str, kind: str, since: datetime) -> bool:
        with storage_errors():
            return self.inner.has_event_since(cluster_name, kind, since)

    def prune_events(self, cluster_name: str, *, older_than: datetime, keep_newest: int) -> int:
        with storage_errors():
            return self.inner.prune_events(cluster_name, older_than=older_than, keep_newest=keep_newest)

    def purge_cluster_rows(self, cluster_name: str, *, before: datetime) -> int:
        with storage_errors():
            return self.inner.purge_cluster_rows(cluster_name, before=before)


class Service:
    def __init__(
        self,
        *,
        deps: ReconcileDeps,
        queue: ReconcileQueue,
        allow_local_provider: bool,
        ssh_keygen: SshKeyGenerator | None = None,
        clusters_resource_group: str = "",
        api_base_path: str = "/api",
        provider_check: ProviderCheck | None = None,
        retention: Retention | None = None,
        providers: ProviderRegistry | None = None,
    ) -> None:
        # The store as the service sees it: an outage is StorageUnavailableError whatever the backend raises.
        self.store: StateStore = GuardedStore(deps.store)
        deps = replace(deps, store=self.store)
        self.deps = deps
        self.retention = retention or Retention()
        self._events_pruned_at: dict[str, datetime] = {}  # per process: a new one prunes again, which is harmless
        # Asked at create time, so a cluster whose every tick would fail is refused with 400 instead of accepted.
        self.provider_check = provider_check
        # Each cloud's plugin: where this deployment places its clusters, whether it may run here, its SSH policy.
        self.providers = providers or default_providers()
        self.queue = queue
        self.allow_local_provider = allow_local_provider
        self.ssh_keygen = ssh_keygen
        self.clusters_resource_group = clusters_resource_group
        self.api_base_path = api_base_path
        self.clock: Callable[[], datetime] = deps.clock

    # -- create -------------------------------------------------------------------------------------------------------

    @_storage_guarded
    def create_cluster(self, body: bytes, content_type: str | None) -> CreateResponse:
        parsed, config, adjustments, plugin = self._accepted_config(body, content_type)
        submitted_hash = config.config_hash()
        for _ in range(HTTP_RETRIES_ON_CONFLICT):
            existing = self.store.get_cluster(config.cluster_name)
            if existing is not None and existing.status != ClusterStatus.DELETED:
                if not config.is_same_config(existing.config_hash):
                    raise ClusterConflict(
                        f"a cluster named {config.cluster_name!r} exists with another config; "
                        "destroy it first or choose another cluster_name",
                        [FieldError(path="cluster_name", message="already used by a cluster with another config")],
                    )
                return self._created(existing, created=False, private_key=None, adjustments=adjustments)
            stored_config, private_key = self._with_ssh_key(config, plugin.ssh)
            now = self.clock()
            record = ClusterRecord(
                name=config.cluster_name,
                status=ClusterStatus.CREATING,
                config_json=stored_config.to_json(),
                config_hash=submitted_hash,
                generation=(existing.generation + 1) if existing else 1,
                created_at=now,
                updated_at=now,
                ignored_fields=parsed.ignored_fields,
                etag=existing.etag if existing else "",
            )
            try:
                saved = self.store.update_cluster(record) if existing else self.store.insert_cluster(record)
            except ConflictError:
                continue  # someone created or changed it meanwhile: look again
            except ConfigTooLargeError as error:
                raise PayloadTooLarge(str(error)) from error
            self.store.append_event(
                Event(saved.name, now, "status", f"cluster accepted (generation {saved.generation})")
            )
            for adjustment in adjustments:
                self.store.append_event(Event(saved.name, now, "adjusted", str(adjustment)))
            self._enqueue(saved.name, "create")
            return self._created(saved, created=True, private_key=private_key, adjustments=adjustments)
        raise ClusterConflict(f"cluster {config.cluster_name!r} keeps changing; try again")

    def _accepted_config(
        self, body: bytes, content_type: str | None
    ) -> tuple[ParsedConfig, ClusterConfig, list[FieldAdjustment], ProviderPlugin]:
        """The config of a create or an update as this deployment runs it, or the domain error that refuses it."""
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the config is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            parsed = parse_cluster_config(body, content_type)
        except ConfigError as error:
            raise InvalidRequest("the cluster config is invalid", error.errors) from error
        plugin = self.providers[parsed.config.provider.type]  # parsing found it: the type is a registered one
        config, adjustments = plugin.place(parsed.config, self.clusters_resource_group)
        if plugin.runs_on_this_machine and not self.allow_local_provider:
            kind = plugin.type
            raise InvalidRequest(
                f"this deployment does not run {kind} clusters",
                [FieldError(path="provider.type", message=f"{kind!r} is only allowed by the local host")],
            )
        provider_errors = self.provider_check(config) if self.provider_check is not None else []
        if provider_errors:
            raise InvalidRequest("this deployment cannot run this cluster's provider", provider_errors)
        return parsed, config, adjustments, plugin

    # -- update -------------------------------------------------------------------------------------------------------

    @_storage_guarded
    def update_cluster(self, name: str, body: bytes, content_type: str | None) -> UpdateResponse:  # noqa: C901 -- every refusal of an update is one early return with its own problem, in order
        """Apply a new config to an existing cluster: limits and node types take effect on the next tick, and the
        planner replaces workers whose node hash changed once they are idle (its Outdated rule). A change of the head
        (its type, or what its VM is made of) is refused: the head cannot be replaced without stopping the cluster."""
        parsed, config, adjustments, plugin = self._accepted_config(body, content_type)
        if config.cluster_name != name:
            raise InvalidRequest(
                f"the config names cluster {config.cluster_name!r}, not {name!r}",
                [FieldError(path="cluster_name", message=f"must be {name!r}, the cluster this request updates")],
            )
        submitted_hash = config.config_hash()
        for _ in range(HTTP_RETRIES_ON_CONFLICT):
            record = self._require(name)
            if record.status in (ClusterStatus.DELETING, ClusterStatus.DELETED):
                raise Conflict(f"cluster {name!r} is {record.status}: create it again instead of updating it")
            answer = functools.partial(
                UpdateResponse,
                name=name,
                ignored_fields=list(parsed.ignored_fields),
                adjusted_fields=[
                    AdjustedField(path=a.path, given=a.given, used=a.used, reason=a.reason) for a in adjustments
                ],
            )
            if config.is_same_config(record.config_hash):
                return answer(status=record.status, detail="nothing to do: the cluster already has this config")
            try:
                stored = ClusterConfig.from_json(record.config_json)
            except ConfigError as error:
                raise Conflict(f"cluster {name!r} has a stored config that does not read: {error}") from error
            if plugin.ssh.generates_key_pair and not config.auth.ssh_public_key and stored.auth.ssh_public_key:
                # The key generated at create time stays: a config without one means "the one you made for me".
                config = config.model_copy(
                    update={"auth": config.auth.model_copy(update={"ssh_public_key": stored.auth.ssh_public_key})}
                )
            head_problem = head_change(stored, config)
            if head_problem is not None:
                raise Conflict(
                    f"cannot update cluster {name!r}: {head_problem.path} {head_problem.message}. The head is not "
                    "replaced while the cluster lives: keep the head as it is, or destroy the cluster and create it "
                    "again with the new head",
                    [head_problem],
                )
            now = self.clock()
            try:
                saved = self.store.update_cluster(
                    replace(
                        record,
                        config_json=config.to_json(),
                        config_hash=submitted_hash,
                        ignored_fields=parsed.ignored_fields,
                        # New work: tried at once, not after a backoff earned by the old config.
                        backoff_until=None,
                        updated_at=now,
                    )
                )
            except ConflictError:
                continue  # a tick or another request wrote the row meanwhile: look again
            except ConfigTooLargeError as error:
                raise PayloadTooLarge(str(error)) from error
            summary = describe_update(stored, config)
            self.store.append_event(Event(name, now, "config", f"config updated: {summary}"))
            for adjustment in adjustments:
                self.store.append_event(Event(name, now, "adjusted", str(adjustment)))
            if saved.status.is_active:
                self._enqueue(name, "manual", "config updated")
            return answer(status=saved.status, detail=f"config updated; applied on the next tick: {summary}")
        raise ClusterConflict(f"cluster {name!r} keeps changing; try again")

    def _with_ssh_key(self, config: ClusterConfig, ssh: SshPolicy) -> tuple[ClusterConfig, str | None]:
        """A config without a public key, of a cloud whose SSH policy says so (Azure's), gets a generated pair: the
        private key is returned once, kept nowhere."""
        if not ssh.generates_key_pair or config.auth.ssh_public_key or self.ssh_keygen is None:
            return config, None
        public_key, private_key = self.ssh_keygen()
        return config.model_copy(update={"auth": config.auth.model_copy(update={"ssh_public_key": public_key})}), (
            private_key
        )

    def _created(
        self,
        record: ClusterRecord,
        *,
        created: bool,
        private_key: str | None,
        adjustments: list[FieldAdjustment],
    ) -> CreateResponse:
        return CreateResponse(
            name=record.name,
            status=record.status,
            created=created,
            location=self.location(record.name),
            ignored_fields=list(record.ignored_fields),
            adjusted_fields=[
                AdjustedField(path=a.path, given=a.given, used=a.used, reason=a.reason) for a in adjustments
            ],
            ssh_private_key=private_key,
        )

    def location(self, name: str) -> str:
        return f"{self.api_base_path}/clusters/{name}"

    # -- read ---------------------------------------------------------------------------------------------------------

    @_storage_guarded
    def get_cluster(self, name: str, *, events: int = 20) -> ClusterView:
        record = self._require(name)
        provider = _provider_type_of(record.config_json)
        instances = self.store.list_instances(name)
        return ClusterView.build(record, provider, instances, self.store.list_events(name, limit=events))

    @_storage_guarded
    def timeline_svg(self, name: str, *, hours: float = DEFAULT_TIMELINE_HOURS) -> str:
        """The cluster's nodes by status and pending demand over the last `hours`, as an SVG document."""
        if not MIN_TIMELINE_HOURS <= hours <= MAX_TIMELINE_HOURS:
            raise InvalidRequest(
                "the timeline's window is out of range",
                [FieldError("hours", f"must be from {MIN_TIMELINE_HOURS:g} to {MAX_TIMELINE_HOURS:g}")],
            )
        record = self._require(name)
        end = self.clock()
        start = end - timedelta(hours=hours)
        events = self.store.list_events(name, limit=self.retention.events_per_cluster)
        instances = self.store.list_instances(name)
        pending_now = pending_bundles_of(record.last_observation) if record.status.is_active else 0
        series = build_series(events, instances, start=start, end=end, pending_now=pending_now)
        return render_svg(name, series, start=start, end=end)

    @_storage_guarded
    def list_clusters(self) -> ClusterList:
        records = sorted((r for r in self.store.list_clusters() if r.purged_at is None), key=lambda r: r.name)
        return ClusterList(
            clusters=[
                ClusterSummary(name=r.name, status=r.status, created_at=r.created_at, updated_at=r.updated_at)
                for r in records
            ]
        )

    def _require(self, name: str) -> ClusterRecord:
        record = self.store.get_cluster(name)
        if record is None or record.purged_at is not None:  # a tombstone is a cluster that is gone
            raise ClusterNotFound(f"no cluster named {name!r}")
        return record

    # -- start (after autostop) ---------------------------------------------------------------------------------------

    @_storage_guarded
    def start_cluster(self, name: str) -> AcceptedResponse:
        """Bring a stopped cluster back: its head is launched again (creating -> running), then its min_workers."""
        for _ in range(HTTP_RETRIES_ON_CONFLICT):
            record = self._require(name)
            if record.status in (ClusterStatus.CREATING, ClusterStatus.RUNNING):
                return AcceptedResponse(
                    name=name, status=record.status, detail=f"nothing to do: already {record.status}"
                )
            if record.status == ClusterStatus.STOPPING:
                raise Conflict(f"cluster {name!r} is still stopping; start it once it is stopped (in a minute or so)")
            if record.status != ClusterStatus.STOPPED:
                raise Conflict(f"cluster {name!r} is {record.status}, not stopped: only a stopped cluster is started")
            now = self.clock()
            try:
                saved = self.store.update_cluster(
                    replace(
                        record,
                        status=ClusterStatus.CREATING,
                        status_reason="start requested: launching the head again",
                        idle_since=None,
                        backoff_until=None,
                        updated_at=now,
                    )
                )
            except ConflictError:
                continue
            self.store.append_event(Event(name, now, "status", "start requested: launching the head again"))
            self._enqueue(name, "create")
            return AcceptedResponse(name=name, status=saved.status, detail="starting: the head is launched again")
        raise ClusterConflict(f"cluster {name!r} keeps changing; try again")

    # -- destroy ------------------------------------------------------------------------------------------------------

    @_storage_guarded
    def destroy_cluster(self, name: str) -> AcceptedResponse:
        for _ in range(HTTP_RETRIES_ON_CONFLICT):
            record = self._require(name)
            if record.status in (ClusterStatus.DELETING, ClusterStatus.DELETED):
                return AcceptedResponse(name=name, status=record.status, detail="already being deleted")
            try:
                saved = self.store.update_cluster(
                    replace(
                        record,
                        status=ClusterStatus.DELETING,
                        status_reason="destroy requested",
                        # The destroy is new work: it is tried at once, not after a backoff earned by other ticks.
                        backoff_until=None,
                        updated_at=self.clock(),
                    )
                )
            except ConflictError:
                continue
            self.store.append_event(Event(name, self.clock(), "status", "destroy requested"))
            if not saved.cloud_touched:
                # Nothing exists in the cloud: the tick deletes it from storage alone, so do it now.
                result = self.tick(ReconcileMessage(cluster_name=name, reason="destroy"))
                if result.outcome == "reconciled" and "cluster deleted" in result.actions:
                    return AcceptedResponse(name=name, status=ClusterStatus.DELETED, detail=result.detail)
            self._enqueue(name, "destroy")
            return AcceptedResponse(name=name, status=saved.status, detail="instances are being terminated")
        raise ClusterConflict(f"cluster {name!r} keeps changing; try again")

    # -- reconcile ----------------------------------------------------------------------------------------------------

    @_storage_guarded
    def request_reconcile(
        self, name: str, authorization: str | None, reason: str = "", *, body: bytes | None = None
    ) -> AcceptedResponse:
        """A wake-up from the cluster's head agent (or an operator holding the cluster token).

        The cluster token only lets its holder wake its own cluster: nothing else is reachable with it. The token is
        checked first (401 without one, 403 for a wrong one), then the `body` when given (400 naming the field), so
        a caller without the token learns nothing from the body check.
        """
        presented = bearer_token(authorization)
        if presented is None:
            raise Unauthorized("send Authorization: Bearer <cluster token>")
        record = self.store.get_cluster(name)
        if record is not None and record.purged_at is not None:
            record = None
        expected = self.deps.token_for(name, record.generation) if record else ""
        if record is None or not tokens_match(presented, expected):
            # Unknown cluster and wrong token answer alike, so the endpoint does not reveal which names exist.
            raise Forbidden("the token does not belong to this cluster")
        if body is not None:
            reason = _wake_reason(body)
        if not record.status.is_active:
            return AcceptedResponse(name=name, status=record.status, detail="cluster is not active")
        # Run the tick right here: going through the queue would add the trigger's polling delay (up to
        # maxPollingInterval) to every scale-up. Ticks are fenced, so one running beside a queued tick is harmless;
        # if this one could not run, the queue takes over.
        result = self.tick(ReconcileMessage(cluster_name=name, reason="wake", detail=reason[:500]))
        if result.outcome in ("storage-unavailable", "error"):
            self._enqueue(name, "wake", reason)
            return AcceptedResponse(name=name, status=record.status, detail="reconcile queued")
        return AcceptedResponse(name=name, status=record.status, detail=f"reconciled: {result.outcome}")

    def enqueue_active(self) -> int:
        """The timer's fan-out: one message per active cluster, none for a cluster backing off (its tick would be a
        no-op; the first timer after its backoff ends queues it again)."""
        now = self.clock()
        records = self.store.list_clusters()
        count = 0
        for record in records:
            backing_off = record.backoff_until is not None and now < record.backoff_until
            if record.status.is_active and not backing_off:
                self._enqueue(record.name, "timer")
                count += 1
        try:
            self.housekeep(records, now)
        except Exception:
            # The messages are out; what housekeeping did not get to, a later run does.
            log.exception("timer: housekeeping failed")
        return count

    def housekeep(self, records: list[ClusterRecord], now: datetime) -> None:
        """Retention, a few clusters per timer run: deleted clusters' rows after `deleted_cluster_rows`, then events
        beyond `event_max_age` / `events_per_cluster`, each cluster at most once per `prune_interval`."""
        budget = self.retention.clusters_per_timer_run
        expired = [
            r
            for r in records
            if r.status == ClusterStatus.DELETED
            and r.purged_at is None
            and now - r.updated_at >= self.retention.deleted_cluster_rows
        ]
        for record in expired[:budget]:
            self._purge(record)
        budget -= min(budget, len(expired))
        expired_names = {r.name for r in expired}  # their events go with their purge
        never = datetime.min.replace(tzinfo=UTC)
        due = sorted(
            (self._events_pruned_at.get(r.name, never), r.name)
            for r in records
            if r.purged_at is None
            and r.name not in expired_names
            and now - self._events_pruned_at.get(r.name, never) >= self.retention.prune_interval
        )
        for _, name in due[:budget]:
            pruned = self.store.prune_events(
                name, older_than=now - self.retention.event_max_age, keep_newest=self.retention.events_per_cluster
            )
            self._events_pruned_at[name] = now
            if pruned:
                log.info("cluster %s: %d old event(s) pruned", name, pruned)

    def _purge(self, listed: ClusterRecord) -> None:
        """Remove a deleted cluster's instance rows and events, and cut its row down to a tombstone.

        The row is kept (name, generation, times), not deleted: a new cluster of the same name must get the next
        generation, hence a token no earlier cluster had. Rows are removed only if written before `before`, and the
        tombstone is written with the row's etag, so a cluster re-created meanwhile loses nothing and stays as is.
        """
        before = self.clock()
        current = self.store.get_cluster(listed.name)
        if current is None or current.etag != listed.etag:
            return  # changed since the list (re-created?): not this run
        removed = self.store.purge_cluster_rows(listed.name, before=before)
        tombstone = replace(
            ClusterRecord(
                name=current.name,
                status=ClusterStatus.DELETED,
                config_json="",
                config_hash="",
                generation=current.generation,
                created_at=current.created_at,
                updated_at=current.updated_at,
                status_reason="rows removed after the retention period",
                cloud_touched=current.cloud_touched,
                purged_at=before,
            ),
            etag=current.etag,
        )
        try:
            self.store.update_cluster(tombstone)
        except ConflictError:
            return
        log.info("cluster %s: deleted %s ago, %d row(s) removed", listed.name, before - current.updated_at, removed)

    def tick(self, message: ReconcileMessage) -> TickResult:
        """One reconcile. Never raises: a failure of the cluster is recorded on it by `reconcile`, and a message
        retried by the queue could only fail again (then be poisoned) while the timer brings the next tick anyway."""
        try:
            result = reconcile(message.cluster_name, self.deps)
        except StorageUnavailableError as error:
            log.warning("reconcile %s (%s): storage unavailable: %s", message.cluster_name, message.reason, error)
            return TickResult(message.cluster_name, "storage-unavailable", detail=str(error))
        except Exception as error:
            # Only what `reconcile` cannot record on the cluster (e.g. its row does not decode) gets here.
            log.exception("reconcile %s (%s): failed before it could be recorded", message.cluster_name, message.reason)
            return TickResult(message.cluster_name, "error", detail=describe_error(error))
        # The timer starts no chain (it comes back by itself); a chain ends when the cluster settles or after
        # MAX_FOLLOW_UPS, so chains never pile up.
        if (
            result.outcome == "reconciled"
            and not result.settled
            and message.reason != "timer"
            and message.follow_ups < MAX_FOLLOW_UPS
        ):
            follow_up = ReconcileMessage(
                cluster_name=message.cluster_name,
                reason="follow-up",
                enqueued_at=self.clock(),
                detail="; ".join(result.actions)[:500],
                follow_ups=message.follow_ups + 1,
            )
            try:
                with storage_errors():
                    self.queue.send(follow_up, delay_s=FOLLOW_UP_DELAY_S)
            except StorageUnavailableError as error:
                # The tick's work is saved; without its follow-up, the timer's next tick carries on.
                log.warning("reconcile %s: follow-up not queued: %s", message.cluster_name, error)
        log.info(
            "reconcile %s (%s): %s %s",
            message.cluster_name,
            message.reason,
            result.outcome,
            "; ".join(result.actions) or (result.plan.reasons()[:1] if result.plan else ""),
        )
        return result

    def record_poison(self, raw_body: str) -> None:
        """A reconcile message that failed `maxDequeueCount` times: kept as a cluster event, never silently lost.

        The message may be malformed (that is often why it failed), so only its cluster name is relied on.
        """
        name = _cluster_name_of(raw_body)
        text = f"a reconcile message failed maxDequeueCount times and went to the poison queue: {raw_body[:500]}"
        log.error("cluster %s: %s", name or "?", text)
        record = self.store.get_cluster(name) if name else None
        if record is None or record.purged_at is not None:
            return
        now = self.clock()
        window = self.retention.poison_event_window
        # Capped: a storm of poisoned messages is one event per window (the rest are in the log), not a flood.
        if self.store.has_event_since(name, "poison", now - window):
            return
        self.store.append_event(Event(name, now, "poison", f"{text} (more within {window} are only logged)"))

    def _enqueue(self, name: str, reason: ReconcileReason, detail: str = "", *, delay_s: int = 0) -> None:
        message = ReconcileMessage(cluster_name=name, reason=reason, enqueued_at=self.clock(), detail=detail[:500])
        self.queue.send(message, delay_s=delay_s)


def head_change(old: ClusterConfig, new: ClusterConfig) -> FieldError | None:
    """What a new config changes of the head (the field and why it matters); None when the head stays as it is."""
    if old.head_node_type != new.head_node_type:
        return FieldError(
            "head_node_type", f"changes from {old.head_node_type!r} to {new.head_node_type!r}: the head would change"
        )
    head = new.head_node_type
    if old.node_hash(head, is_head=True) == new.node_hash(head, is_head=True):
        return None
    before, after = old.node_shape(head, is_head=True), new.node_shape(head, is_head=True)
    changed = sorted(key for key in after if before.get(key) != after.get(key)) or ["node_config"]
    paths = {
        "resources": f"available_node_types.{head}.resources",
        "labels": f"available_node_types.{head}.labels",
        "node_config": f"available_node_types.{head}.node_config",
        "commands": "head_setup_commands",
        "auth": "auth",
        "provider": "provider",
    }
    names = {
        "commands": "the head's commands (initialization, setup, head setup, head start_ray)",
    }
    what = ", ".join(names.get(key, paths.get(key, key)) for key in changed)
    return FieldError(paths.get(changed[0], changed[0]), f"changes what the head VM is made of ({what})")


def describe_update(old: ClusterConfig, new: ClusterConfig) -> str:
    """What a config update changes, in one line (the event and the answer say it)."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    changed = [key for key in sorted(set(before) | set(after)) if key != "available_node_types"]
    changed = [key for key in changed if before.get(key) != after.get(key)]
    types_before, types_after = before.get("available_node_types", {}), after.get("available_node_types", {})
    added = sorted(set(types_after) - set(types_before))
    removed = sorted(set(types_before) - set(types_after))
    modified = sorted(k for k in set(types_before) & set(types_after) if types_before[k] != types_after[k])
    old_hashes, new_hashes = old.worker_node_hashes(), new.worker_node_hashes()
    replaced = sorted(k for k in set(old_hashes) & set(new_hashes) if old_hashes[k] != new_hashes[k])
    parts = [f"changed {', '.join(changed)}"] if changed else []
    parts += [f"node types added: {', '.join(added)}"] if added else []
    parts += [f"node types removed (their nodes go once idle): {', '.join(removed)}"] if removed else []
    parts += [f"node types changed: {', '.join(modified)}"] if modified else []
    parts += [f"workers of {', '.join(replaced)} are replaced once idle"] if replaced else []
    return "; ".join(parts) or "no change that affects the cluster"


def _provider_type_of(config_json: str) -> str:
    """The stored config's provider type, or "" when it does not read: the status page must show such a cluster
    (and why its ticks fail), not fail with it."""
    try:
        provider = json.loads(config_json).get("provider", {})
        return str(provider.get("type", "")) if isinstance(provider, dict) else ""
    except (ValueError, AttributeError):
        return ""


def _wake_reason(body: bytes) -> str:
    """The reason of a wake-up body (`{"reason": "..."}`, or empty); InvalidRequest naming the failing field."""
    if not body.strip():
        return ""
    try:
        return WakeRequest.model_validate_json(body).reason
    except ValidationError as error:
        errors = [
            FieldError(path=".".join(str(part) for part in problem["loc"]), message=problem["msg"])
            for problem in error.errors()
        ]
        raise InvalidRequest('the body must be {"reason": "..."}', errors) from error


def _cluster_name_of(raw_body: str) -> str:
    try:
        body = json.loads(raw_body)
    except ValueError:
        return ""
    name = body.get("cluster_name") if isinstance(body, dict) else None
    return name if isinstance(name, str) and is_valid_cluster_name(name) else ""
