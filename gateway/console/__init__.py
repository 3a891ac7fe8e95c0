"""The privacy officer's console (`dicom-gateway console run`): a small HTTPS web application
beside the gateway, in its own process. docs/console.md says what it shows and does."""
