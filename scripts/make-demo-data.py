#!/usr/bin/env python3
"""Regenerate streamsonic/data/demo.csv, the embedded demo series (made up, no license).

One day of a web server's load, one row every 5 minutes (288 rows): CPU percent and
requests per second with a daily rhythm (quiet night, busy afternoon) and noise, plus two
anomalies to listen for: a runaway process pinning the CPU near 100% from 14:30 to 15:10
(high, loud notes while requests stay normal) and a crash from 20:00 to 20:20 (CPU and
requests drop to almost zero). Deterministic: the same file every run.

    python3 scripts/make-demo-data.py > streamsonic/data/demo.csv
"""

from __future__ import annotations

import math
import random
import sys
from datetime import UTC, datetime, timedelta

START = datetime(2024, 3, 12, tzinfo=UTC)
STEP = timedelta(minutes=5)
ROWS = 288


def main() -> None:
    """Write the CSV to stdout."""
    rng = random.Random(20240312)
    out = sys.stdout
    out.write("time,cpu,requests\n")
    for i in range(ROWS):
        t = START + i * STEP
        hour = i * STEP.total_seconds() / 3600
        # Daily rhythm: lowest around 04:00, highest around 15:00.
        day = 0.5 - 0.5 * math.cos(2 * math.pi * (hour - 4) / 24)
        requests = 40 + 360 * day ** 1.5 + rng.gauss(0, 12)
        cpu = 8 + 0.13 * requests + rng.gauss(0, 2.5)
        if 14.5 <= hour < 15.25:  # runaway process
            cpu = 96 + rng.gauss(0, 1.2)
        if 20.0 <= hour < 20.34:  # crash and restart
            cpu, requests = 1.5 + rng.random(), rng.random() * 3
        cpu = min(max(cpu, 0.5), 100.0)
        requests = max(requests, 0.0)
        out.write(f"{t:%Y-%m-%dT%H:%M:%SZ},{cpu:.1f},{requests:.0f}\n")


if __name__ == "__main__":
    main()
