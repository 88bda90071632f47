"""The Azure plugin: everything the control plane knows about Azure, registered in provisioning/registry.py.

- `AzureProviderConfig`: the `provider` section of an Azure config (Ray's keys and ours), with Azure's naming rules;
- `AZURE_DEFAULTS`: Ray's defaults.yaml for Azure, which fills what a config leaves out;
- rules on the raw config: a location and a resource group, and every node type's `azure_arm_parameters`;
- `check`: why this deployment can never build an Azure provider for a config (no subscription, no region...);
- `build`: the `AzureCloudProvider` (provider.py), whose management SDKs are imported only then;
- `place`: Azure clusters go to the deployment's clusters resource group, Ray's legacy `Low` priority goes as `Spot`;
- `azure_node_price`: relative price classes of VM sizes (family rate per vCPU, accelerator rate per GPU, spot);
- SSH: closed unless `provider.ssh_allowed_cidrs` lists sources; a config without a public key gets a generated pair.

Importing this module is cheap (no SDK): the core looks it up through the registry when a config is parsed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from autoscaler.config import (
    ClusterConfig,
    ConfigModel,
    FieldAdjustment,
    FieldError,
    FieldErrors,
    NodeTypeConfig,
    ProviderConfig,
    format_path,
    join_path,
    reading_stored,
)
from autoscaler.ports import BuildContext, CloudProvider, InvalidRequestError, ProviderPlugin, SshPolicy
from autoscaler.settings import Settings
from provisioning.azure.offerings import azure_offering
from provisioning.azure.retail_prices import RetailPrices, azure_options

# --------------------------------------------------------------------------------------------
# The provider section
# --------------------------------------------------------------------------------------------

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SUBSCRIPTION_ID = re.compile(_GUID)
_RESOURCE_GROUP = re.compile(r"[-\w.()]{0,89}[-\w()]")
_LOCATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ]{0,63}")
_SUBNET_ID = re.compile(
    rf"/subscriptions/{_GUID}/resourceGroups/[-\w.()]{{1,90}}/providers/Microsoft\.Network"
    r"/virtualNetworks/[A-Za-z0-9][-\w.]{0,63}/subnets/[A-Za-z0-9][-\w.]{0,79}",
    re.IGNORECASE,
)
_ZONE = re.compile(r"[0-9]{1,2}")
_ZONES_DISABLED = frozenset({"", "auto", "none", "null"})


def _check_cidr(value: str, info: ValidationInfo) -> str:
    if reading_stored(info):
        return value
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address or CIDR range") from None
        raise ValueError(f"{value!r} has host bits set; did you mean {network}?") from None
    return value


class AzureProviderSection(ProviderConfig):
    """The keys of an Azure `provider` section, Ray's and ours, with Azure's naming rules. The local provider takes the
    same section (LocalProviderConfig), so an Azure config runs on this machine by changing only its `type`."""

    location: str | None = None
    resource_group: str | None = None
    subscription_id: str | None = None
    availability_zone: str | None = None  # "1,2,3"; "auto", "none" or absent: let Azure pick
    use_internal_ips: bool = False
    subnet_id: str | None = None  # reuse this subnet instead of creating a virtual network
    ssh_allowed_cidrs: list[Annotated[str, AfterValidator(_check_cidr)]] = Field(default_factory=list)
    # ^ no SSH from anywhere unless listed
    launch_delay_s: float = Field(default=0.0, ge=0)  # local provider: simulated VM start time

    @field_validator("location")
    @classmethod
    def _location_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if reading_stored(info):
            return value
        if value is not None and not _LOCATION.fullmatch(value):
            raise ValueError("must be an Azure region name such as 'westus2'")
        return value

    @field_validator("resource_group")
    @classmethod
    def _resource_group_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if reading_stored(info):
            return value
        if value is not None and not _RESOURCE_GROUP.fullmatch(value):
            raise ValueError(
                "must be 1-90 letters, digits, '_', '-', '.' or parentheses, not ending with '.' (Azure's rule)"
            )
        return value

    @field_validator("subscription_id")
    @classmethod
    def _subscription_guid(cls, value: str | None, info: ValidationInfo) -> str | None:
        if reading_stored(info):
            return value
        if value is not None and not _SUBSCRIPTION_ID.fullmatch(value):
            raise ValueError("must be a subscription id (a GUID such as 00000000-0000-0000-0000-000000000000)")
        return value

    @field_validator("availability_zone", mode="before")
    @classmethod
    def _zone_number_as_text(cls, value: object) -> object:
        # `availability_zone: 1` is a YAML int; Ray's launcher reads it as the zone "1".
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("availability_zone")
    @classmethod
    def _zones_are_numbers(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.strip().lower() in _ZONES_DISABLED or reading_stored(info):
            return value
        if not all(_ZONE.fullmatch(zone.strip()) for zone in value.split(",")):
            raise ValueError('must be zone numbers separated by commas ("1,2,3"), "auto" or "none"')
        return value

    @field_validator("subnet_id")
    @classmethod
    def _subnet_is_resource_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not _SUBNET_ID.fullmatch(value) and not reading_stored(info):
            raise ValueError(
                "must be a subnet resource id: /subscriptions/<guid>/resourceGroups/<group>/providers/"
                "Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>"
            )
        return value

    def node_shape(self) -> dict[str, Any]:
        """What of this section shapes a VM (hashed into every node's `node_hash`; docs/decisions/config-hash.md)."""
        return {
            "type": self.type,
            "location": self.location,
            "resource_group": self.resource_group,
            "subscription_id": self.subscription_id,
            "zones": self.zones(),
            "subnet_id": self.subnet_id,
            "use_internal_ips": self.use_internal_ips,
            "ssh_allowed_cidrs": sorted(self.ssh_allowed_cidrs),
        }

    def zones(self) -> list[str]:
        """The zones to spread VMs over; [] lets Azure pick."""
        if self.availability_zone is None or self.availability_zone.strip().lower() in _ZONES_DISABLED:
            return []
        return [zone.strip() for zone in self.availability_zone.split(",")]


class AzureProviderConfig(AzureProviderSection):
    type: Literal["azure"]


def azure_provider(config: ClusterConfig) -> AzureProviderConfig:
    """The config's provider section, typed as Azure's; InvalidRequestError when it is another cloud's."""
    if not isinstance(config.provider, AzureProviderConfig):
        raise InvalidRequestError(f"provider type {config.provider.type!r} is not azure")
    return config.provider


# --------------------------------------------------------------------------------------------
# A node type's VM: `node_config.azure_arm_parameters`
# --------------------------------------------------------------------------------------------

# osDisk.managedDisk.storageAccountType values (Compute's StorageAccountTypes).
OsDiskType = Literal[
    "Standard_LRS", "Premium_LRS", "StandardSSD_LRS", "UltraSSD_LRS", "Premium_ZRS", "StandardSSD_ZRS", "PremiumV2_LRS"
]

_VM_SIZE = re.compile(r"[A-Za-z0-9_]{1,64}")
# A managed image, a Compute Gallery image definition (latest version) or one of its versions.
_IMAGE_ID = re.compile(
    rf"/subscriptions/{_GUID}/resourceGroups/[-\w.()]{{1,90}}/providers/Microsoft\.Compute/"
    r"(images/[^/]+|galleries/[^/]+/images/[^/]+(/versions/[^/]+)?)",
    re.IGNORECASE,
)


class BillingProfile(ConfigModel):
    maxPrice: float  # USD per hour; -1 means "never evict for price"

    @field_validator("maxPrice")
    @classmethod
    def _price_is_cap_or_unlimited(cls, value: float) -> float:
        if value != -1 and value <= 0:
            raise ValueError("must be -1 (pay up to the on-demand price) or a price > 0")
        return value


class AzureArmParameters(BaseModel):
    """`node_config.azure_arm_parameters`: what the VM is made of. Unknown keys are kept for the renderer."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True, allow_inf_nan=False)

    vmSize: str = Field(pattern=f"^{_VM_SIZE.pattern}$")
    imagePublisher: str | None = Field(default=None, min_length=1)
    imageOffer: str | None = Field(default=None, min_length=1)
    imageSku: str | None = Field(default=None, min_length=1)
    imageVersion: str | None = Field(default=None, min_length=1)
    imageId: str | None = None  # overrides the four image fields, as in Ray
    priority: Literal["Regular", "Spot", "Low"] = "Regular"
    evictionPolicy: Literal["Delete", "Deallocate"] | None = None
    billingProfile: BillingProfile | None = None
    osDiskSizeGB: int | None = Field(default=None, gt=0, le=4095)
    osDiskType: OsDiskType | None = None

    @field_validator("imageId")
    @classmethod
    def _image_resource_id(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE_ID.fullmatch(value):
            raise ValueError(
                "must be the resource id of a managed image or a Compute Gallery image (version): /subscriptions/"
                "<guid>/resourceGroups/<group>/providers/Microsoft.Compute/galleries/<gallery>/images/<image>"
                "[/versions/<version>]"
            )
        return value

    @property
    def is_spot(self) -> bool:
        return self.priority in ("Spot", "Low")


class AzurePriorityMix(ConfigModel):
    """Spot Priority Mix of a scale set (Azure's `priorityMixPolicy`): the first `base_regular_count` VMs are regular,
    and `regular_percentage_above_base` percent of the rest; the others are spot. Needs a spot node type."""

    base_regular_count: int = Field(default=0, ge=0)
    regular_percentage_above_base: int = Field(default=0, ge=0, le=100)


class AzureScaleSet(ConfigModel):
    """`node_config.azure_scale_set`: the node type's workers are VMs of one scale set in Flexible orchestration
    (docs/decisions/scale-sets.md). Growing it is one capacity write for any count; shrinking deletes exactly the VMs
    the planner chose."""

    # Flexible orchestration spreads VMs over this many fault domains (1: Azure spreads them as it can).
    platform_fault_domain_count: int = Field(default=1, ge=1, le=3)
    priority_mix: AzurePriorityMix | None = None


def node_scale_set(node_type: NodeTypeConfig) -> AzureScaleSet | None:
    """The node type's `node_config.azure_scale_set`, or None for a node type of single VMs."""
    raw = node_type.node_config.get("azure_scale_set")
    return None if raw is None else AzureScaleSet.model_validate(raw)


def node_arm_parameters(node_type: NodeTypeConfig) -> AzureArmParameters | None:
    """The node type's `node_config.azure_arm_parameters`, or None when it has none (a local node type)."""
    parameters = node_type.node_config.get("azure_arm_parameters")
    return None if parameters is None else AzureArmParameters.model_validate(parameters)


# Keys of Ray's provider schema and of Ray's Azure provider that this control plane does not use
# (it creates its own network and never gives VMs an identity).
IGNORED_PROVIDER_FIELDS = frozenset(
    {
        "cache_stopped_nodes",
        "msi_name",
        "msi_resource_group",
        "msi_identity_id",
        "msi_identity_principal_id",
        "msi",
        "nsg",
        "subnet",
        "subnet_mask",
        "unique_id",
        "use_external_head_ip",
        "tags",
        "region",
        "module",
        "head_ip",
        "worker_ips",
        "namespace",
        "disable_node_updaters",
        "project_id",
        "security_group",
        "autoscaler_service_account",
        "autoscaler_role",
        "autoscaler_role_binding",
        "gcp_credentials",
        "cloudwatch",
        "_config_cache_path",
    }
)

# --------------------------------------------------------------------------------------------
# Ray's defaults (copied from Ray 2.60, because the Functions app does not install Ray;
# tests/unit/test_config.py checks the copy against the installed ray/autoscaler/azure/defaults.yaml)
# --------------------------------------------------------------------------------------------

_RAY_AZURE_IMAGE = {
    "imagePublisher": "microsoft-dsvm",
    "imageOffer": "ubuntu-2204",
    "imageSku": "2204-gen2",
    "imageVersion": "latest",
}

AZURE_DEFAULTS: dict[str, Any] = {
    "cluster_name": "default",
    "max_workers": 2,
    "upscaling_speed": 1.0,
    "docker": {},
    "idle_timeout_minutes": 5,
    "provider": {
        "type": "azure",
        "location": "westus2",
        "resource_group": "ray-cluster",
        "availability_zone": "auto",
    },
    "auth": {"ssh_user": "ubuntu"},
    "available_node_types": {
        "ray.head.default": {
            "resources": {"CPU": 2},
            "node_config": {
                "azure_arm_parameters": {
                    "vmSize": "Standard_D2s_v3",
                    **_RAY_AZURE_IMAGE,
                    "availability_zone": "none",
                }
            },
        },
        "ray.worker.default": {
            "min_workers": 0,
            "resources": {"CPU": 2},
            "node_config": {
                "azure_arm_parameters": {"vmSize": "Standard_D2s_v3", **_RAY_AZURE_IMAGE, "priority": "Spot"}
            },
        },
    },
    "head_node_type": "ray.head.default",
    "file_mounts": {},
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "rsync_exclude": [],
    "rsync_filter": [],
    "initialization_commands": ["touch ~/.sudo_as_admin_successful"],
    "setup_commands": [
        "(which conda && echo 'eval \"$(conda shell.bash hook)\"' >> ~/.bashrc) || true",
        "conda tos accept",
        "conda create -n ray-env python=3.10 -y",
        "conda activate ray-env && echo 'conda activate ray-env' >> ~/.bashrc",
        'which ray || pip install -U "ray[default] @ https://s3-us-west-2.amazonaws.com/ray-wheels/latest/'
        'ray-3.0.0.dev0-cp310-cp310-manylinux2014_x86_64.whl"',
    ],
    "head_setup_commands": [
        "pip install -U azure-core==1.35.0 azure-identity==1.23.1 azure-mgmt-compute==35.0.0 "
        "azure-mgmt-network==29.0.0 azure-mgmt-resource==24.0.0 azure-common==1.1.28 msrest==0.7.1 "
        "msrestazure==0.6.4.post1"
    ],
    "worker_setup_commands": [],
    "head_start_ray_commands": [
        "ray stop",
        "ulimit -n 65536; ray start --head --port=6379 --object-manager-port=8076 "
        "--autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=0.0.0.0",
    ],
    "worker_start_ray_commands": [
        "ray stop",
        "ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076",
    ],
}

# --------------------------------------------------------------------------------------------
# Rules on the raw config, reported with the field errors of the same config
# --------------------------------------------------------------------------------------------


def check_provider(provider: Mapping[str, Any], errors: FieldErrors) -> None:
    for name in ("location", "resource_group"):
        if provider.get(name) is None:
            errors.add(f"provider.{name}", "required for provider type azure")
    if provider.get("launch_delay_s"):
        errors.add("provider.launch_delay_s", "applies only to provider type local")


def check_node_config(node_config: Mapping[str, Any], path: str, errors: FieldErrors) -> None:
    check_arm_parameters(node_config, path, errors, required=True)
    check_scale_set(node_config, path, errors)


STANDBY_POOL_NOT_SUPPORTED = (
    "standby pools are not supported: Azure's standby pool provider needs broad built-in roles, and its VMs would "
    "join Ray before the scale set takes them (docs/decisions/scale-sets.md)"
)


def check_scale_set(node_config: Mapping[str, Any], path: str, errors: FieldErrors) -> None:
    """`node_config.azure_scale_set`: its fields, and a priority mix only on a spot node type."""
    raw = node_config.get("azure_scale_set")
    if raw is None:
        return
    path = join_path(path, ("azure_scale_set",))
    if isinstance(raw, Mapping) and "standby_pool" in raw:
        errors.add(join_path(path, ("standby_pool",)), STANDBY_POOL_NOT_SUPPORTED)
        raw = {key: value for key, value in raw.items() if key != "standby_pool"}
    try:
        scale_set = AzureScaleSet.model_validate(raw)
    except ValidationError as error:
        errors.add_validation_error(path, error)
        return
    parameters = node_config.get("azure_arm_parameters")
    priority = parameters.get("priority", "Regular") if isinstance(parameters, Mapping) else "Regular"
    if scale_set.priority_mix is not None and priority not in ("Spot", "Low"):
        errors.add(
            join_path(path, ("priority_mix",)),
            "needs azure_arm_parameters.priority Spot: Azure mixes regular VMs into a spot scale set",
        )


def check_arm_parameters(node_config: Mapping[str, Any], path: str, errors: FieldErrors, *, required: bool) -> None:
    """`node_config.azure_arm_parameters` (under `path`, the node type's node_config): what the VM is made of."""
    path = join_path(path, ("azure_arm_parameters",))
    parameters = node_config.get("azure_arm_parameters")
    if parameters is None:
        if required:
            errors.add(path, "required for provider type azure (at least vmSize and an image)")
        return
    try:
        AzureArmParameters.model_validate(parameters)
    except ValidationError as error:
        errors.add_validation_error(path, error)
    if isinstance(parameters, Mapping):
        _check_arm_parameter_rules(parameters, path, errors)


def _check_arm_parameter_rules(parameters: Mapping[str, Any], path: str, errors: FieldErrors) -> None:
    if parameters.get("imageId") is None:
        for name in ("imagePublisher", "imageOffer", "imageSku"):
            if parameters.get(name) is None:
                errors.add(join_path(path, (name,)), "required unless imageId is set")
    if parameters.get("priority", "Regular") == "Regular":
        for name in ("evictionPolicy", "billingProfile"):
            if parameters.get(name) is not None:
                errors.add(join_path(path, (name,)), "applies only to priority Spot or Low")


# --------------------------------------------------------------------------------------------
# This deployment: can it run the config, where, and the provider itself
# --------------------------------------------------------------------------------------------


def check(config: ClusterConfig, settings: Settings) -> list[FieldError]:
    """Why an Azure provider for `config` can never be built here (the create answers 400 naming the fields); [] when
    it can. The same conditions as `AzureCloudProvider`'s constructor, without importing the SDKs."""
    provider = azure_provider(config)
    errors: list[FieldError] = []
    if not (provider.subscription_id or settings.clusters_subscription_id):
        errors.append(
            FieldError(
                "provider.subscription_id",
                "no subscription: set provider.subscription_id, or the app setting CLUSTERS_SUBSCRIPTION_ID",
            )
        )
    if not provider.location:
        errors.append(FieldError("provider.location", "an Azure region is required, e.g. 'westus2'"))
    if not provider.resource_group:
        errors.append(
            FieldError(
                "provider.resource_group",
                "a resource group is required (or the app setting CLUSTERS_RESOURCE_GROUP)",
            )
        )
    head = config.available_node_types.get(config.head_node_type)
    if head is not None and head.node_config.get("azure_scale_set") is not None:
        errors.append(
            FieldError(
                format_path(("available_node_types", config.head_node_type, "node_config", "azure_scale_set")),
                "the head node type cannot be a scale set: the head is one VM of its own",
            )
        )
    return errors


def build(config: ClusterConfig, context: BuildContext) -> CloudProvider:
    """The app's managed identity (or a developer login) unless the context brings a credential; `context.options`
    are extra `AzureSettings` fields (tests point `base_url`/`connection_verify` at the loopback ARM emulator)."""
    from provisioning.azure.provider import AzureCloudProvider, AzureSettings

    provider = azure_provider(config)
    RETAIL_PRICES.configure_from(context)  # once per process: retail prices, cached in the app's `prices` table
    azure_settings = AzureSettings(
        subscription_id=provider.subscription_id or context.settings.clusters_subscription_id,
        function_subnet_id=context.settings.function_subnet_id,
        **azure_options(context.options),
    )
    if context.credential_factory is not None:
        return AzureCloudProvider(config, context.credential_factory(), azure_settings)
    return AzureCloudProvider.from_environment(config, azure_settings)


def place(config: ClusterConfig, clusters_group: str) -> tuple[ClusterConfig, list[FieldAdjustment]]:
    """The config as this deployment runs it, and what was changed from the one given.

    Azure clusters go to the clusters resource group (app setting CLUSTERS_RESOURCE_GROUP): the app's custom role
    is granted there and nowhere else, so Ray's `resource_group: ray-cluster` (Ray's default, and
    example-full.yaml's) would only ever answer 403 AuthorizationFailed. Ray's legacy spot priority `Low` is
    sent to Azure as `Spot` (Azure deprecated `Low`); the answer says so too.
    """
    provider = azure_provider(config)
    adjustments: list[FieldAdjustment] = []
    given_group = provider.resource_group or ""
    if clusters_group and given_group.lower() != clusters_group.lower():
        config = config.model_copy(update={"provider": provider.model_copy(update={"resource_group": clusters_group})})
        adjustments.append(
            FieldAdjustment(
                "provider.resource_group",
                given_group,
                clusters_group,
                "this deployment creates clusters only in its clusters resource group (CLUSTERS_RESOURCE_GROUP), "
                "the one its role is granted on",
            )
        )
    for name, node_type in config.available_node_types.items():
        parameters = node_arm_parameters(node_type)
        if parameters is not None and parameters.priority == "Low":
            adjustments.append(
                FieldAdjustment(
                    f"available_node_types.{name}.node_config.azure_arm_parameters.priority",
                    "Low",
                    "Spot",
                    "Azure deprecated 'Low' for VMs; Spot is the same offer",
                )
            )
    return config, adjustments


# --------------------------------------------------------------------------------------------
# Price classes: used only when a node type gives no `cost`
# --------------------------------------------------------------------------------------------

SPOT_PRICE_FACTOR = 0.3  # Azure spot is typically 60-90% cheaper; 0.3 ranks spot below regular without guessing low

# Pay-as-you-go Linux list prices per vCPU-hour by VM family (rounded, East US, 2024-2025). Relative, not a bill.
# GPU families carry most of their price in the accelerator, below.
_FAMILY_PRICE_PER_VCPU_HOUR: dict[str, float] = {
    "A": 0.045,
    "B": 0.021,
    "D": 0.048,
    "DC": 0.1,
    "E": 0.063,
    "EC": 0.075,
    "F": 0.043,
    "FX": 0.09,
    "H": 0.03,
    "HB": 0.03,
    "HC": 0.072,
    "L": 0.078,
    "M": 0.27,
    "NC": 0.02,
    "ND": 0.02,
    "NG": 0.02,
    "NV": 0.02,
}
# Price per GPU-hour by accelerator named in the size (NC24ads_A100_v4); "" is the default for older GPU sizes.
_ACCELERATOR_PRICE_PER_GPU_HOUR: dict[str, float] = {
    "H200": 8.0,
    "H100": 6.5,
    "MI300X": 6.0,
    "A100": 3.4,
    "A10": 1.0,
    "T4": 0.45,
    "": 2.8,
}
_DEFAULT_PRICE_PER_VCPU_HOUR = 0.05
_VM_SIZE_PARTS = re.compile(r"^(?:Standard|Basic)_([A-Z]+)(\d+)")


def vm_size_price(vm_size: str, *, gpus: float, cpus: float, is_spot: bool) -> float:
    """A relative hourly price for an Azure VM size: family rate x vCPUs (from the name) + GPUs x accelerator rate."""
    parts = _VM_SIZE_PARTS.match(vm_size)
    family, vcpus = (parts.group(1), float(parts.group(2))) if parts else ("", cpus)
    per_vcpu = next(
        (
            _FAMILY_PRICE_PER_VCPU_HOUR[family[:length]]
            for length in (2, 1)
            if family[:length] in _FAMILY_PRICE_PER_VCPU_HOUR
        ),
        _DEFAULT_PRICE_PER_VCPU_HOUR,
    )
    accelerator = next((name for name in _ACCELERATOR_PRICE_PER_GPU_HOUR if name and name in vm_size.upper()), "")
    price = per_vcpu * max(vcpus, 1.0) + gpus * _ACCELERATOR_PRICE_PER_GPU_HOUR[accelerator]
    return price * (SPOT_PRICE_FACTOR if is_spot else 1.0)


def azure_node_price(node_type: NodeTypeConfig) -> tuple[float, str] | None:
    """The price class of the node type's VM size (and priority), with where it came from; None without a size."""
    parameters = node_arm_parameters(node_type)
    if parameters is None:
        return None
    cpus = float(node_type.resources.get("CPU", 0.0))
    gpus = float(node_type.resources.get("GPU", 0.0))
    price = vm_size_price(parameters.vmSize, gpus=gpus, cpus=cpus, is_spot=parameters.is_spot)
    return price, f"price class of {parameters.vmSize}{' (spot)' if parameters.is_spot else ''}"


# Retail prices of the cluster's region (provisioning/azure/retail_prices.py), these price classes as the fallback.
RETAIL_PRICES = RetailPrices(fallback=azure_node_price)

AZURE = ProviderPlugin(
    type="azure",
    config_model=AzureProviderConfig,
    defaults=AZURE_DEFAULTS,
    build=build,
    check=check,
    check_provider=check_provider,
    check_node_config=check_node_config,
    ignored_provider_fields=IGNORED_PROVIDER_FIELDS,
    place=place,
    prices=RETAIL_PRICES,
    offering=azure_offering,
    ssh=SshPolicy(
        generates_key_pair=True,
        summary=(
            "closed unless provider.ssh_allowed_cidrs lists sources; without auth.ssh_public_key a key pair is "
            "generated and its private key returned once"
        ),
    ),
)
