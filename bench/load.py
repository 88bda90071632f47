"""Load: 200 clusters reconciled by the timer path on Azurite, and concurrent API traffic over the local host's HTTP.

Part 1, the timer path. 200 clusters are created through `Service.create_cluster`, on a fake cloud (the simulated
cloud and Ray of tests/support/fault_injection.py: it keeps the provider contract, boots VMs in simulated seconds
and packs each cluster's demand on its workers). Then ROUNDS timer periods of 15 simulated seconds: each starts with
what the timer function does (`Service.enqueue_active`), then the queue trigger's work: every visible message is
ticked (`Service.tick`) by a pool of WORKERS threads (host.json batchSize), in sub-steps of 3 s so follow-ups run at
their pace. Table operations are counted per HTTP request by a counting transport under the Table SDK (one batch
transaction is one operation), per tick on the tick's thread. A tick is late when it finishes more than 15 s (real
time) after its timer fired, i.e. after the next timer; a round's cluster without a timer tick is a dropped tick.

Part 2, the API. The real function app (function_app.py) is served by the local host (local/) on a free loopback
port, with its queue trigger and timer on Azurite, the service wired to the same fake cloud. Client threads send a
bounded mix of parallel creates (each cluster POSTed several times at once), GETs, lists and DELETEs (each sent
twice at once), with a time limit; then the clusters must settle: every deleted one `deleted` with nothing left in
the cloud, every other one present exactly once (one `created: true`, generation 1). Zero 5xx, zero lost or
doubled clusters.

Run from the repository root: `.venv/bin/python bench/load.py [--clusters 200] [--rounds 8]`. The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import requests
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from azure.data.tables import TableServiceClient

from autoscaler.queueing import StorageReconcileQueue
from autoscaler.reconcile import ReconcileDeps, TickResult
from autoscaler.service import Service
from autoscaler.settings import RECONCILE_QUEUE
from autoscaler.state import TableStateStore
from autoscaler.views import ReconcileMessage
from tests.support.azurite import Azurite, start_azurite
from tests.support.fault_injection import Envelope, FaultInjector, FaultyQueue, SimClock, SimCloud, SimRay

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMER_PERIOD_S = 15
SUB_STEP_S = 3  # FOLLOW_UP_DELAY_S
API_THREADS = 16
API_DEADLINE_S = 120.0
SETTLE_DEADLINE_S = 120.0
REQUEST_TIMEOUT_S = 15.0


def cluster_yaml(name: str, max_workers: int) -> str:
    return (
        f"cluster_name: {name}\n"
        f"max_workers: {max_workers}\n"
        "idle_timeout_minutes: 1\n"
        "provider: {type: local}\n"
        "auth: {ssh_user: ray}\n"
        "available_node_types:\n"
        "  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}\n"
        f"  small: {{resources: {{CPU: 2}}, min_workers: 0, max_workers: {max_workers}, node_config: {{}}}}\n"
        "head_node_type: head\n"
    )


def token_for(name: str, generation: int) -> str:
    return f"load-token-{name}-{generation}"


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# ----------------------------------------------------------------------------------------------------------------------
# Counting Table operations: every HTTP request the Table SDK sends, attributed to the sending thread
# ----------------------------------------------------------------------------------------------------------------------


class CountingTransport(HttpTransport):  # type: ignore[type-arg]  # the SDK's request/response types are untyped here
    """Wraps the SDK's transport: counts each request (all, and on the current thread) by operation kind."""

    def __init__(self, inner: HttpTransport) -> None:  # type: ignore[type-arg]
        self.inner = inner
        self.totals: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()

    def send(self, request: Any, **kwargs: Any) -> Any:
        kind = operation_kind(request.method, request.url)
        with self._lock:
            self.totals[kind] += 1
        counts: Counter[str] | None = getattr(self._local, "counts", None)
        if counts is not None:
            counts[kind] += 1
        return self.inner.send(request, **kwargs)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> CountingTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self.inner.__exit__(*args)

    def start(self) -> None:
        """Count this thread's requests from now on (read them with `stop`)."""
        self._local.counts = Counter()

    def stop(self) -> Counter[str]:
        counts: Counter[str] = getattr(self._local, "counts", None) or Counter()
        self._local.counts = None
        return counts


def operation_kind(method: str, url: str) -> str:
    path = url.split("?", 1)[0]
    if path.endswith("$batch"):
        return "transaction"
    if method == "GET":
        return "point-read" if "(PartitionKey=" in path else "query"
    return {"POST": "insert", "PUT": "replace", "MERGE": "merge", "DELETE": "delete"}.get(method, method.lower())


WRITE_KINDS = {"transaction", "insert", "replace", "merge", "delete"}


# ----------------------------------------------------------------------------------------------------------------------
# Part 1: the timer path
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class TickSample:
    cluster_name: str
    reason: str
    seconds: float
    operations: Counter[str]
    outcome: str
    finished_after_timer_s: float  # real seconds from its round's timer to its end (timer messages)


@dataclass
class TimerLoad:
    samples: list[TickSample] = field(default_factory=list)
    timer_operations: list[Counter[str]] = field(default_factory=list)  # per timer run: one list, then housekeeping
    round_seconds: list[float] = field(default_factory=list)
    dropped: int = 0
    create_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_timer_load(azurite: Azurite, *, clusters: int, rounds: int, workers: int, seed: int) -> dict[str, Any]:  # noqa: C901 -- the load run's phases in order, each with its own bound
    rng = random.Random(seed)
    transport = CountingTransport(RequestsTransport())
    table_service = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport)
    store = TableStateStore(table_service, table_prefix=f"load{uuid.uuid4().hex[:8]}")
    store.ensure_tables()
    clock = SimClock()
    injector = FaultInjector(clock)
    injector.quiet()  # no faults here: the queue only delays follow-ups as the real one does
    queue = FaultyQueue(injector, clock)
    cloud = SimCloud(
        clock,
        rng=random.Random(seed + 1),
        boot_delay_s=(2.0, 10.0),
        ray_join_delay_s=(2.0, 8.0),
        terminate_delay_s=(0.0, 5.0),
    )
    ray = SimRay(cloud, clock)
    deps = ReconcileDeps(
        store=store, provider_for=lambda config: cloud, ray_reader=ray, token_for=token_for, clock=clock
    )
    service = Service(deps=deps, queue=queue, allow_local_provider=True)
    load = TimerLoad()
    names = [f"load-{index:03d}" for index in range(clusters)]
    sizes = {name: rng.randint(1, 4) for name in names}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load") as pool:

        def create(name: str) -> None:
            started = time.perf_counter()
            service.create_cluster(cluster_yaml(name, sizes[name]).encode(), "application/yaml")
            load.create_seconds.append(time.perf_counter() - started)

        for created in wait([pool.submit(create, name) for name in names]).done:
            if created.exception() is not None:
                load.errors.append(f"create: {created.exception()!r}")
        for name in names:
            ray.set_demand(name, rng.randint(0, 2 * sizes[name] + 1))

        for round_index in range(rounds):
            if round_index == rounds // 2:  # demand moves half-way: scale-ups and idle scale-downs
                for name in names:
                    ray.set_demand(name, rng.randint(0, 2 * sizes[name] + 1))
            timer_fired = time.perf_counter()
            transport.start()
            service.enqueue_active()
            load.timer_operations.append(transport.stop())
            ticked: set[str] = set()
            for sub_step in range(TIMER_PERIOD_S // SUB_STEP_S):
                if sub_step:
                    clock.advance(SUB_STEP_S)
                envelopes = queue.receive(10_000)
                futures = [pool.submit(tick_one, service, transport, envelope, timer_fired) for envelope in envelopes]
                for future in wait(futures).done:
                    sample = future.result()
                    load.samples.append(sample)
                    if sample.reason == "timer":
                        ticked.add(sample.cluster_name)
            load.round_seconds.append(time.perf_counter() - timer_fired)
            active = {record.name for record in store.list_clusters() if record.status.is_active}
            load.dropped += len({name for name in active if name in sizes} - ticked)
            clock.advance(SUB_STEP_S)
    store.close()
    return summarize_timer_load(load, clusters=clusters, rounds=rounds, workers=workers)


def tick_one(service: Service, transport: CountingTransport, envelope: Envelope, timer_fired: float) -> TickSample:
    message: ReconcileMessage = envelope.message
    transport.start()
    started = time.perf_counter()
    try:
        result: TickResult = service.tick(message)
        outcome = result.outcome
    except Exception as error:
        outcome = f"raised {type(error).__name__}"
    ended = time.perf_counter()
    operations = transport.stop()
    return TickSample(message.cluster_name, message.reason, ended - started, operations, outcome, ended - timer_fired)


def summarize_timer_load(load: TimerLoad, *, clusters: int, rounds: int, workers: int) -> dict[str, Any]:
    def ops(sample: TickSample) -> int:
        return sum(sample.operations.values())

    def writes(sample: TickSample) -> int:
        return sum(count for kind, count in sample.operations.items() if kind in WRITE_KINDS)

    timer_ticks = [s for s in load.samples if s.reason == "timer"]
    steady = timer_ticks[-clusters * 2 :]  # the timer ticks of the last two rounds
    all_ops = [float(ops(s)) for s in load.samples]
    kinds: Counter[str] = Counter()
    for sample in load.samples:
        kinds.update(sample.operations)
    return {
        "clusters": clusters,
        "rounds": rounds,
        "workers": workers,
        "ticks": len(load.samples),
        "timer_ticks": len(timer_ticks),
        "tick_outcomes": dict(Counter(s.outcome for s in load.samples)),
        "tick_ms": {
            "p50": round(percentile([s.seconds for s in load.samples], 0.5) * 1000, 1),
            "p99": round(percentile([s.seconds for s in load.samples], 0.99) * 1000, 1),
            "max": round(max((s.seconds for s in load.samples), default=0.0) * 1000, 1),
        },
        "table_ops_per_tick": {
            "mean": round(statistics.fmean(all_ops), 2) if all_ops else 0.0,
            "p50": percentile(all_ops, 0.5),
            "p99": percentile(all_ops, 0.99),
            "max": max(all_ops, default=0.0),
            "steady_state_mean": round(statistics.fmean([ops(s) for s in steady]), 2) if steady else 0.0,
            "steady_state_writes_mean": round(statistics.fmean([writes(s) for s in steady]), 3) if steady else 0.0,
            "steady_state_ticks_without_writes": sum(1 for s in steady if not writes(s)),
            "by_kind": dict(sorted(kinds.items())),
        },
        "timer_run_table_ops": {
            "p50": percentile([float(sum(c.values())) for c in load.timer_operations], 0.5),
            "max": max((sum(c.values()) for c in load.timer_operations), default=0),
            "by_kind": dict(sorted(sum(load.timer_operations, Counter()).items())),
        },
        "round_seconds": {
            "p50": round(percentile(load.round_seconds, 0.5), 2),
            "max": round(max(load.round_seconds, default=0.0), 2),
        },
        "ticks_late": sum(1 for s in timer_ticks if s.finished_after_timer_s > TIMER_PERIOD_S),
        "ticks_dropped": load.dropped,
        "create_ms_p50": round(percentile(load.create_seconds, 0.5) * 1000, 1),
        "errors": load.errors[:5],
    }


# ----------------------------------------------------------------------------------------------------------------------
# Part 2: the API over HTTP, through the local host running function_app
# ----------------------------------------------------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def api_host(azurite: Azurite, cloud: SimCloud, ray: SimRay) -> Iterator[tuple[str, TableStateStore]]:
    """function_app served by the local host on a free loopback port; its service wired to the fake cloud."""
    import function_app
    from local.host import LocalHost

    store = TableStateStore.from_connection_string(azurite.connection_string, f"api{uuid.uuid4().hex[:8]}")
    queue = StorageReconcileQueue.from_connection_string(azurite.connection_string, RECONCILE_QUEUE)
    deps = ReconcileDeps(
        store=store, provider_for=lambda config: cloud, ray_reader=ray, token_for=token_for, clock=utc_now
    )
    service = Service(deps=deps, queue=queue, allow_local_provider=True)
    saved = vars(function_app)["_service"]
    vars(function_app)["_service"] = lambda: service  # what tests/unit/test_function_app.py does with monkeypatch
    settings = {"AzureWebJobsStorage": azurite.connection_string, "RECONCILE_SCHEDULE": "*/15 * * * * *"}
    host = LocalHost(function_app.app, settings, port=0, host_config=REPO_ROOT / "host.json")
    host.start()
    try:
        yield f"{host.base_url}/api", store
    finally:
        host.stop()
        vars(function_app)["_service"] = saved
        store.close()


@dataclass
class ApiLoad:
    statuses: Counter[int] = field(default_factory=Counter)
    seconds_by_route: dict[str, list[float]] = field(default_factory=dict)
    created_true: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    connection_errors: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


Operation = tuple[str, str]  # (create | get | list | delete, cluster name)


def run_api_load(azurite: Azurite, *, clusters: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    cloud = SimCloud(utc_now, rng=random.Random(seed + 1), boot_delay_s=(1.0, 3.0), ray_join_delay_s=(1.0, 2.0))
    ray = SimRay(cloud, utc_now)
    names = [f"api-{index:03d}" for index in range(clusters)]
    to_delete = set(names[::3])
    for name in names:
        ray.set_demand(name, rng.randint(0, 3))
    load = ApiLoad()
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=API_THREADS, pool_maxsize=API_THREADS))
    started = time.perf_counter()
    with api_host(azurite, cloud, ray) as (api, store):
        deadline = time.monotonic() + API_DEADLINE_S
        first: list[Operation] = [("create", name) for name in names for _ in range(3)]
        first += [("get", rng.choice(names)) for _ in range(3 * clusters)] + [("list", "")] * 20
        rng.shuffle(first)
        run_operations(session, api, first, load, deadline)
        second: list[Operation] = [("delete", name) for name in sorted(to_delete) for _ in range(2)]
        second += [("get", name) for name in names for _ in range(3)] + [("list", "")] * 20
        rng.shuffle(second)
        run_operations(session, api, second, load, deadline)
        load_seconds = time.perf_counter() - started
        settled, settle_seconds, final = settle(session, api, names, load, cloud)
        generations = {name: (row.generation if (row := store.get_cluster(name)) else 0) for name in names}
    requests_sent = sum(load.statuses.values())
    lost = sorted(name for name in load.accepted if name not in load.deleted and final.get(name) in (None, "missing"))
    doubled = sorted(
        {name for name, count in load.created_true.items() if count != 1}
        | {name for name, generation in generations.items() if generation > 1}
        | {name for name, status in final.items() if status == "listed twice"}
    )
    not_deleted = sorted(name for name in load.deleted if final.get(name) != "deleted")
    left_in_cloud = sorted(name for name in load.deleted if cloud.current(name) or name in cloud.networks)
    return {
        "clusters": clusters,
        "requests": requests_sent,
        "requests_per_s": round(requests_sent / load_seconds, 1) if load_seconds else 0.0,
        "statuses": {str(status): count for status, count in sorted(load.statuses.items())},
        "latency_ms": {
            route: {
                "p50": round(percentile(values, 0.5) * 1000, 1),
                "p99": round(percentile(values, 0.99) * 1000, 1),
            }
            for route, values in sorted(load.seconds_by_route.items())
        },
        "http_5xx": len(load.server_errors),
        "connection_errors": len(load.connection_errors),
        "unexpected_answers": load.unexpected[:10],
        "skipped_after_deadline": load.skipped,
        "lost_clusters": lost,
        "doubled_clusters": doubled,
        "deletes_not_finished": not_deleted,
        "deleted_with_cloud_resources": left_in_cloud,
        "settled": settled,
        "settle_s": round(settle_seconds, 1),
        "server_error_samples": load.server_errors[:5],
    }


def run_operations(
    session: requests.Session, api: str, operations: list[Operation], load: ApiLoad, deadline: float
) -> None:
    bodies = {name: cluster_yaml(name, 3).encode() for kind, name in operations if kind == "create"}

    def one(operation: Operation) -> None:
        kind, name = operation
        if time.monotonic() > deadline:
            with load.lock:
                load.skipped += 1
            return
        route, method, url, body = {
            "create": ("POST /clusters", "POST", f"{api}/clusters", bodies.get(name)),
            "get": ("GET /clusters/{name}", "GET", f"{api}/clusters/{name}", None),
            "list": ("GET /clusters", "GET", f"{api}/clusters", None),
            "delete": ("DELETE /clusters/{name}", "DELETE", f"{api}/clusters/{name}", None),
        }[kind]
        headers = {"content-type": "application/yaml"} if body is not None else {}
        started = time.perf_counter()
        try:
            response = session.request(method, url, data=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as error:
            with load.lock:
                load.connection_errors.append(f"{method} {url}: {error!r}"[:300])
            return
        seconds = time.perf_counter() - started
        with load.lock:
            load.statuses[response.status_code] += 1
            load.seconds_by_route.setdefault(route, []).append(seconds)
            if response.status_code >= 500:
                load.server_errors.append(f"{method} {url}: {response.status_code} {response.text[:200]}")
            elif kind == "create" and response.status_code == 202:
                load.accepted.add(name)
                if response.json().get("created"):
                    load.created_true[name] += 1
            elif kind == "delete" and response.status_code == 202:
                load.deleted.add(name)
            elif not (response.status_code == 200 or (kind in ("get", "delete") and response.status_code == 404)):
                load.unexpected.append(f"{method} {url}: {response.status_code} {response.text[:200]}")

    with ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="api") as pool:
        list(pool.map(one, operations))


def settle(
    session: requests.Session, api: str, names: list[str], load: ApiLoad, cloud: SimCloud
) -> tuple[bool, float, dict[str, str]]:
    """Poll (bounded) until every deleted cluster is `deleted` and its cloud resources are gone; the final view of
    every name: its status, "missing" (404 or not listed) or "listed twice"."""
    started = time.monotonic()
    final: dict[str, str] = {}
    settled = False
    while time.monotonic() - started < SETTLE_DEADLINE_S:
        listed = Counter(
            c["name"] for c in session.get(f"{api}/clusters", timeout=REQUEST_TIMEOUT_S).json()["clusters"]
        )
        final = {}
        for name in names:
            response = session.get(f"{api}/clusters/{name}", timeout=REQUEST_TIMEOUT_S)
            if response.status_code >= 500:
                load.server_errors.append(f"GET {name} while settling: {response.status_code}")
            status = response.json().get("status") if response.status_code == 200 else None
            final[name] = (
                "listed twice" if listed[name] > 1 else ("missing" if not status or not listed[name] else status)
            )
        settled = all(
            final[name] == "deleted" and not cloud.current(name) and name not in cloud.networks for name in load.deleted
        )
        if settled:
            break
        time.sleep(1.0)
    return settled, time.monotonic() - started, final


# ----------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=200, help="clusters on the timer path (default 200)")
    parser.add_argument("--rounds", type=int, default=8, help="timer periods of 15 simulated seconds (default 8)")
    parser.add_argument("--workers", type=int, default=16, help="ticks in parallel (host.json batchSize 16)")
    parser.add_argument("--api-clusters", type=int, default=120, help="clusters of the API load (default 120)")
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    if min(arguments.clusters, arguments.rounds, arguments.workers, arguments.api_clusters) < 1:
        parser.error("every count must be at least 1")
    for name in ("autoscaler", "azure", "local", "function_app"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)  # the figures, not a log of every tick
    started = time.perf_counter()
    azurite = start_azurite()
    try:
        timer = run_timer_load(
            azurite,
            clusters=arguments.clusters,
            rounds=arguments.rounds,
            workers=arguments.workers,
            seed=arguments.seed,
        )
        print(
            f"timer path: {timer['clusters']} clusters, {timer['ticks']} ticks; tick p50 {timer['tick_ms']['p50']} ms "
            f"p99 {timer['tick_ms']['p99']} ms; Table ops per tick mean {timer['table_ops_per_tick']['mean']} "
            f"(steady state {timer['table_ops_per_tick']['steady_state_mean']}); late {timer['ticks_late']}, "
            f"dropped {timer['ticks_dropped']}"
        )
        api = run_api_load(azurite, clusters=arguments.api_clusters, seed=arguments.seed)
        print(
            f"API: {api['requests']} requests at {api['requests_per_s']}/s; statuses {api['statuses']}; "
            f"5xx {api['http_5xx']}; lost {len(api['lost_clusters'])}; doubled {len(api['doubled_clusters'])}; "
            f"deletes settled in {api['settle_s']} s"
        )
    finally:
        azurite.stop()
    print(json.dumps({"timer": timer, "api": api, "runtime_s": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
