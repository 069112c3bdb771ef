"""Run the test suite on a saturated machine: the check for any change to timing code.

A test of timers must not depend on how busy the machine is. Two copies of the
suite alone leave the cores half idle (the suite mostly waits), so this also
starts busy-loop processes that keep every core runnable, then runs the
non-conformance suite in several copies at once, for each twin of the
accelerator, a number of times, and reports every failure::

    python bench/saturated_tests.py                     # 5 runs x 2 copies x (c, python)
    python bench/saturated_tests.py --runs 1 --twins c  # a quick look
    python bench/saturated_tests.py -- tests/asyncio    # pytest arguments after --

It exits with status 1 if any copy of the suite failed; each failing copy's
summary lines are printed, and its whole output is kept under /tmp.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    """Run the suites as the arguments say; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per twin (default 5)")
    parser.add_argument("--copies", type=int, default=2, help="suites at once (default 2)")
    parser.add_argument("--busy", type=int, default=6, help="busy-loop processes (default 6)")
    parser.add_argument(
        "--twins", default="c,python", help="accelerator twins, comma-separated (default c,python)"
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="rapidws-saturated-"))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    failures = 0
    try:
        for twin in args.twins.split(","):
            for run in range(1, args.runs + 1):
                started = time.monotonic()
                suites = []
                for copy in range(args.copies):
                    log = logs / f"{twin}-run{run}-copy{copy}.log"
                    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                    command += ["-m", "not conformance", *args.pytest_args]
                    env = {**os.environ, "RAPIDWS_SPEEDUPS": twin}
                    with log.open("w") as out:
                        process = subprocess.Popen(
                            command, cwd=ROOT, env=env, stdout=out, stderr=out
                        )
                    suites.append((log, process))
                codes = [(log, process.wait()) for log, process in suites]
                elapsed = time.monotonic() - started
                for log, code in codes:
                    lines = log.read_text().splitlines()
                    summary = lines[-1] if lines else "(no output)"
                    print(f"{twin} run {run} {log.stem}: exit {code}, {summary} [{elapsed:.0f} s]")
                    if code != 0:
                        failures += 1
                        for line in lines:
                            if line.startswith(("FAILED", "ERROR")):
                                print("   ", line)
                        print(f"    log: {log}")
                sys.stdout.flush()
    finally:
        for process in busy:
            process.kill()
            process.wait()
    print(f"{failures} failing suite(s); logs in {logs}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
