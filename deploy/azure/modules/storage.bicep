// The storage account: sync's feeds (container product-feeds, watched under incoming/), the
// Functions hosts' own storage, and each Function App's deployment package. Entra ID only.
param prefix string
param location string

var services = [
  'catalog'
  'orders'
  'sync'
  'notifications'
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: '${replace(prefix, '-', '')}store'
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource feeds 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: 'product-feeds'
}

resource packages 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for service in services: {
  parent: blobs
  name: 'app-package-${service}'
}]

output accountName string = account.name
