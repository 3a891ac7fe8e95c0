"""dicom-gateway: receive studies from PACS, de-identify them, seal them and forward them."""

__version__ = "0.1.0"
