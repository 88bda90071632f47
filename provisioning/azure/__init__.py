"""Azure provider: `provider.AzureCloudProvider` (imports the management SDKs lazily), error table, cloud-init."""
