"""What a worker's pixel stage keeps in memory: resident set after each image of a sequence.

Figures, not a test (tests/integration/test_pixel_memory.py checks the give-back on synthetic
images). A fresh process per variant, as a worker is: the gateway's models loaded, then
`PixelStage.clean` over the shared material's 512 x 512 CT slice five times, the 640 x 480
ultrasound frame three times, the 2128 x 2000 DX, and again CT, ultrasound, DX, CT (each
image a new series, so nothing is skipped as seen before). Printed per variant: VmRSS after
each image and the peak (VmHWM), MiB, and the CPU seconds per image (range per kind). In the
same run: the gateway as it is (`settle`: the networks' one arena handed back after a large
image), and `keep` (the arena never handed back: `ocr._LARGE` raised out of reach; before
2026-12-07 each network also kept an arena of its own). One core (CPU 0 unless `--cpu`).

    .venv/bin/python benchmarks/worker_memory.py [--cpu 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEQUENCE = ["CT"] * 5 + ["US"] * 3 + ["DX", "CT", "US", "DX", "CT"]


def _resident() -> tuple[float, float]:
    status = Path("/proc/self/status").read_text()
    rss, hwm = (re.search(rf"{k}:\s+(\d+)", status) for k in ("VmRSS", "VmHWM"))
    if rss is None or hwm is None:
        raise SystemExit("no VmRSS/VmHWM in /proc/self/status")
    return int(rss.group(1)) / 1024, int(hwm.group(1)) / 1024


def child(variant: str) -> None:
    """One variant, in this process: JSON lines of (image, RSS, peak, CPU seconds)."""
    sys.path.insert(0, str(REPO))
    from gateway.deidentify.engine import Engine
    from gateway.deidentify.pixels import ocr
    from gateway.deidentify.pixels.models import load_finder
    from gateway.deidentify.pixels.stage import PixelStage
    from gateway.settings import DeidentifySettings, PixelSettings
    from gateway.vault.sqlite import SqliteVault

    sys.path.insert(0, str(REPO / "benchmarks"))
    import pixels  # the benchmark's files: its CT, ultrasound frame and DX

    if variant == "keep":
        ocr._LARGE = 1 << 62
    files = {"CT": pixels.CT, "US": pixels.US_FRAME, "DX": pixels.DX}
    with tempfile.TemporaryDirectory() as tmp:
        vault = SqliteVault(Path(tmp) / "vault.sqlite3", os.urandom(32), durable=False)
        engine = Engine(DeidentifySettings(), vault, ae_title="BENCH")
        stage = PixelStage(PixelSettings(), (), load_finder())
        print(json.dumps(["models", *_resident(), 0.0]), flush=True)
        for name in SEQUENCE:
            ds, syntax = pixels.loaded(files[name], engine)
            stage._series.clear()  # a new series each time: read whole
            started = time.process_time()
            stage.clean(ds, syntax)
            print(json.dumps([name, *_resident(), time.process_time() - started]), flush=True)
        vault.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--child", choices=("settle", "keep"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if not (REPO.parent / "shared" / "testdata" / "dicom").is_dir():
        sys.exit("shared test material not found beside the repository")
    print(f"worker memory: one process per variant on CPU {args.cpu}; {time.ctime()}")
    for variant in ("settle", "keep"):
        done = subprocess.run(
            ["taskset", "-c", str(args.cpu), sys.executable, __file__, "--child", variant],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
        cells = [f"{name} {rss:.0f}" for name, rss, _, _ in rows]
        seconds = {n: [s for name, _, _, s in rows if name == n] for n in ("CT", "US", "DX")}
        print(f"{variant:6}  RSS MiB after each: {' | '.join(cells)}")
        print(
            f"{'':6}  peak {rows[-1][2]:.0f} MiB; CPU s per image, min-max: "
            + ", ".join(f"{n} {min(s):.2f}-{max(s):.2f}" for n, s in seconds.items())
        )


if __name__ == "__main__":
    main()
