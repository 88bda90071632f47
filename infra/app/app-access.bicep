// What the app's identity may do inside the app's own resource group. Each role assignment is named by guid() of
// its scope, principal and role, so redeployments find the same assignment instead of failing on a duplicate.

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Name of the app\'s storage account.')
param storageAccountName string

@description('Name of the Key Vault holding the cluster token key.')
param keyVaultName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Name of the app\'s VNet, which the provider peers with each cluster VNet.')
param vnetName string

@description('Environment name, to keep the custom role\'s name unique in the tenant.')
param environmentName string

// Built-in role definition ids (the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// Blob Data Owner: the Functions host keeps timer leases and its deployment package in blobs.
// Queue Data Contributor: the queue trigger reads, processes and deletes messages, moves failures to the poison
// queue, and the app sends reconcile messages; it also lets the host create a missing poison queue.
// Table Data Contributor: cluster state, instances and events.
var storageRoleIds = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: vnetName
}

resource storageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageRoleIds: {
    name: guid(storageAccount.id, principalId, roleId)
    scope: storageAccount
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

// Secrets User reads secret values only: enough to resolve the CLUSTER_TOKEN_KEY reference.
resource keyVaultRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, principalId, keyVaultSecretsUser)
  scope: keyVault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

// Application Insights has local (key) authentication off; telemetry is sent with the identity's token.
resource monitoringRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

// A peering needs a link on each side: the provider creates the app-VNet side of each cluster's peering, so the
// identity may read this VNet (its subnet prefix goes into the cluster NSG rules) and manage its peerings, nothing else.
resource vnetPeeringRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'ray-autoscaler-app-network-peering')
  properties: {
    roleName: 'Ray autoscaler app network peering (${environmentName}, ${uniqueString(resourceGroup().id)})'
    description: 'Lets the Ray autoscaler control plane peer its own VNet with the VNets of the clusters it creates.'
    type: 'CustomRole'
    permissions: [
      {
        actions: loadJsonContent('../roles/app-network-peering-actions.json')
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource vnetPeeringRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vnet.id, principalId, vnetPeeringRole.id)
  scope: vnet
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: vnetPeeringRole.id
  }
}
