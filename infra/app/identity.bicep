// The function app's own identity. User-assigned rather than system-assigned so its role assignments can be
// created before the app exists, and so the client id can be written into the app's settings in the same deployment.

@description('Name of the user-assigned managed identity.')
param identityName string

@description('Region of the identity.')
param location string

@description('Tags applied to the identity.')
param tags object

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

output identityResourceId string = appIdentity.id
output identityName string = appIdentity.name
output clientId string = appIdentity.properties.clientId
output principalId string = appIdentity.properties.principalId
