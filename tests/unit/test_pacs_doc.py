"""docs/pacs.md, the PACS administrator's page, names every refusal the gateway can send and
every C-STORE status it answers with, by the codes its log, metrics and PACS show: a new
refusal or status without a line there fails here."""

from __future__ import annotations

from gateway.ingest.status import AssociateReject, StoreStatus
from gateway.metrics import Refusal, StoreResult
from tests.support import REPO

PAGE = (REPO / "docs" / "pacs.md").read_text(encoding="utf-8")


def test_every_refusal_reason_is_explained() -> None:
    assert [r.value for r in Refusal if f"`{r.value}`" not in PAGE] == []


def test_every_store_status_and_result_is_explained() -> None:
    assert [s.name for s in StoreStatus if f"`0x{s.value:04X}`" not in PAGE] == []
    assert [r.value for r in StoreResult if f"`{r.value}`" not in PAGE] == []


def test_every_association_rejection_is_explained() -> None:
    results = {1: "rejected-permanent", 2: "rejected-transient"}
    sources = {
        1: "service-user",
        2: "service-provider (ACSE)",
        3: "service-provider (presentation)",
    }
    missing = [
        r.name
        for r in AssociateReject
        if f"| {results[r.value[0]]} / {sources[r.value[1]]} / {r.value[2]} " not in PAGE
    ]
    assert missing == []
