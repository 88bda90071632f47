// The app's storage account: the Functions host's own storage (timer leases, deployment package) and the app's
// queues and tables. Shared-key access is off, so every caller authenticates with Microsoft Entra ID (the app
// through its managed identity), and the firewall admits only the app's subnet (service endpoint) and trusted
// Azure services.

@description('Name of the storage account (3-24 lowercase letters and digits).')
param storageAccountName string

@description('Region of the storage account.')
param location string

@description('Tags applied to the storage account.')
param tags object

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Queues the app uses: the reconcile queue and the poison queue the Functions host moves failed messages to.')
param queueNames array

@description('Tables the app keeps its state in.')
param tableNames array

@description('The function app\'s subnet, the only network the firewall admits.')
param appSubnetResourceId string

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: the app, its clusters and this state live in one region; a geo-replica would describe clusters that a regional outage took down with it, so locally redundant storage is kept.
  // checkov:skip=CKV_AZURE_59: "Enabled" here means "from selected networks": the firewall below denies everything but the app's subnet and trusted Azure services. Private endpoints, which would allow "Disabled", are billed by the hour even when the app is idle.
  // checkov:skip=CKV_AZURE_43: checkov cannot evaluate a module parameter; main.bicep passes 'st' + uniqueString(...), 15 lowercase letters and digits, a valid name.
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      virtualNetworkRules: [
        {
          id: appSubnetResourceId
          action: 'Allow'
        }
      ]
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storageAccount
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storageAccount
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storageAccount
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for tableName in tableNames: {
    parent: tableService
    name: tableName
  }
]

output storageAccountName string = storageAccount.name
output storageAccountResourceId string = storageAccount.id
output blobEndpoint string = storageAccount.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainer.name
