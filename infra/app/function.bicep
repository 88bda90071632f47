// The Flex Consumption plan and the function app (Linux, Python 3.11). The app runs as its user-assigned identity
// for everything: host storage, its own queues and tables, Key Vault references, Application Insights and ARM.

@description('Name of the function app.')
param functionAppName string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags applied to the plan and the app; the app also gets azd-service-name so `azd deploy` finds it.')
param tags object

@description('Resource id of the app\'s user-assigned identity.')
param identityResourceId string

@description('Client id of the app\'s user-assigned identity.')
param identityClientId string

@description('Name of the app\'s storage account.')
param storageAccountName string

@description('Primary blob endpoint of the storage account, ending in a slash.')
param blobEndpoint string

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Subnet delegated to Microsoft.App/environments for VNet integration.')
param appSubnetResourceId string

@description('Application Insights connection string.')
param applicationInsightsConnectionString string

@description('Versionless URI of the Key Vault secret that holds the cluster token key.')
param clusterTokenKeySecretUri string

@description('NCRONTAB schedule (seconds first) of the reconcile timer.')
param reconcileSchedule string

@description('Subscription that holds the clusters.')
param clustersSubscriptionId string

@description('Resource group the clusters are created in.')
param clustersResourceGroupName string

@description('Upper bound on instances the plan scales out to (Flex Consumption accepts 40-1000).')
param maximumInstanceCount int

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy narrows the regions Flex Consumption is offered in; the control plane keeps no state in memory and is level-triggered, so losing a zone delays reconciliation by a tick or two, and running clusters are unaffected.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    // `reserved` is how ARM spells "Linux" for a plan; Flex Consumption is Linux only.
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_16: callers are CLIs and head agents, not users signing in: every route but /api/health needs a function key (auth level FUNCTION), and head agents also present their cluster token.
  // checkov:skip=CKV_AZURE_222: the API must be reachable from operators' machines and from head agents; it is guarded by function keys over HTTPS only.
  // checkov:skip=CKV_AZURE_17: incoming client certificates would require every caller to hold one; function keys and cluster tokens authenticate callers instead.
  // checkov:skip=CKV_AZURE_212: scaling to zero when idle is the point of Flex Consumption; the control plane is level-triggered, so a cold start only delays one tick.
  // checkov:skip=CKV_AZURE_213: a platform health check needs a standing instance to probe, which a scale-to-zero app does not have; /api/health serves external probes.
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    virtualNetworkSubnetId: appSubnetResourceId
    keyVaultReferenceIdentity: identityResourceId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// A separate settings resource, because CONTROL_PLANE_URL needs the app's host name, known only once the app
// exists (new apps may get a randomised default host name).
// checkov applies its site-config checks to every sites/config resource, this app-settings one included.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: App Service Authentication (Easy Auth) is not used: callers are CLIs and head agents, authenticated by function keys (auth level FUNCTION) and cluster tokens.
  // checkov:skip=CKV_AZURE_222: public network access is a property of the site, not of its settings; it is skipped on the site above, with the reason.
  // checkov:skip=CKV_AZURE_88: Flex Consumption has no Azure Files content share; code is deployed from the blob container.
  // checkov:skip=CKV_AZURE_80: a Python app runs no .NET Framework.
  // checkov:skip=CKV_AZURE_63: App Service HTTP logs are not offered on Flex Consumption; every request is traced in Application Insights.
  // checkov:skip=CKV_AZURE_65: detailed error pages are an App Service file-system log not offered on Flex Consumption; failures are traced in Application Insights.
  // checkov:skip=CKV_AZURE_66: failed-request tracing is an App Service file-system log not offered on Flex Consumption; failures are traced in Application Insights.
  parent: functionApp
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: storageAccountName
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    RECONCILE_SCHEDULE: reconcileSchedule
    CLUSTERS_SUBSCRIPTION_ID: clustersSubscriptionId
    CLUSTERS_RESOURCE_GROUP: clustersResourceGroupName
    FUNCTION_SUBNET_ID: appSubnetResourceId
    CLUSTER_TOKEN_KEY: '@Microsoft.KeyVault(SecretUri=${clusterTokenKeySecretUri})'
    AZURE_CLIENT_ID: identityClientId
    ALLOW_LOCAL_PROVIDER: 'false'
    CONTROL_PLANE_URL: 'https://${functionApp.properties.defaultHostName}'
  }
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
