"""`kill -9` of the gateway at random moments (issue 7): nothing acknowledged is lost, nothing
is delivered twice.

A sender stores 200 instances and sends again whatever was not acknowledged; the gateway is
killed by PID (SIGKILL) at random moments - while associations are open, while its worker
processes the backlog, while sealed items are on their way to the receiver - and started
again. After a last start without a kill, every instance the gateway acknowledged is in the
reference receiver's store exactly once, or held in quarantine with a reason.

The sender is pynetdicom, not dcmtk's storescu, because the check must know per instance
whether the gateway answered Success (PS3.4 B.2.3): an abort, a timeout or a refused
connection means "not acknowledged: send it again later", as a modality does. The gateway
gives delivered instances new UIDs and may black out what its text detector takes for text, so
a delivered file is matched to its original by InstanceNumber, which the de-identifier keeps
and which is unique across everything sent here.

The loop (`CrashRun`) is shared with `benchmarks/soak.py`, which runs it for longer.
"""

from __future__ import annotations

import io
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from gateway.errors import SpoolError
from gateway.settings import load
from gateway.spool import Spool
from tests.dicom_builders import SECONDARY_CAPTURE, greyscale, part10
from tests.pipeline_site import PATIENTS, Site
from tests.support import START_TIMEOUT, GatewayProcess, cli

pytestmark = pytest.mark.timeout(240)

SUCCESS = 0x0000  # PS3.4 B.2.3: the only status that acknowledges an instance
NETWORK_TIMEOUT = 3.0  # seconds: every association, DIMSE and TCP wait of the sender
SIDE = 64  # image rows and columns
STUDIES = 4


# -- what is sent ---------------------------------------------------------------------------


def instances(folder: Path, count: int) -> list[Path]:
    """`count` small greyscale images in `STUDIES` studies of two patients, one file each;
    file i has InstanceNumber i + 1."""
    folder.mkdir(parents=True, exist_ok=True)
    studies = [(pydicom.uid.generate_uid(), pydicom.uid.generate_uid()) for _ in range(STUDIES)]
    files = []
    for i in range(count):
        name, pid, accession = PATIENTS[i % STUDIES % len(PATIENTS)]
        study_uid, series_uid = studies[i % STUDIES]
        ds = greyscale(
            SIDE,
            SIDE,
            bytes((x * 3 + i) % 200 for x in range(SIDE * SIDE)),
            PatientName=name,
            PatientID=pid,
            AccessionNumber=f"{accession}-{i % STUDIES}",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series_uid,
            InstanceNumber=i + 1,
        )
        path = folder / f"i{i:05d}.dcm"
        path.write_bytes(part10(ds))
        files.append(path)
    return files


class Sender:
    """Sends every instance not yet acknowledged, one association at a time, until there is
    none left or it is told to stop; remembers which ones the gateway acknowledged."""

    def __init__(self, files: list[Path], gap: float) -> None:
        self.datasets = [pydicom.dcmread(path) for path in files]
        self.gap = gap  # seconds between two C-STOREs: a modality that sends for a while
        self.released = len(self.datasets)  # only the first ones are sent (a soak feeds more)
        self.acknowledged: set[int] = set()
        self.attempts: Counter[int] = Counter()
        self.in_association = threading.Event()

    def pending(self) -> list[int]:
        return [i for i in range(self.released) if i not in self.acknowledged]

    def run(self, port: int, stop: threading.Event) -> None:
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT
        ae.connection_timeout = NETWORK_TIMEOUT
        while not stop.is_set() and self.pending():
            assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY_UT")
            try:
                if assoc.is_established:
                    self.in_association.set()
                    self._send(assoc, stop)
                else:  # refused, aborted, or nothing listens: try again shortly
                    stop.wait(0.1)
            finally:
                self.in_association.clear()
                if assoc.is_established:
                    assoc.release()
                _close_socket(assoc)

    def _send(self, assoc: Association, stop: threading.Event) -> None:
        for i in self.pending():
            if stop.is_set() or not assoc.is_established:
                return
            self.attempts[i] += 1
            try:
                status = assoc.send_c_store(self.datasets[i])
            except RuntimeError:  # aborted between the check and the request
                return
            if status.get("Status") == SUCCESS:
                self.acknowledged.add(i)
            stop.wait(self.gap)


def _close_socket(assoc: Association) -> None:
    """pynetdicom 3.0 skips closing its socket when shutting it down fails, as it does once the
    peer has gone (ENOTCONN); close what it left once its threads have ended."""
    for thread in (assoc, assoc.dul):
        if thread.ident is not None:  # started (the association's only once established)
            thread.join(NETWORK_TIMEOUT)
    transport = assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.close()


# -- the gateway's processes ----------------------------------------------------------------


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc/<pid>/stat; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return fields[0], fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (workers, multiprocessing's resource tracker) and its start
    time, which tells a survivor from a later process that got the same PID."""
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        parent = stack.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                listed = children.read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in map(int, listed):
                stat = _stat(child)
                if stat is not None and child not in found:
                    found[child] = stat[1]
                    stack.append(child)
    return found


def survivors(family: dict[int, str], timeout: float = 5.0) -> list[int]:
    """The processes of `family` still running after up to `timeout` seconds (a zombie is
    dead: only its exit status waits for a parent that no longer exists)."""

    def running(pid: int, started: str) -> bool:
        stat = _stat(pid)
        return stat is not None and stat[1] == started and stat[0] not in "ZX"

    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid, started in family.items() if running(pid, started)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


# -- the loop -------------------------------------------------------------------------------

PHASES = ("association", "starting", "processing", "forwarding")


@dataclass(frozen=True)
class Kill:
    """One `kill -9`: what was going on at that moment (of `PHASES`: the sender had an
    association open; the workers were still loading their models; they were up and originals
    waited in incoming/; sealed items waited in the outbox), and what outlived it."""

    phases: frozenset[str]
    exit_code: int  # -SIGKILL, unless the gateway had ended by itself before
    survivors: tuple[int, ...]  # PIDs of the gateway's processes still running after it
    sender_stuck: bool  # the sender did not end within its network timeouts

    @property
    def clean(self) -> bool:
        return self.exit_code == -signal.SIGKILL and not self.survivors and not self.sender_stuck


@dataclass
class Outcome:
    """Where every instance ended up, by its index in the sent files."""

    acknowledged: set[int]
    delivered: dict[int, list[Path]]  # receiver files with the instance's InstanceNumber
    held: dict[int, list[str]]  # quarantine reasons ("" for a held copy without one)
    unmatched: list[Path]  # receiver files or quarantined originals no sent instance matches
    dead_letters: int  # instance items the receiver refused for good
    answers: Counter[tuple[str, int]]  # the receiver's (kind, status) answers
    taken_in: int  # instance copies the gateway spooled and finished with
    resent: int  # instances the sender sent more than once
    lost: list[int] = field(init=False)
    duplicated: list[int] = field(init=False)

    def __post_init__(self) -> None:
        copies = Counter({i: len(paths) for i, paths in self.delivered.items()})
        copies.update({i: len(reasons) for i, reasons in self.held.items()})
        self.lost = sorted(i for i in self.acknowledged if not copies[i])
        self.duplicated = sorted(i for i, n in copies.items() if n > 1)

    def answered(self, status: int) -> int:
        return sum(n for (_, s), n in self.answers.items() if s == status)


class CrashRun:
    """The gateway of `site` started, sent to and killed, again and again; the receiver runs
    the whole time. `rng` draws when each kill comes."""

    def __init__(self, site: Site, files: list[Path], rng: random.Random, gap: float) -> None:
        self.site = site
        self.rng = rng
        self.sender = Sender(files, gap)
        self.receiver = site.receiver()
        self.kills: list[Kill] = []

    def kill_once(self) -> Kill:
        """Start the gateway and the sender, wait a random 0-2 s (after the gateway listens,
        or after its workers are up), kill it by PID, and see what outlived it."""
        gateway = self.site.gateway()
        stop = threading.Event()
        sending = self._send(gateway, stop)
        if self.rng.random() < 0.5:
            gateway.wait_for_event("workers.started", timeout=START_TIMEOUT)
        time.sleep(self.rng.uniform(0.0, 2.0))
        family = descendants(gateway.pid)
        phases = self._phases(gateway)
        code = gateway.stop(signal.SIGKILL)
        stop.set()
        sending.join(4 * NETWORK_TIMEOUT)
        kill = Kill(phases, code, tuple(survivors(family)), sending.is_alive())
        self.kills.append(kill)
        return kill

    def _send(self, gateway: GatewayProcess, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.sender.run, args=(gateway.port, stop), daemon=True)
        thread.start()
        return thread

    def _phases(self, gateway: GatewayProcess) -> frozenset[str]:
        started = bool(gateway.events("workers.started"))
        now = {
            "association": self.sender.in_association.is_set(),
            "starting": not started,
            "processing": started and bool(self.site.spool("incoming", "*.dgs")),
            "forwarding": bool(self.site.spool("outbox", "*.sealed")),
        }
        return frozenset(phase for phase, true in now.items() if true)

    def finish(self, timeout: float) -> GatewayProcess:
        """Start the gateway once more without a kill; send what was never acknowledged and
        wait (up to `timeout`) until the spool is idle and everything acknowledged is
        accounted for. Returns the running gateway."""
        self.sender.released = len(self.sender.datasets)
        gateway = self.site.gateway()
        stop = threading.Event()
        sending = self._send(gateway, stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sending.is_alive() and self._idle() and not self.outcome().lost:
                break
            time.sleep(0.2)
        stop.set()
        sending.join(4 * NETWORK_TIMEOUT)
        return gateway

    def _idle(self) -> bool:
        waiting = self.site.spool("incoming", "*.dgs") + self.site.spool("outbox", "*.sealed")
        return not waiting

    def outcome(self) -> Outcome:
        delivered, unmatched = self._match((p, pydicom.dcmread(p)) for p in self.site.stored())
        spool = Spool.open_readonly(load(self.site.path).spool)
        quarantined = [(p, _original(spool, p)) for p in self.site.spool("quarantine", "*.dgs")]
        held, strays = self._match(quarantined)
        answers = Counter(
            (str(e["kind"]), int(e["status"])) for e in self.receiver.events("receiver.answered")
        )
        dead = [p for p in self.site.spool("dead", "*.sealed") if _is_instance(p)]
        sent = [p for p in self.site.spool("sent", "*.sealed") if _is_instance(p)]
        return Outcome(
            acknowledged=set(self.sender.acknowledged),
            delivered=delivered,
            held={i: [_reason(spool, p) for p in paths] for i, paths in held.items()},
            unmatched=unmatched + strays,
            dead_letters=len(dead),
            answers=answers,
            taken_in=len(sent) + len(dead) + len(quarantined),
            resent=sum(1 for n in self.sender.attempts.values() if n > 1),
        )

    def _match(
        self, found: Iterable[tuple[Path, Dataset | None]]
    ) -> tuple[dict[int, list[Path]], list[Path]]:
        """Files by the index of the sent instance with their InstanceNumber; and the files
        that match none."""
        matched: defaultdict[int, list[Path]] = defaultdict(list)
        unmatched = []
        for path, ds in found:
            number = int(ds.get("InstanceNumber", 0) or 0) if ds is not None else 0
            if 1 <= number <= len(self.sender.datasets):
                matched[number - 1].append(path)
            else:
                unmatched.append(path)
        return dict(matched), unmatched


def _original(spool: Spool, path: Path) -> Dataset | None:
    """A quarantined original, decrypted with the spool's key (None if it cannot be read)."""
    try:
        _, data = spool.read(path)
    except (OSError, SpoolError):
        return None
    return pydicom.dcmread(io.BytesIO(data))


def _reason(spool: Spool, path: Path) -> str:
    return str(spool.reason(path).get("reason", ""))


def _is_instance(path: Path) -> bool:
    return not path.name.startswith("manifest-")


def figures(run: CrashRun, outcome: Outcome) -> dict[str, object]:
    """What a crash run came to, for people to read."""
    count = len(run.sender.datasets)
    reasons = Counter(r for held in outcome.held.values() for r in held)
    return {
        "kills": len(run.kills),
        "kills by phase": dict(Counter(p for k in run.kills for p in sorted(k.phases))),
        "kills while idle": sum(not k.phases for k in run.kills),
        "unclean kills": sum(not k.clean for k in run.kills),  # ended early, survivors, hung
        "instances": count,
        "acknowledged": len(outcome.acknowledged),
        "sent more than once": outcome.resent,
        "taken in twice (ack lost)": outcome.taken_in - count,
        "delivered": len(outcome.delivered),
        "quarantined": dict(reasons),
        "lost": len(outcome.lost),
        "duplicated": len(outcome.duplicated),
        "unmatched": len(outcome.unmatched),
        "dead letters": outcome.dead_letters,
        "receiver answers": {f"{k} {s}": n for (k, s), n in sorted(outcome.answers.items())},
    }


# -- the test -------------------------------------------------------------------------------

SEED = 7
# Kills: at least MIN_KILLS, then on until every window of PHASES has been hit (by at most
# ITERATIONS kills). The windows, not the count, are what the kills must cover: 30 kills at
# once spent ~15 of them on windows already hit several times over (seed 7: association 13,
# processing 19, starting 11, forwarding 4); which windows each kill hit is printed.
MIN_KILLS = 12
ITERATIONS = 30
INSTANCES = 200
GAP = 0.04  # seconds between C-STOREs: sending 200 takes ~8 s, so kills land during it


# pynetdicom 3.0 drops the socket of a connection that was refused without closing it
# (transport.py: close() is skipped when shutdown() raises ENOTCONN); the sender cannot reach it
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_kill_9_at_random_moments_loses_and_duplicates_no_acknowledged_instance(
    site: Site,
) -> None:
    started = time.monotonic()
    files = instances(site.root / "send", INSTANCES)
    run = CrashRun(site, files, random.Random(SEED), GAP)  # noqa: S311 - timing, not secrets
    for _ in range(ITERATIONS):
        kill = run.kill_once()
        assert kill.exit_code == -signal.SIGKILL, "the gateway had ended before the kill"
        assert kill.survivors == (), "a process of the killed gateway outlived it"
        assert not kill.sender_stuck, "the sender did not notice the gateway was gone"
        every_window = {p for k in run.kills for p in k.phases} == set(PHASES)
        if len(run.kills) >= MIN_KILLS and every_window:
            break
    gateway = run.finish(timeout=120)
    outcome = run.outcome()
    print("windows of each kill:", [sorted(k.phases) for k in run.kills])
    print(figures(run, outcome), f"{time.monotonic() - started:.0f} s")
    assert outcome.acknowledged == set(range(INSTANCES)), "the sender never got every ack"
    assert outcome.lost == []
    assert outcome.duplicated == []
    assert outcome.unmatched == []
    assert all(all(reasons) for reasons in outcome.held.values()), "held without a reason"
    assert outcome.answered(409) == 0
    assert outcome.dead_letters == 0
    hit = {p for k in run.kills for p in k.phases}
    assert {"association", "processing"} <= hit, "the kills missed the busy moments"
    assert gateway.stop() == 0
    verified = cli("audit", "verify", "--config", str(site.path))
    assert verified.returncode == 0, verified.stderr
