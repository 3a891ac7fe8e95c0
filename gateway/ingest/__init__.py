"""Ingest: the pynetdicom C-ECHO/C-STORE SCP. Bytes go to the spool and nowhere else."""

from gateway.ingest.scp import IngestService

__all__ = ["IngestService"]
