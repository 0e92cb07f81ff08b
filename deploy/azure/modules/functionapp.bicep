// One service as a Function App on Flex Consumption (scales to zero, custom handler), its
// system-assigned identity given exactly the data-plane roles it uses, and its settings.
param prefix string
param location string
@allowed([ 'catalog', 'orders', 'sync', 'notifications' ])
param service string
param storageAccountName string
param cosmosAccountName string
param cosmosEndpoint string
param databaseName string
param serviceBusNamespaceName string
param appInsightsConnectionString string
param appInsightsId string
param authIssuer string
param authAudience string

// Built-in roles, by their fixed ids.
var roles = {
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39' // Azure Service Bus Data Sender
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0' // Azure Service Bus Data Receiver
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
}
// Cosmos DB Built-in Data Contributor (a data-plane role of the account).
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

resource bus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: last(split(appInsightsId, '/'))
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${prefix}-${service}-plan'
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

var catalogUrl = 'https://${prefix}-catalog.azurewebsites.net'
var common = [
  { name: 'AzureWebJobsStorage__accountName', value: storage.name }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
  { name: 'ServiceBus__fullyQualifiedNamespace', value: '${bus.name}.servicebus.windows.net' }
  { name: 'CosmosDB__accountEndpoint', value: cosmosEndpoint }
  { name: 'COSMOS_DATABASE', value: databaseName }
  { name: 'PLATFORM__STORE__KIND', value: 'cosmos' }
  { name: 'PLATFORM__STORE__COSMOS__ENDPOINT', value: cosmosEndpoint }
  { name: 'PLATFORM__STORE__COSMOS__DATABASE', value: databaseName }
  { name: 'PLATFORM__STORE__COSMOS__REGION', value: location }
  { name: 'PLATFORM__STORE__COSMOS__CREDENTIAL', value: 'managed-identity' }
  { name: 'PLATFORM__BUS__KIND', value: 'servicebus' }
  { name: 'PLATFORM__BUS__SERVICEBUS__NAMESPACE', value: bus.name }
  { name: 'PLATFORM__BUS__SERVICEBUS__CREDENTIAL', value: 'managed-identity' }
  { name: 'PLATFORM__AUTH__MODE', value: 'oidc' }
  { name: 'PLATFORM__AUTH__ISSUER', value: authIssuer }
  { name: 'PLATFORM__AUTH__AUDIENCE', value: authAudience }
  { name: 'PLATFORM__OUTBOUND__CREDENTIAL', value: 'managed-identity' }
  { name: 'PLATFORM__TELEMETRY__LOG_FORMAT', value: 'json' }
]
var own = {
  catalog: []
  orders: [
    { name: 'ORDERS__CATALOG__URL', value: catalogUrl }
  ]
  sync: [
    { name: 'SYNC__CATALOG__URL', value: catalogUrl }
    { name: 'SYNC__FILES__KIND', value: 'blob' }
    { name: 'SYNC__FILES__BLOB__ENDPOINT', value: storage.properties.primaryEndpoints.blob }
    { name: 'SYNC__FILES__BLOB__CREDENTIAL', value: 'managed-identity' }
    { name: 'FeedStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
    { name: 'FeedStorage__queueServiceUri', value: storage.properties.primaryEndpoints.queue }
  ]
  notifications: []
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: '${prefix}-${service}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}app-package-${service}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 512
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: concat(common, own[service])
    }
  }
}

var armRoles = [
  { scope: 'bus', role: roles.serviceBusDataSender }
  { scope: 'bus', role: roles.serviceBusDataReceiver }
  { scope: 'storage', role: roles.storageBlobDataOwner }
  { scope: 'storage', role: roles.storageQueueDataContributor }
  { scope: 'storage', role: roles.storageTableDataContributor }
  { scope: 'insights', role: roles.monitoringMetricsPublisher }
]

resource busRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for r in filter(armRoles, r => r.scope == 'bus'): {
  name: guid(bus.id, app.id, r.role)
  scope: bus
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', r.role)
  }
}]

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for r in filter(armRoles, r => r.scope == 'storage'): {
  name: guid(storage.id, app.id, r.role)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', r.role)
  }
}]

resource insightsRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for r in filter(armRoles, r => r.scope == 'insights'): {
  name: guid(insights.id, app.id, r.role)
  scope: insights
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', r.role)
  }
}]

resource cosmosRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: cosmos
  name: guid(cosmos.id, app.id, cosmosDataContributor)
  properties: {
    principalId: app.identity.principalId
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    scope: cosmos.id
  }
}

output url string = 'https://${app.properties.defaultHostName}'
output principalId string = app.identity.principalId
