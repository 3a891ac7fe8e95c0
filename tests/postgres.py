"""A real PostgreSQL server for tests: the Debian package's binaries, a fresh cluster made by
`initdb` in a temporary folder, listening on 127.0.0.1 only (no Unix socket), password
authentication (SCRAM), started and stopped with `pg_ctl` (which signals the postmaster by the
PID in its own pid file). Run as root (CI), the server runs as the `postgres` user the package
creates: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from gateway import devpki
from tests.pipeline_site import free_port

ROLE = "dicom_gateway"


def binaries() -> Path | None:
    """The folder of the newest installed server's programs (Debian puts them outside PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class PostgresServer:
    """One cluster; `start`/`stop` may be called again (a restart keeps the data)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="dicom-gateway-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.superuser_password = secrets.token_hex(16)
        self.password = secrets.token_hex(16)
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._user = {"user": owner.pw_uid, "group": owner.pw_gid}
        pwfile = self.root / "superuser.pw"
        pwfile.write_text(self.superuser_password)
        if self._user:
            os.chown(pwfile, self._user["user"], self._user["group"])
        self._run(
            "initdb",
            "-D", str(self.data),
            "-U", "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-instructions",
        )  # fmt: skip
        pwfile.unlink()

    def require_tls(self, ca: devpki.Issued) -> None:
        """Serve TLS with a certificate from `ca` for 127.0.0.1, and let the gateway's role in
        only over TLS with a client certificate from `ca` naming it (`cert`); before `start`."""
        server = devpki.issue(ca, "vault-db", server=True, hosts=("127.0.0.1", "localhost"))
        (self.data / "server.crt").write_bytes(devpki.certificate_pem(server))
        (self.data / "server.key").write_bytes(devpki.key_pem(server))
        (self.data / "server.key").chmod(0o600)
        (self.data / "clients.crt").write_bytes(devpki.certificate_pem(ca))
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                "ssl_ca_file = 'clients.crt'\n"
            )
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            f"hostssl all {ROLE} 127.0.0.1/32 cert\nhost all {ROLE} 127.0.0.1/32 reject\n"
            + hba.read_text()
        )
        if self._user:
            for name in ("server.crt", "server.key", "clients.crt"):
                os.chown(self.data / name, self._user["user"], self._user["group"])

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self._user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr[-2000:]}")

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
                  "-l", str(self.log), "-o", options)  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=self.superuser_password,
            dbname=dbname,
            autocommit=True,
        )

    def create_database(self, name: str) -> None:
        """A database the gateway's role owns (the role made once, with `password`)."""
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
            if exists.fetchone() is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(ROLE), sql.Literal(self.password)
                    )
                )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(ROLE)
                )
            )

    def vault_config(self, dbname: str, password_file: Path) -> dict[str, Any]:
        """The `[vault]` table of a gateway config for database `dbname`; the password is
        written to `password_file` (mode 0600)."""
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        return {
            "engine": "postgresql",
            "postgresql": {
                "host": "127.0.0.1",
                "port": self.port,
                "dbname": dbname,
                "user": ROLE,
                "password": {"file": str(password_file)},
                "sslmode": "disable",
                "connect_timeout": 2.0,
            },
        }
