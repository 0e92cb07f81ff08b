// Cosmos DB, serverless (billed per request unit used: an idle platform costs storage only),
// one database, and each service's containers, partitioned by /pk (the store adapter's
// partition key), with item TTL on and the composite indexes their ORDER BY queries need.
param prefix string
param location string
param databaseName string = 'platform'

var composite = [for field in [
  '/doc/name'
  '/doc/amountScaled'
  '/doc/sku'
  '/doc/nextAttemptAt'
  '/doc/createdAt'
]: [
  [
    { path: field, order: 'ascending' }
    { path: '/id', order: 'ascending' }
    { path: '/pk', order: 'ascending' }
  ]
  [
    { path: field, order: 'descending' }
    { path: '/id', order: 'ascending' }
    { path: '/pk', order: 'ascending' }
  ]
]]

// catalog: products, stock, product-views; orders: orders; sync: imports, connectors,
// reconciliations, timers; notifications: subscriptions, messages, emails; every service:
// leases (its own change-feed leases and checkpoints).
var containers = [
  'products'
  'stock'
  'product-views'
  'orders'
  'imports'
  'connectors'
  'reconciliations'
  'timers'
  'subscriptions'
  'messages'
  'emails'
  'leases'
]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: '${prefix}-cosmos'
  location: location
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    capabilities: [
      { name: 'EnableServerless' }
    ]
    locations: [
      { locationName: location, failoverPriority: 0, isZoneRedundant: false }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    // Entra ID only: the services' managed identities, no account keys.
    disableLocalAuth: true
    minimalTlsVersion: 'Tls12'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource serviceContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [for name in containers: {
  parent: database
  name: name
  properties: {
    resource: {
      id: name
      partitionKey: {
        paths: [ '/pk' ]
        kind: 'Hash'
      }
      // On, with no default: records that carry a ttl (handled events, idempotency keys)
      // expire by themselves.
      defaultTtl: -1
      indexingPolicy: {
        indexingMode: 'consistent'
        includedPaths: [
          { path: '/*' }
        ]
        compositeIndexes: flatten(composite)
      }
    }
  }
}]

// The Functions host's change-feed leases: partitioned by /id, as its trigger requires.
resource functionLeases 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: 'function-leases'
  properties: {
    resource: {
      id: 'function-leases'
      partitionKey: {
        paths: [ '/id' ]
        kind: 'Hash'
      }
    }
  }
}

output accountName string = account.name
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
