// What the app's identity may do in the clusters' resource group: a custom role with exactly the compute and
// network actions the Azure provider calls, instead of Contributor or Virtual Machine Contributor (which also grant
// storage key listing, extensions, and much more). The action list lives in infra/roles/autoscaler-actions.json,
// the one place a test compares with the ARM operations the provider performs.

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Environment name, to keep the custom role\'s name unique in the tenant.')
param environmentName string

resource autoscalerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'ray-autoscaler-cluster-actions')
  properties: {
    roleName: 'Ray autoscaler clusters (${environmentName}, ${uniqueString(resourceGroup().id)})'
    description: 'Lets the Ray autoscaler control plane create, list and delete the VMs and networks of its clusters.'
    type: 'CustomRole'
    permissions: [
      {
        actions: loadJsonContent('../roles/autoscaler-actions.json')
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource autoscalerRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, autoscalerRole.id)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: autoscalerRole.id
  }
}

output roleDefinitionResourceId string = autoscalerRole.id
