"""Retail prices end to end on loopback: the recorded Retail Prices API pages (tests/data/retail-prices/) served by an
HTTP server on 127.0.0.1, the cache in a real `prices` table on Azurite, and the planner's cost scorer choosing by
them. Nothing here leaves 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from autoscaler.config import ClusterConfig, parse_cluster_config
from autoscaler.model import InstanceRecord, InstanceStatus, RayState, ShapeDemand
from autoscaler.planner import PlannerConfig, plan
from autoscaler.planner.prices import cloud_prices
from autoscaler.ports import BuildContext
from autoscaler.settings import Settings
from provisioning.azure.retail_prices import (
    RetailPriceBook,
    RetailPrices,
    RetailPricesClient,
    RetailPricesUnavailable,
    TablePriceCache,
    book_for,
)
from tests.support.azurite import Azurite

pytestmark = pytest.mark.azurite

RECORDING = Path(__file__).resolve().parents[1] / "data" / "retail-prices"
LIVE_ORIGIN = "https://prices.azure.com:443"  # how the live API writes its NextPageLink (tests/data/retail-prices)
PATH = "/api/retail/prices"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
IMAGE = {"imagePublisher": "microsoft-dsvm", "imageOffer": "ubuntu-2204", "imageSku": "2204-gen2"}


# --------------------------------------------------------------------------------------------
# The recorded API on 127.0.0.1
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedApi:
    """Serves page 1 to a first request and page 2 to the request of page 1's NextPageLink (`$skip=8`). `answer`
    switches it to failing (an HTTP status) or to a NextPageLink that leaves the server's origin."""

    origin: str = ""
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    answer: str = "recorded"  # "recorded", "503", "link elsewhere"

    @property
    def url(self) -> str:
        return f"{self.origin}{PATH}"

    def respond(self, path: str) -> tuple[int, bytes]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        self.requests.append(query)
        if parts.path != PATH or query.get("api-version") != ["2023-01-01-preview"] or "$filter" not in query:
            return 400, b'{"Error": {"Code": "BadRequest", "Message": "Invalid OData parameters supplied"}}'
        if self.answer == "503":
            return 503, b"Service Unavailable"
        page = 2 if query.get("$skip") == ["8"] else 1
        text = (RECORDING / f"eastus-page-{page}.json").read_text()
        origin = "http://127.0.0.2:9" if self.answer == "link elsewhere" else self.origin
        text = text.replace(LIVE_ORIGIN, origin).replace("{filter}", quote(query["$filter"][0], safe=""))
        return 200, text.encode()

    def pages_served(self) -> list[str]:
        return ["2" if query.get("$skip") == ["8"] else "1" for query in self.requests]


@pytest.fixture
def api() -> Iterator[RecordedApi]:
    recorded = RecordedApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = recorded.respond(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorded.origin = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorded
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port nobody listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_port_url() -> str:
    return f"http://127.0.0.1:{closed_port()}{PATH}"


# --------------------------------------------------------------------------------------------
# The `prices` table on Azurite
# --------------------------------------------------------------------------------------------


def settings_for(azurite: Azurite, table_prefix: str) -> Settings:
    return Settings(
        storage_connection_string=azurite.connection_string,
        storage_account_name="",
        managed_identity_client_id="",
        token_key=b"k" * 32,
        control_plane_url="http://127.0.0.1:7071",
        allow_local_provider=False,
        local_data_dir=Path(".local-data"),
        table_prefix=table_prefix,
        clusters_subscription_id="",
        clusters_resource_group="",
        function_subnet_id="",
    )


@pytest.fixture
def settings(azurite: Azurite) -> Iterator[Settings]:
    prefix = f"rp{uuid.uuid4().hex[:10]}"
    yield settings_for(azurite, prefix)
    from azure.data.tables import TableServiceClient

    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        service.delete_table(f"{prefix}prices")


@pytest.fixture
def cache(settings: Settings) -> TablePriceCache:
    return TablePriceCache.from_settings(settings)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def table_row(cache: TablePriceCache, region: str, size: str) -> dict[str, Any]:
    return dict(cache.table.get_entity(partition_key=region, row_key=size))


# --------------------------------------------------------------------------------------------
# The cache and the API
# --------------------------------------------------------------------------------------------


def test_a_first_price_reads_the_api_through_both_pages_and_writes_the_table(
    api: RecordedApi, cache: TablePriceCache
) -> None:
    book = RetailPriceBook(client=RetailPricesClient(api.url), cache=cache, clock=Clock())
    quote = book.quote("eastus", "Standard_D2als_v7", is_spot=False)  # its rows are on page 2
    assert quote.usd_per_hour == 0.0804
    assert api.pages_served() == ["1", "2"]
    odata = api.requests[0]["$filter"][0]
    assert odata == (
        "serviceName eq 'Virtual Machines' and armRegionName eq 'eastus' and priceType eq 'Consumption' "
        "and (armSkuName eq 'Standard_D2als_v7')"
    )
    assert api.requests[1]["$filter"] == [odata]  # the NextPageLink keeps the query
    row = table_row(cache, "eastus", "Standard_D2als_v7")
    assert (row["RegularUsdPerHour"], row["SpotUsdPerHour"], row["FetchedAt"]) == (0.0804, 0.015598, NOW)


def test_within_a_day_another_process_reads_only_the_table(api: RecordedApi, cache: TablePriceCache) -> None:
    clock = Clock()
    RetailPriceBook(client=RetailPricesClient(api.url), cache=cache, clock=clock).quote(
        "eastus", "Standard_D2s_v3", is_spot=True
    )
    served = len(api.requests)
    clock.now = NOW + timedelta(hours=23, minutes=59)
    fresh_process = RetailPriceBook(client=RetailPricesClient(api.url), cache=cache, clock=clock)
    quote = fresh_process.quote("eastus", "Standard_D2s_v3", is_spot=True)
    assert quote.usd_per_hour == 0.018816
    assert "fetched 2026-11-30 12:00Z" in quote.source
    assert len(api.requests) == served


def test_after_a_day_the_api_is_read_again_and_the_row_replaced(api: RecordedApi, cache: TablePriceCache) -> None:
    clock = Clock()
    RetailPriceBook(client=RetailPricesClient(api.url), cache=cache, clock=clock).quote(
        "eastus", "Standard_B1s", is_spot=False
    )
    clock.now = NOW + timedelta(days=1, hours=1)
    quote = RetailPriceBook(client=RetailPricesClient(api.url), cache=cache, clock=clock).quote(
        "eastus", "Standard_B1s", is_spot=False
    )
    assert quote.usd_per_hour == 0.0104
    assert api.pages_served() == ["1", "2", "1", "2"]
    assert table_row(cache, "eastus", "Standard_B1s")["FetchedAt"] == clock.now
    assert "SpotUsdPerHour" not in table_row(cache, "eastus", "Standard_B1s")  # no Linux spot row recorded


def test_an_unreachable_api_falls_back_to_the_static_price_class_at_once(cache: TablePriceCache) -> None:
    config = azure_config(spot={"size": "Standard_D2s_v3", "priority": "Spot"})
    retail = RetailPrices()
    retail.configure(RetailPriceBook(client=RetailPricesClient(closed_port_url()), cache=cache, clock=Clock()))
    started = time.monotonic()
    price, source = cloud_prices(config.provider, retail)(config.available_node_types["spot"]) or (0.0, "")
    assert time.monotonic() - started < 5.0
    assert price == pytest.approx(0.096 * 0.3)
    assert source.startswith(
        "price class of Standard_D2s_v3 (spot); no retail price: the Retail Prices API did not answer: the API did "
        "not answer: ConnectionError"
    )


def test_an_error_answer_falls_back_and_an_older_copy_in_the_table_wins_over_the_static_class(
    api: RecordedApi, cache: TablePriceCache
) -> None:
    clock = Clock()
    RetailPriceBook(client=RetailPricesClient(api.url), cache=cache, clock=clock).quote(
        "eastus", "Standard_D2s_v3", is_spot=False
    )
    api.answer = "503"
    clock.now = NOW + timedelta(days=3)
    book = RetailPriceBook(client=RetailPricesClient(api.url), cache=cache, clock=clock)
    stale = book.quote("eastus", "Standard_D2s_v3", is_spot=False)
    assert stale.usd_per_hour == 0.096
    assert stale.source.endswith("stale, the Retail Prices API did not answer: the API answered HTTP 503)")
    never_fetched = book.quote("eastus", "Standard_B1s", is_spot=False)
    assert never_fetched.usd_per_hour is None


def test_a_next_page_link_that_leaves_the_api_is_not_followed(api: RecordedApi) -> None:
    api.answer = "link elsewhere"
    quote = RetailPriceBook(client=RetailPricesClient(api.url), clock=Clock()).quote(
        "eastus", "Standard_D2s_v3", is_spot=False
    )
    assert quote.usd_per_hour is None
    assert "NextPageLink 'http://127.0.0.2:9/api/retail/prices" in quote.source
    assert api.pages_served() == ["1"]


def test_a_cache_that_does_not_answer_is_skipped_and_the_api_still_prices(api: RecordedApi, azurite: Azurite) -> None:
    unreachable = replace(settings_for(azurite, "rpdown"), storage_connection_string=_closed_storage(azurite))
    book = RetailPriceBook(client=RetailPricesClient(api.url), cache=TablePriceCache.from_settings(unreachable))
    started = time.monotonic()
    assert book.quote("eastus", "Standard_D2s_v3", is_spot=False).usd_per_hour == 0.096
    assert time.monotonic() - started < 10.0


def test_the_plugin_book_comes_from_the_build_context_with_the_app_storage(
    api: RecordedApi, settings: Settings
) -> None:
    book = book_for(BuildContext(settings=settings, options={"retail_prices_url": api.url}), environment={})
    assert book is not None
    assert book.quote("eastus", "Standard_D2s_v3", is_spot=False).usd_per_hour == 0.096
    stored = TablePriceCache.from_settings(settings).get("eastus", "Standard_D2s_v3")
    assert stored is not None
    assert stored.regular_usd_per_hour == 0.096
    emulated_arm = BuildContext(settings=settings, options={"base_url": "https://127.0.0.1:1"})
    assert book_for(emulated_arm, environment={}) is None  # never the internet from an emulated deployment


def test_the_plugin_hook_is_configured_once_from_the_first_build_context(api: RecordedApi, settings: Settings) -> None:
    retail = RetailPrices()
    retail.configure_from(BuildContext(settings=settings, options={"retail_prices_url": api.url}), environment={})
    first = retail.book
    assert first is not None
    retail.configure_from(BuildContext(settings=settings, options={"retail_prices_url": closed_port_url()}))
    assert retail.book is first
    config = azure_config(worker={"size": "Standard_D2s_v3"})
    assert cloud_prices(config.provider, retail)(config.available_node_types["worker"]) == (
        0.096,
        "retail price of Standard_D2s_v3 in eastus, 0.096 USD/h (Azure Retail Prices API, fetched "
        f"{first.clock():%Y-%m-%d %H:%M}Z)",
    )


def test_an_answer_longer_than_its_page_or_time_budget_is_no_answer(api: RecordedApi) -> None:
    with pytest.raises(RetailPricesUnavailable, match="more than 1 pages"):
        RetailPricesClient(api.url, max_pages=1).fetch("eastus", ["Standard_D2s_v3"], NOW)
    ticks = iter([0.0, 0.0, 11.0, 11.0, 11.0])
    with pytest.raises(RetailPricesUnavailable, match="took more than 10 s"):
        RetailPricesClient(api.url, monotonic=lambda: next(ticks)).fetch("eastus", ["Standard_D2s_v3"], NOW)


# --------------------------------------------------------------------------------------------
# The planner
# --------------------------------------------------------------------------------------------


def azure_config(location: str = "eastus", **workers: dict[str, Any]) -> ClusterConfig:
    def vm(size: str, **extra: Any) -> dict[str, Any]:
        return {"azure_arm_parameters": {"vmSize": size, **IMAGE, **extra}}

    node_types: dict[str, Any] = {
        "head": {"resources": {"CPU": 2}, "max_workers": 0, "node_config": vm("Standard_D2s_v3")}
    }
    for name, spec in workers.items():
        extra = {key: value for key, value in spec.items() if key != "size"}
        node_types[name] = {"resources": {"CPU": 2}, "max_workers": 4, "node_config": vm(spec["size"], **extra)}
    document = {
        "cluster_name": "prices",
        "max_workers": 4,
        "provider": {"type": "azure", "location": location, "resource_group": "ray-cluster"},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": node_types,
        "head_node_type": "head",
    }
    return parse_cluster_config(document).config


def launches_for_three_pending_bundles(planner_config: PlannerConfig) -> list[tuple[str, int]]:
    since = NOW - timedelta(hours=1)
    head = InstanceRecord("prices", "head-1", "head", InstanceStatus.RAY_RUNNING, "r", since, since, is_head=True)
    ray = RayState(pending=(ShapeDemand((("CPU", 2.0),), 3),))
    result = plan(config=planner_config, instances=[head], ray=ray, unavailable=(), now=NOW)
    return [(launch.node_type, launch.count) for launch in result.launches]


@pytest.mark.parametrize("priority", ["Regular", "Spot"])
def test_the_cost_scorer_picks_the_type_that_is_cheaper_by_real_prices(
    api: RecordedApi, cache: TablePriceCache, priority: str
) -> None:
    # The static classes price both the same (family D, 2 vCPUs); the recorded retail prices make D2als v7 cheaper
    # (0.0804 against 0.096, spot 0.015598 against 0.018816). On a tie the scorers settle by type name: D2s v3 here.
    config = azure_config(
        "East US",
        b_d2s_v3={"size": "Standard_D2s_v3", "priority": priority},
        a_d2als_v7={"size": "Standard_D2als_v7", "priority": priority},
    )
    assert launches_for_three_pending_bundles(PlannerConfig.from_cluster_config(config)) == [("b_d2s_v3", 3)]

    retail = RetailPrices()
    retail.configure(RetailPriceBook(client=RetailPricesClient(api.url), cache=cache, clock=Clock()))
    planner_config = PlannerConfig.from_cluster_config(config, prices=cloud_prices(config.provider, retail))
    assert launches_for_three_pending_bundles(planner_config) == [("a_d2als_v7", 3)]
    basis = {worker.name: worker.cost_basis for worker in planner_config.worker_types}
    spot = " (spot)" if priority == "Spot" else ""
    assert basis["a_d2als_v7"].startswith(f"retail price of Standard_D2als_v7{spot} in eastus")
    assert basis["b_d2s_v3"].startswith(f"retail price of Standard_D2s_v3{spot} in eastus")


def _closed_storage(azurite: Azurite) -> str:
    """Azurite's connection string with its table endpoint moved to a port nobody listens on."""
    table_port = closed_port()
    parts = dict(part.split("=", 1) for part in azurite.connection_string.split(";") if part)
    parts["TableEndpoint"] = f"http://127.0.0.1:{table_port}/{parts['AccountName']}"
    return ";".join(f"{key}={value}" for key, value in parts.items())


def test_the_recorded_pages_are_valid_json_with_the_live_link_form() -> None:
    first = json.loads((RECORDING / "eastus-page-1.json").read_text())
    assert first["NextPageLink"].startswith(f"{LIVE_ORIGIN}{PATH}?api-version=2023-01-01-preview&$filter={{filter}}")


def test_the_azure_plugin_prices_node_types_by_retail_prices_once_its_build_configured_them(
    api: RecordedApi, settings: Settings
) -> None:
    from provisioning.azure.plugin import AZURE, RETAIL_PRICES

    assert AZURE.prices is RETAIL_PRICES
    config = azure_config("East US", b_d2s_v3={"size": "Standard_D2s_v3"}, a_d2als_v7={"size": "Standard_D2als_v7"})
    saved = RETAIL_PRICES.book
    RETAIL_PRICES.configure(None)
    try:
        # What the plugin's `build` does with the app's BuildContext (here pointed at the loopback recording).
        RETAIL_PRICES.configure_from(
            BuildContext(settings=settings, options={"retail_prices_url": api.url}), environment={}
        )
        # The planner finds the hook through the plugin registry, located at the cluster's region.
        assert launches_for_three_pending_bundles(PlannerConfig.from_cluster_config(config)) == [("a_d2als_v7", 3)]
    finally:
        RETAIL_PRICES.configure(saved)
