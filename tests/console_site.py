"""A site for the officer's console tests: the gateway (with its receiver) holding quarantined
originals, an officer account, and the console process on a free loopback port.

Originals are quarantined the way a site meets it: the gateway runs with a time limit too
short for the pixel check (`pixel-check-timeout`), is stopped, and runs again with the default;
what the console shows and releases is then what the worker path makes of them now.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.pipeline_site import Site, free_port, wait_for
from tests.support import GatewayProcess, cli, make_keys, storescu

OFFICER = "a.jansen"
PASSWORD = "correct horse battery staple"


@dataclass
class ConsoleSite:
    site: Site
    gateway: GatewayProcess
    console: GatewayProcess
    url: str
    ca: Path

    def client(self, **options: object) -> httpx.Client:
        """An HTTPS client of the console that trusts its dev CA."""
        context = ssl.create_default_context(cafile=str(self.ca))
        cert = options.pop("cert", None)
        if cert is not None:
            context.load_cert_chain(*cert)  # type: ignore[misc]
        return httpx.Client(base_url=self.url, verify=context, timeout=60.0, **options)  # type: ignore[arg-type]

    @contextmanager
    def signed_in(self, name: str = OFFICER, password: str = PASSWORD) -> Iterator[httpx.Client]:
        with self.client() as client:
            form = client.get("/login")
            csrf = _hidden(form.text, "csrf")
            answer = client.post("/login", data={"csrf": csrf, "name": name, "password": password})
            assert answer.status_code == 303, answer.text
            yield client

    def held(self) -> list[str]:
        """Refs of the quarantined originals (study-id/instance-id), from the spool."""
        root = self.site.root / "spool" / "quarantine"
        return sorted(
            f"{p.parent.name}/{p.name.split('.')[0]}" for p in root.glob("*/*.reason.json")
        )

    def audit(self) -> list[dict[str, object]]:
        path = self.site.root / "spool" / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()]


def _hidden(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def hidden(html: str, name: str) -> str:
    return _hidden(html, name)


def quarantine(site: Site, files: list[Path]) -> None:
    """Send `files` to a gateway whose pixel check may take a millisecond, until each is
    quarantined (`pixel-check-timeout`: the check looks at the time before each frame and
    each frame it masks, so each file needs pixels checked and a second frame or text to
    mask); the check's time limit is the default again afterwards."""
    site.edit(lambda c: c.update(pixels={"max_seconds": 0.001}))
    gateway = site.gateway()
    assert storescu(gateway.port, files).returncode == 0
    folder = site.root / "spool" / "quarantine"
    wait_for(lambda: len(list(folder.glob("*/*.reason.json"))) == len(files), 120, "quarantined")
    assert gateway.stop() == 0
    site.edit(lambda c: c.pop("pixels"))


def console_site(site: Site, files: list[Path], client_ca: bool = False) -> Iterator[ConsoleSite]:
    pki, keys = site.root / "pki", site.root / "keys"
    console = {
        "port": 0,  # the console says where it listens (console.listening)
        "certificate": str(pki / "console.crt"),
        "private_key": str(pki / "console.key"),
        "officers": str(keys / "officers.json"),
    }
    if client_ca:
        console["client_ca"] = str(pki / "officer-ca.crt")
    site.edit(lambda c: c.update(console=console, metrics={"host": "127.0.0.1",
                                                             "port": free_port()}))  # fmt: skip
    make_keys(site.path)
    added = cli("console", "officer", "add", OFFICER, "--password-stdin", "--config",
                str(site.path), input=PASSWORD + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    site.receiver()
    if files:
        quarantine(site, files)
    gateway = site.gateway()
    process = GatewayProcess(
        site.path, site.root / "console.log", command="console run", ready="console.listening"
    ).start()
    site.processes.append(process)
    ca = pki / ("officer-ca.crt" if client_ca else "console-ca.crt")
    url = f"https://127.0.0.1:{process.port}"
    yield ConsoleSite(site, gateway, process, url, ca)
