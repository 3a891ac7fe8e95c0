"""The reference receiver: the analysis server's end of protocol v1 (docs/protocol.md), for
integrators to build against and for the gateway's tests."""
