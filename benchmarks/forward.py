"""Seal + deliver benchmark: 512 KiB instances to the reference receiver over mutual TLS.

Figures, not a test. The receiver (`dicom-gateway receiver`, its own process) opens every
seal, checks the DICOM inside and stores it with an fsync, as a vendor's server would. In the
same run:

- seal only: HPKE (ML-KEM-768+X25519 / HKDF-SHA256 / AES-256-GCM) in this process;
- seal + deliver, one keep-alive HTTP/1.1 connection, one instance after the other;
- deliver pre-sealed bodies over a pool of `--pool` connections (threads);
- baseline: the same connection sending the same bodies with a wrong Content-Digest: the
  receiver reads every byte and answers 400 without opening or storing - TLS and HTTP alone.

    .venv/bin/python benchmarks/forward.py [--count 200] [--pool 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.forward.classify import Kind  # noqa: E402
from gateway.forward.client import Forwarder  # noqa: E402
from gateway.seal.envelope import Name, Sealed, sealed  # noqa: E402
from gateway.seal.keys import read_public  # noqa: E402
from gateway.settings import load  # noqa: E402
from tests.dicom_builders import greyscale, part10  # noqa: E402
from tests.support import GatewayProcess, cli, receiver_config, write_config  # noqa: E402

SIZE = 512 * 1024


def instances(count: int) -> list[tuple[str, str, bytes]]:
    """`count` synthetic secondary captures of about 512 KiB, fresh UIDs."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        ds = greyscale(512, 1024, rng.integers(0, 255, SIZE, dtype=np.uint8).tobytes())
        out.append((str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), part10(ds)))
    return out


def report(label: str, count: int, size: int, seconds: float) -> None:
    print(
        f"{label:44} {count / seconds:7.1f} instances/s  {size / seconds / 2**20:7.1f} MB/s"
        f"  ({seconds:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--pool", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = write_config(root, receiver_config(root))
        made = cli("keys", "--config", str(config))
        if made.returncode != 0:
            sys.exit(made.stderr)
        receiver = GatewayProcess(
            config, root / "receiver.log", command="receiver", ready="receiver.listening"
        ).start()
        try:
            run(config, receiver.port, args.count, args.pool)
        finally:
            receiver.stop()
            peak = re.findall(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
            print(f"benchmark process peak RSS: {int(peak[0]) / 1024:.0f} MiB")


def run(config: Path, port: int, count: int, pool: int) -> None:
    settings = load(config)
    forward = dataclasses.replace(settings.forward, url=f"https://127.0.0.1:{port}")
    assert forward.receiver_key is not None
    key = read_public(forward.receiver_key)
    batches = [instances(count) for _ in range(3)]
    size = sum(len(data) for _, _, data in batches[0])
    print(
        f"{count} instances of {size / count / 1024:.0f} KiB, receiver on 127.0.0.1:{port}, "
        f"{os.cpu_count()} cores"
    )

    start = time.perf_counter()
    for study, uid, data in batches[0]:
        sealed(data, Name("instance", "UT", study, uid), key)
    report("seal only", count, size, time.perf_counter() - start)

    forwarder = Forwarder(forward)
    try:
        bodies = [sealed(d, Name("instance", "UT", s, u), key) for s, u, d in batches[0]]
        start = time.perf_counter()
        headers = {
            "Content-Type": "application/vnd.dicom-gateway.sealed",
            "Content-Digest": "sha-256=:AAAA:",  # wrong: read in full, then refused
            "Dicom-Gateway-Site": "UT",
            "Dicom-Gateway-Key-Id": key.key_id,
        }
        url = f"{forward.url}/v1/studies/1.2/instances/3.4"
        for item in bodies:
            assert forwarder.http.put(url, content=item.body, headers=headers).status_code == 400
        report(
            "baseline: TLS + HTTP, body read, not opened", count, size, time.perf_counter() - start
        )

        start = time.perf_counter()
        for study, uid, data in batches[1]:
            verdict = forwarder.send(sealed(data, Name("instance", "UT", study, uid), key))
            assert verdict.kind is Kind.DONE, verdict
        report(
            "seal + deliver, one keep-alive connection", count, size, time.perf_counter() - start
        )

        presealed: list[Sealed] = [
            sealed(d, Name("instance", "UT", s, u), key) for s, u, d in batches[2]
        ]
        start = time.perf_counter()
        with ThreadPoolExecutor(pool) as workers:
            verdicts = list(workers.map(forwarder.send, presealed))
        assert all(v.kind is Kind.DONE for v in verdicts)
        report(
            f"deliver pre-sealed, pool of {pool} connections",
            count,
            size,
            time.perf_counter() - start,
        )
    finally:
        forwarder.close()


if __name__ == "__main__":
    main()
