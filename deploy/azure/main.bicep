// The whole platform on Azure, from an empty resource group:
//   az deployment group create -g $RG -f deploy/azure/main.bicep -p prefix=$PREFIX
// Cosmos DB (serverless) with every service's containers, Service Bus with its topics,
// subscriptions and rules, the storage account of sync's feeds, Application Insights with the
// alert rules (docs/operations.md#alerts-and-runbooks), and one
// Function App per service (Flex Consumption, custom handler) whose managed identity holds
// exactly the data-plane roles it needs: no keys anywhere.
targetScope = 'resourceGroup'

@description('A short lower-case prefix for every resource name (3-11 letters and digits).')
@minLength(3)
@maxLength(11)
param prefix string

param location string = resourceGroup().location

@description('The Entra ID issuer and audience the services accept tokens from (see docs/deploy-azure.md).')
param authIssuer string
param authAudience string

@description('Who is told when an alert fires (docs/operations.md has a runbook per alert).')
param alertEmail string = ''

var services = [
  'catalog'
  'orders'
  'sync'
  'notifications'
]

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    prefix: prefix
    location: location
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    prefix: prefix
    location: location
  }
}

module bus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    prefix: prefix
    location: location
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    prefix: prefix
    location: location
  }
}

module apps 'modules/functionapp.bicep' = [for service in services: {
  name: 'app-${service}'
  params: {
    prefix: prefix
    location: location
    service: service
    storageAccountName: storage.outputs.accountName
    cosmosAccountName: cosmos.outputs.accountName
    cosmosEndpoint: cosmos.outputs.endpoint
    databaseName: cosmos.outputs.databaseName
    serviceBusNamespaceName: bus.outputs.namespaceName
    appInsightsConnectionString: monitoring.outputs.connectionString
    appInsightsId: monitoring.outputs.id
    authIssuer: authIssuer
    authAudience: authAudience
  }
}]

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    prefix: prefix
    location: location
    appInsightsId: monitoring.outputs.id
    serviceBusNamespaceName: bus.outputs.namespaceName
    cosmosAccountName: cosmos.outputs.accountName
    alertEmail: alertEmail
  }
}

output urls array = [for (service, i) in services: {
  service: service
  url: apps[i].outputs.url
}]
output cosmosEndpoint string = cosmos.outputs.endpoint
output serviceBusNamespace string = bus.outputs.namespaceName
