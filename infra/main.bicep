// Entry point for `azd up` and `az deployment sub create`: creates the app's resource group (and, unless told
// otherwise, the clusters' resource group) and deploys the Ray autoscaler control plane into it as an Azure
// Functions app on the Flex Consumption plan. Modules live in ./app; role action lists in ./roles.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd sets it from AZURE_ENV_NAME); it prefixes resource groups and tags everything.')
param environmentName string

@minLength(1)
@description('Region of every resource (azd sets it from AZURE_LOCATION). Flex Consumption must be offered there.')
param location string

@description('Resource group the clusters are created in. Empty means rg-<environmentName>-clusters.')
param clustersResourceGroupName string = ''

@description('Create the clusters\' resource group (true) or use an existing one of that name (false).')
param createClustersResourceGroup bool = true

@description('NCRONTAB schedule (seconds first) of the reconcile timer.')
param reconcileSchedule string = '*/15 * * * * *'

@secure()
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 64
      noSpecial: true
    }
  }
})
@description('Key every cluster token is derived from. azd generates it once and keeps it in the environment; with `az deployment sub create`, pass the same value every time (changing it invalidates the tokens of running clusters).')
param clusterTokenKey string

@description('Address space of the app VNet. Cluster VNets are peered with it and must not overlap it.')
param appVnetAddressPrefix string = '10.250.0.0/24'

@description('Subnet of the function app inside the app VNet (delegated to Microsoft.App/environments).')
param appSubnetPrefix string = '10.250.0.0/26'

@description('Upper bound on instances the plan scales out to (Flex Consumption accepts 40-1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each Flex Consumption instance in MB; the control plane runs no Ray and needs little.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// A short, stable suffix that keeps globally unique names (storage, Key Vault, app) unique per subscription,
// environment and region, and the same on every redeployment.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appResourceGroupName = 'rg-${environmentName}'
var effectiveClustersResourceGroupName = empty(clustersResourceGroupName) ? 'rg-${environmentName}-clusters' : clustersResourceGroupName
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'
var clusterTokenKeySecretName = 'cluster-token-key'

resource appResourceGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: appResourceGroupName
  location: location
  tags: tags
}

resource clustersResourceGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = if (createClustersResourceGroup) {
  name: effectiveClustersResourceGroupName
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: appResourceGroup
  params: {
    identityName: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: appResourceGroup
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module network 'app/network.bicep' = {
  name: 'network'
  scope: appResourceGroup
  params: {
    vnetName: 'vnet-${resourceToken}'
    location: location
    tags: tags
    vnetAddressPrefix: appVnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: appResourceGroup
  params: {
    storageAccountName: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    // The names the app's code uses; the poison queue is where the host moves a message after maxDequeueCount.
    queueNames: [
      'reconcile'
      'reconcile-poison'
    ]
    tableNames: [
      'clusters'
      'instances'
      'events'
    ]
    appSubnetResourceId: network.outputs.appSubnetResourceId
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: appResourceGroup
  params: {
    keyVaultName: 'kv-${resourceToken}'
    location: location
    tags: tags
    clusterTokenKeySecretName: clusterTokenKeySecretName
    clusterTokenKey: clusterTokenKey
    appSubnetResourceId: network.outputs.appSubnetResourceId
  }
}

module appAccess 'app/app-access.bicep' = {
  name: 'app-access'
  scope: appResourceGroup
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.storageAccountName
    keyVaultName: keyVault.outputs.keyVaultName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    vnetName: network.outputs.vnetName
    environmentName: environmentName
  }
}

module clusterAccess 'app/cluster-access.bicep' = {
  name: 'cluster-access'
  scope: resourceGroup(effectiveClustersResourceGroupName)
  dependsOn: [
    clustersResourceGroup
  ]
  params: {
    principalId: identity.outputs.principalId
    environmentName: environmentName
  }
}

module function 'app/function.bicep' = {
  name: 'function'
  scope: appResourceGroup
  // The host starts as soon as the app exists: its storage, Key Vault and telemetry roles must already be in place.
  dependsOn: [
    appAccess
  ]
  params: {
    functionAppName: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityResourceId: identity.outputs.identityResourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.storageAccountName
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    appSubnetResourceId: network.outputs.appSubnetResourceId
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    clusterTokenKeySecretUri: keyVault.outputs.clusterTokenKeySecretUri
    reconcileSchedule: reconcileSchedule
    clustersSubscriptionId: subscription().subscriptionId
    clustersResourceGroupName: effectiveClustersResourceGroupName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = appResourceGroup.name
output FUNCTION_APP_NAME string = function.outputs.functionAppName
output FUNCTION_APP_URL string = function.outputs.functionAppUrl
output CLUSTERS_RESOURCE_GROUP string = effectiveClustersResourceGroupName
output KEY_VAULT_NAME string = keyVault.outputs.keyVaultName
