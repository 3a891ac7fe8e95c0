"""Forwarding sealed instances to the analysis server over mutual TLS (protocol v1,
docs/protocol.md): the httpx client, what each answer or failure means, and when to retry."""
