// Key Vault holding CLUSTER_TOKEN_KEY, the key every cluster token is derived from (autoscaler/tokens.py).
// Access is by Azure RBAC only, and the firewall admits only the app's subnet (service endpoint) and trusted Azure
// services; Resource Manager writes the secret during deployment, whatever the firewall says.

@description('Name of the Key Vault (3-24 characters).')
param keyVaultName string

@description('Region of the Key Vault.')
param location string

@description('Tags applied to the Key Vault.')
param tags object

@description('Name of the secret that holds the cluster token key.')
param clusterTokenKeySecretName string

@secure()
@description('The cluster token key. Keep it stable across deployments: changing it invalidates the tokens of running clusters.')
param clusterTokenKey string

@description('The function app\'s subnet, the only network the firewall admits.')
param appSubnetResourceId string

@description('Days a deleted vault stays recoverable before it is purged automatically (7-90).')
param softDeleteRetentionDays int = 7

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_189: "Enabled" here means "from selected networks": the firewall below denies everything but the app's subnet and trusted Azure services. A private endpoint, which would allow "Disabled", is billed by the hour even when the app is idle.
  // checkov:skip=CKV_AZURE_110: purge protection would forbid `azd down --purge` and block the vault's name for the whole retention period; the only secret is the token key, which the deployment re-creates from its parameter.
  // checkov:skip=CKV_AZURE_42: soft delete is on (7 days); "recoverable" also demands purge protection, declined for the reason above.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionDays
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      virtualNetworkRules: [
        {
          id: appSubnetResourceId
          ignoreMissingVnetServiceEndpoint: false
        }
      ]
    }
  }
}

resource clusterTokenKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: an expiry would silently break every running cluster's token on that date; rotating the key is a planned operation (recreate the clusters), not a timer.
  parent: keyVault
  name: clusterTokenKeySecretName
  properties: {
    value: clusterTokenKey
    contentType: 'text/plain'
  }
}

output keyVaultName string = keyVault.name
output keyVaultResourceId string = keyVault.id
// Versionless, so the app picks up a new value of the secret without a redeployment of its settings.
output clusterTokenKeySecretUri string = '${keyVault.properties.vaultUri}secrets/${clusterTokenKeySecretName}'
