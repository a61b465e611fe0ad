#!/usr/bin/env python3
"""(d500): a daemon with 500 feeds loaded. Reports its idle RSS, its wake-ups per minute at idle
(context switches of all its threads), the time to start, and the time of a full reload by
SIGHUP: once with every file unchanged, once with every spec changed. Then it fills the
manifest with a history (runs, failures and objects per feed) and times the status page the
daemon serves at `/` (median of 10 GETs). No S3 server is needed: the feeds are scheduled once
a year and never run.

    cargo build --release --bin s3syncd && python3 bench/daemon500.py [--feeds 500] [--idle 60]
"""
import argparse
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import urllib.request
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


def fill_history(db, feeds, runs, objects):
    """`runs` finished runs (one failure each) and `objects` held objects per feed."""
    c = sqlite3.connect(db, timeout=30)
    with c:
        for i in range(feeds):
            spec = f"feed-{i:04}"
            for r in range(runs):
                day = f"2026-11-{1 + r % 28:02}"
                cur = c.execute(
                    "INSERT INTO runs (spec, started_at, finished_at, status, objects_listed, objects_copied,"
                    " bytes_copied, objects_failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (spec, f"{day}T04:00:00Z", f"{day}T04:01:30Z", "partial" if r % 10 == 0 else "ok",
                     objects, objects // runs, 1 << 20, 1 if r % 10 == 0 else 0))
                if r % 10 == 0:
                    c.execute("INSERT INTO failures (run_id, spec, source_key, kind, message, at) VALUES (?, ?, ?, ?, ?, ?)",
                              (cur.lastrowid, spec, f"data/{i}/k-{r}.zip", "other", "SlowDown", f"{day}T04:01:00Z"))
            c.executemany(
                "INSERT INTO objects (spec, dest_endpoint, dest_bucket, dest_key, source_endpoint, source_bucket,"
                " source_key, size, etag, copied_at, mode, run_id) VALUES (?, '', 'bronze', ?, '', 'src', ?, 1024, 'e', ?, 'direct', 1)",
                ((spec, f"feed-{i}/k-{k:07}.zip", f"data/{i}/k-{k:07}.zip", "2026-11-01T04:00:00Z") for k in range(objects)))
    c.close()


def page_ms(port):
    times = []
    for _ in range(10):
        t = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
            body = r.read()
        times.append((time.monotonic() - t) * 1000)
    return statistics.median(times), len(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=500)
    ap.add_argument("--idle", type=int, default=60, help="seconds of idle to count wake-ups over")
    ap.add_argument("--runs", type=int, default=30, help="runs per feed in the history the page draws")
    ap.add_argument("--objects", type=int, default=2000, help="objects held per feed")
    ap.add_argument("--port", type=int, default=19184)
    args = ap.parse_args()
    exe = os.path.join(ROOT, "target", "release", "s3syncd")
    work = tempfile.mkdtemp(prefix="d500-")
    specs = os.path.join(work, "specs.d")
    os.makedirs(specs)
    write_specs(specs, args.feeds, 0)
    config = os.path.join(work, "s3syncd.toml")
    with open(config, "w") as f:
        f.write(f'spec_dir = "{specs}"\nstate_dir = "{work}/state"\nmetrics_listen = "127.0.0.1:{args.port}"\n')
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
        fill_history(os.path.join(work, "state", "manifest.db"), args.feeds, args.runs, args.objects)
        page, page_bytes = page_ms(args.port)
        rss_page = rss_mib(p.pid)
    finally:
        p.terminate()
        p.wait()
    print(f"| feeds | start | idle RSS | RSS after reloads | wake-ups/min at idle | reload, unchanged | reload, all changed | status page (median of 10) | RSS after the page |")
    print(f"|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.feeds} | {started:.2f} s | {rss:.1f} MiB | {rss_after:.1f} MiB | {wakeups:.0f} | {reloads['unchanged']} ms | {reloads['all changed']} ms"
          f" | {page:.0f} ms ({page_bytes / 1024:.0f} KiB; {args.runs} runs and {args.objects} objects a feed) | {rss_page:.1f} MiB |")


if __name__ == "__main__":
    sys.exit(main())
