"""De-identification by PS3.15 Annex E. Never imported by ingest: it runs in worker processes."""
