// Alert rules: each names the runbook in docs/operations.md that says what to do.
// Platform metrics where Azure has them (Service Bus dead letters, Cosmos DB 429s); log
// queries over Application Insights for what only the services know (the custom handlers'
// stdout and the Functions host's invocations land in its `traces` and `requests` tables).
param prefix string
param location string
param appInsightsId string
param serviceBusNamespaceName string
param cosmosAccountName string

@description('Who is told when an alert fires; empty: nobody (the alerts still show in the portal).')
param alertEmail string = ''

@description('Where the runbooks are read: docs/operations.md of the repository (a URL to it, say).')
param runbooks string = 'docs/operations.md'

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' existing = {
  name: cosmosAccountName
}

resource operators 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${prefix}-operators'
  location: 'global'
  properties: {
    groupShortName: take('${prefix}ops', 12)
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Dead letters present for 5 minutes, on any subscription.
resource deadLetters 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${prefix}-dead-letters'
  location: 'global'
  properties: {
    description: 'Messages sit in a dead-letter queue. Runbook: ${runbooks}#runbook-dead-letters'
    severity: 2
    enabled: true
    scopes: [
      namespace.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Minimum'
        }
      ]
    }
    actions: [
      {
        actionGroupId: operators.id
      }
    ]
  }
}

// Cosmos DB answering 429: the account is throttling.
resource throttling 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${prefix}-cosmos-throttling'
  location: 'global'
  properties: {
    description: 'Cosmos DB throttles requests (429). Runbook: ${runbooks}#runbook-throttling'
    severity: 2
    enabled: true
    scopes: [
      cosmos.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'throttled'
          metricNamespace: 'Microsoft.DocumentDB/databaseAccounts'
          metricName: 'TotalRequests'
          dimensions: [
            {
              name: 'StatusCode'
              operator: 'Include'
              values: [
                '429'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
        }
      ]
    }
    actions: [
      {
        actionGroupId: operators.id
      }
    ]
  }
}

// The rules that only the services' own telemetry can tell, as log queries every 5 minutes.
var logAlerts = [
  {
    name: 'outbox-or-view-lag'
    severity: 2
    description: 'Events wait more than a minute to be relayed, or a view lags. Runbook: ${runbooks}#runbook-outbox-or-view-lag'
    query: 'union (traces | where message has "outbox lag:"), (customMetrics | where name in ("platform.outbox.lag", "platform.view.lag") and value > 60)'
    threshold: 0
  }
  {
    name: 'http-5xx'
    severity: 1
    description: 'Requests fail with 5xx. Runbook: ${runbooks}#runbook-5xx'
    query: 'requests | where toint(resultCode) >= 500'
    threshold: 5
  }
  {
    name: 'endpoint-disabled'
    severity: 3
    description: 'A webhook endpoint was disabled after failing for too long. Runbook: ${runbooks}#runbook-endpoint-disabled'
    query: 'traces | where message has "webhook endpoint disabled after failing too long"'
    threshold: 0
  }
  {
    name: 'import-failed'
    severity: 3
    description: 'A feed import failed. Runbook: ${runbooks}#runbook-import-failed'
    query: 'traces | where message has "import failed"'
    threshold: 0
  }
]

resource queries 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in logAlerts: {
  name: '${prefix}-${rule.name}'
  location: location
  properties: {
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}]

output actionGroupId string = operators.id
