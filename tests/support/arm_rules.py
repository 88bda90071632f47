"""What Azure Resource Manager refuses: the request rules of a strict ARM emulator.

`validate_request(method, path, api_version, body)` raises `ArmRuleViolation` (status, code, message, target) for a
request Azure itself would refuse, with Azure's error code. It returns None for a request Azure would accept, and for
any path it does not model (operation-status URLs, other resource types), which it leaves to the caller.

Where the rules come from
- Schemas: the public Azure/azure-rest-api-specs definitions, cited beside each block, at the api-versions our SDKs
  send: Compute virtualMachines 2026-04-01 (azure-mgmt-compute 39.0.0; disks 2026-03-02) and Network 2026-03-01
  (azure-mgmt-network 33.1.0). Network 2026-03-01 is not in the stored copy of the spec repository: its citations
  name 2026-01-01, the newest stored, whose definitions the SDK's 2026-03-01 models match for every property here.
- Server-side rules (not in the swagger): the code Azure answers, as public issue threads and Microsoft's docs show
  it, cited beside each rule; "code unconfirmed" marks the few whose code no stored source shows.

How each resource provider (RP) treats a body, as modelled here
- Unknown properties: both RPs refuse them. Network answers 400 InvalidRequestFormat "Cannot parse the request." with
  an InvalidJson detail "Could not find member 'x' on object of type 'T'" (Azure/azure-powershell#13544, #13700);
  Compute answers 400 BadRequest "Could not find member ..." (Azure/azure-sdk-for-net#37855, Azure/bicep#7520).
- Read-only properties sent back in a PUT (provisioningState, etag, a VM's id...) are ignored, as both RPs do for
  the GET-then-PUT round trip.
- Missing required properties: Compute answers 400 InvalidParameter "Required parameter 'x' is missing (null)." with
  target x (Azure/azure-powershell#4001, hashicorp/terraform#7229); Network answers InvalidRequestFormat with an
  InvalidJson detail (the deserializer that refuses unknown members; code unconfirmed for this case).
- Wrong JSON types and values outside an enum: Compute 400 InvalidParameter "The value of parameter x is invalid."
  (Azure/azure-cli#12459); Network InvalidRequestFormat/InvalidJson (code unconfirmed) unless a rule names a specific
  code. Enum values compare case-insensitively, as both RPs do.
- PATCH bodies are partial: checked like PUT bodies, without the required-property and location rules.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

JsonDict = dict[str, Any]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ArmRuleViolation(Exception):
    """An answer Azure gives instead of accepting the request: `{"error": {code, message, target, details}}`."""

    def __init__(
        self, status: int, code: str, message: str, target: str | None = None, details: Sequence[Mapping[str, str]] = ()
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = [dict(detail) for detail in details]

    def body(self) -> JsonDict:
        """The ARM error document for this violation."""
        error: JsonDict = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        if self.details:
            error["details"] = self.details
        return {"error": error}


def refuse(code: str, message: str, target: str | None = None, details: Sequence[Mapping[str, str]] = ()) -> NoReturn:
    """Every refusal modelled here is a 400 Bad Request."""
    raise ArmRuleViolation(400, code, message, target, details)


class Rp(enum.Enum):
    COMPUTE = "Microsoft.Compute"
    NETWORK = "Microsoft.Network"


@dataclass(frozen=True)
class Request:
    """What a rule sees: the method, the names in the path (the resource's, then its children's) and the body."""

    method: str
    names: tuple[str, ...]
    body: JsonDict

    @property
    def properties(self) -> JsonDict:
        return _props(self.body)

    @property
    def is_put(self) -> bool:
        return self.method == "PUT"


Rule = Callable[[Request], None]


# ==============================================================================================================
# The entry point
# ==============================================================================================================


def validate_request(method: str, path: str, api_version: str | None, body: JsonDict | None) -> None:
    """Raise ArmRuleViolation when Azure would refuse this request; return None otherwise (or when not modelled)."""
    method = method.upper()
    route = _route(path)
    if route is None:
        return
    resource_type, names, is_item = route
    check_api_version(resource_type, api_version)
    if method not in ("PUT", "PATCH") or not is_item or resource_type.schema is None:
        return
    if not isinstance(body, dict):
        # ARM refuses a write whose body is no JSON object before any RP sees it: 400 InvalidRequestContent
        # "The request content was invalid and could not be deserialized ..." (Azure/azure-sdk-for-net#3487).
        refuse("InvalidRequestContent", "The request content was invalid and could not be deserialized.")
    request = Request(method, names, body)
    if resource_type.tracked and request.is_put:
        location_required(request)
    walk(resource_type.schema, body, "", resource_type.rp, partial=not request.is_put)
    for rule in resource_type.rules:
        rule(request)


# ==============================================================================================================
# Routes and api-versions
# ==============================================================================================================


@dataclass(frozen=True)
class ResourceType:
    name: str  # e.g. "Microsoft.Network/virtualNetworks/subnets"
    rp: Rp
    api_versions: frozenset[str]
    schema: Obj | None  # the PUT/PATCH body; None: writes are not modelled, only the api-version is checked
    tracked: bool = False  # a top-level resource, with a location
    rules: tuple[Rule, ...] = ()


def _route(path: str) -> tuple[ResourceType, tuple[str, ...], bool] | None:
    """(type, names, is_item) of `/subscriptions/{s}[/resourceGroups/{g}]/providers/{ns}/{type}[/{name}[/{child}/
    {name}]]`, is_item False for a list; None for anything not modelled here."""
    segments = [segment for segment in path.split("?", 1)[0].split("/") if segment]
    if len(segments) < 2 or segments[0].lower() != "subscriptions":
        return None
    rest = segments[2:]
    if len(rest) >= 2 and rest[0].lower() == "resourcegroups":
        rest = rest[2:]
    if len(rest) < 3 or rest[0].lower() != "providers":
        return None
    parts = rest[2:]
    types, names = parts[0::2], tuple(parts[1::2])
    if types[-1].lower() == "instanceview" and len(names) == 1:
        types = types[:-1]  # GET .../virtualMachines/{name}/instanceView
    resource_type = RESOURCE_TYPES.get(f"{rest[1]}/{'/'.join(types)}".lower())
    if resource_type is None:
        return None
    return resource_type, names, len(names) == len(types)


# The versions each type answers to: the stable folders checked in Azure/azure-rest-api-specs, plus what the SDKs
# send. Azure registers older versions too; add one here when a client needs it.
# - Compute: specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/{2024-03-01,2024-07-01,
#   2024-11-01}/virtualMachine.json and .../Microsoft.Compute/Compute/stable/{2025-04-01,2025-11-01,2026-04-01}/
#   ComputeRP.json; disks .../Microsoft.Compute/DiskRP/stable/2025-01-02/disk.json and 2026-03-02 (the SDK's).
# - Network: specification/network/resource-manager/Microsoft.Network/stable/{2024-05-01,2024-07-01,2025-01-01,
#   2025-03-01,2025-05-01,2025-07-01,2026-01-01}/ and 2026-03-01 (the SDK's, not in the stored copy).
COMPUTE_API_VERSIONS = frozenset({"2024-03-01", "2024-07-01", "2024-11-01", "2025-04-01", "2025-11-01", "2026-04-01"})
DISK_API_VERSIONS = frozenset({"2025-01-02", "2026-03-02"})
NETWORK_API_VERSIONS = frozenset(
    {"2024-05-01", "2024-07-01", "2025-01-01", "2025-03-01", "2025-05-01", "2025-07-01", "2026-01-01", "2026-03-01"}
)
_API_VERSION_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}(-preview|-beta|-alpha|-privatepreview)?", re.IGNORECASE)


def check_api_version(resource_type: ResourceType, api_version: str | None) -> None:
    # ARM checks the api-version before any RP sees the request:
    # - missing: 400 MissingApiVersionParameter "The api-version query parameter (?api-version=) is required for all
    #   requests." (code unconfirmed);
    # - not of the date form: 400 InvalidApiVersionParameter "The api-version 'x' is invalid. The supported versions
    #   are ..." (ansible-collections/azure#188, Azure/azure-cli#28038);
    # - well formed, not registered for the type: 400 NoRegisteredProviderFound "No registered resource provider found
    #   for location ... and API version ... for type ..." (Azure/azure-cli#28496, Azure/migAz#246).
    if not api_version:
        refuse(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    supported = ", ".join(sorted(resource_type.api_versions))
    if not _API_VERSION_FORMAT.fullmatch(api_version):
        refuse(
            "InvalidApiVersionParameter",
            f"The api-version '{api_version}' is invalid. The supported versions are '{supported}'.",
        )
    if api_version.lower() not in resource_type.api_versions:
        refuse(
            "NoRegisteredProviderFound",
            f"No registered resource provider found for API version '{api_version}' and type "
            f"'{resource_type.name.split('/', 1)[1]}'. The supported api-versions are '{supported}'.",
        )


# ==============================================================================================================
# The schema walker
# ==============================================================================================================


@dataclass(frozen=True)
class Scalar:
    kind: type  # str, int, float or bool
    enum: tuple[str, ...] = ()  # allowed values of a string, compared case-insensitively


@dataclass(frozen=True)
class Arr:
    items: Node


@dataclass(frozen=True)
class Obj:
    type_name: str  # the definition's name, as the RP names it in errors
    fields: Mapping[str, Node] = field(default_factory=dict)  # walked into
    required: frozenset[str] = frozenset()
    known: frozenset[str] = frozenset()  # writable members of the definition not walked into: accepted as sent
    read_only: frozenset[str] = frozenset()  # ignored in a PUT, as Azure does
    free_form: bool = False  # a map of strings (tags)


Node = Scalar | Arr | Obj

# Definitions by name, for `define`: the scalars and enums first, then each object once defined (bottom-up).
TYPES: dict[str, Node] = {
    "str": Scalar(str),
    "int": Scalar(int),
    "num": Scalar(float),
    "bool": Scalar(bool),
    "tags": Obj("Tags", free_form=True),
}


def enum_type(name: str, values: str) -> None:
    """Define a string enum from its space-separated values."""
    TYPES[name] = Scalar(str, tuple(values.split()))


def define(type_name: str, members: str) -> Obj:
    """Define an object from a list of its members, each one of: `name` (a string), `name:Type` (`[Type]`: an array
    of Type), `name!` (required), `~name` (a member of the definition not walked into: accepted as sent) and `-name`
    (read-only: ignored in a PUT)."""
    fields: dict[str, Node] = {}
    required: set[str] = set()
    known: set[str] = set()
    read_only: set[str] = set()
    for member in members.split():
        if member[0] in "~-":
            (known if member[0] == "~" else read_only).add(member[1:])
            continue
        name, _, type_of_member = member.partition(":")
        if name.endswith("!"):
            name = name[:-1]
            required.add(name)
        node = TYPES[(type_of_member or "str").strip("[]")]
        fields[name] = Arr(node) if type_of_member.startswith("[") else node
    definition = Obj(type_name, fields, frozenset(required), frozenset(known), frozenset(read_only))
    TYPES[type_name] = definition
    return definition


def walk(node: Node, value: Any, path: str, rp: Rp, *, partial: bool = False) -> None:  # noqa: C901 -- a schema walker: one branch per JSON kind
    """Check `value` against `node`; raise the RP's refusal for the first mismatch."""
    if isinstance(node, Obj):
        if not isinstance(value, dict) or (node.free_form and not all(isinstance(v, str) for v in value.values())):
            _wrong_value(rp, path, value, node.type_name)
        missing = [] if partial else sorted(node.required - {name for name, item in value.items() if item is not None})
        if missing:
            _missing(rp, missing[0], path)
        for name, member in value.items():
            member_path = f"{path}.{name}" if path else name
            if name in node.fields:
                if member is not None:  # null means "not given" to both RPs
                    walk(node.fields[name], member, member_path, rp, partial=partial)
            elif not node.free_form and name not in node.known and name not in node.read_only:
                _unknown_member(rp, name, node.type_name, member_path)
    elif isinstance(node, Arr):
        if not isinstance(value, list):
            _wrong_value(rp, path, value, "an array")
        for index, item in enumerate(value):
            walk(node.items, item, f"{path}[{index}]", rp, partial=partial)
    elif not _scalar_ok(node, value):
        _wrong_value(rp, path, value, node.kind.__name__)


def _scalar_ok(node: Scalar, value: Any) -> bool:
    if node.kind is bool:
        return isinstance(value, bool)
    if node.kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if node.kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if not isinstance(value, str):
        return False
    return not node.enum or value.lower() in {allowed.lower() for allowed in node.enum}


def _parameter(path: str) -> str:
    """Compute names a parameter by its last two segments, without indexes or 'properties': 'osDisk.createOption'."""
    segments = [re.sub(r"\[\d+\]$", "", segment) for segment in path.split(".")]
    return ".".join([segment for segment in segments if segment and segment != "properties"][-2:])


def _nrp_parse_error(message: str) -> NoReturn:
    refuse("InvalidRequestFormat", "Cannot parse the request.", details=[{"code": "InvalidJson", "message": message}])


def _unknown_member(rp: Rp, member: str, type_name: str, path: str) -> NoReturn:
    message = f"Could not find member '{member}' on object of type '{type_name}'. Path '{path}'."
    if rp is Rp.NETWORK:
        _nrp_parse_error(message)
    refuse("BadRequest", message)


def _missing(rp: Rp, name: str, parent_path: str) -> NoReturn:
    path = f"{parent_path}.{name}" if parent_path else name
    if rp is Rp.NETWORK:
        _nrp_parse_error(f"Required property '{name}' not found in JSON. Path '{path}'.")
    refuse("InvalidParameter", f"Required parameter '{_parameter(path)}' is missing (null).", _parameter(path))


def _wrong_value(rp: Rp, path: str, value: Any, expected: str) -> NoReturn:
    if rp is Rp.NETWORK:
        _nrp_parse_error(f"Error converting value {value!r} to type '{expected}'. Path '{path}'.")
    invalid_parameter(_parameter(path))


def invalid_parameter(target: str, message: str | None = None) -> NoReturn:
    """Compute's answer for a value its validation refuses: 400 InvalidParameter with the parameter as target."""
    refuse("InvalidParameter", message or f"The value of parameter {target} is invalid.", target)


# ==============================================================================================================
# Rules shared by every resource type
# ==============================================================================================================


def location_required(request: Request) -> None:
    # common-types/resource-management/v3/types.json TrackedResource.location (required). ARM's answer:
    # 400 LocationRequired "The location property is required for this definition." (code unconfirmed).
    location = request.body.get("location")
    if not isinstance(location, str) or not location:
        refuse("LocationRequired", "The location property is required for this definition.")


_RESOURCE_ID = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+(/[^/]+/[^/]+)+", re.IGNORECASE)


def check_resource_id(value: Any, path: str) -> None:
    # ARM checks references before the RP: one that is no fully qualified resource id gets 400 LinkedInvalidPropertyId
    # "Property id 'x' at path 'p' is invalid. Expect fully qualified resource Id that start with
    # '/subscriptions/{subscriptionId}' or '/providers/{resourceProviderNamespace}/'." (code unconfirmed).
    if isinstance(value, str) and not _RESOURCE_ID.fullmatch(value):
        refuse(
            "LinkedInvalidPropertyId",
            f"Property id '{value}' at path '{path}' is invalid. Expect fully qualified resource Id that start with "
            "'/subscriptions/{subscriptionId}' or '/providers/{resourceProviderNamespace}/'.",
        )


# Network names (NSGs, rules, VNets, subnets, peerings, NICs, IP configurations, public IPs): docs
# learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules, Microsoft.Network: 1-80
# alphanumerics, '_', '.', '-', starting alphanumeric or '_', ending alphanumeric or '_'. Answer: 400
# InvalidResourceName "Resource name x is invalid. The name can be up to 80 characters long. ..."
# (rh-mobb/documentation#204, hashicorp/terraform-provider-azurerm#21093).
_NETWORK_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?")


def check_network_name(name: Any) -> None:
    if not isinstance(name, str) or not _NETWORK_NAME.fullmatch(name):
        refuse(
            "InvalidResourceName",
            f"Resource name {name} is invalid. The name can be up to 80 characters long. It must begin with a word "
            "character, and it must end with a word character or with '_'. The name may contain word characters or "
            "'.', '-', '_'.",
        )


def check_unique_names(items: Sequence[Mapping[str, Any]], owner: str) -> None:
    # Two children of one name in a collection: 400 InvalidRequestFormat with a DuplicateResourceName detail
    # "Resource x has two child resources with the same name (y)." (Azure/azure-powershell#9920, subnets).
    seen: set[str] = set()
    for item in items:
        name = str(item.get("name", ""))
        if name.lower() in seen:
            message = f"Resource {owner} has two child resources with the same name ({name})."
            refuse(
                "InvalidRequestFormat",
                "Cannot parse the request.",
                details=[{"code": "DuplicateResourceName", "message": message}],
            )
        seen.add(name.lower())


def _items(container: Mapping[str, Any], key: str) -> list[JsonDict]:
    value = container.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _props(item: Mapping[str, Any]) -> JsonDict:
    value = item.get("properties")
    return value if isinstance(value, dict) else {}


def check_address_prefix(value: Any, owner: str) -> IpNetwork:
    # VNet and subnet ranges are CIDRs (virtualNetwork.json 2026-01-01: AddressSpace.addressPrefixes,
    # SubnetPropertiesFormat.addressPrefix(es)). Host bits set: 400 InvalidCIDRNotation "The address prefix x in
    # resource y has an invalid CIDR notation. For the given prefix length, the address prefix should be z."; no CIDR
    # at all: 400 InvalidAddressPrefixFormat (both codes unconfirmed).
    text = value if isinstance(value, str) else repr(value)
    if "/" in text:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            loose = None
        if loose is not None:
            refuse(
                "InvalidCIDRNotation",
                f"The address prefix {text} in resource {owner} has an invalid CIDR notation. For the given prefix "
                f"length, the address prefix should be {loose}.",
            )
    refuse(
        "InvalidAddressPrefixFormat",
        f"Address prefix {text} of resource {owner} is not formatted correctly. It should follow CIDR notation, for "
        "example 10.0.0.0/24.",
    )


# ==============================================================================================================
# Microsoft.Compute/virtualMachines
# ==============================================================================================================
# Schema: specification/compute/resource-manager/Microsoft.Compute/Compute/stable/2026-04-01/ComputeRP.json (api-version
# 2026-04-01), the definitions named below; `known` lists members of those definitions that are not walked into.
# Example body: examples/virtualMachineExamples/VirtualMachine_Create_WithNetworkInterfaceConfigurationDnsSettings.json
# (2025-11-01).

enum_type("DeleteOptions", "Delete Detach")
enum_type("IPVersions", "IPv4 IPv6")
enum_type("PublicIPAllocationMethod", "Dynamic Static")
enum_type("PublicIPAddressSkuName", "Basic Standard")
enum_type("PublicIPAddressSkuTier", "Regional Global")
enum_type("NetworkApiVersion", "2020-11-01 2022-11-01")
enum_type("OperatingSystemTypes", "Windows Linux")
enum_type("CachingTypes", "None ReadOnly ReadWrite")
enum_type("DiskCreateOptionTypes", "FromImage Empty Attach Copy Restore")
enum_type(
    "StorageAccountTypes",
    "Standard_LRS Premium_LRS StandardSSD_LRS UltraSSD_LRS Premium_ZRS StandardSSD_ZRS PremiumV2_LRS",
)
enum_type("VirtualMachinePriorityTypes", "Regular Low Spot SpotPlus")
enum_type("VirtualMachineEvictionPolicyTypes", "Deallocate Delete")

define("SubResource", "id")
define("PublicIPAddressSku", "name:PublicIPAddressSkuName tier:PublicIPAddressSkuTier")
define(
    "VirtualMachinePublicIPAddressConfigurationProperties",
    "idleTimeoutInMinutes:int deleteOption:DeleteOptions publicIPAddressVersion:IPVersions "
    "publicIPAllocationMethod:PublicIPAllocationMethod publicIPPrefix:SubResource ~dnsSettings ~ipTags",
)
define(
    "VirtualMachinePublicIPAddressConfiguration",
    "name! tags:tags sku:PublicIPAddressSku properties:VirtualMachinePublicIPAddressConfigurationProperties",
)
define(
    "VirtualMachineNetworkInterfaceIPConfigurationProperties",
    "subnet:SubResource primary:bool publicIPAddressConfiguration:VirtualMachinePublicIPAddressConfiguration "
    "privateIPAddressVersion:IPVersions ~privateIPAddressPrefixLength ~applicationSecurityGroups "
    "~applicationGatewayBackendAddressPools ~loadBalancerBackendAddressPools",
)
define(
    "VirtualMachineNetworkInterfaceIPConfiguration",
    "name! properties:VirtualMachineNetworkInterfaceIPConfigurationProperties",
)
define(
    "VirtualMachineNetworkInterfaceConfigurationProperties",
    "primary:bool deleteOption:DeleteOptions networkSecurityGroup:SubResource "
    "ipConfigurations!:[VirtualMachineNetworkInterfaceIPConfiguration] ~enableAcceleratedNetworking "
    "~disableTcpStateTracking ~enableFpga ~enableIPForwarding ~dnsSettings ~dscpConfiguration ~auxiliaryMode "
    "~auxiliarySku",
)
define(
    "VirtualMachineNetworkInterfaceConfiguration",
    "name! tags:tags properties:VirtualMachineNetworkInterfaceConfigurationProperties",
)
define("NetworkInterfaceReferenceProperties", "primary:bool deleteOption:DeleteOptions")
define("NetworkInterfaceReference", "id properties:NetworkInterfaceReferenceProperties")
define(
    "NetworkProfile",
    "networkApiVersion:NetworkApiVersion networkInterfaces:[NetworkInterfaceReference] "
    "networkInterfaceConfigurations:[VirtualMachineNetworkInterfaceConfiguration] ~interconnectGroupProfile",
)
define(
    "ManagedDiskParameters",
    "id storageAccountType:StorageAccountTypes ~diskEncryptionSet ~securityProfile ~additionalDiskProperties",
)
define(
    "OSDisk",
    "osType:OperatingSystemTypes name caching:CachingTypes createOption!:DiskCreateOptionTypes diskSizeGB:int "
    "deleteOption:DeleteOptions managedDisk:ManagedDiskParameters ~encryptionSettings ~vhd ~image "
    "~writeAcceleratorEnabled ~diffDiskSettings ~storageFaultDomainAlignment",
)
define("ImageReference", "id publisher offer sku version ~sharedGalleryImageId ~communityGalleryImageId -exactVersion")
define(
    "StorageProfile",
    "imageReference:ImageReference osDisk:OSDisk ~dataDisks ~diskControllerType ~alignRegionalDisksToVMZone "
    "~diskApiVersion",
)
define("SshPublicKey", "path keyData")
define("SshConfiguration", "publicKeys:[SshPublicKey]")
define(
    "LinuxConfiguration",
    "disablePasswordAuthentication:bool ssh:SshConfiguration provisionVMAgent:bool ~patchSettings "
    "~enableVMAgentPlatformUpdates",
)
define(
    "OSProfile",
    "computerName adminUsername adminPassword customData linuxConfiguration:LinuxConfiguration "
    "~windowsConfiguration ~secrets ~allowExtensionOperations ~requireGuestProvisionSignal",
)
define("HardwareProfile", "vmSize ~vmSizeProperties ~processorMode")
define("BillingProfile", "maxPrice:num")
define(
    "VirtualMachineProperties",
    "hardwareProfile:HardwareProfile storageProfile:StorageProfile osProfile:OSProfile "
    "networkProfile:NetworkProfile priority:VirtualMachinePriorityTypes "
    "evictionPolicy:VirtualMachineEvictionPolicyTypes billingProfile:BillingProfile ~flexProfile "
    "~scheduledEventsPolicy ~additionalCapabilities ~securityProfile ~diagnosticsProfile ~availabilitySet "
    "~virtualMachineScaleSet ~proximityPlacementGroup ~host ~hostGroup ~licenseType ~extensionsTimeBudget "
    "~platformFaultDomain ~scheduledEventsProfile ~userData ~capacityReservation ~interconnectBlockProfile "
    "~applicationProfile ~resiliencyProfile -provisioningState -instanceView -vmId -timeCreated",
)
VIRTUAL_MACHINE = define(
    "VirtualMachine",
    "location tags:tags zones:[str] properties:VirtualMachineProperties ~plan ~identity ~extendedLocation "
    "~placement -id -name -type -systemData -resources -managedBy -etag",
)


def _is_linux(request: Request) -> bool:
    os_disk = (request.properties.get("storageProfile") or {}).get("osDisk") or {}
    return "linuxConfiguration" in (request.properties.get("osProfile") or {}) or os_disk.get("osType") == "Linux"


def vm_name(request: Request) -> None:
    # Compute entity names (the VM, its OS disk): Compute refuses with 400 InvalidParameter "The entity name 'x' is
    # invalid according to its validation rule: ^[^_\W][\w-._]{0,79}(?<![-.])$." (code unconfirmed); a Linux VM name
    # is 1-64 characters (docs: resource-name-rules, Microsoft.Compute/virtualMachines).
    names = {"vmName": request.names[0]}
    os_disk = (request.properties.get("storageProfile") or {}).get("osDisk") or {}
    if isinstance(os_disk.get("name"), str):
        names["osDisk.name"] = os_disk["name"]
    for target, name in names.items():
        too_long = target == "vmName" and _is_linux(request) and len(name) > 64
        if too_long or not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,79}", name) or name[-1] in "-.":
            rule = r"^[^_\W][\w-._]{0,79}(?<![-.])$"
            invalid_parameter(
                target, f"The entity name '{target}' is invalid according to its validation rule: {rule}."
            )


def vm_references(request: Request) -> None:
    # ComputeRP.json 2026-04-01 ImageReference.id and ManagedDiskParameters.id are resource ids (check_resource_id).
    storage = request.properties.get("storageProfile") or {}
    check_resource_id((storage.get("imageReference") or {}).get("id"), "properties.storageProfile.imageReference.id")
    managed_disk = (storage.get("osDisk") or {}).get("managedDisk") or {}
    check_resource_id(managed_disk.get("id"), "properties.storageProfile.osDisk.managedDisk.id")


def os_profile_required(request: Request) -> None:
    # OSProfile (ComputeRP.json 2026-04-01) marks neither computerName nor adminUsername required; the service needs
    # both to create from an image: 400 InvalidParameter "Required parameter 'computerName' is missing (null)."
    # (hashicorp/terraform#7229).
    os_profile = request.properties.get("osProfile")
    if request.is_put and isinstance(os_profile, dict):
        for name in ("computerName", "adminUsername"):
            if not os_profile.get(name):
                invalid_parameter(name, f"Required parameter '{name}' is missing (null).")


# ComputeRP.json 2026-04-01 OSProfile.computerName: "Max-length (Linux): 64 characters". Answer: 400 InvalidParameter,
# target computerName, "Linux host name cannot exceed 64 characters in length or contain the following characters:
# ..." (code unconfirmed).
_LINUX_HOST_NAME_FORBIDDEN = frozenset(" `~!@#$%^&*()=+_[]{}\\|;:'\",<>/?")


def linux_computer_name(request: Request) -> None:
    name = (request.properties.get("osProfile") or {}).get("computerName")
    if isinstance(name, str) and _is_linux(request) and (len(name) > 64 or set(name) & _LINUX_HOST_NAME_FORBIDDEN):
        invalid_parameter(
            "computerName",
            "Linux host name cannot exceed 64 characters in length or contain the following characters: "
            "` ~ ! @ # $ % ^ & * ( ) = + _ [ ] { } \\ | ; : ' \" , < > / ?.",
        )


# ComputeRP.json 2026-04-01 OSProfile.adminUsername: its "Disallowed values", "Minimum-length (Linux): 1 character",
# "Max-length (Linux): 64 characters". Answer: 400 InvalidParameter "The Admin Username specified is not allowed.",
# target adminUsername (Azure/azure-cli#582, MicrosoftDocs/azure-docs#27881).
DISALLOWED_ADMIN_USERNAMES = _words(
    "administrator admin user user1 test user2 test1 user3 admin1 1 123 a actuser adm admin2 aspnet backup console "
    "david guest john owner root server sql support support_388945a0 sys test2 test3 user4 user5"
)


def admin_username(request: Request) -> None:
    name = (request.properties.get("osProfile") or {}).get("adminUsername")
    if isinstance(name, str) and name.lower() in DISALLOWED_ADMIN_USERNAMES:
        invalid_parameter("adminUsername", "The Admin Username specified is not allowed.")
    if isinstance(name, str) and _is_linux(request) and not 1 <= len(name) <= 64:
        invalid_parameter("adminUsername")


# ComputeRP.json 2026-04-01 OSProfile.customData: "a base-64 encoded string ... The maximum length of the binary array
# is 65535 bytes." Answer: 400 InvalidParameter "Custom data in OSProfile must be in Base64 encoding and with a maximum
# length of 87380 characters.", target customData (Azure/aks-engine#1663, Azure/acs-engine#4149).
MAX_CUSTOM_DATA_BYTES = 65535


def custom_data(request: Request) -> None:
    value = (request.properties.get("osProfile") or {}).get("customData")
    if not isinstance(value, str):
        return
    try:
        size = len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        size = MAX_CUSTOM_DATA_BYTES + 1
    if size > MAX_CUSTOM_DATA_BYTES:
        message = "Custom data in OSProfile must be in Base64 encoding and with a maximum length of 87380 characters."
        invalid_parameter("customData", message)


def linux_authentication(request: Request) -> None:
    # ComputeRP.json 2026-04-01 LinuxConfiguration.disablePasswordAuthentication and SshPublicKey.path/keyData:
    # - passwords disabled and no key: 400 InvalidParameter "Authentication using either SSH or by user name and
    #   password must be enabled in Linux profile.", target linuxConfiguration (code unconfirmed);
    # - neither key nor password: 400 InvalidParameter "Required parameter 'adminPassword' is missing (null).";
    # - a path other than /home/{adminUsername}/.ssh/authorized_keys: 400 InvalidParameter "Destination path for SSH
    #   public keys is currently limited to its default value /home/{user}/.ssh/authorized_keys due to a known issue
    #   in Linux provisioning agent." (Azure/azure-cli#12459, Azure/WALinuxAgent#1852);
    # - key data that is no SSH-2 RSA (>= 2048 bits) or Ed25519 public key (docs: learn.microsoft.com/azure/
    #   virtual-machines/linux/mac-create-ssh-keys): 400 InvalidParameter "The value of parameter
    #   linuxConfiguration.ssh.publicKeys.keyData is invalid." (the wording of Azure/azure-cli#12459).
    os_profile = request.properties.get("osProfile") or {}
    linux = os_profile.get("linuxConfiguration")
    if not isinstance(linux, dict) or not request.is_put:
        return
    keys = _items(linux.get("ssh") or {}, "publicKeys")
    if linux.get("disablePasswordAuthentication") is True and not keys:
        message = "Authentication using either SSH or by user name and password must be enabled in Linux profile."
        invalid_parameter("linuxConfiguration", message)
    if not keys and not os_profile.get("adminPassword"):
        invalid_parameter("adminPassword", "Required parameter 'adminPassword' is missing (null).")
    default_path = f"/home/{os_profile.get('adminUsername')}/.ssh/authorized_keys"
    for key in keys:
        if key.get("path") != default_path:
            invalid_parameter(
                "linuxConfiguration.ssh.publicKeys.path",
                f"Destination path for SSH public keys is currently limited to its default value {default_path} due "
                "to a known issue in Linux provisioning agent.",
            )
        if not is_ssh_public_key(key.get("keyData")):
            invalid_parameter("linuxConfiguration.ssh.publicKeys.keyData")


def is_ssh_public_key(value: Any) -> bool:
    """An OpenSSH "ssh-rsa|ssh-ed25519 <base64 blob> [comment]" line whose blob matches its type."""
    parts = value.split() if isinstance(value, str) else []
    if len(parts) < 2 or parts[0] not in ("ssh-rsa", "ssh-ed25519"):
        return False
    try:
        fields = list(_ssh_strings(base64.b64decode(parts[1], validate=True)))
    except (binascii.Error, ValueError):
        return False
    if not fields or fields[0] != parts[0].encode():
        return False
    if parts[0] == "ssh-ed25519":
        return len(fields) == 2 and len(fields[1]) == 32
    return len(fields) == 3 and int.from_bytes(fields[2], "big").bit_length() >= 2048


def _ssh_strings(blob: bytes) -> Iterator[bytes]:
    """The length-prefixed strings of an SSH public key blob (RFC 4253 section 6.6)."""
    offset = 0
    while offset < len(blob):
        size = int.from_bytes(blob[offset : offset + 4], "big")
        if offset + 4 + size > len(blob):
            raise ValueError("truncated key")
        yield blob[offset + 4 : offset + 4 + size]
        offset += 4 + size


def spot_settings(request: Request) -> None:
    # ComputeRP.json 2026-04-01 VirtualMachineProperties.evictionPolicy ("For Azure Spot virtual machines"),
    # .billingProfile ("billing related details of a Azure Spot VM") and BillingProfile.maxPrice ("Any decimal value
    # greater than zero" or "-1"). Refused with 400 InvalidParameter, the property as target (Compute's code for
    # refused parameters; messages ours). Priority 'Low' stays accepted: VirtualMachinePriorityTypes only says it
    # "will be deprecated in the future". A PATCH that does not name the priority keeps the VM's (Azure takes a new
    # maxPrice on a deallocated Spot VM), so it is not judged here.
    properties = request.properties
    spot = str(properties.get("priority", "")).lower() in ("spot", "low", "spotplus")
    for name in ("evictionPolicy", "billingProfile"):
        if properties.get(name) is not None and not spot and (request.is_put or "priority" in properties):
            invalid_parameter(name, f"'{name}' can be set only on Azure Spot virtual machines (priority Spot).")
    price = (properties.get("billingProfile") or {}).get("maxPrice")
    if isinstance(price, int | float) and price != -1 and price <= 0:
        invalid_parameter("billingProfile.maxPrice", "Max price must be -1 or a decimal value greater than zero.")


def vm_network_profile(request: Request) -> None:
    # ComputeRP.json 2026-04-01 NetworkProfile:
    # - networkInterfaceConfigurations without networkApiVersion: 400
    #   NetworkApiVersionMustBeSpecifiedWithNetworkInterfaceConfigurations (Azure/azure-sdk-for-python#38507,
    #   kubernetes-sigs/cloud-provider-azure#2697);
    # - several NICs, none primary: 400 NetworkInterfaceMustHavePrimaryPropertySet "Network interface x must have
    #   Primary property set." (ansible/ansible#40648, hashicorp/terraform#6514);
    # - NICs and public IPs declared inline are created by Network, under its rules (names, one primary IP
    #   configuration, Standard public IPs Static: see the Network sections).
    profile = request.properties.get("networkProfile")
    if not isinstance(profile, dict):
        return
    configurations = _items(profile, "networkInterfaceConfigurations")
    if configurations and not profile.get("networkApiVersion"):
        refuse(
            "NetworkApiVersionMustBeSpecifiedWithNetworkInterfaceConfigurations",
            f"Network api version in network profile of virtual machine {request.names[0]} must be specified if "
            "network interface configurations are specified.",
        )
    nics = configurations + _items(profile, "networkInterfaces")
    if len(nics) > 1 and not any(_props(nic).get("primary") is True for nic in nics):
        name = nics[0].get("name") or nics[0].get("id")
        refuse(
            "NetworkInterfaceMustHavePrimaryPropertySet", f"Network interface {name} must have Primary property set."
        )
    for reference in _items(profile, "networkInterfaces"):
        check_resource_id(reference.get("id"), "properties.networkProfile.networkInterfaces.id")
    for configuration in configurations:
        check_network_name(configuration.get("name"))
        ip_configurations = _items(_props(configuration), "ipConfigurations")
        check_ip_configurations(str(configuration.get("name")), ip_configurations)
        for ip_configuration in ip_configurations:
            subnet = _props(ip_configuration).get("subnet") or {}
            check_resource_id(subnet.get("id"), "properties.networkProfile.ipConfigurations.subnet.id")
            public = _props(ip_configuration).get("publicIPAddressConfiguration")
            if isinstance(public, dict):
                check_network_name(public.get("name"))
                check_public_ip(str(public.get("name")), public.get("sku"), _props(public))


# ==============================================================================================================
# Microsoft.Compute/virtualMachineScaleSets (Flexible orchestration)
# ==============================================================================================================
# Schema: specification/compute/resource-manager/Microsoft.Compute/Compute/stable/2026-04-01/ComputeRP.json, the
# VirtualMachineScaleSet* definitions named below (azure-mgmt-compute 39.0.0's models match them member for member).
# Example body: examples/virtualMachineScaleSetExamples/VirtualMachineScaleSet_Create_WithPriorityMixPolicy.json.

enum_type("OrchestrationMode", "Uniform Flexible")
define("ApiEntityReference", "id")
define("Sku", "name tier capacity:int")
define("PriorityMixPolicy", "baseRegularPriorityCount:int regularPriorityPercentageAboveBase:int")
define(
    "VirtualMachineScaleSetIPConfigurationProperties",
    "subnet:ApiEntityReference primary:bool privateIPAddressVersion:IPVersions ~publicIPAddressConfiguration "
    "~applicationGatewayBackendAddressPools ~applicationSecurityGroups ~loadBalancerBackendAddressPools "
    "~loadBalancerInboundNatPools",
)
define("VirtualMachineScaleSetIPConfiguration", "name! properties:VirtualMachineScaleSetIPConfigurationProperties")
define(
    "VirtualMachineScaleSetNetworkConfigurationProperties",
    "primary:bool deleteOption:DeleteOptions networkSecurityGroup:SubResource "
    "ipConfigurations!:[VirtualMachineScaleSetIPConfiguration] ~enableAcceleratedNetworking ~disableTcpStateTracking "
    "~enableFpga ~dnsSettings ~enableIPForwarding ~auxiliaryMode ~auxiliarySku",
)
define(
    "VirtualMachineScaleSetNetworkConfiguration",
    "name! tags:tags properties:VirtualMachineScaleSetNetworkConfigurationProperties",
)
define(
    "VirtualMachineScaleSetNetworkProfile",
    "networkApiVersion:NetworkApiVersion networkInterfaceConfigurations:[VirtualMachineScaleSetNetworkConfiguration] "
    "~healthProbe ~interconnectGroupProfile",
)
define(
    "VirtualMachineScaleSetManagedDiskParameters",
    "storageAccountType:StorageAccountTypes ~diskEncryptionSet ~securityProfile",
)
define(
    "VirtualMachineScaleSetOSDisk",
    "name caching:CachingTypes createOption!:DiskCreateOptionTypes diskSizeGB:int osType:OperatingSystemTypes "
    "deleteOption:DeleteOptions managedDisk:VirtualMachineScaleSetManagedDiskParameters ~writeAcceleratorEnabled "
    "~diffDiskSettings ~storageFaultDomainAlignment ~image ~vhdContainers",
)
define(
    "VirtualMachineScaleSetStorageProfile",
    "imageReference:ImageReference osDisk:VirtualMachineScaleSetOSDisk ~dataDisks ~diskControllerType ~diskApiVersion",
)
define(
    "VirtualMachineScaleSetOSProfile",
    "computerNamePrefix adminUsername adminPassword customData linuxConfiguration:LinuxConfiguration "
    "~windowsConfiguration ~secrets ~allowExtensionOperations ~requireGuestProvisionSignal",
)
define(
    "VirtualMachineScaleSetVMProfile",
    "osProfile:VirtualMachineScaleSetOSProfile storageProfile:VirtualMachineScaleSetStorageProfile "
    "networkProfile:VirtualMachineScaleSetNetworkProfile priority:VirtualMachinePriorityTypes "
    "evictionPolicy:VirtualMachineEvictionPolicyTypes billingProfile:BillingProfile ~securityProfile "
    "~diagnosticsProfile ~extensionProfile ~licenseType ~scheduledEventsProfile ~userData ~capacityReservation "
    "~interconnectBlockProfile ~applicationProfile ~hardwareProfile ~serviceArtifactReference "
    "~securityPostureReference -timeCreated",
)
define(
    "VirtualMachineScaleSetProperties",
    "orchestrationMode:OrchestrationMode platformFaultDomainCount:int singlePlacementGroup:bool "
    "priorityMixPolicy:PriorityMixPolicy virtualMachineProfile:VirtualMachineScaleSetVMProfile ~upgradePolicy "
    "~scheduledEventsPolicy ~automaticRepairsPolicy ~overprovision ~doNotRunExtensionsOnOverprovisionedVMs "
    "~zoneBalance ~proximityPlacementGroup ~hostGroup ~additionalCapabilities ~scaleInPolicy ~spotRestorePolicy "
    "~constrainedMaximumCapacity ~resiliencyPolicy ~skuProfile ~highSpeedInterconnectPlacement "
    "~lifecycleHooksProfile ~externalHealthPolicy -provisioningState -uniqueId -timeCreated",
)
VIRTUAL_MACHINE_SCALE_SET = define(
    "VirtualMachineScaleSet",
    "location tags:tags zones:[str] sku:Sku properties:VirtualMachineScaleSetProperties ~plan ~identity "
    "~extendedLocation ~placement -id -name -type -etag -systemData",
)

# Flexible VM names are "{scale set name}_{8 characters}", at most 64 (docs: virtual-machine-scale-sets-instance-ids);
# the set's own name follows Compute's entity rule (docs: resource-name-rules, Microsoft.Compute/
# virtualMachineScaleSets: 1-64, alphanumerics, underscores, periods and hyphens, starting alphanumeric, not ending
# with a period or hyphen). Answer: 400 InvalidParameter as for a VM name (code unconfirmed).
_SCALE_SET_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")


def scale_set_name(request: Request) -> None:
    name = request.names[0]
    if not _SCALE_SET_NAME.fullmatch(name) or name[-1] in "-.":
        invalid_parameter("vmScaleSetName", f"The entity name '{name}' is invalid according to its validation rule.")


def _profile(request: Request) -> JsonDict:
    value = request.properties.get("virtualMachineProfile")
    return value if isinstance(value, dict) else {}


def flexible_requirements(request: Request) -> None:
    # A Flexible set needs:
    # - platformFaultDomainCount (required by Azure for Flexible sets; hashicorp/terraform-provider-azurerm's
    #   orchestrated_virtual_machine_scale_set makes platform_fault_domain_count Required for that reason): 400
    #   InvalidParameter "Required parameter 'platformFaultDomainCount' is missing (null)." (code unconfirmed);
    # - networkApiVersion with NIC configurations (ComputeRP.json VirtualMachineScaleSetNetworkProfile.networkApiVersion
    #   "used when creating networking resources in the Network Interface Configurations for Virtual Machine Scale Set
    #   with orchestration mode 'Flexible'"): refused as for a VM
    #   (NetworkApiVersionMustBeSpecifiedWithNetworkInterfaceConfigurations).
    properties = request.properties
    if str(properties.get("orchestrationMode", "")).lower() != "flexible" or not request.is_put:
        return
    if properties.get("platformFaultDomainCount") is None:
        invalid_parameter(
            "platformFaultDomainCount", "Required parameter 'platformFaultDomainCount' is missing (null)."
        )
    network = _profile(request).get("networkProfile") or {}
    if _items(network, "networkInterfaceConfigurations") and not network.get("networkApiVersion"):
        refuse(
            "NetworkApiVersionMustBeSpecifiedWithNetworkInterfaceConfigurations",
            f"Network api version in network profile of virtual machine scale set {request.names[0]} must be "
            "specified if network interface configurations are specified.",
        )


def priority_mix(request: Request) -> None:
    # ComputeRP.json PriorityMixPolicy: baseRegularPriorityCount minimum 0; regularPriorityPercentageAboveBase minimum
    # 0, maximum 100. docs: virtual-machine-scale-sets/spot-priority-mix.md: the policy needs a scale set in Flexible
    # orchestration "using a Spot priority VM profile". Answer: 400 InvalidParameter, the property as target (messages
    # ours).
    policy = request.properties.get("priorityMixPolicy")
    if not isinstance(policy, dict):
        return
    base, percent = policy.get("baseRegularPriorityCount"), policy.get("regularPriorityPercentageAboveBase")
    if isinstance(base, int) and base < 0:
        invalid_parameter("priorityMixPolicy.baseRegularPriorityCount")
    if isinstance(percent, int) and not 0 <= percent <= 100:
        invalid_parameter("priorityMixPolicy.regularPriorityPercentageAboveBase")
    if not request.is_put:
        return
    if str(request.properties.get("orchestrationMode", "")).lower() != "flexible":
        invalid_parameter("priorityMixPolicy", "'priorityMixPolicy' is supported only with Flexible orchestration.")
    if str(_profile(request).get("priority", "")).lower() != "spot":
        invalid_parameter("priorityMixPolicy", "'priorityMixPolicy' needs a virtual machine profile of priority Spot.")


def capacity_not_negative(request: Request) -> None:
    # ComputeRP.json Sku.capacity: "the number of virtual machines in the scale set" (a count): 400 InvalidParameter.
    capacity = (request.body.get("sku") or {}).get("capacity")
    if isinstance(capacity, int) and capacity < 0:
        invalid_parameter("sku.capacity")


def profile_rules(request: Request) -> None:
    """The VM profile is held to the VM rules that apply to it: admin user, custom data, Linux authentication, spot
    settings (the same definitions, LinuxConfiguration, BillingProfile and the enums, in both)."""
    profile = _profile(request)
    if not profile:
        return
    as_vm = Request(request.method, request.names, {"properties": profile})
    for rule in (admin_username, custom_data, linux_authentication, spot_settings):
        rule(as_vm)


# ==============================================================================================================
# Microsoft.Network: network security groups
# ==============================================================================================================
# Schema: specification/network/resource-manager/Microsoft.Network/stable/2026-01-01/networkSecurityGroup.json
# (api-version 2026-01-01 for the SDK's 2026-03-01): NetworkSecurityGroup(PropertiesFormat), SecurityRule and
# SecurityRulePropertiesFormat ("required": protocol, access, priority, direction). Example body:
# examples/NetworkSecurityGroupCreateWithRule.json (2026-01-01).

enum_type("SecurityRuleAccess", "Allow Deny")
enum_type("SecurityRuleDirection", "Inbound Outbound")
# protocol is a plain string here: check_security_rule refuses values outside its enum with NRP's own code
define(
    "SecurityRulePropertiesFormat",
    "description protocol! sourcePortRange destinationPortRange sourceAddressPrefix sourceAddressPrefixes:[str] "
    "destinationAddressPrefix destinationAddressPrefixes:[str] sourcePortRanges:[str] destinationPortRanges:[str] "
    "access!:SecurityRuleAccess priority!:int direction!:SecurityRuleDirection ~sourceApplicationSecurityGroups "
    "~destinationApplicationSecurityGroups -provisioningState",
)
SECURITY_RULE = define("SecurityRule", "id name type properties:SecurityRulePropertiesFormat -etag")
define(
    "NetworkSecurityGroupPropertiesFormat",
    "flushConnection:bool securityRules:[SecurityRule] -defaultSecurityRules -networkInterfaces -subnets -flowLogs "
    "-resourceGuid -provisioningState",
)
NETWORK_SECURITY_GROUP = define(
    "NetworkSecurityGroup",
    "id location tags:tags properties:NetworkSecurityGroupPropertiesFormat -name -type -etag",
)

_PROTOCOLS = frozenset({"tcp", "udp", "icmp", "esp", "*", "ah"})
_DEFAULT_TAGS = frozenset({"virtualnetwork", "internet", "azureloadbalancer"})
_SERVICE_TAG = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z0-9]+)?")
_PORT_RANGE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


def security_rules(request: Request) -> None:
    """PUT .../networkSecurityGroups/{nsg}: each rule, then their priorities together."""
    check_network_name(request.names[0])
    rules = _items(request.properties, "securityRules")
    check_unique_names(rules, request.names[0])
    for rule in rules:
        check_security_rule(str(rule.get("name")), _props(rule))
    check_rule_priorities(rules)


def security_rule_resource(request: Request) -> None:
    """PUT .../networkSecurityGroups/{nsg}/securityRules/{name}: the same checks, for one rule."""
    check_security_rule(request.names[-1], request.properties)


def check_security_rule(name: str, rule: Mapping[str, Any]) -> None:
    # networkSecurityGroup.json 2026-01-01 SecurityRulePropertiesFormat. Answers:
    # - protocol outside its enum: 400 SecurityRuleInvalidProtocol "Security rule has invalid Protocol. Value
    #   provided: x Allowed values: Icmp,Tcp,Udp,Esp,Ah,*." (Azure/azure-cli#25181);
    # - priority outside "between 100 and 4096": 400 SecurityRuleInvalidPriority "Security rule has invalid Priority.
    #   Value provided: x Allowed range 100-4096." (pulumi/pulumi-azure-native#2221);
    # - a port other than '*', N or N-M within 0-65535: 400 SecurityRuleInvalidPortRange (Azure/azure-cli#23499,
    #   hashicorp/terraform-provider-azurerm#1530);
    # - an address other than '*', a service tag, an IP or a CIDR without host bits: 400
    #   SecurityRuleInvalidAddressPrefix (Azure/azure-powershell#4557: "50.206.209.68/27" refused);
    # - '*' or a default tag inside a plural prefix list: 400 SecurityRuleParameterContainsUnsupportedValue
    #   (hashicorp/terraform-provider-azurerm#5617);
    # - no source/destination address or port: 400 SecurityRuleParametersMissing "Required security rule parameters
    #   are missing for security rule with Id: x. Security rule must specify ..." (Azure/sap-hana#135, for the
    #   address; the port case is the same rule, code unconfirmed).
    check_network_name(name)
    protocol = rule.get("protocol")
    if isinstance(protocol, str) and protocol.lower() not in _PROTOCOLS:
        message = (
            f'Security rule has invalid Protocol. Value provided: "{protocol}" Allowed values: Icmp,Tcp,Udp,Esp,Ah,*.'
        )
        refuse("SecurityRuleInvalidProtocol", message)
    priority = rule.get("priority")
    if isinstance(priority, int) and not 100 <= priority <= 4096:
        message = f"Security rule has invalid Priority. Value provided: {priority} Allowed range 100-4096."
        refuse("SecurityRuleInvalidPriority", message)
    for side in ("source", "destination"):
        title = side.title()
        single, plural = rule.get(f"{side}PortRange"), rule.get(f"{side}PortRanges") or []
        if single is None and not plural:
            _parameters_missing(name, f"{title}PortRanges or {title}PortRange")
        for port in ([single] if single is not None else []) + list(plural):
            check_port_range(port)
        prefix, prefixes = rule.get(f"{side}AddressPrefix"), rule.get(f"{side}AddressPrefixes") or []
        if prefix is None and not prefixes and not rule.get(f"{side}ApplicationSecurityGroups"):
            _parameters_missing(
                name, f"{title}AddressPrefixes, {title}AddressPrefix, or {title}ApplicationSecurityGroups"
            )
        for value in prefixes:
            if value == "*" or str(value).lower() in _DEFAULT_TAGS:
                refuse(
                    "SecurityRuleParameterContainsUnsupportedValue",
                    f"Security rule parameter {title}AddressPrefixes for rule with Id {name} cannot specify "
                    "existing VIRTUALNETWORK, INTERNET, AZURELOADBALANCER, '*' or system tags. Unsupported value "
                    f"used: {value}.",
                )
        for value in ([prefix] if prefix is not None else []) + list(prefixes):
            check_rule_address(name, value)


def _parameters_missing(name: str, must_specify: str) -> NoReturn:
    refuse(
        "SecurityRuleParametersMissing",
        f"Required security rule parameters are missing for security rule with Id: {name}. Security rule must "
        f"specify {must_specify}.",
    )


def check_port_range(port: Any) -> None:
    match = _PORT_RANGE.fullmatch(port) if isinstance(port, str) else None
    low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, -1)
    if port != "*" and not 0 <= low <= high <= 65535:
        refuse(
            "SecurityRuleInvalidPortRange",
            f"Security rule has invalid Port range. Value provided: {port}. Value should be an integer OR integer "
            "range with '-' delimiter. Valid range 0-65535.",
        )


def check_rule_address(name: str, value: Any) -> None:
    text = str(value)
    if text == "*" or _SERVICE_TAG.fullmatch(text):
        return
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        refuse(
            "SecurityRuleInvalidAddressPrefix",
            f"Security rule {name} has invalid Address prefix. Value provided: {text}",
        )


def check_rule_priorities(rules: Sequence[Mapping[str, Any]]) -> None:
    # "The priority number must be unique for each rule in the collection" (networkSecurityGroup.json 2026-01-01
    # SecurityRulePropertiesFormat.priority), per direction: 400 SecurityRuleConflict "Security rule x conflicts with
    # rule y. Rules cannot have the same Priority and Direction." (Azure/aks-engine#2106, grycap/im#359).
    seen: dict[tuple[int, str], str] = {}
    for rule in rules:
        priority, direction = _props(rule).get("priority"), str(_props(rule).get("direction", "")).lower()
        if not isinstance(priority, int):
            continue
        if (priority, direction) in seen:
            refuse(
                "SecurityRuleConflict",
                f"Security rule {seen[priority, direction]} conflicts with rule {rule.get('name')}. Rules cannot have "
                "the same Priority and Direction.",
            )
        seen[priority, direction] = str(rule.get("name"))


# ==============================================================================================================
# Microsoft.Network: virtual networks, subnets, peerings
# ==============================================================================================================
# Schema: specification/network/resource-manager/Microsoft.Network/stable/2026-01-01/virtualNetwork.json (api-version
# 2026-01-01 for the SDK's 2026-03-01): VirtualNetwork(PropertiesFormat), AddressSpace, Subnet(PropertiesFormat),
# VirtualNetworkPeering(PropertiesFormat). Example bodies: examples/VirtualNetworkCreateSubnet.json and
# examples/VirtualNetworkPeeringCreate.json (2026-01-01).

define("Reference", "id ~location ~tags ~properties -name -type")  # an NSG/route table by id
define(
    "SubnetPropertiesFormat",
    "addressPrefix addressPrefixes:[str] networkSecurityGroup:Reference routeTable:Reference natGateway:SubResource "
    "defaultOutboundAccess:bool ~serviceEndpoints ~serviceEndpointPolicies ~ipAllocations ~delegations "
    "~privateEndpointNetworkPolicies ~privateLinkServiceNetworkPolicies ~applicationGatewayIPConfigurations "
    "~sharingScope ~ipamPoolPrefixAllocations ~serviceGateway -privateEndpoints -ipConfigurations "
    "-ipConfigurationProfiles -resourceNavigationLinks -serviceAssociationLinks -purpose -provisioningState",
)
SUBNET = define("Subnet", "id name type properties:SubnetPropertiesFormat -etag")
# Not required in the spec, but the service needs it (the Azure CLI made --remote-vnet required for that:
# Azure/azure-cli#27193, #27198); refused like any missing member (code unconfirmed).
define(
    "VirtualNetworkPeeringPropertiesFormat",
    "allowVirtualNetworkAccess:bool allowForwardedTraffic:bool allowGatewayTransit:bool useRemoteGateways:bool "
    "remoteVirtualNetwork!:SubResource ~localAddressSpace ~localVirtualNetworkAddressSpace ~remoteAddressSpace "
    "~remoteVirtualNetworkAddressSpace ~remoteBgpCommunities ~peeringState ~peeringSyncLevel "
    "~doNotVerifyRemoteGateways ~peerCompleteVnets ~enableOnlyIPv6Peering ~localSubnetNames ~remoteSubnetNames "
    "-remoteVirtualNetworkEncryption -provisioningState -resourceGuid",
)
PEERING = define("VirtualNetworkPeering", "id name type properties:VirtualNetworkPeeringPropertiesFormat -etag")
define("AddressSpace", "addressPrefixes:[str] ~ipamPoolPrefixAllocations")
define(
    "VirtualNetworkPropertiesFormat",
    "addressSpace:AddressSpace subnets:[Subnet] virtualNetworkPeerings:[VirtualNetworkPeering] "
    "enableDdosProtection:bool ~dhcpOptions ~flowTimeoutInMinutes ~enableVmProtection ~ddosProtectionPlan "
    "~bgpCommunities ~encryption ~ipAllocations ~privateEndpointVNetPolicies ~summarizedGatewayPrefixes "
    "-resourceGuid -provisioningState -flowLogs -defaultPublicNatGateway",
)
VIRTUAL_NETWORK = define(
    "VirtualNetwork",
    "id location tags:tags properties:VirtualNetworkPropertiesFormat ~extendedLocation -name -type -etag",
)


def virtual_network(request: Request) -> None:
    # virtualNetwork.json 2026-01-01: the address space is CIDRs (check_address_prefix); each subnet lies inside it:
    # 400 NetcfgSubnetRangeOutsideVnet "Subnet 'x' is not valid because its IP address range is outside the IP address
    # range of virtual network 'y'."; subnets do not overlap: 400 NetcfgSubnetRangesOverlap (both:
    # MicrosoftDocs/azure-docs#123869); subnet and peering names are Network names, unique in the VNet.
    vnet = request.names[0]
    check_network_name(vnet)
    prefixes = (request.properties.get("addressSpace") or {}).get("addressPrefixes") or []
    space = [check_address_prefix(prefix, vnet) for prefix in prefixes]
    subnets = _items(request.properties, "subnets")
    check_unique_names(subnets, vnet)
    placed: list[tuple[str, IpNetwork]] = []
    for subnet in subnets:
        name = str(subnet.get("name"))
        check_network_name(subnet.get("name"))
        for prefix in subnet_prefixes(name, _props(subnet)):
            if space and not any(_inside(prefix, outer) for outer in space):
                refuse(
                    "NetcfgSubnetRangeOutsideVnet",
                    f"Subnet '{name}' is not valid because its IP address range is outside the IP address range of "
                    f"virtual network '{vnet}'.",
                )
            if any(_inside(prefix, other) or _inside(other, prefix) for _, other in placed):
                refuse(
                    "NetcfgSubnetRangesOverlap",
                    f"Subnet '{name}' is not valid because its IP address range overlaps with that of an existing "
                    f"subnet in virtual network '{vnet}'.",
                )
            placed.append((name, prefix))
        check_references(_props(subnet), "properties.subnets.properties")
    peerings = _items(request.properties, "virtualNetworkPeerings")
    check_unique_names(peerings, vnet)
    for peering in peerings:
        check_network_name(peering.get("name"))
        check_peering(str(peering.get("name")), _props(peering))


def _inside(inner: IpNetwork, outer: IpNetwork) -> bool:
    """Whether `inner` lies within `outer` (two CIDR ranges overlap only when one contains the other)."""
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def subnet_prefixes(name: str, subnet: Mapping[str, Any]) -> list[IpNetwork]:
    # virtualNetwork.json 2026-01-01 SubnetPropertiesFormat.addressPrefix(es); a subnet with neither: 400
    # NetcfgInvalidSubnet "Subnet 'x' is not valid in virtual network 'y'." (Azure/azure-cli#28097; code unconfirmed
    # for this case).
    values = [subnet["addressPrefix"]] if subnet.get("addressPrefix") else list(subnet.get("addressPrefixes") or [])
    if not values:
        refuse("NetcfgInvalidSubnet", f"Subnet '{name}' is not valid in virtual network.")
    return [check_address_prefix(value, name) for value in values]


def subnet_resource(request: Request) -> None:
    """PUT .../virtualNetworks/{vnet}/subnets/{name}: the subnet's own rules (its VNet's range is not known here)."""
    check_network_name(request.names[-1])
    subnet_prefixes(request.names[-1], request.properties)
    check_references(request.properties, "properties")


def check_references(properties: Mapping[str, Any], path: str) -> None:
    for name in ("networkSecurityGroup", "routeTable", "natGateway"):
        reference = properties.get(name)
        if isinstance(reference, dict):
            check_resource_id(reference.get("id"), f"{path}.{name}.id")


def peering_resource(request: Request) -> None:
    """PUT .../virtualNetworks/{vnet}/virtualNetworkPeerings/{name}."""
    check_network_name(request.names[-1])
    check_peering(request.names[-1], request.properties)


def check_peering(name: str, peering: Mapping[str, Any]) -> None:
    # virtualNetwork.json 2026-01-01 VirtualNetworkPeeringPropertiesFormat:
    # - remoteVirtualNetwork.id is a resource id (check_resource_id);
    # - useRemoteGateways needs a gateway in the remote VNet, and the emulator models none: 400
    #   RemoteVnetHasNoGateways "Peering x cannot have UseRemoteGateway flag set to true because remote virtual network
    #   y referenced by the peering does not have any gateways." (Azure/terraform-azurerm-lz-vending#398, #247).
    remote = peering.get("remoteVirtualNetwork")
    if isinstance(remote, dict) and remote.get("id") is None:
        _missing(Rp.NETWORK, "id", "properties.remoteVirtualNetwork")
    remote_id = remote.get("id") if isinstance(remote, dict) else None
    check_resource_id(remote_id, "properties.remoteVirtualNetwork.id")
    if peering.get("useRemoteGateways") is True:
        refuse(
            "RemoteVnetHasNoGateways",
            f"Peering {name} cannot have UseRemoteGateway flag set to true because remote virtual network {remote_id} "
            "referenced by the peering does not have any gateways.",
        )


# ==============================================================================================================
# Microsoft.Network: network interfaces and public IP addresses
# ==============================================================================================================
# Schema: specification/network/resource-manager/Microsoft.Network/stable/2026-01-01/networkInterface.json
# (NetworkInterface(PropertiesFormat), NetworkInterfaceIPConfiguration(PropertiesFormat)) and publicIpAddress.json
# (PublicIPAddress, PublicIPAddressSku, PublicIPAddressPropertiesFormat), api-version 2026-01-01 for the SDK's
# 2026-03-01. Example bodies: examples/NetworkInterfaceCreate.json, examples/PublicIpAddressCreateCustomizedValues.json.

enum_type("IPAllocationMethod", "Static Dynamic")
enum_type("NetworkPublicIPAddressSkuName", "Basic Standard StandardV2")
define(
    "NetworkInterfaceIPConfigurationPropertiesFormat",
    "privateIPAddress privateIPAllocationMethod:IPAllocationMethod privateIPAddressVersion:IPVersions "
    "subnet:Reference primary:bool publicIPAddress:Reference ~gatewayLoadBalancer ~virtualNetworkTaps "
    "~applicationGatewayBackendAddressPools ~loadBalancerBackendAddressPools ~loadBalancerInboundNatRules "
    "~privateIPAddressPrefixLength ~applicationSecurityGroups -provisioningState -privateLinkConnectionProperties",
)
define(
    "NetworkInterfaceIPConfiguration",
    "id name type properties:NetworkInterfaceIPConfigurationPropertiesFormat -etag",
)
define(
    "NetworkInterfacePropertiesFormat",
    "ipConfigurations!:[NetworkInterfaceIPConfiguration] networkSecurityGroup:Reference "
    "enableAcceleratedNetworking:bool enableIPForwarding:bool ~dnsSettings ~disableTcpStateTracking ~workloadType "
    "~nicType ~privateLinkService ~migrationPhase ~auxiliaryMode ~auxiliarySku -virtualMachine -privateEndpoint "
    "-tapConfigurations -macAddress -primary -vnetEncryptionSupported -defaultOutboundConnectivityEnabled "
    "-hostedWorkloads -dscpConfiguration -resourceGuid -provisioningState",
)
NETWORK_INTERFACE = define(
    "NetworkInterface",
    "id location tags:tags properties:NetworkInterfacePropertiesFormat ~extendedLocation -name -type -etag",
)
define("NetworkPublicIPAddressSku", "name:NetworkPublicIPAddressSkuName tier:PublicIPAddressSkuTier")
define(
    "PublicIPAddressPropertiesFormat",
    "publicIPAllocationMethod:IPAllocationMethod publicIPAddressVersion:IPVersions idleTimeoutInMinutes:int "
    "ipAddress deleteOption:DeleteOptions ~dnsSettings ~ddosSettings ~ipTags ~publicIPPrefix "
    "~servicePublicIPAddress ~natGateway ~migrationPhase ~linkedPublicIPAddress -ipConfiguration -resourceGuid "
    "-provisioningState -upgradedToV2",
)
PUBLIC_IP_ADDRESS = define(
    "PublicIPAddress",
    "id location tags:tags zones:[str] sku:NetworkPublicIPAddressSku properties:PublicIPAddressPropertiesFormat "
    "~extendedLocation -name -type -etag",
)


def network_interface(request: Request) -> None:
    check_network_name(request.names[0])
    configurations = _items(request.properties, "ipConfigurations")
    check_ip_configurations(request.names[0], configurations)
    for configuration in configurations:
        for name in ("subnet", "publicIPAddress"):
            reference = _props(configuration).get(name)
            if isinstance(reference, dict):
                check_resource_id(reference.get("id"), f"properties.ipConfigurations.properties.{name}.id")
    check_references(request.properties, "properties")


def check_ip_configurations(nic: str, configurations: Sequence[Mapping[str, Any]]) -> None:
    # networkInterface.json 2026-01-01 NetworkInterfaceIPConfigurationPropertiesFormat.primary: with several IP
    # configurations one is primary, or 400 NetworkInterfaceMustHaveOneOneIPConfigAsPrimary "Network Interface x
    # specifies multiple IPConfigurations but none of the IPConfigurations is specified as Primary."
    # (Azure/azure-sdk-for-go#259); their names are Network names, unique in the NIC.
    check_unique_names(configurations, nic)
    for configuration in configurations:
        check_network_name(configuration.get("name"))
    if len(configurations) > 1 and not any(_props(item).get("primary") is True for item in configurations):
        refuse(
            "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary",
            f"Network Interface {nic} specifies multiple IPConfigurations but none of the IPConfigurations is "
            "specified as Primary.",
        )


def public_ip_address(request: Request) -> None:
    check_network_name(request.names[0])
    check_public_ip(request.names[0], request.body.get("sku"), request.properties)


def check_public_ip(name: str, sku: Any, properties: Mapping[str, Any]) -> None:
    # publicIpAddress.json 2026-01-01 PublicIPAddressSku, PublicIPAddressPropertiesFormat (the SKU defaults to Basic):
    # - a Standard address must be Static: 400 StandardSkuPublicIPAddressesMustBeStatic "Standard sku publicIp x must
    #   have AllocationMethod set to Static." (MicrosoftDocs/azure-docs#42889, pulumi/pulumi-azure-native#1597);
    # - a Basic IPv6 address cannot be Static: 400 CannotSpecifyPublicIpAllocationMethodAsStaticForIpV6PublicIp
    #   (hashicorp/terraform-provider-azurerm#14762).
    sku_name = str(sku.get("name") or "Basic").lower() if isinstance(sku, dict) else "basic"
    method = str(properties.get("publicIPAllocationMethod") or "Dynamic").lower()
    version = str(properties.get("publicIPAddressVersion") or "IPv4").lower()
    if sku_name.startswith("standard") and method == "dynamic":
        refuse(
            "StandardSkuPublicIPAddressesMustBeStatic",
            f"Standard sku publicIp {name} must have AllocationMethod set to Static.",
        )
    if sku_name == "basic" and version == "ipv6" and method == "static":
        refuse(
            "CannotSpecifyPublicIpAllocationMethodAsStaticForIpV6PublicIp",
            "Cannot specify publicIpAllocationMethod as Static for IPv6 PublicIp.",
        )


# ==============================================================================================================
# The table of resource types
# ==============================================================================================================

VIRTUAL_MACHINE_RULES: tuple[Rule, ...] = (
    vm_name,
    vm_references,
    os_profile_required,
    linux_computer_name,
    admin_username,
    custom_data,
    linux_authentication,
    spot_settings,
    vm_network_profile,
)
SCALE_SET_RULES: tuple[Rule, ...] = (
    scale_set_name,
    flexible_requirements,
    priority_mix,
    capacity_not_negative,
    profile_rules,
)
_NETWORK = (Rp.NETWORK, NETWORK_API_VERSIONS)
RESOURCE_TYPES: dict[str, ResourceType] = {
    resource_type.name.lower(): resource_type
    for resource_type in (
        ResourceType(
            "Microsoft.Compute/virtualMachines",
            Rp.COMPUTE,
            COMPUTE_API_VERSIONS,
            VIRTUAL_MACHINE,
            tracked=True,
            rules=VIRTUAL_MACHINE_RULES,
        ),
        ResourceType(
            "Microsoft.Compute/virtualMachineScaleSets",
            Rp.COMPUTE,
            COMPUTE_API_VERSIONS,
            VIRTUAL_MACHINE_SCALE_SET,
            tracked=True,
            rules=SCALE_SET_RULES,
        ),
        ResourceType("Microsoft.Compute/disks", Rp.COMPUTE, DISK_API_VERSIONS, None, tracked=True),
        ResourceType(
            "Microsoft.Network/networkSecurityGroups", *_NETWORK, NETWORK_SECURITY_GROUP, True, (security_rules,)
        ),
        ResourceType(
            "Microsoft.Network/networkSecurityGroups/securityRules",
            *_NETWORK,
            SECURITY_RULE,
            False,
            (security_rule_resource,),
        ),
        ResourceType("Microsoft.Network/virtualNetworks", *_NETWORK, VIRTUAL_NETWORK, True, (virtual_network,)),
        ResourceType("Microsoft.Network/virtualNetworks/subnets", *_NETWORK, SUBNET, False, (subnet_resource,)),
        ResourceType(
            "Microsoft.Network/virtualNetworks/virtualNetworkPeerings", *_NETWORK, PEERING, False, (peering_resource,)
        ),
        ResourceType("Microsoft.Network/networkInterfaces", *_NETWORK, NETWORK_INTERFACE, True, (network_interface,)),
        ResourceType("Microsoft.Network/publicIPAddresses", *_NETWORK, PUBLIC_IP_ADDRESS, True, (public_ip_address,)),
    )
}
