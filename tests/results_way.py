"""The gateway's end of the way back, assembled from real parts for tests: the reference
receiver offering results (`channel`), and beside it a spool, an audit trail, PACS's address
on a free loopback port and the deliverer (`Way`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import scu
from gateway.audit import AuditLog
from gateway.forward.client import Forwarder
from gateway.forward.results import ResultsClient
from gateway.keyfiles import generate_key_file
from gateway.pipeline.results import ResultsDeliverer, ResultsPoller
from gateway.receiver.results import Results
from gateway.reidentify.restore import Reidentifier
from gateway.seal import keys as seal_keys
from gateway.settings import SecretSource, SpoolSettings, load
from gateway.spool import Spool
from gateway.vault import Vault
from tests.pipeline_site import Site, free_port

SITE = "GW"  # the site code results are offered for
SITE_OF_VAULT = "UT"  # the site code of the pseudonyms `tests.dicom_builders.worker` makes


@pytest.fixture
def channel(site: Site) -> Iterator[tuple[Site, str, Forwarder]]:
    """The receiver offering results sealed to a gateway key made here; its key id."""
    private, public = site.root / "keys" / "results.key", site.root / "keys" / "results.pub"
    key_id = seal_keys.write_pair(private, public)
    site.edit(lambda config: config["receiver"].update(results_key=str(public)))
    site.receiver()
    forwarder = Forwarder.for_settings(load(site.path))
    yield site, key_id, forwarder
    forwarder.close()


@dataclass
class Way:
    site: Site
    client: ResultsClient
    spool_settings: SpoolSettings
    spool: Spool
    audit: AuditLog
    node: scu.Node  # PACS: nothing listens on its port until a test starts it

    @property
    def offered(self) -> Results:
        return Results(self.site.root / "received")

    def poll(self) -> int:
        return ResultsPoller(self.client, self.spool.returns).poll_once()

    def deliverer(self, vault: Vault, **options: Any) -> ResultsDeliverer:
        """Results re-identified from `vault`, C-STOREd to `node`; `options` as
        ResultsDeliverer takes them (retry_hours 1 unless given)."""
        options.setdefault("retry_hours", 1.0)
        return ResultsDeliverer(
            self.spool.returns,
            self.client,
            Reidentifier(vault, SITE_OF_VAULT),
            seal_keys.read_private(self.site.root / "keys" / "results.key"),
            lambda ds: scu.store(self.node, ds),
            self.audit,
            **options,
        )

    def reopen(self) -> None:
        """The spool closed and opened again, as after a restart."""
        self.spool.close()
        self.spool = Spool.open(self.spool_settings)

    def audit_events(self) -> list[str]:
        lines = self.audit.path.read_text().splitlines()
        return [json.loads(line)["event"] for line in lines]


@pytest.fixture
def way(channel: tuple[Site, str, Forwarder], tmp_path: Path) -> Iterator[Way]:
    site, key_id, forwarder = channel
    client = ResultsClient(forwarder.http, str(site.config["forward"]["url"]), SITE, key_id)
    generate_key_file(tmp_path / "master.key")
    settings = SpoolSettings(tmp_path / "spool", SecretSource(file=tmp_path / "master.key"))
    spool = Spool.open(settings)
    audit = AuditLog(tmp_path / "audit.log", sync=False)
    node = scu.Node("127.0.0.1", free_port(), "DICOM_GATEWAY", "PACS", timeout=5.0)
    rig = Way(site, client, settings, spool, audit, node)
    try:
        yield rig
    finally:
        audit.close()
        rig.spool.close()
