// Application Insights on a Log Analytics workspace: where the services' OTLP traces and the
// Functions host's logs go.
param prefix string
param location string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-logs'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-insights'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    // Managed identities only: no instrumentation key is accepted.
    DisableLocalAuth: true
  }
}

output connectionString string = insights.properties.ConnectionString
output id string = insights.id
