"""Retail prices (provisioning/azure/retail_prices.py) without a network: the recorded pages of tests/data/retail-prices
parsed and filtered, spot against regular, unknown sizes, the book's memory/cache/API order, its fallback to the
static price classes, and the planner's located hook. The loopback API and Azurite are in
tests/integration/test_retail_prices.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import ClusterConfig, NodeTypeConfig, parse_cluster_config
from autoscaler.planner import PlannerConfig
from autoscaler.planner.prices import LocatedPrices, cloud_prices
from autoscaler.ports import BuildContext
from autoscaler.settings import Settings
from provisioning.azure.plugin import azure_node_price
from provisioning.azure.retail_prices import (
    RETAIL_PRICES_URL,
    RetailPriceBook,
    RetailPriceItem,
    RetailPrices,
    RetailPricesClient,
    RetailPricesPage,
    RetailPricesUnavailable,
    SizePrices,
    _entity_from_prices,
    _prices_from_entity,
    azure_options,
    first_page_url,
    linux_vm_prices,
    price_kind,
    region_of,
    retail_prices_for,
    retail_prices_url,
    vm_prices_filter,
)

RECORDING = Path(__file__).resolve().parents[1] / "data" / "retail-prices"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SETTINGS = Settings(
    storage_connection_string="UseDevelopmentStorage=true",
    storage_account_name="",
    managed_identity_client_id="",
    token_key=b"k" * 32,
    control_plane_url="http://127.0.0.1:7071",
    allow_local_provider=False,
    local_data_dir=Path(".local-data"),
    table_prefix="",
    clusters_subscription_id="",
    clusters_resource_group="",
    function_subnet_id="",
)
IMAGE = {"imagePublisher": "microsoft-dsvm", "imageOffer": "ubuntu-2204", "imageSku": "2204-gen2"}


def recorded_page(number: int) -> RetailPricesPage:
    return RetailPricesPage.model_validate_json((RECORDING / f"eastus-page-{number}.json").read_text())


def recorded_items() -> list[RetailPriceItem]:
    return [*recorded_page(1).Items, *recorded_page(2).Items]


def azure_config(location: str = "eastus", **workers: dict[str, Any]) -> ClusterConfig:
    def vm(size: str, **extra: Any) -> dict[str, Any]:
        return {"azure_arm_parameters": {"vmSize": size, **IMAGE, **extra}}

    node_types: dict[str, Any] = {
        "head": {"resources": {"CPU": 2}, "max_workers": 0, "node_config": vm("Standard_D2s_v3")}
    }
    for name, spec in workers.items():
        size, extra = spec["size"], {k: v for k, v in spec.items() if k not in ("size", "cost")}
        node_types[name] = {"resources": {"CPU": 2}, "max_workers": 4, "node_config": vm(size, **extra)}
        if "cost" in spec:
            node_types[name]["cost"] = spec["cost"]
    document = {
        "cluster_name": "prices",
        "max_workers": 4,
        "provider": {"type": "azure", "location": location, "resource_group": "ray-cluster"},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": node_types,
        "head_node_type": "head",
    }
    return parse_cluster_config(document).config


def node_type(size: str, *, priority: str = "Regular") -> NodeTypeConfig:
    return azure_config(worker={"size": size, "priority": priority}).available_node_types["worker"]


# --------------------------------------------------------------------------------------------
# The recorded pages: parsing and which rows count
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [1, 2])
def test_each_recorded_page_parses_and_holds_as_many_items_as_it_counts(number: int) -> None:
    page = recorded_page(number)
    assert page.BillingCurrency == "USD"
    assert len(page.Items) == page.Count
    assert (page.NextPageLink is not None) == (number == 1)


@pytest.mark.parametrize(
    ("meter_id", "expected"),
    [
        ("ae331802-83a5-4b9e-b287-85675f794e3d", "regular"),  # D2s v3, Virtual Machines DSv3 Series
        ("898b8731-56dd-5181-bb31-90ac59267863", "spot"),  # D2s v3 Spot
        ("b1ecee3b-bd38-4d2b-a18c-5d8099e23450", None),  # D2s v3, ... Series Windows
        ("bbb70622-b453-5a2d-a044-13e45e233ab4", None),  # D2s v3 Spot, Windows
        ("c0908cfc-44cd-4d8f-aebb-c429a8bc7f76", None),  # D2s v3 Low Priority (Linux): Batch's meter
        ("2c872941-5870-447f-a296-b394ebf018c6", None),  # D2s v3 Low Priority, Windows
        ("f4d7a5a5-1b67-45ea-b1a0-282fbdd34b05", "regular"),  # B1s
        ("e5d2dca6-ab7b-4a73-bba7-202798e84cd4", None),  # B1s Windows
        ("33b3256b-8ac3-5ea3-84f2-eba83bfd56cf", "spot"),  # D2als v7 Spot
        ("550137dc-490b-55a6-affc-64b1e202b927", None),  # D2als v7 Spot, Windows
        ("a81db198-a7ec-5250-bf06-a30259a693ac", None),  # D2als v7, Windows
    ],
)
def test_each_recorded_row_is_a_linux_regular_a_linux_spot_or_no_price(meter_id: str, expected: str | None) -> None:
    items = [item for item in recorded_items() if item.meterId == meter_id]
    assert len(items) == 1
    assert price_kind(items[0], "eastus") == expected


def test_reservation_rows_of_the_same_meter_are_no_price() -> None:
    d2als = [item for item in recorded_items() if item.armSkuName == "Standard_D2als_v7" and item.type == "Reservation"]
    assert sorted(item.retailPrice for item in d2als) == [416.0, 803.0]  # term prices, though labelled "1 Hour"
    assert [price_kind(item, "eastus") for item in d2als] == [None, None]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"armRegionName": "westus2"}, "another region"),
        ({"currencyCode": "EUR"}, "another currency"),
        ({"unitOfMeasure": "1 Month"}, "another unit"),
        ({"type": "DevTestConsumption"}, "dev/test price"),
        ({"serviceName": "Storage"}, "not a VM"),
        ({"retailPrice": 0.0}, "no price at all"),
    ],
)
def test_a_linux_row_changed_in_one_field_is_no_price(change: dict[str, Any], why: str) -> None:
    linux = next(item for item in recorded_items() if item.meterId == "ae331802-83a5-4b9e-b287-85675f794e3d")
    assert price_kind(linux, "eastus") == "regular"
    assert price_kind(linux.model_copy(update=change), "eastus") is None, why


def test_linux_prices_of_the_recorded_sizes_spot_and_regular() -> None:
    sizes = ["Standard_D2s_v3", "Standard_B1s", "Standard_D2als_v7"]
    prices = linux_vm_prices(recorded_items(), "eastus", sizes, NOW)
    assert {size: (p.regular_usd_per_hour, p.spot_usd_per_hour) for size, p in prices.items()} == {
        "Standard_D2s_v3": (0.096, 0.018816),
        "Standard_B1s": (0.0104, None),
        "Standard_D2als_v7": (0.0804, 0.015598),
    }


def test_a_size_the_api_does_not_list_is_answered_as_unlisted() -> None:
    prices = linux_vm_prices(recorded_items(), "eastus", ["Standard_Q4_v9"], NOW)["Standard_Q4_v9"]
    assert not prices.listed
    assert prices.usd_per_hour(is_spot=False) is None


def test_rows_of_sizes_not_asked_for_are_ignored() -> None:
    assert set(linux_vm_prices(recorded_items(), "eastus", ["Standard_B1s"], NOW)) == {"Standard_B1s"}


def test_of_two_open_rows_the_later_one_wins_and_an_ended_row_never_counts() -> None:
    linux = next(item for item in recorded_items() if item.meterId == "ae331802-83a5-4b9e-b287-85675f794e3d")
    newer = linux.model_copy(update={"retailPrice": 0.1, "effectiveStartDate": datetime(2026, 10, 1, tzinfo=UTC)})
    ended = linux.model_copy(
        update={"retailPrice": 0.05, "effectiveStartDate": NOW, "effectiveEndDate": datetime(2026, 11, 1, tzinfo=UTC)}
    )
    prices = linux_vm_prices([linux, newer, ended], "eastus", ["Standard_D2s_v3"], NOW)["Standard_D2s_v3"]
    assert prices.regular_usd_per_hour == 0.1


def test_a_page_that_is_not_a_price_page_is_refused() -> None:
    with pytest.raises(ValueError, match="Items"):
        RetailPricesPage.model_validate_json('{"value": []}')
    with pytest.raises(ValueError, match="retailPrice"):
        RetailPricesPage.model_validate_json('{"Items": [{"currencyCode": "USD", "retailPrice": -1}]}')


# --------------------------------------------------------------------------------------------
# The query
# --------------------------------------------------------------------------------------------


def test_the_filter_asks_for_the_consumption_rows_of_the_sizes_in_the_region() -> None:
    assert vm_prices_filter("eastus", ["Standard_D2s_v3", "Standard_B1s"]) == (
        "serviceName eq 'Virtual Machines' and armRegionName eq 'eastus' and priceType eq 'Consumption' "
        "and (armSkuName eq 'Standard_D2s_v3' or armSkuName eq 'Standard_B1s')"
    )


def test_the_first_page_url_is_the_preview_version_with_a_percent_encoded_filter() -> None:
    url = first_page_url(RETAIL_PRICES_URL, "eastus", ["Standard_D2s_v3"])
    assert url.startswith("https://prices.azure.com/api/retail/prices?api-version=2023-01-01-preview&$filter=")
    assert "armRegionName%20eq%20%27eastus%27" in url
    assert " " not in url
    assert "'" not in url


@pytest.mark.parametrize(
    ("region", "sizes", "message"),
    [
        ("East US", ["Standard_D2s_v3"], "not an ARM region name"),
        ("eastus", ["Standard_D2s_v3' or armSkuName ne '"], "not a VM size name"),
        ("eastus", [], "at least one VM size"),
    ],
)
def test_a_filter_refuses_what_is_not_a_region_or_a_size(region: str, sizes: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vm_prices_filter(region, sizes)


def test_a_client_refuses_a_url_that_is_not_http_and_more_sizes_than_one_request_holds() -> None:
    with pytest.raises(ValueError, match="http"):
        RetailPricesClient("file:///etc/passwd")
    with pytest.raises(ValueError, match="at most 10 sizes"):
        RetailPricesClient("http://127.0.0.1:9").fetch("eastus", [f"Standard_D{n}s_v3" for n in range(11)], NOW)


# --------------------------------------------------------------------------------------------
# The book: memory, cache, API, and what happens when the API is away
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedSource:
    """The API as the recorded pages answer it, or not at all while `down` says why."""

    down: str = ""
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def fetch(self, region: str, sizes: list[str], fetched_at: datetime) -> dict[str, SizePrices]:
        self.calls.append((region, tuple(sizes)))
        if self.down:
            raise RetailPricesUnavailable(self.down)
        return linux_vm_prices(recorded_items(), region, sizes, fetched_at)


@dataclass
class DictCache:
    rows: dict[tuple[str, str], SizePrices] = field(default_factory=dict)
    reads: int = 0

    def get(self, region: str, size: str) -> SizePrices | None:
        self.reads += 1
        return self.rows.get((region, size))

    def put(self, region: str, size: str, prices: SizePrices) -> None:
        self.rows[(region, size)] = prices


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def book(source: RecordedSource, cache: DictCache | None = None, clock: Clock | None = None) -> RetailPriceBook:
    return RetailPriceBook(client=source, cache=cache, clock=clock or Clock())


def test_a_first_quote_asks_the_api_and_fills_the_cache_then_memory_answers() -> None:
    source, cache = RecordedSource(), DictCache()
    prices = book(source, cache)
    first = prices.quote("eastus", "Standard_D2s_v3", is_spot=True)
    assert first.usd_per_hour == 0.018816
    assert first.source == (
        "retail price of Standard_D2s_v3 (spot) in eastus, 0.018816 USD/h (Azure Retail Prices API, fetched "
        "2026-11-30 12:00Z)"
    )
    assert source.calls == [("eastus", ("Standard_D2s_v3",))]
    assert cache.rows[("eastus", "Standard_D2s_v3")].regular_usd_per_hour == 0.096
    reads = cache.reads
    assert prices.quote("eastus", "Standard_D2s_v3", is_spot=False).usd_per_hour == 0.096
    assert (len(source.calls), cache.reads) == (1, reads)  # memory, not the cache, not the API


def test_another_process_within_a_day_reads_the_cache_not_the_api() -> None:
    source, cache, clock = RecordedSource(), DictCache(), Clock()
    book(source, cache, clock).quote("eastus", "Standard_B1s", is_spot=False)
    clock.now = NOW + timedelta(hours=23)
    quote = book(source, cache, clock).quote("eastus", "Standard_B1s", is_spot=False)
    assert (quote.usd_per_hour, len(source.calls)) == (0.0104, 1)
    assert "fetched 2026-11-30 12:00Z" in quote.source


def test_a_copy_older_than_a_day_is_fetched_again() -> None:
    source, cache, clock = RecordedSource(), DictCache(), Clock()
    prices = book(source, cache, clock)
    prices.quote("eastus", "Standard_B1s", is_spot=False)
    clock.now = NOW + timedelta(days=1, minutes=1)
    assert "fetched 2026-12-01 12:01Z" in prices.quote("eastus", "Standard_B1s", is_spot=False).source
    assert len(source.calls) == 2
    assert cache.rows[("eastus", "Standard_B1s")].fetched_at == clock.now


def test_an_api_that_does_not_answer_gives_no_price_and_is_not_asked_again_for_ten_minutes() -> None:
    source, clock = RecordedSource(down="ConnectTimeout"), Clock()
    prices = book(source, clock=clock)
    quote = prices.quote("eastus", "Standard_D2s_v3", is_spot=False)
    assert quote.usd_per_hour is None
    assert "ConnectTimeout" in quote.source
    clock.now += timedelta(minutes=9)
    prices.quote("eastus", "Standard_D2als_v7", is_spot=False)
    assert len(source.calls) == 1
    source.down = ""
    clock.now += timedelta(minutes=2)
    assert prices.quote("eastus", "Standard_D2als_v7", is_spot=False).usd_per_hour == 0.0804
    assert len(source.calls) == 2


def test_an_expired_copy_is_still_used_while_the_api_is_away_and_says_so() -> None:
    source, clock = RecordedSource(), Clock()
    prices = book(source, clock=clock)
    prices.quote("eastus", "Standard_D2s_v3", is_spot=False)
    source.down = "the API answered HTTP 503"
    clock.now = NOW + timedelta(days=2)
    quote = prices.quote("eastus", "Standard_D2s_v3", is_spot=False)
    assert quote.usd_per_hour == 0.096
    assert "stale, the Retail Prices API did not answer: the API answered HTTP 503" in quote.source


def test_a_spot_price_the_api_does_not_list_is_no_price() -> None:
    quote = book(RecordedSource()).quote("eastus", "Standard_B1s", is_spot=True)
    assert quote.usd_per_hour is None
    assert quote.source == "no retail price: the Retail Prices API lists no Standard_B1s (spot) in eastus"


def test_a_size_the_api_does_not_list_is_remembered_so_it_costs_one_query_a_day() -> None:
    source, cache, clock = RecordedSource(), DictCache(), Clock()
    book(source, cache, clock).quote("eastus", "Standard_Q4_v9", is_spot=False)
    clock.now += timedelta(hours=12)
    quote = book(source, cache, clock).quote("eastus", "Standard_Q4_v9", is_spot=False)
    assert quote.usd_per_hour is None
    assert "lists no Standard_Q4_v9 in eastus" in quote.source
    assert len(source.calls) == 1
    assert not cache.rows[("eastus", "Standard_Q4_v9")].listed


def test_a_cache_row_round_trips_and_an_unreadable_row_is_a_miss() -> None:
    prices = SizePrices(0.096, None, NOW)
    entity = _entity_from_prices("eastus", "Standard_D2s_v3", prices, 1)
    assert (entity["PartitionKey"], entity["RowKey"], "SpotUsdPerHour" in entity) == (
        "eastus",
        "Standard_D2s_v3",
        False,
    )
    assert _prices_from_entity(entity) == prices
    assert _prices_from_entity({"FetchedAt": "yesterday", "RegularUsdPerHour": 0.1}) is None


# --------------------------------------------------------------------------------------------
# The planner's hooks
# --------------------------------------------------------------------------------------------


def test_the_hook_prices_a_type_by_its_size_and_priority_in_the_region() -> None:
    hook = retail_prices_for("eastus", book(RecordedSource()))
    assert hook(node_type("Standard_D2als_v7", priority="Spot")) == (
        0.015598,
        "retail price of Standard_D2als_v7 (spot) in eastus, 0.015598 USD/h (Azure Retail Prices API, fetched "
        "2026-11-30 12:00Z)",
    )
    low = hook(node_type("Standard_D2s_v3", priority="Low"))  # Ray's legacy name of Spot
    assert low is not None
    assert low[0] == 0.018816


def test_an_unknown_size_falls_back_to_the_static_price_class_with_the_reason() -> None:
    unknown = node_type("Standard_Q4_v9")
    price, source = retail_prices_for("eastus", book(RecordedSource()))(unknown) or (0.0, "")
    static_price, static_source = azure_node_price(unknown) or (0.0, "")
    assert price == static_price
    assert source == f"{static_source}; no retail price: the Retail Prices API lists no Standard_Q4_v9 in eastus"


def test_an_unreachable_api_falls_back_to_the_static_price_class_with_the_reason() -> None:
    spot = node_type("Standard_D2s_v3", priority="Spot")
    hook = retail_prices_for("eastus", book(RecordedSource(down="ConnectionError")))
    price, source = hook(spot) or (0.0, "")
    assert price == pytest.approx(0.0288)
    assert source == (
        "price class of Standard_D2s_v3 (spot); no retail price: the Retail Prices API did not answer: ConnectionError"
    )


def test_a_type_without_a_vm_size_is_left_to_the_fallback() -> None:
    no_vm = NodeTypeConfig(resources={"CPU": 1}, max_workers=1, node_config={})
    assert retail_prices_for("eastus", book(RecordedSource()))(no_vm) is None


@pytest.mark.parametrize(
    ("location", "region"),
    [("eastus", "eastus"), ("East US", "eastus"), ("West US 2", "westus2"), ("", None)],
)
def test_the_region_is_the_provider_location_as_arm_names_it(location: str, region: str | None) -> None:
    provider = azure_config("westus2").provider.model_copy(update={"location": location})
    assert region_of(provider) == region


def test_unconfigured_the_plugin_hook_prices_as_the_static_classes_even_when_located() -> None:
    retail = RetailPrices()
    config = azure_config(spot={"size": "Standard_D2s_v3", "priority": "Spot"})
    spot = config.available_node_types["spot"]
    assert isinstance(retail, LocatedPrices)
    assert retail(spot) == azure_node_price(spot)
    assert cloud_prices(config.provider, retail)(spot) == azure_node_price(spot)


def test_configured_the_located_plugin_hook_gives_retail_prices_to_the_planner() -> None:
    retail = RetailPrices()
    retail.configure(book(RecordedSource()))
    config = azure_config("East US", a_d2s_v3={"size": "Standard_D2s_v3"}, b_d2als_v7={"size": "Standard_D2als_v7"},
                          fixed={"size": "Standard_D2als_v7", "cost": 5.0})  # fmt: skip
    planner_config = PlannerConfig.from_cluster_config(config, prices=cloud_prices(config.provider, retail))
    costs = {worker.name: (worker.cost, worker.cost_basis.split(" USD/h")[0]) for worker in planner_config.worker_types}
    assert costs == {
        "a_d2s_v3": (0.096, "retail price of Standard_D2s_v3 in eastus, 0.096"),
        "b_d2als_v7": (0.0804, "retail price of Standard_D2als_v7 in eastus, 0.0804"),
        "fixed": (5.0, "cost from the config"),
    }
    assert retail(config.available_node_types["b_d2als_v7"]) == azure_node_price(
        config.available_node_types["b_d2als_v7"]
    )


def test_a_plain_price_function_is_used_as_it_is() -> None:
    config = azure_config(worker={"size": "Standard_D2s_v3"})
    assert cloud_prices(config.provider, azure_node_price) is azure_node_price


@pytest.mark.parametrize(
    ("options", "environment", "expected"),
    [
        ({}, {}, RETAIL_PRICES_URL),  # a real deployment: the real endpoint
        ({"base_url": "https://127.0.0.1:8443"}, {}, None),  # emulated ARM: no internet unless asked
        (
            {"base_url": "https://127.0.0.1:8443", "retail_prices_url": "http://127.0.0.1:9000/p"},
            {},
            "http://127.0.0.1:9000/p",
        ),
        ({}, {"RETAIL_PRICES_URL": "off"}, None),
        ({}, {"RETAIL_PRICES_URL": "https://prices.example/api"}, "https://prices.example/api"),
        ({"retail_prices_url": "OFF"}, {"RETAIL_PRICES_URL": "https://prices.example/api"}, None),
    ],
)
def test_where_retail_prices_are_read(
    options: dict[str, Any], environment: dict[str, str], expected: str | None
) -> None:
    assert retail_prices_url(options, environment) == expected


def test_a_retail_prices_url_that_is_not_one_leaves_the_static_classes(caplog: pytest.LogCaptureFixture) -> None:
    retail = RetailPrices()
    context = BuildContext(settings=SETTINGS, options={"retail_prices_url": "ftp://prices.example"})
    retail.configure_from(context, environment={})
    assert retail.book is None
    assert "retail prices off, static price classes only: retail prices URL 'ftp://prices.example'" in caplog.text
    config = azure_config(worker={"size": "Standard_D2s_v3"})
    worker = config.available_node_types["worker"]
    assert cloud_prices(config.provider, retail)(worker) == azure_node_price(worker)


def test_the_azure_settings_options_leave_out_the_retail_prices_url() -> None:
    options = {"base_url": "https://127.0.0.1:8443", "retail_prices_url": "http://127.0.0.1:9000/p"}
    assert azure_options(options) == {"base_url": "https://127.0.0.1:8443"}
