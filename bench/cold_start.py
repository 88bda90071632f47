"""Cold start: time to import function_app in a fresh interpreter (median of 5) and the RSS after import.

Flex Consumption bills and waits for app start-up, so the Functions entry module must import quickly: the Azure
management SDKs, the storage SDKs and the service are imported lazily, on first use.
Last line: JSON {"import_s": <median of 5 fresh interpreters>, "rss_mb": <after import>}.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, time
started = time.perf_counter()
import function_app
elapsed = time.perf_counter() - started
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{elapsed} {rss_mb}")
"""
RUNS = 5
TARGET_S = 1.0


def main() -> None:
    timings: list[float] = []
    rss: list[float] = []
    for run in range(1, RUNS + 1):
        output = subprocess.run(
            [sys.executable, "-X", "frozen_modules=on", "-c", PROBE],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        timings.append(float(output[0]))
        rss.append(float(output[1]))
        print(f"run {run}: import function_app {timings[-1]:.3f} s, rss {rss[-1]:.1f} MB", flush=True)
    median_s = statistics.median(timings)
    verdict = "within" if median_s < TARGET_S else "OVER"
    print(f"median {median_s:.3f} s ({verdict} the {TARGET_S:.0f} s target)")
    print(json.dumps({"import_s": round(median_s, 4), "rss_mb": round(statistics.median(rss), 1)}))


if __name__ == "__main__":
    main()
