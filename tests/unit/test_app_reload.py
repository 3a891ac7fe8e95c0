"""A reload that fails with an unexpected error (`Gateway._wait_for_stop`): counted as refused
always, but the refusal time (what DicomGatewayConfigReloadRefused compares with the load time)
is kept only when none of the new configuration was applied - the alert says "the running
configuration stays". Invalid files (ConfigError) go through tests/integration/test_reload.py."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.metrics import Metrics


def _fail_once(applied_first: bool) -> tuple[CollectorRegistry, SimpleNamespace]:
    """A stand-in gateway whose reload raises once (after replacing its settings when
    `applied_first`), then is told to stop."""
    registry = CollectorRegistry()
    read, write = os.pipe()
    gateway = SimpleNamespace(settings=object(), metrics=Metrics(registry), _wake_r=read)

    def reload() -> None:
        if applied_first:
            gateway.settings = object()  # as _reload does once the new settings are in force
        os.write(write, b"s")  # then stop: the loop reads it after handling this failure
        raise RuntimeError("worker pool gone")

    def refused(**kept: bool) -> None:
        Gateway._refused(gateway, **kept)  # type: ignore[arg-type]

    gateway._reload, gateway._refused = reload, refused
    os.write(write, b"r")
    Gateway._wait_for_stop(gateway)  # type: ignore[arg-type]
    os.close(read)
    os.close(write)
    return registry, gateway


@pytest.mark.parametrize("applied_first", [False, True])
def test_an_unexpected_reload_failure_is_counted_and_alerts_only_if_nothing_was_applied(
    applied_first: bool,
) -> None:
    registry, _ = _fail_once(applied_first)
    refused = registry.get_sample_value("dicom_gateway_config_reloads_total", {"result": "refused"})
    when = registry.get_sample_value("dicom_gateway_config_reload_refused_timestamp_seconds")
    loaded = registry.get_sample_value("dicom_gateway_config_loaded_timestamp_seconds")
    assert refused == 1
    assert loaded is not None
    assert when is not None
    if applied_first:
        assert when == 0.0  # the alert stays quiet: the new configuration is (partly) in force
    else:
        assert when > loaded  # the alert fires: the running configuration stayed
