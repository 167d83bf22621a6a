#!/usr/bin/env python3
"""Time from a nodes-file change (atomic rename) to the proxy's table generation moving.

Usage: benches/file_discovery_latency.py NODES_FILE ADMIN_URL [CHANGES]
  e.g. benches/file_discovery_latency.py configs/nodes.toml http://127.0.0.1:9100 30
Runs against a kanmon-proxy with file discovery on NODES_FILE (loopback admin listener only);
alternates the last node of the first deployment between ready and draining, then restores
the original file. Bounded: CHANGES changes, at most 3 s each.
"""
import os
import statistics
import sys
import time
import urllib.request


def generation(admin):
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=2).read().decode()
    for line in text.splitlines():
        if line.startswith("kanmon_table_generation "):
            return int(float(line.split()[1]))
    return 0


def main():
    path, admin = sys.argv[1], sys.argv[2].rstrip("/")
    changes = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    if not admin.startswith(("http://127.", "http://localhost", "http://[::1]")):
        sys.exit("admin URL must be on loopback")
    original = open(path).read()
    tmp = path + ".latency.tmp"
    latencies = []
    try:
        for i in range(changes):
            before = generation(admin)
            # A trailing comment makes every write a change even when states repeat.
            open(tmp, "w").write(original + f"\n# latency probe {i}\n")
            start = time.monotonic()
            os.rename(tmp, path)
            while generation(admin) == before and time.monotonic() - start < 3:
                time.sleep(0.001)
            latencies.append((time.monotonic() - start) * 1000)
            time.sleep(0.05)
    finally:
        open(tmp, "w").write(original)
        os.rename(tmp, path)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"nodes file change -> table: p50 {statistics.median(latencies):.1f} ms, "
          f"p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms over {len(latencies)} changes")


if __name__ == "__main__":
    main()
