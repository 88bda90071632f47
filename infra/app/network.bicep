// The app's virtual network: one subnet delegated to Microsoft.App/environments for Flex Consumption's VNet
// integration. Outbound, the app reaches Ray heads on private IPs through it (cluster VNets, created per cluster by
// the Azure provider in the clusters' resource group, are peered with this one and must not overlap
// `vnetAddressPrefix`), and reaches storage and Key Vault through service endpoints: their firewalls admit this
// subnet and deny the internet. Service endpoints rather than private endpoints, because a private endpoint and
// its DNS zone are billed by the hour whether the app runs or not, and this deployment should cost ~nothing idle.

@description('Name of the virtual network.')
param vnetName string

@description('Region of the network resources.')
param location string

@description('Tags applied to the network resources.')
param tags object

@description('Address space of the app VNet.')
param vnetAddressPrefix string

@description('Prefix of the subnet delegated to the function app (at least a /28; a /27 or larger leaves room to scale).')
param appSubnetPrefix string

var appSubnetName = 'snet-function-app'

// No custom rules: nothing reaches the app through this subnet (its HTTP arrives on the app's public endpoint), and
// the defaults deny inbound from outside the VNet while allowing the outbound calls the app makes.
resource appSubnetNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-${vnetName}-function-app'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  // checkov:skip=CKV_AZURE_182: the VNet needs no DNS servers of its own: Azure-provided DNS resolves Azure names and the Ray heads are reached by IP.
  // checkov:skip=CKV_AZURE_183: same reason as CKV_AZURE_182: Azure-provided DNS is what this VNet should use.
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        vnetAddressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: appSubnetNsg.id
          }
          serviceEndpoints: [
            {
              service: 'Microsoft.Storage'
            }
            {
              service: 'Microsoft.KeyVault'
            }
          ]
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
    ]
  }
}

output vnetResourceId string = vnet.id
output vnetName string = vnet.name
output appSubnetResourceId string = '${vnet.id}/subnets/${appSubnetName}'
