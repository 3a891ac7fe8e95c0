"""Crash soak: `kill -9` of the gateway at random moments, many times over (issue 7).

Figures, not a test: the loop of tests/integration/test_crash.py (`CrashRun`) run for longer.
The reference receiver runs the whole time; each iteration starts the gateway (one worker,
studies stable after 1 s) and a pynetdicom sender that stores every instance not yet
acknowledged, waits a random 0-2 s (after the gateway listens, or after its workers are up),
kills the gateway by PID with SIGKILL and checks that none of its processes outlived it. A last
start without a kill sends what was never acknowledged and waits until the spool is idle.

Unlike the test, which offers all its instances at once, the sender here is given an equal share
of them before each kill and sends them slowly (`--gap`), so that the gateway has work to be
killed in all along the run (all at once, 200 instances are through the pipeline after ~40
kills and the rest hit an idle gateway).

Exits 1 if an acknowledged instance was lost or duplicated, the receiver answered a conflict, the
gateway ended before a kill, a process outlived one or the sender hung; the work folder is then
kept for a look.

    .venv/bin/python benchmarks/soak.py [--iterations 200] [--instances 1000] [--seed 1]
                                        [--gap 0.2]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.test_crash import CrashRun, figures, instances  # noqa: E402
from tests.pipeline_site import Site  # noqa: E402


def soak(
    work: Path, iterations: int, count: int, seed: int, gap: float
) -> tuple[dict[str, object], bool]:
    """Run the loop in `work`; its figures, and whether anything went wrong."""
    site = Site(work)
    started = time.monotonic()
    try:
        rng = random.Random(seed)  # noqa: S311 - timing, not secrets
        run = CrashRun(site, instances(work / "send", count), rng, gap)
        for i in range(1, iterations + 1):
            run.sender.released = min(count, -(-i * count // iterations))  # ceil(i * share)
            run.kill_once()
            if i % 10 == 0:
                print(f"  {i} kills, {len(run.sender.acknowledged)} acknowledged", flush=True)
        gateway = run.finish(timeout=60 + count)
        outcome = run.outcome()
        stopped = gateway.stop()
    finally:
        for process in site.processes:
            process.stop()
    result = {**figures(run, outcome), "wall seconds": round(time.monotonic() - started, 1)}
    failed = (
        outcome.lost
        or outcome.duplicated
        or outcome.unmatched
        or outcome.answered(409)
        or outcome.acknowledged != set(range(count))
        or not all(k.clean for k in run.kills)
        or stopped != 0
    )
    return result, bool(failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200, help="kills")
    parser.add_argument("--instances", type=int, default=1000, help="instances to send")
    parser.add_argument("--seed", type=int, default=1, help="for the kill moments")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between C-STOREs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dg-soak-"))
    print(f"work folder: {work}", flush=True)
    result, failed = soak(work, args.iterations, args.instances, args.seed, args.gap)
    for name, value in result.items():
        print(f"{name:28} {value}")
    if failed:
        print("FAILED: an acknowledged instance was lost or duplicated, or a kill left something")
        print(f"work folder kept: {work}")
        return 1
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
