"""Job-seconds per rule from a Snakemake log: each job's start and finish stamps, summed per rule.

    python benchmarks/rule_times.py .snakemake/log/<run>.snakemake.log

Snakemake stamps to the second, so a single job's time is +-1 s; over the default study's hundreds of
jobs the sums are good to a few seconds. Also prints the run's wall time (first start to last finish).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISH = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_times(log: Path) -> dict[str, list[float]]:
    """Seconds of every finished job, per rule."""
    stamp: datetime | None = None
    starting: str | None = None
    started: dict[str, datetime] = {}
    times: dict[str, list[float]] = defaultdict(list)
    for line in log.read_text().splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y")
        elif (match := START.match(line)) and stamp:
            starting = match[1]
        elif (match := JOBID.match(line)) and starting and stamp:
            started[match[1]] = stamp
            starting = None
        elif (match := FINISH.match(line)) and stamp and match[1] in started:
            times[match[2]].append((stamp - started.pop(match[1])).total_seconds())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    args = parser.parse_args()
    times = job_times(args.log)
    print("| rule | jobs | job-seconds | mean |\n| --- | ---: | ---: | ---: |")
    for rule, seconds in sorted(times.items(), key=lambda item: -sum(item[1])):
        print(f"| {rule} | {len(seconds)} | {sum(seconds):.0f} | {sum(seconds) / len(seconds):.1f} s |")
    total = sum(sum(s) for s in times.values())
    print(f"| total | {sum(len(s) for s in times.values())} | {total:.0f} | |")
    elapsed = re.search(r"Elapsed time: (\S+)", args.log.read_text())
    print(f"Snakemake elapsed time: {elapsed[1] if elapsed else 'not in the log'}")


if __name__ == "__main__":
    main()
