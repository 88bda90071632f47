"""Real VM prices for the planner's cost scorer: the Azure Retail Prices API, cached in Table Storage for a day, with
the static price classes (plugin.py's `azure_node_price`) as the fallback. docs/decisions/prices.md says why.

The story of one price:

1. the planner asks the price of a node type of a cluster in a region (`RetailPrices.located(provider)`, or
   `retail_prices_for(region, book)`): a VM size, regular or spot;
2. the book answers from memory when its copy is under a day old, else from the `prices` table (one row per region
   and size), else it asks the Retail Prices API for that size, pages through the answer, keeps the Linux
   pay-as-you-go and spot prices, and writes them to the table and to memory;
3. when the API does not answer (or answers nonsense), an older copy is used if there is one, else the static price
   class; the API is not asked again for that region for `retry_after_failure`, so a tick pays one timeout at most;
4. the answer says where the price came from ("retail price ... fetched ...", "price class ...; no retail price:
   ..."), which the planner keeps as the type's `cost_basis`.

Facts about the API this module relies on, with their sources:

- Endpoint and version: `https://prices.azure.com/api/retail/prices?api-version=2023-01-01-preview`, no credentials
  ("an unauthenticated experience"), filter values case-sensitive from 2023-01-01-preview on. Microsoft Learn,
  "Azure Retail Prices overview", https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices;
  the same URL and version in Karpenter's Azure provider, Azure/karpenter-provider-azure
  pkg/providers/pricing/client/pricingapi.go (commit 6b361020d6977040a18e4b61ff6baa353c173ad3).
- The page: `{BillingCurrency, CustomerEntityId, CustomerEntityType, Items: [...], NextPageLink, Count}`, each item
  with `currencyCode, retailPrice, armRegionName, meterName, productName, skuName, serviceName, unitOfMeasure, type,
  armSkuName, effectiveStartDate, effectiveEndDate...`: Karpenter's pkg/providers/pricing/client/pricingapi_types.go
  (commit 6872c29c4181ffc908018fd9013d79394145bc4f), and the recorded pages in tests/data/retail-prices/.
- Up to 1,000 items a page, the next one at `NextPageLink` (written with an explicit `:443`, `$skip=1000`), null on
  the last: rshade/finfocus-plugin-azure-public docs/findings/savings-plans.md (commit
  3ff82b5f6143ba21f27899a0a41250a7882c73f4), which recorded such pages from the live API.
- Which rows are which: a `productName` ending in " Windows" is the Windows price, a `meterName` ending in
  " Low Priority" is Batch's low-priority meter (not a VM priority any more), and a `skuName` ending in " Spot" is
  the spot price; every other Consumption row of the size is the Linux pay-as-you-go price. Karpenter's
  pkg/providers/pricing/pricing.go `processPage` and `categorizePrices` (commit
  00493fcc6b81ce5eff84598ba0e0322d1c783abc); the recorded rows of Standard_D2s_v3 in eastus show all six kinds.
- `(a or b)` inside `$filter` is accepted (HTTP 200): the same findings page, "One query for Consumption,
  Reservation, and Savings Plans".

Importing this module is cheap: `requests` and `azure-data-tables` are imported when a price is first fetched or
cached, so the plugin can import it at module level (Functions cold start).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoscaler.config import NodeTypeConfig, ProviderConfig
from autoscaler.ports import NodePrices

if TYPE_CHECKING:
    from azure.data.tables import TableClient

    from autoscaler.ports import BuildContext
    from autoscaler.settings import Settings

log = logging.getLogger(__name__)

RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
RETAIL_PRICES_API_VERSION = "2023-01-01-preview"
PRICE_CACHE_TTL = timedelta(days=1)  # the "for a day"; list prices change monthly at most
RETRY_AFTER_FAILURE = timedelta(minutes=10)  # one timeout per region per 10 minutes, not one per tick
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0
FETCH_DEADLINE_S = 10.0  # all the pages of one answer; a tick waits at most about this long, once
MAX_PAGES = 10  # one size has about six rows; ten pages of 1,000 is far more than a filtered answer ever needs
MAX_PAGE_BYTES = 4 * 1024 * 1024  # a full page of 1,000 items is about 1 MiB
MAX_SIZES_PER_REQUEST = 10  # keeps the URL short (each clause is about 40 characters)
PRICES_TABLE = "prices"
RETAIL_PRICES_URL_OPTION = "retail_prices_url"  # the Azure plugin's option (tests: the loopback recording)
RETAIL_PRICES_URL_SETTING = "RETAIL_PRICES_URL"  # the app setting; "off" turns retail prices off
RETAIL_PRICES_OFF = "off"

_REGION = re.compile(r"^[a-z0-9]{1,64}$")  # an ARM region name: `eastus`, `westus2`
_VM_SIZE = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # as plugin.py's; also what keeps quotes out of the OData filter
_SERIES_SUFFIX_WINDOWS = " Windows"
_METER_SUFFIX_LOW_PRIORITY = " Low Priority"
_SKU_SUFFIX_SPOT = " Spot"
_DEFAULT_PORTS = {"http": 80, "https": 443}

# The bounds of autoscaler/adapters/azure_storage.py's STORAGE_CLIENT_OPTIONS (the adapters and the plugins may not
# import each other): a cache that does not answer within about 2 x 3 s is skipped, never waited on.
_TABLE_CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": 3.0,
    "read_timeout": 3.0,
    "retry_total": 1,
    "retry_connect": 1,
    "retry_read": 1,
    "retry_status": 1,
    "retry_backoff_factor": 0.2,
    "retry_backoff_max": 1,
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class RetailPricesUnavailable(Exception):
    """The Retail Prices API did not answer, or answered something that is not a price page; the message says which."""


# --------------------------------------------------------------------------------------------
# The API's page, and which of its rows are Linux VM prices
# --------------------------------------------------------------------------------------------


class RetailPriceItem(BaseModel):
    """One row of a page, with the fields used here (the API sends more)."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    currencyCode: str
    retailPrice: float = Field(ge=0)
    meterId: str = ""
    armRegionName: str = ""
    armSkuName: str = ""
    meterName: str = ""
    skuName: str = ""
    productName: str = ""
    serviceName: str = ""
    unitOfMeasure: str = ""
    type: str = ""
    effectiveStartDate: datetime | None = None
    effectiveEndDate: datetime | None = None


class RetailPricesPage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    BillingCurrency: str = "USD"
    Items: list[RetailPriceItem]
    NextPageLink: str | None = None
    Count: int | None = None


PriceKind = Literal["regular", "spot"]


def price_kind(item: RetailPriceItem, region: str) -> PriceKind | None:
    """Whether the row is the Linux pay-as-you-go price of a VM in `region`, its Linux spot price, or neither
    (Windows, Batch low priority, reservations and dev/test prices, another unit, currency or region)."""
    if item.serviceName != "Virtual Machines" or item.type != "Consumption" or item.unitOfMeasure != "1 Hour":
        return None
    if item.currencyCode != "USD" or item.armRegionName != region or item.retailPrice <= 0:
        return None
    if item.productName.endswith(_SERIES_SUFFIX_WINDOWS) or item.meterName.endswith(_METER_SUFFIX_LOW_PRIORITY):
        return None
    is_spot = item.skuName.endswith(_SKU_SUFFIX_SPOT) or item.meterName.endswith(_SKU_SUFFIX_SPOT)
    return "spot" if is_spot else "regular"


@dataclass(frozen=True)
class SizePrices:
    """What the API said about one VM size in one region, and when. Both None: the API does not list the size there
    (a size it does not sell there, or a name it does not know), which is an answer too and is cached as one."""

    regular_usd_per_hour: float | None
    spot_usd_per_hour: float | None
    fetched_at: datetime

    @property
    def listed(self) -> bool:
        return self.regular_usd_per_hour is not None or self.spot_usd_per_hour is not None

    def usd_per_hour(self, *, is_spot: bool) -> float | None:
        return self.spot_usd_per_hour if is_spot else self.regular_usd_per_hour


def linux_vm_prices(
    items: list[RetailPriceItem], region: str, sizes: list[str], fetched_at: datetime
) -> dict[str, SizePrices]:
    """The Linux regular and spot price of each size asked for (rows of other sizes are ignored). When a size has
    several open rows of one kind, the one that took effect last wins."""
    chosen: dict[tuple[str, PriceKind], RetailPriceItem] = {}
    wanted = set(sizes)
    for item in items:
        kind = price_kind(item, region)
        if kind is None or item.armSkuName not in wanted or _has_ended(item, fetched_at):
            continue
        key = (item.armSkuName, kind)
        current = chosen.get(key)
        if current is None or _started(item) > _started(current):
            chosen[key] = item
    return {
        size: SizePrices(
            regular_usd_per_hour=_price(chosen.get((size, "regular"))),
            spot_usd_per_hour=_price(chosen.get((size, "spot"))),
            fetched_at=fetched_at,
        )
        for size in sizes
    }


def _has_ended(item: RetailPriceItem, now: datetime) -> bool:
    return item.effectiveEndDate is not None and _aware(item.effectiveEndDate) <= now


def _started(item: RetailPriceItem) -> datetime:
    return _aware(item.effectiveStartDate) if item.effectiveStartDate else datetime.min.replace(tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _price(item: RetailPriceItem | None) -> float | None:
    return None if item is None else item.retailPrice


# --------------------------------------------------------------------------------------------
# The client: one filtered query, paged, bounded
# --------------------------------------------------------------------------------------------


def check_region(region: str) -> str:
    if not _REGION.fullmatch(region):
        raise ValueError(f"region {region!r} is not an ARM region name (lower-case letters and digits, e.g. eastus)")
    return region


def check_vm_size(size: str) -> str:
    if not _VM_SIZE.fullmatch(size):
        raise ValueError(f"VM size {size!r} is not a VM size name (letters, digits and '_', e.g. Standard_D2s_v3)")
    return size


def vm_prices_filter(region: str, sizes: list[str]) -> str:
    """The OData `$filter` of the Consumption rows of these sizes in the region (values are checked: no quote can
    reach the filter)."""
    if not sizes:
        raise ValueError("at least one VM size")
    clauses = " or ".join(f"armSkuName eq '{check_vm_size(size)}'" for size in sizes)
    return (
        f"serviceName eq 'Virtual Machines' and armRegionName eq '{check_region(region)}' "
        f"and priceType eq 'Consumption' and ({clauses})"
    )


def first_page_url(base_url: str, region: str, sizes: list[str]) -> str:
    odata = quote(vm_prices_filter(region, sizes), safe="")
    return f"{base_url}?api-version={RETAIL_PRICES_API_VERSION}&$filter={odata}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(parts.scheme)


class RetailPriceSource(Protocol):
    """Where a book gets prices it does not have (RetailPricesClient; tests hand in their own)."""

    def fetch(self, region: str, sizes: list[str], fetched_at: datetime) -> dict[str, SizePrices]: ...


class RetailPricesClient:
    """Reads the Linux VM prices of some sizes in a region: one filtered query, its pages followed while they stay on
    the API's own origin, within `deadline_s`, `max_pages` and `MAX_PAGE_BYTES`. Raises RetailPricesUnavailable."""

    def __init__(
        self,
        base_url: str = RETAIL_PRICES_URL,
        *,
        timeouts_s: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
        deadline_s: float = FETCH_DEADLINE_S,
        max_pages: int = MAX_PAGES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        scheme, host, _ = _origin(base_url)
        if scheme not in _DEFAULT_PORTS or not host:
            raise ValueError(f"retail prices URL {base_url!r} must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.timeouts_s = timeouts_s
        self.deadline_s = deadline_s
        self.max_pages = max_pages
        self._monotonic = monotonic

    def fetch(self, region: str, sizes: list[str], fetched_at: datetime) -> dict[str, SizePrices]:
        """The prices of `sizes` (at most MAX_SIZES_PER_REQUEST) in `region`, every size answered (unlisted ones with
        no price)."""
        if len(sizes) > MAX_SIZES_PER_REQUEST:
            raise ValueError(f"at most {MAX_SIZES_PER_REQUEST} sizes per request, not {len(sizes)}")
        items = self._all_items(first_page_url(self.base_url, region, sizes))
        return linux_vm_prices(items, region, sizes, fetched_at)

    def _all_items(self, url: str) -> list[RetailPriceItem]:
        import requests

        started = self._monotonic()
        items: list[RetailPriceItem] = []
        with requests.Session() as session:
            for _ in range(self.max_pages):
                page = self._page(session, url, started)
                items.extend(page.Items)
                if not page.NextPageLink:
                    return items
                url = self._next(page.NextPageLink)
                if self._monotonic() - started > self.deadline_s:
                    raise RetailPricesUnavailable(f"the answer took more than {self.deadline_s:g} s")
        raise RetailPricesUnavailable(f"the answer has more than {self.max_pages} pages")

    def _next(self, link: str) -> str:
        """Only a link back to the API's own origin is followed (the live API writes its `:443` explicitly)."""
        if _origin(link) != _origin(self.base_url):
            raise RetailPricesUnavailable(f"NextPageLink {link[:200]!r} leaves {self.base_url}")
        return link

    def _page(self, session: Any, url: str, started: float) -> RetailPricesPage:
        import requests

        try:
            with session.get(url, timeout=self.timeouts_s, stream=True, allow_redirects=False) as response:
                if response.status_code != 200:
                    raise RetailPricesUnavailable(f"the API answered HTTP {response.status_code}")
                body = self._body(response, started)
        except requests.RequestException as error:  # iter_content wraps urllib3's read errors into these
            raise RetailPricesUnavailable(f"the API did not answer: {type(error).__name__}") from error
        try:
            return RetailPricesPage.model_validate_json(body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise RetailPricesUnavailable(f"the answer is not a price page ({where}: {first['msg']})") from None

    def _body(self, response: Any, started: float) -> bytes:
        """The page's bytes, within MAX_PAGE_BYTES and the deadline (a server that trickles is cut off too)."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > MAX_PAGE_BYTES:
                raise RetailPricesUnavailable(f"a page is larger than {MAX_PAGE_BYTES} bytes")
            if self._monotonic() - started > self.deadline_s:
                raise RetailPricesUnavailable(f"the answer took more than {self.deadline_s:g} s")
            chunks.append(chunk)
        return b"".join(chunks)


# --------------------------------------------------------------------------------------------
# The cache: one Table row per region and size
# --------------------------------------------------------------------------------------------


class PriceCache(Protocol):
    """Where fetched prices are kept between processes. Errors are the cache's to swallow: a cache that does not
    answer is a miss, never a failed tick."""

    def get(self, region: str, size: str) -> SizePrices | None: ...

    def put(self, region: str, size: str, prices: SizePrices) -> None: ...


class TablePriceCache:
    """`PriceCache` on Azure Table Storage: table `<prefix>prices`, PartitionKey the region, RowKey the VM size, two
    prices and when they were fetched (about 200 bytes a row, far below the 64 KiB property and 1 MiB entity
    limits, whatever the number of sizes)."""

    SCHEMA_VERSION = 1

    def __init__(self, table: TableClient) -> None:
        self.table = table

    @classmethod
    def from_settings(cls, settings: Settings) -> TablePriceCache:
        """In the app's storage account, as autoscaler/wiring.py builds the state store: by connection string, else
        by the app's managed identity."""
        from azure.data.tables import TableClient

        name = f"{settings.table_prefix}{PRICES_TABLE}"
        if settings.storage_connection_string:
            connection = settings.storage_connection_string
            return cls(TableClient.from_connection_string(connection, name, **_TABLE_CLIENT_OPTIONS))
        from azure.identity import ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=settings.managed_identity_client_id or None)
        endpoint = f"https://{settings.storage_account_name}.table.core.windows.net"
        return cls(TableClient(endpoint, name, credential=credential, **_TABLE_CLIENT_OPTIONS))

    def get(self, region: str, size: str) -> SizePrices | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            entity = self.table.get_entity(partition_key=region, row_key=size)
        except ResourceNotFoundError:
            return None  # no row yet, or no table yet
        except AzureError as error:
            log.warning("price cache: reading %s/%s failed (%s); asking the API", region, size, type(error).__name__)
            return None
        return _prices_from_entity(entity)

    def put(self, region: str, size: str, prices: SizePrices) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        entity = _entity_from_prices(region, size, prices, self.SCHEMA_VERSION)
        try:
            try:
                self.table.upsert_entity(entity)
            except ResourceNotFoundError:
                self._create_table()
                self.table.upsert_entity(entity)
        except AzureError as error:
            log.warning("price cache: writing %s/%s failed (%s); kept in memory", region, size, type(error).__name__)

    def _create_table(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.table.create_table()


def _entity_from_prices(region: str, size: str, prices: SizePrices, schema_version: int) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": region,
        "RowKey": size,
        "FetchedAt": prices.fetched_at,
        "SchemaVersion": schema_version,
    }
    if prices.regular_usd_per_hour is not None:
        entity["RegularUsdPerHour"] = float(prices.regular_usd_per_hour)
    if prices.spot_usd_per_hour is not None:
        entity["SpotUsdPerHour"] = float(prices.spot_usd_per_hour)
    return entity


def _prices_from_entity(entity: Mapping[str, Any]) -> SizePrices | None:
    """A row as prices; None for a row this code cannot read (it is then fetched again and overwritten)."""
    fetched_at = entity.get("FetchedAt")
    regular, spot = entity.get("RegularUsdPerHour"), entity.get("SpotUsdPerHour")
    if not isinstance(fetched_at, datetime) or not all(
        v is None or isinstance(v, float | int) for v in (regular, spot)
    ):
        return None
    return SizePrices(
        regular_usd_per_hour=None if regular is None else float(regular),
        spot_usd_per_hour=None if spot is None else float(spot),
        fetched_at=_aware(fetched_at),
    )


# --------------------------------------------------------------------------------------------
# The book: memory, then the table, then the API; stale or static when the API is away
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    """The price of one size and priority, or why there is none."""

    usd_per_hour: float | None
    source: str  # where the price came from, or why there is none


@dataclass
class RetailPriceBook:
    """Retail prices by region and VM size, shared by every cluster of the process (thread-safe)."""

    client: RetailPriceSource
    cache: PriceCache | None = None
    clock: Callable[[], datetime] = utc_now
    ttl: timedelta = PRICE_CACHE_TTL
    retry_after_failure: timedelta = RETRY_AFTER_FAILURE
    _memory: dict[tuple[str, str], SizePrices] = field(default_factory=dict, init=False, repr=False)
    _failed: dict[str, tuple[datetime, str]] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def quote(self, region: str, size: str, *, is_spot: bool) -> Quote:
        """The retail price of one node of `size` (spot or regular) in `region`, or why there is none."""
        check_region(region)
        check_vm_size(size)
        prices, stale_because = self._prices(region, size)
        what = f"{size}{' (spot)' if is_spot else ''} in {region}"
        if prices is None:
            return Quote(None, f"no retail price: {stale_because}")
        price = prices.usd_per_hour(is_spot=is_spot)
        if price is None:
            return Quote(None, f"no retail price: the Retail Prices API lists no {what}")
        fetched = prices.fetched_at.strftime("%Y-%m-%d %H:%MZ")
        stale = f"; stale, {stale_because}" if stale_because else ""
        return Quote(
            price, f"retail price of {what}, {price:g} USD/h (Azure Retail Prices API, fetched {fetched}{stale})"
        )

    def _prices(self, region: str, size: str) -> tuple[SizePrices | None, str]:
        """Fresh prices and "", or the freshest copy there is (maybe None) and why it is not fresh."""
        now = self.clock()
        known = self._remembered(region, size)
        if known is not None and self._fresh(known, now):
            return known, ""
        if self.cache is not None:
            cached = self.cache.get(region, size)
            if cached is not None and (known is None or cached.fetched_at > known.fetched_at):
                known = self._remember(region, size, cached)
            if known is not None and self._fresh(known, now):
                return known, ""
        failure = self._recent_failure(region, now)
        if failure is None:
            try:
                fetched = self.client.fetch(region, [size], now)[size]
            except RetailPricesUnavailable as error:
                failure = self._record_failure(region, now, str(error))
            else:
                self._remember(region, size, fetched)
                self._clear_failure(region)
                if self.cache is not None:
                    self.cache.put(region, size, fetched)
                return fetched, ""
        return known, f"the Retail Prices API did not answer: {failure}"

    def _fresh(self, prices: SizePrices, now: datetime) -> bool:
        return now - prices.fetched_at < self.ttl

    def _remembered(self, region: str, size: str) -> SizePrices | None:
        with self._lock:
            return self._memory.get((region, size))

    def _remember(self, region: str, size: str, prices: SizePrices) -> SizePrices:
        with self._lock:
            self._memory[(region, size)] = prices
        return prices

    def _clear_failure(self, region: str) -> None:
        with self._lock:
            self._failed.pop(region, None)

    def _recent_failure(self, region: str, now: datetime) -> str | None:
        with self._lock:
            failed = self._failed.get(region)
        if failed is None or now - failed[0] >= self.retry_after_failure:
            return None
        return failed[1]

    def _record_failure(self, region: str, now: datetime, reason: str) -> str:
        log.warning(
            "retail prices for %s: %s; static price classes until %s", region, reason, now + self.retry_after_failure
        )
        with self._lock:
            self._failed[region] = (now, reason)
        return reason


# --------------------------------------------------------------------------------------------
# The planner's hooks
# --------------------------------------------------------------------------------------------


def _static_price(node_type: NodeTypeConfig) -> tuple[float, str] | None:
    from provisioning.azure.plugin import azure_node_price

    return azure_node_price(node_type)


def _vm_size_and_priority(node_type: NodeTypeConfig) -> tuple[str, bool] | None:
    from provisioning.azure.plugin import node_arm_parameters

    parameters = node_arm_parameters(node_type)
    return None if parameters is None else (parameters.vmSize, parameters.is_spot)


def retail_prices_for(region: str, book: RetailPriceBook, *, fallback: NodePrices | None = None) -> NodePrices:
    """The price hook of node types in `region`: the retail price of the type's VM size and priority, else
    `fallback`'s (the static price classes by default) with the reason; None for a type without a VM size."""
    check_region(region)
    static = fallback if fallback is not None else _static_price

    def price(node_type: NodeTypeConfig) -> tuple[float, str] | None:
        vm = _vm_size_and_priority(node_type)
        if vm is None:
            return static(node_type)
        size, is_spot = vm
        quote = book.quote(region, size, is_spot=is_spot)
        if quote.usd_per_hour is not None:
            return quote.usd_per_hour, quote.source
        priced = static(node_type)
        return None if priced is None else (priced[0], f"{priced[1]}; {quote.source}")

    return price


def region_of(provider: ProviderConfig) -> str | None:
    """The ARM region name of an Azure provider section (`West US 2` and `westus2` alike), or None."""
    location = getattr(provider, "location", None)
    if not isinstance(location, str) or not location.strip():
        return None
    region = location.replace(" ", "").lower()
    return region if _REGION.fullmatch(region) else None


class RetailPrices:
    """The Azure plugin's price hook. Called on a node type alone it gives the static price class (it does not know
    the region); `located(provider)` gives the hook of the cluster's region, retail prices once `configure` has
    given it a book (the plugin's `build` does, from the first BuildContext), static ones until then."""

    def __init__(self, fallback: NodePrices | None = None) -> None:
        self.fallback: NodePrices = fallback if fallback is not None else _static_price
        self.book: RetailPriceBook | None = None
        self._lock = threading.Lock()

    def __call__(self, node_type: NodeTypeConfig) -> tuple[float, str] | None:
        return self.fallback(node_type)

    def located(self, provider: ProviderConfig) -> NodePrices:
        region = region_of(provider)
        book = self.book
        if region is None or book is None:
            return self.fallback
        return retail_prices_for(region, book, fallback=self.fallback)

    def configure(self, book: RetailPriceBook | None) -> None:
        with self._lock:
            self.book = book

    def configure_from(self, context: BuildContext, environment: Mapping[str, str] | None = None) -> None:
        """Once per process: a book from the build context, unless one is set already (see `book_for`). A retail
        prices URL that is not one is logged and leaves the static price classes: prices never stop a launch."""
        with self._lock:
            if self.book is not None:
                return
            try:
                self.book = book_for(context, environment)
            except ValueError as error:
                log.error("retail prices off, static price classes only: %s", error)


def retail_prices_url(options: Mapping[str, Any], environment: Mapping[str, str]) -> str | None:
    """Where to read retail prices, or None for "static price classes only":

    - the plugin option `retail_prices_url` (tests: the loopback recording), else
    - the app setting RETAIL_PRICES_URL ("off" turns retail prices off), else
    - the real endpoint, unless ARM itself is emulated (a `base_url` option): a test deployment never reaches the
      internet by default.
    """
    url = str(options.get(RETAIL_PRICES_URL_OPTION) or environment.get(RETAIL_PRICES_URL_SETTING, "")).strip()
    if url.lower() == RETAIL_PRICES_OFF:
        return None
    if url:
        return url
    return None if options.get("base_url") else RETAIL_PRICES_URL


def book_for(context: BuildContext, environment: Mapping[str, str] | None = None) -> RetailPriceBook | None:
    """A book from the plugin's build context: the client of `retail_prices_url`, the `prices` table of the app's
    storage account as its cache; None when retail prices are off here."""
    import os

    url = retail_prices_url(context.options, os.environ if environment is None else environment)
    if url is None:
        return None
    client = RetailPricesClient(url)  # checks the URL first
    return RetailPriceBook(client=client, cache=TablePriceCache.from_settings(context.settings))


def azure_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The plugin options minus this module's, i.e. what `AzureSettings` takes."""
    return {key: value for key, value in options.items() if key != RETAIL_PRICES_URL_OPTION}
