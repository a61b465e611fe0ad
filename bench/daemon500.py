#!/usr/bin/env python3
"""(d500): a daemon with 500 feeds loaded. Reports its idle RSS, its wake-ups per minute at idle
(context switches of all its threads), the time to start, and the time of a full reload by
SIGHUP: once with every file unchanged, once with every spec changed. No S3 server is needed:
the feeds are scheduled once a year and never run.

    cargo build --release --bin s3syncd && python3 bench/daemon500.py [--feeds 500] [--idle 60]
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_specs(d, n, generation):
    for i in range(n):
        path = os.path.join(d, f"feed-{i:04}.toml")
        with open(path, "w") as f:
            f.write(f'schedule = "0 0 0 1 1 *"\nmode = "direct"\n'
                    f'[source]\nbucket = "src-{i % 7}"\nprefix = "data/{i}/"\nendpoint = "http://127.0.0.1:9"\nanonymous = true\n'
                    f'[destination]\nbucket = "bronze"\nprefix = "g{generation}/feed-{i}/"\nendpoint = "http://127.0.0.1:9"\nanonymous = true\n')
        os.chmod(path, 0o640)


def switches(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            text = open(f"/proc/{pid}/task/{t}/status").read()
        except FileNotFoundError:
            continue
        total += sum(int(x) for x in re.findall(r"ctxt_switches:\s+(\d+)", text))
    return total


def rss_mib(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024


def wait_line(log, pattern, since, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log) as f:
            f.seek(since)
            m = re.search(pattern, f.read())
        if m:
            return m
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {pattern!r}: see {log}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=500)
    ap.add_argument("--idle", type=int, default=60, help="seconds of idle to count wake-ups over")
    args = ap.parse_args()
    exe = os.path.join(ROOT, "target", "release", "s3syncd")
    work = tempfile.mkdtemp(prefix="d500-")
    specs = os.path.join(work, "specs.d")
    os.makedirs(specs)
    write_specs(specs, args.feeds, 0)
    config = os.path.join(work, "s3syncd.toml")
    with open(config, "w") as f:
        f.write(f'spec_dir = "{specs}"\nstate_dir = "{work}/state"\n')
    log = os.path.join(work, "daemon.log")
    t0 = time.monotonic()
    p = subprocess.Popen([exe, "daemon", "--config", config], stderr=open(log, "w"), stdout=subprocess.DEVNULL)
    try:
        m = wait_line(log, r"daemon started.*feeds=(\d+)", 0)
        started = time.monotonic() - t0
        assert int(m.group(1)) == args.feeds, m.group(0)
        time.sleep(5)
        before, t1 = switches(p.pid), time.monotonic()
        time.sleep(args.idle)
        wakeups = (switches(p.pid) - before) * 60 / (time.monotonic() - t1)
        rss = rss_mib(p.pid)
        reloads = {}
        for what, gen in (("unchanged", 0), ("all changed", 1)):
            write_specs(specs, args.feeds, gen)
            time.sleep(1)  # the watcher's own reload of the rewrite settles first
            since = os.path.getsize(log)
            p.send_signal(signal.SIGHUP)
            m = wait_line(log, r"specs reloaded.*ms=(\d+)", since)
            reloads[what] = int(m.group(1))
        rss_after = rss_mib(p.pid)
    finally:
        p.terminate()
        p.wait()
    print(f"| feeds | start | idle RSS | RSS after reloads | wake-ups/min at idle | reload, unchanged | reload, all changed |")
    print(f"|---|---|---|---|---|---|---|")
    print(f"| {args.feeds} | {started:.2f} s | {rss:.1f} MiB | {rss_after:.1f} MiB | {wakeups:.0f} | {reloads['unchanged']} ms | {reloads['all changed']} ms |")


if __name__ == "__main__":
    sys.exit(main())
