// Service Bus: the topics, one subscription per consumer with the event types it takes
// (and the replays addressed to it), and a queue per subscription for dead letters set aside
// explicitly. The same entities a service with Manage rights would create at start.
param prefix string
param location string

var topics = [
  'orders-events'
  'catalog-events'
  'sync-events'
  'notifications-events'
]

// topic, subscription, the event types it takes.
var subscriptions = [
  {
    topic: 'orders-events'
    name: 'catalog'
    types: [ 'orders.order.placed.v1', 'orders.order.cancelled.v1' ]
  }
  {
    topic: 'catalog-events'
    name: 'orders'
    types: [ 'catalog.stock.reserved.v1', 'catalog.stock.reservation-failed.v1' ]
  }
  {
    topic: 'orders-events'
    name: 'sync-orders'
    types: [ 'orders.order.placed.v1', 'orders.order.confirmed.v1', 'orders.order.rejected.v1', 'orders.order.cancelled.v1' ]
  }
  {
    topic: 'catalog-events'
    name: 'sync-catalog'
    types: [ 'catalog.product.changed.v1', 'catalog.product.deleted.v1', 'catalog.stock.changed.v1' ]
  }
  {
    topic: 'orders-events'
    name: 'notifications-orders'
    types: [ 'orders.order.placed.v1', 'orders.order.confirmed.v1', 'orders.order.rejected.v1', 'orders.order.cancelled.v1' ]
  }
  {
    topic: 'catalog-events'
    name: 'notifications-catalog'
    types: [ 'catalog.stock.reserved.v1', 'catalog.stock.reservation-failed.v1', 'catalog.stock.released.v1', 'catalog.product.changed.v1', 'catalog.product.deleted.v1', 'catalog.stock.changed.v1' ]
  }
  {
    topic: 'notifications-events'
    name: 'notifications-own'
    types: [ 'notifications.endpoint.disabled.v1' ]
  }
]

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: '${prefix}-bus'
  location: location
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    // Entra ID only: no SAS keys.
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource topicResources 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' = [for topic in topics: {
  parent: namespace
  name: topic
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
  }
}]

resource subscriptionResources 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' = [for s in subscriptions: {
  name: '${namespace.name}/${s.topic}/${s.name}'
  properties: {
    maxDeliveryCount: 10
    lockDuration: 'PT30S'
    deadLetteringOnMessageExpiration: true
  }
  dependsOn: [
    topicResources
  ]
}]

// The subscription's one rule: its event types, and replays addressed to it. Named $Default,
// it takes the place of the catch-all rule a new subscription gets.
resource rules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2022-10-01-preview' = [for (s, i) in subscriptions: {
  name: '${namespace.name}/${s.topic}/${s.name}/$Default'
  properties: {
    filterType: 'SqlFilter'
    sqlFilter: {
      sqlExpression: '(sys.Label IN (\'${join(s.types, '\', \'')}\') AND user.ReplayTo IS NULL) OR user.ReplayTo = \'${s.name}\''
    }
  }
  dependsOn: [
    subscriptionResources[i]
  ]
}]

// Letters a handler set aside; listing them counts as a delivery, so they never give up.
resource deadLetters 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for s in subscriptions: {
  parent: namespace
  name: '${s.topic}.${s.name}.dead-letters'
  properties: {
    maxDeliveryCount: 2147483647
    lockDuration: 'PT30S'
  }
}]

output namespaceName string = namespace.name
