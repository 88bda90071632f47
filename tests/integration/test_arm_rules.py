"""The strict ARM emulator's request rules (tests/support/arm_rules.py).

Each kind of bad request is refused with the code Azure answers; what Azure accepts passes: bodies paraphrased from
the spec repository's examples, and every request our provider sends today through the real SDK (recorded at the HTTP
transport while it runs against the loopback emulator).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.pipeline.transport import RequestsTransport
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from provisioning.azure.ssh import generate_ssh_keypair
from tests.integration.test_azure_provider import (
    APP_RESOURCE_GROUP,
    APP_VNET,
    FUNCTION_SUBNET_PREFIX,
    ON_DEMAND_TYPE,
    SPOT_TYPE,
    make_config,
    make_provider,
    make_request,
)
from tests.support.arm_emulator import ArmEmulator
from tests.support.arm_rules import ArmRuleViolation, validate_request

SUB = "00000000-0000-0000-0000-0000000000a1"
PROVIDERS = f"/subscriptions/{SUB}/resourceGroups/rg1/providers"
VM = f"{PROVIDERS}/Microsoft.Compute/virtualMachines/myVM"
NSG = f"{PROVIDERS}/Microsoft.Network/networkSecurityGroups/testnsg"
VNET = f"{PROVIDERS}/Microsoft.Network/virtualNetworks/test-vnet"
SUBNET = f"{VNET}/subnets/test-1"
PEERING = f"{VNET}/virtualNetworkPeerings/peer"
NIC = f"{PROVIDERS}/Microsoft.Network/networkInterfaces/test-nic"
PUBLIC_IP = f"{PROVIDERS}/Microsoft.Network/publicIPAddresses/test-ip"
COMPUTE_API = "2026-04-01"
NETWORK_API = "2026-03-01"
SUBNET_ID = f"{VNET}/subnets/default"
REMOTE_VNET_ID = f"{PROVIDERS}/Microsoft.Network/virtualNetworks/vnet2"
ED25519_KEY = generate_ssh_keypair("test")[0]


def openssh_public_key(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(encoding=serialization.Encoding.OpenSSH, format=serialization.PublicFormat.OpenSSH)
        .decode()
    )


RSA_2048_KEY = openssh_public_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
RSA_1024_KEY = openssh_public_key(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 (the point)
ECDSA_KEY = openssh_public_key(ec.generate_private_key(ec.SECP256R1()))


# ------------------------------------------------------------------------------------------ accepted bodies
# Paraphrased from Azure/azure-rest-api-specs examples (names and values ours).


def linux_vm() -> dict[str, Any]:
    """specification/compute/resource-manager/Microsoft.Compute/Compute/stable/2025-04-01/examples/
    virtualMachineExamples/VirtualMachine_Create_WithSshAuthentication.json, with the inline NIC of .../2025-11-01/
    examples/virtualMachineExamples/VirtualMachine_Create_WithNetworkInterfaceConfigurationDnsSettings.json."""
    return {
        "location": "westus",
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D1_v2"},
            "storageProfile": {
                "imageReference": {"publisher": "Canonical", "offer": "ubuntu", "sku": "server", "version": "latest"},
                "osDisk": {
                    "name": "myVMosdisk",
                    "caching": "ReadWrite",
                    "createOption": "FromImage",
                    "managedDisk": {"storageAccountType": "Standard_LRS"},
                },
            },
            "osProfile": {
                "computerName": "myVM",
                "adminUsername": "azureuser",
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {"publicKeys": [{"path": "/home/azureuser/.ssh/authorized_keys", "keyData": RSA_2048_KEY}]},
                },
            },
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": "nic-config",
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [
                                {
                                    "name": "ip-config",
                                    "properties": {
                                        "primary": True,
                                        "subnet": {"id": SUBNET_ID},
                                        "publicIPAddressConfiguration": {
                                            "name": "public-ip-config",
                                            "sku": {"name": "Standard", "tier": "Regional"},
                                            "properties": {
                                                "deleteOption": "Detach",
                                                "publicIPAllocationMethod": "Static",
                                            },
                                        },
                                    },
                                }
                            ],
                        },
                    }
                ],
            },
        },
    }


def nsg() -> dict[str, Any]:
    """.../Microsoft.Network/stable/2026-01-01/examples/NetworkSecurityGroupCreateWithRule.json."""
    rule = {
        "protocol": "*",
        "sourceAddressPrefix": "*",
        "destinationAddressPrefix": "*",
        "access": "Allow",
        "destinationPortRange": "80",
        "sourcePortRange": "*",
        "priority": 130,
        "direction": "Inbound",
    }
    return {"location": "eastus", "properties": {"securityRules": [{"name": "rule1", "properties": rule}]}}


def vnet() -> dict[str, Any]:
    """.../Microsoft.Network/stable/2026-01-01/examples/VirtualNetworkCreateSubnet.json."""
    return {
        "location": "eastus",
        "properties": {
            "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "test-1", "properties": {"addressPrefix": "10.0.0.0/24"}}],
        },
    }


def peering() -> dict[str, Any]:
    """.../Microsoft.Network/stable/2026-01-01/examples/VirtualNetworkPeeringCreate.json."""
    return {
        "properties": {
            "allowVirtualNetworkAccess": True,
            "allowForwardedTraffic": True,
            "allowGatewayTransit": False,
            "useRemoteGateways": False,
            "remoteVirtualNetwork": {"id": REMOTE_VNET_ID},
        }
    }


def nic() -> dict[str, Any]:
    """.../Microsoft.Network/stable/2026-01-01/examples/NetworkInterfaceCreate.json."""
    return {
        "location": "eastus",
        "properties": {
            "enableAcceleratedNetworking": True,
            "disableTcpStateTracking": True,
            "ipConfigurations": [
                {
                    "name": "ipconfig1",
                    "properties": {
                        "publicIPAddress": {"id": f"{PROVIDERS}/Microsoft.Network/publicIPAddresses/test-ip"},
                        "subnet": {"id": SUBNET_ID},
                    },
                },
                {"name": "ipconfig2", "properties": {"privateIPAddressPrefixLength": 28, "primary": True}},
            ],
        },
    }


def public_ip() -> dict[str, Any]:
    """.../Microsoft.Network/stable/2026-01-01/examples/PublicIpAddressCreateCustomizedValues.json."""
    return {
        "location": "eastus",
        "zones": ["1"],
        "sku": {"name": "Standard", "tier": "Global"},
        "properties": {
            "publicIPAllocationMethod": "Static",
            "idleTimeoutInMinutes": 10,
            "publicIPAddressVersion": "IPv4",
        },
    }


DELETE = object()


def changed(body: dict[str, Any], *edits: tuple[str, Any]) -> dict[str, Any]:
    """A deep copy of `body` with each ("a.b[0].c", value) set (DELETE removes the member; an index one past the
    end appends)."""
    result = copy.deepcopy(body)
    for path, value in edits:
        keys: list[str | int] = []
        for part in path.split("."):
            name, _, index = part.partition("[")
            keys.append(name)
            if index:
                keys.append(int(index.rstrip("]")))
        target: Any = result
        for key in keys[:-1]:
            target = target[key]
        if value is DELETE:
            del target[keys[-1]]
        elif isinstance(target, list) and keys[-1] == len(target):
            target.append(value)
        else:
            target[keys[-1]] = value
    return result


def vm_with(*edits: tuple[str, Any]) -> dict[str, Any]:
    return changed(linux_vm(), *edits)


SSH = "properties.osProfile.linuxConfiguration"
NIC_CONFIG = "properties.networkProfile.networkInterfaceConfigurations[0]"
IP_CONFIG = f"{NIC_CONFIG}.properties.ipConfigurations[0].properties"
RULE = "properties.securityRules[0].properties"


# ------------------------------------------------------------------------------------------ refused requests


@dataclass(frozen=True)
class Case:
    kind: str
    path: str
    body: Any
    code: str
    api_version: str | None = ""  # "": the SDK's version for the path's resource provider
    method: str = "PUT"
    target: str | None = None


def second_nic() -> dict[str, Any]:
    """A copy of the example's inline NIC, renamed, that does not say it is primary."""
    nic_config: dict[str, Any] = copy.deepcopy(
        linux_vm()["properties"]["networkProfile"]["networkInterfaceConfigurations"][0]
    )
    nic_config["name"] = "nic-config-2"
    del nic_config["properties"]["primary"]
    return nic_config


def two_rules(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    body = nsg()
    rule = body["properties"]["securityRules"][0]
    body["properties"]["securityRules"] = [changed(rule, *first.items()), changed(rule, *second.items())]
    return body


CASES = [
    # ARM: the api-version and the envelope
    Case("api-version missing", VM, linux_vm(), "MissingApiVersionParameter", api_version=None),
    Case("api-version malformed", VM, linux_vm(), "InvalidApiVersionParameter", api_version="latest"),
    Case("Network's api-version on a VM", VM, linux_vm(), "NoRegisteredProviderFound", api_version="2026-03-01"),
    Case(
        "api-version unknown on a read", NSG, None, "NoRegisteredProviderFound", api_version="2099-01-01", method="GET"
    ),
    Case("location missing", VM, vm_with(("location", DELETE)), "LocationRequired"),
    Case("body no JSON object", NSG, ["not", "an", "object"], "InvalidRequestContent"),
    # Compute: schema
    Case("unknown VM property", VM, vm_with(("properties.osProfile.colour", "blue")), "BadRequest"),
    Case(
        "required osDisk.createOption missing",
        VM,
        vm_with(("properties.storageProfile.osDisk.createOption", DELETE)),
        "InvalidParameter",
        target="osDisk.createOption",
    ),
    Case(
        "caching outside its enum",
        VM,
        vm_with(("properties.storageProfile.osDisk.caching", "WriteBack")),
        "InvalidParameter",
        target="osDisk.caching",
    ),
    Case("vmSize of the wrong type", VM, vm_with(("properties.hardwareProfile.vmSize", 2)), "InvalidParameter"),
    Case(
        "networkApiVersion outside its enum",
        VM,
        vm_with(("properties.networkProfile.networkApiVersion", "2019-07-01")),
        "InvalidParameter",
    ),
    # Compute: server-side rules
    Case("VM name ending in '-'", f"{VM}-", linux_vm(), "InvalidParameter", target="vmName"),
    Case("Linux VM name over 64 characters", f"{VM}{'x' * 61}", linux_vm(), "InvalidParameter", target="vmName"),
    Case(
        "OS disk name starting with '_'",
        VM,
        vm_with(("properties.storageProfile.osDisk.name", "_disk")),
        "InvalidParameter",
        target="osDisk.name",
    ),
    Case(
        "image id no resource id",
        VM,
        vm_with(("properties.storageProfile.imageReference", {"id": "my-image"})),
        "LinkedInvalidPropertyId",
    ),
    Case(
        "computerName with '_'",
        VM,
        vm_with(("properties.osProfile.computerName", "my_vm")),
        "InvalidParameter",
        target="computerName",
    ),
    Case(
        "computerName missing",
        VM,
        vm_with(("properties.osProfile.computerName", DELETE)),
        "InvalidParameter",
        target="computerName",
    ),
    Case(
        "disallowed adminUsername",
        VM,
        vm_with(
            ("properties.osProfile.adminUsername", "root"),
            (f"{SSH}.ssh.publicKeys[0].path", "/home/root/.ssh/authorized_keys"),
        ),
        "InvalidParameter",
        target="adminUsername",
    ),
    Case(
        "customData not base64",
        VM,
        vm_with(("properties.osProfile.customData", "#!/bin/sh")),
        "InvalidParameter",
        target="customData",
    ),
    Case(
        "customData over 65535 bytes",
        VM,
        vm_with(("properties.osProfile.customData", base64.b64encode(b"x" * 65536).decode())),
        "InvalidParameter",
        target="customData",
    ),
    Case(
        "SSH key path outside the user's authorized_keys",
        VM,
        vm_with((f"{SSH}.ssh.publicKeys[0].path", "/root/.ssh/authorized_keys")),
        "InvalidParameter",
        target="linuxConfiguration.ssh.publicKeys.path",
    ),
    Case(
        "ECDSA SSH key",
        VM,
        vm_with((f"{SSH}.ssh.publicKeys[0].keyData", ECDSA_KEY)),
        "InvalidParameter",
        target="linuxConfiguration.ssh.publicKeys.keyData",
    ),
    Case(
        "RSA SSH key under 2048 bits",
        VM,
        vm_with((f"{SSH}.ssh.publicKeys[0].keyData", RSA_1024_KEY)),
        "InvalidParameter",
        target="linuxConfiguration.ssh.publicKeys.keyData",
    ),
    Case(
        "passwords disabled and no key",
        VM,
        vm_with((f"{SSH}.ssh", {"publicKeys": []})),
        "InvalidParameter",
        target="linuxConfiguration",
    ),
    Case(
        "neither key nor password",
        VM,
        vm_with((f"{SSH}.ssh", DELETE), (f"{SSH}.disablePasswordAuthentication", False)),
        "InvalidParameter",
        target="adminPassword",
    ),
    Case(
        "evictionPolicy on a Regular VM",
        VM,
        vm_with(("properties.evictionPolicy", "Delete")),
        "InvalidParameter",
        target="evictionPolicy",
    ),
    Case(
        "billingProfile on a Regular VM",
        VM,
        vm_with(("properties.billingProfile", {"maxPrice": -1})),
        "InvalidParameter",
        target="billingProfile",
    ),
    Case(
        "spot maxPrice of 0",
        VM,
        vm_with(("properties.priority", "Spot"), ("properties.billingProfile", {"maxPrice": 0})),
        "InvalidParameter",
        target="billingProfile.maxPrice",
    ),
    Case(
        "inline NICs without networkApiVersion",
        VM,
        vm_with(("properties.networkProfile.networkApiVersion", DELETE)),
        "NetworkApiVersionMustBeSpecifiedWithNetworkInterfaceConfigurations",
    ),
    Case(
        "two NICs, none primary",
        VM,
        vm_with(
            (f"{NIC_CONFIG}.properties.primary", DELETE),
            ("properties.networkProfile.networkInterfaceConfigurations[1]", second_nic()),
        ),
        "NetworkInterfaceMustHavePrimaryPropertySet",
    ),
    Case(
        "inline Standard public IP that is Dynamic",
        VM,
        vm_with((f"{IP_CONFIG}.publicIPAddressConfiguration.properties.publicIPAllocationMethod", "Dynamic")),
        "StandardSkuPublicIPAddressesMustBeStatic",
    ),
    Case("inline NIC name with a space", VM, vm_with((f"{NIC_CONFIG}.name", "my nic")), "InvalidResourceName"),
    Case(
        "subnet reference no resource id", VM, vm_with((f"{IP_CONFIG}.subnet.id", "default")), "LinkedInvalidPropertyId"
    ),
    # Network security groups
    Case("unknown rule property", NSG, changed(nsg(), (f"{RULE}.port", "80")), "InvalidRequestFormat"),
    Case("rule direction missing", NSG, changed(nsg(), (f"{RULE}.direction", DELETE)), "InvalidRequestFormat"),
    Case("rule access outside its enum", NSG, changed(nsg(), (f"{RULE}.access", "Permit")), "InvalidRequestFormat"),
    Case("rule priority under 100", NSG, changed(nsg(), (f"{RULE}.priority", 99)), "SecurityRuleInvalidPriority"),
    Case("rule priority over 4096", NSG, changed(nsg(), (f"{RULE}.priority", 4097)), "SecurityRuleInvalidPriority"),
    Case(
        "two inbound rules of one priority",
        NSG,
        two_rules({}, {"name": "rule2", "properties.destinationPortRange": "443"}),
        "SecurityRuleConflict",
    ),
    Case(
        "port over 65535",
        NSG,
        changed(nsg(), (f"{RULE}.destinationPortRange", "70000")),
        "SecurityRuleInvalidPortRange",
    ),
    Case(
        "port list as one string",
        NSG,
        changed(nsg(), (f"{RULE}.destinationPortRange", "80,443")),
        "SecurityRuleInvalidPortRange",
    ),
    Case(
        "CIDR with host bits",
        NSG,
        changed(nsg(), (f"{RULE}.sourceAddressPrefix", "50.206.209.68/27")),
        "SecurityRuleInvalidAddressPrefix",
    ),
    Case("protocol outside its enum", NSG, changed(nsg(), (f"{RULE}.protocol", "Http")), "SecurityRuleInvalidProtocol"),
    Case(
        "no source address",
        NSG,
        changed(nsg(), (f"{RULE}.sourceAddressPrefix", DELETE)),
        "SecurityRuleParametersMissing",
    ),
    Case(
        "no destination port",
        NSG,
        changed(nsg(), (f"{RULE}.destinationPortRange", DELETE)),
        "SecurityRuleParametersMissing",
    ),
    Case(
        "'*' in a prefix list",
        NSG,
        changed(
            nsg(), (f"{RULE}.sourceAddressPrefix", DELETE), (f"{RULE}.sourceAddressPrefixes", ["10.0.0.0/24", "*"])
        ),
        "SecurityRuleParameterContainsUnsupportedValue",
    ),
    Case(
        "rule name with '!'", NSG, changed(nsg(), ("properties.securityRules[0].name", "rule!")), "InvalidResourceName"
    ),
    Case(
        "two rules of one name",
        NSG,
        two_rules({}, {"properties.priority": 140}),
        "InvalidRequestFormat",
    ),
    Case("NSG name ending in '-'", f"{NSG}-", nsg(), "InvalidResourceName"),
    Case(
        "rule PUT with a priority over 4096",
        f"{NSG}/securityRules/rule1",
        {"properties": changed(nsg(), (f"{RULE}.priority", 5000))["properties"]["securityRules"][0]["properties"]},
        "SecurityRuleInvalidPriority",
    ),
    # Virtual networks, subnets, peerings
    Case(
        "address space /33",
        VNET,
        changed(vnet(), ("properties.addressSpace.addressPrefixes", ["10.0.0.0/33"])),
        "InvalidAddressPrefixFormat",
    ),
    Case(
        "address space with host bits",
        VNET,
        changed(vnet(), ("properties.addressSpace.addressPrefixes", ["10.0.0.1/16"])),
        "InvalidCIDRNotation",
    ),
    Case(
        "subnet outside the address space",
        VNET,
        changed(vnet(), ("properties.subnets[0].properties.addressPrefix", "10.1.0.0/24")),
        "NetcfgSubnetRangeOutsideVnet",
    ),
    Case(
        "overlapping subnets",
        VNET,
        changed(
            vnet(), ("properties.subnets[1]", {"name": "test-2", "properties": {"addressPrefix": "10.0.0.128/25"}})
        ),
        "NetcfgSubnetRangesOverlap",
    ),
    Case(
        "subnet without a prefix",
        VNET,
        changed(vnet(), ("properties.subnets[0].properties", {})),
        "NetcfgInvalidSubnet",
    ),
    Case(
        "two subnets of one name",
        VNET,
        changed(vnet(), ("properties.subnets[1]", {"name": "test-1", "properties": {"addressPrefix": "10.0.1.0/24"}})),
        "InvalidRequestFormat",
    ),
    Case(
        "unknown VNet property", VNET, changed(vnet(), ("properties.dnsServers", ["10.0.0.4"])), "InvalidRequestFormat"
    ),
    Case("subnet PUT with host bits", SUBNET, {"properties": {"addressPrefix": "10.0.0.5/24"}}, "InvalidCIDRNotation"),
    Case(
        "peering without a remote VNet",
        PEERING,
        changed(peering(), ("properties.remoteVirtualNetwork", DELETE)),
        "InvalidRequestFormat",
    ),
    Case(
        "peering remote VNet no resource id",
        PEERING,
        changed(peering(), ("properties.remoteVirtualNetwork.id", "vnet2")),
        "LinkedInvalidPropertyId",
    ),
    Case(
        "peering using remote gateways",
        PEERING,
        changed(peering(), ("properties.useRemoteGateways", True)),
        "RemoteVnetHasNoGateways",
    ),
    Case(
        "peering flag of the wrong type",
        PEERING,
        changed(peering(), ("properties.allowForwardedTraffic", "yes")),
        "InvalidRequestFormat",
    ),
    # Network interfaces, public IP addresses
    Case(
        "two IP configurations, none primary",
        NIC,
        changed(nic(), ("properties.ipConfigurations[1].properties.primary", DELETE)),
        "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary",
    ),
    Case(
        "NIC without IP configurations",
        NIC,
        changed(nic(), ("properties.ipConfigurations", DELETE)),
        "InvalidRequestFormat",
    ),
    Case(
        "allocation method outside its enum",
        NIC,
        changed(nic(), ("properties.ipConfigurations[0].properties.privateIPAllocationMethod", "Fixed")),
        "InvalidRequestFormat",
    ),
    Case("NIC name over 80 characters", f"{NIC}{'x' * 80}", nic(), "InvalidResourceName"),
    Case(
        "Standard public IP that is Dynamic",
        PUBLIC_IP,
        changed(public_ip(), ("properties.publicIPAllocationMethod", "Dynamic")),
        "StandardSkuPublicIPAddressesMustBeStatic",
    ),
    Case(
        "Basic IPv6 public IP that is Static",
        PUBLIC_IP,
        changed(public_ip(), ("sku", {"name": "Basic"}), ("properties.publicIPAddressVersion", "IPv6")),
        "CannotSpecifyPublicIpAllocationMethodAsStaticForIpV6PublicIp",
    ),
    Case(
        "public IP SKU outside its enum",
        PUBLIC_IP,
        changed(public_ip(), ("sku.name", "Premium")),
        "InvalidRequestFormat",
    ),
]


def sdk_api_version(path: str) -> str:
    return COMPUTE_API if "/Microsoft.Compute/" in path else NETWORK_API


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.kind)
def test_each_kind_of_bad_request_is_refused_with_azures_code(case: Case) -> None:
    api_version = sdk_api_version(case.path) if case.api_version == "" else case.api_version

    with pytest.raises(ArmRuleViolation) as refused:
        validate_request(case.method, case.path, api_version, case.body)

    assert (refused.value.status, refused.value.code) == (400, case.code), refused.value.message
    if case.target is not None:
        assert refused.value.target == case.target


def test_the_table_covers_at_least_25_kinds_and_every_resource_type() -> None:
    assert len({case.kind for case in CASES}) >= 25
    kinds_by_type = {
        path: [case for case in CASES if case.path.startswith(path)] for path in (VM, NSG, VNET, NIC, PUBLIC_IP)
    }
    assert all(kinds_by_type.values())
    assert any(case.path == PEERING for case in CASES)
    assert any(case.path == SUBNET for case in CASES)


def test_unknown_members_are_refused_as_each_rp_words_it() -> None:
    with pytest.raises(ArmRuleViolation) as network:
        validate_request("PUT", PEERING, NETWORK_API, changed(peering(), ("properties.remoteAddressSpaces", [])))
    with pytest.raises(ArmRuleViolation) as compute:
        validate_request("PUT", VM, COMPUTE_API, vm_with(("properties.storageProfile.osDisk.sizeGB", 30)))

    assert network.value.body() == {
        "error": {
            "code": "InvalidRequestFormat",
            "message": "Cannot parse the request.",
            "details": [
                {
                    "code": "InvalidJson",
                    "message": "Could not find member 'remoteAddressSpaces' on object of type "
                    "'VirtualNetworkPeeringPropertiesFormat'. Path 'properties.remoteAddressSpaces'.",
                }
            ],
        }
    }
    assert compute.value.code == "BadRequest"
    assert "'sizeGB' on object of type 'OSDisk'" in compute.value.message


# ------------------------------------------------------------------------------------------ accepted requests


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (VM, linux_vm()),
        (VM, vm_with((f"{SSH}.ssh.publicKeys[0].keyData", ED25519_KEY))),
        (
            VM,
            vm_with(
                ("properties.priority", "Spot"),
                ("properties.evictionPolicy", "Delete"),
                ("properties.billingProfile", {"maxPrice": -1}),
            ),
        ),
        (VM, vm_with(("properties.priority", "Low"), ("properties.billingProfile", {"maxPrice": 0.05}))),
        (NSG, nsg()),
        (VNET, vnet()),
        (PEERING, peering()),
        (SUBNET, {"properties": {"addressPrefix": "10.0.0.0/24"}}),
        (NIC, nic()),
        (PUBLIC_IP, public_ip()),
    ],
    ids=["vm", "vm-ed25519", "vm-spot", "vm-low-priority", "nsg", "vnet", "peering", "subnet", "nic", "public-ip"],
)
def test_bodies_paraphrased_from_the_spec_examples_pass(path: str, body: dict[str, Any]) -> None:
    validate_request("PUT", path, sdk_api_version(path), body)


def test_read_only_properties_sent_back_are_ignored() -> None:
    vm = vm_with(
        ("id", VM),
        ("name", "myVM"),
        ("type", "Microsoft.Compute/virtualMachines"),
        ("properties.provisioningState", "Succeeded"),
        ("properties.vmId", "b7a098cc-b0b8-46e8-a205-62f301a62a8f"),
    )
    network_security_group = changed(
        nsg(),
        ("etag", 'W/"1"'),
        ("properties.provisioningState", "Succeeded"),
        ("properties.defaultSecurityRules", [{"name": "DenyAllInBound"}]),
        (f"{RULE}.provisioningState", "Succeeded"),
    )

    validate_request("PUT", VM, COMPUTE_API, vm)
    validate_request("PUT", NSG, NETWORK_API, network_security_group)


def test_patch_bodies_are_partial() -> None:
    validate_request("PATCH", VM, COMPUTE_API, {"tags": {"team": "ray"}})
    validate_request("PATCH", VM, COMPUTE_API, {"properties": {"billingProfile": {"maxPrice": 0.2}}})
    with pytest.raises(ArmRuleViolation, match="InvalidParameter"):
        validate_request("PATCH", VM, COMPUTE_API, {"properties": {"priority": "Regular", "evictionPolicy": "Delete"}})
    with pytest.raises(ArmRuleViolation, match="BadRequest"):
        validate_request("PATCH", VM, COMPUTE_API, {"properties": {"hardwareProfile": {"size": "Standard_D2s_v3"}}})


@pytest.mark.parametrize(
    ("method", "path", "api_version"),
    [
        ("GET", VM, COMPUTE_API),
        ("GET", f"{VM}/instanceView", COMPUTE_API),
        ("GET", f"{PROVIDERS}/Microsoft.Compute/virtualMachines", COMPUTE_API),
        ("GET", f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines", COMPUTE_API),
        ("DELETE", f"{PROVIDERS}/Microsoft.Compute/disks/myVMosdisk", "2026-03-02"),
        ("DELETE", PEERING, NETWORK_API),
        ("GET", f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/operations/op1", "2024-01-01"),
        ("GET", f"{PROVIDERS}/Microsoft.Storage/storageAccounts/logs", None),
    ],
    ids=["vm", "instance-view", "list", "list-all", "disk-delete", "peering-delete", "operation", "not-modelled"],
)
def test_reads_and_deletes_only_check_the_api_version(method: str, path: str, api_version: str | None) -> None:
    validate_request(method, path, api_version, None)


# ------------------------------------------------------------------------------------------ what the provider sends


@dataclass(frozen=True)
class SentRequest:
    method: str
    path: str
    api_version: str | None
    body: Any


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[SentRequest]:
    """Every request the SDK puts on the wire, recorded at its HTTP transport."""
    requests: list[SentRequest] = []
    send = RequestsTransport.send

    def recording_send(self: RequestsTransport, request: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url)
        content = request.content
        body = json.loads(content) if content else None
        api_version = parse_qs(url.query).get("api-version", [None])[0]
        requests.append(SentRequest(request.method, url.path, api_version, body))
        return send(self, request, **kwargs)

    monkeypatch.setattr(RequestsTransport, "send", recording_send)
    return requests


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    with ArmEmulator() as emulator:
        yield emulator


def refusals(requests: list[SentRequest]) -> list[str]:
    found = []
    for request in requests:
        try:
            validate_request(request.method, request.path, request.api_version, request.body)
        except ArmRuleViolation as violation:
            found.append(f"{request.method} {request.path}: {violation}")
    return found


def test_every_request_the_provider_sends_is_one_azure_accepts(arm: ArmEmulator, sent: list[SentRequest]) -> None:
    function_subnet_id = arm.seed_subnet(APP_RESOURCE_GROUP, APP_VNET, "functions", FUNCTION_SUBNET_PREFIX)
    config = make_config(arm, ssh_allowed_cidrs=["203.0.113.0/24", "198.51.100.7/32"])
    provider = make_provider(arm, config, function_subnet_id)

    provider.launch(make_request(config, "head0001"))  # network, peerings, and a head with a public IP
    provider.launch(make_request(config, "worker0001", node_type=SPOT_TYPE))
    provider.launch(make_request(config, "worker0002", node_type=ON_DEMAND_TYPE, availability_zone="2"))
    provider.list_instances(config.cluster_name)
    provider.terminate(config.cluster_name, "worker0002")
    provider.destroy_cluster(config.cluster_name)

    writes = {(request.method, request.path.rsplit("/", 2)[-2]) for request in sent if request.method == "PUT"}
    assert {("PUT", "networkSecurityGroups"), ("PUT", "virtualNetworks"), ("PUT", "virtualMachines")} <= writes
    assert ("PUT", "virtualNetworkPeerings") in writes
    assert refusals(sent) == []


def test_the_provider_s_spot_worker_on_a_given_subnet_is_accepted(arm: ArmEmulator, sent: list[SentRequest]) -> None:
    subnet_id = arm.seed_subnet("rg-ray", "user-vnet", "nodes", "10.42.0.0/24")
    config = make_config(arm, subnet_id=subnet_id, use_internal_ips=True)
    document = config.model_dump()
    spot = document["available_node_types"][SPOT_TYPE]["node_config"]["azure_arm_parameters"]
    spot.update(priority="Low", evictionPolicy="Deallocate", billingProfile={"maxPrice": -1}, osDiskSizeGB=64)
    spot["osDiskType"] = "StandardSSD_LRS"
    config = type(config).model_validate(document)
    provider = make_provider(arm, config)

    provider.launch(make_request(config, "worker0001", node_type=SPOT_TYPE))

    (vm,) = [request for request in sent if request.method == "PUT"]
    assert vm.body["properties"]["evictionPolicy"] == "Deallocate"
    assert vm.body["properties"]["storageProfile"]["osDisk"]["managedDisk"] == {"storageAccountType": "StandardSSD_LRS"}
    assert refusals(sent) == []
