"""Fixtures for the integration tests: `site` (keys, reference receiver, gateway: see
tests/pipeline_site.py)."""

from tests.pipeline_site import site

__all__ = ["site"]
