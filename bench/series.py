#!/usr/bin/env python3
"""Series runs on a Binance-shaped archive on Garage: (s1)-(s5) of docs/benchmarks.md in one
invocation. Generates SERIES daily series of DAYS days each (a zip and its .CHECKSUM per day,
dated back from the day before yesterday, a few recent holes), copies it once (set-up, not
measured), then measures:

  (s1) one new period per series: a series run against a full-listing run of the same archive
       state (ListObjectsV2 requests, wall time);
  (s2) a run right after, with nothing due: requests and wall time;
  (s3) a simulated day of hourly runs (the run of (s1) and 23 like (s2)) against 24 full listings;
  (s4) a republished old file: not copied by a series run, copied by the next reconcile run;
  (s5) a spec whose include names 10 series: its ListObjectsV2 requests against those series'
       own pages.

    python3 bench/series.py                           # 1,000 series x 1,750 days (3,500,000 keys)
    python3 bench/series.py --series 100 --days 300   # a quick look
    python3 bench/series.py --keep                    # reuse Garage's fill and the set-up copy

Uses bench.py's Garage (cargo-installed on first use) and s5cmd. Not part of `cargo test`.
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

ROOT = bench.ROOT
WORK = os.path.join(bench.WORK, "series")
PATTERN = "{symbol}/{interval}/{symbol}-{interval}-{date}.zip"


def symbol(i):
    return f"S{i:04}USDT"


def key(i, day):
    s = symbol(i)
    return f"{s}/1d/{s}-1d-{day.isoformat()}.zip"


def write_pair(zip_path, sidecar_path, body):
    """A zip's bytes and its sidecar (`SHA256  NAME`, as Binance writes them)."""
    with open(zip_path, "wb") as f:
        f.write(body)
    with open(sidecar_path, "w") as f:
        f.write(hashlib.sha256(body).hexdigest() + "  x.zip\n")


def s3_client(endpoint, env):
    """boto3, only for a kept fill: the bench otherwise needs nothing but s5cmd."""
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def present(endpoint, env):
    """The keys already in the source bucket (a fill cut short, reused with --keep)."""
    if not bench.KEEP:
        return set()
    s3 = s3_client(endpoint, env)
    keys = set()
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="src", Prefix="data/"):
            keys.update(o["Key"][len("data/"):] for o in page.get("Contents", []))
    except s3.exceptions.NoSuchBucket:
        pass
    return keys


def newer_present(endpoint, env, keys):
    """Which of `keys` a kept, complete fill holds (the days a measured run added): a HEAD each."""
    from concurrent.futures import ThreadPoolExecutor
    s3 = s3_client(endpoint, env)

    def there(k):
        try:
            s3.head_object(Bucket="src", Key="data/" + k)
            return k
        except s3.exceptions.ClientError:
            return None
    with ThreadPoolExecutor(16) as pool:
        return {k for k in pool.map(there, keys) if k}


def fill(s5cmd, endpoint, env, series, days, last_day, holes, complete):
    """The archive: every series' days up to `last_day`, but the planted holes (with --keep,
    only the keys not there yet, and a kept fill's newer days taken away; a `complete` kept
    fill is not listed again). Returns how many keys it wrote or removed."""
    newer = [key(i, day) + ext for i in range(series) for day in (last_day + datetime.timedelta(days=n) for n in (1, 2))
             for ext in ("", ".CHECKSUM")]
    have = newer_present(endpoint, env, newer) if complete else present(endpoint, env)
    lines = [f"rm s3://src/data/{k}\n" for k in newer if k in have]
    removed = len(lines)
    if complete:
        return run_lines(s5cmd, endpoint, env, lines, removed)
    zip_body = os.path.join(WORK, "body.zip")
    sidecar = os.path.join(WORK, "body.CHECKSUM")
    if not (have and os.path.exists(zip_body)):  # a kept fill goes on with the same bytes
        write_pair(zip_body, sidecar, os.urandom(200))
    for i in range(series):
        for d in range(days):
            day = last_day - datetime.timedelta(days=d)
            if (i, day) in holes:
                continue
            k = key(i, day)
            if k not in have:
                lines.append(f"cp {zip_body} s3://src/data/{k}\n")
            if k + ".CHECKSUM" not in have:
                lines.append(f"cp {sidecar} s3://src/data/{k}.CHECKSUM\n")
    return run_lines(s5cmd, endpoint, env, lines, removed)


def run_lines(s5cmd, endpoint, env, lines, removed):
    cmds = os.path.join(WORK, "fill.txt")
    with open(cmds, "w") as f:
        f.writelines(lines)
    subprocess.run([s5cmd, "--endpoint-url", endpoint, "mb", "s3://src"], env=env, capture_output=True)
    subprocess.run([s5cmd, "--endpoint-url", endpoint, "mb", "s3://dst"], env=env, capture_output=True)
    t = time.monotonic()
    if lines:
        bench.run([s5cmd, "--endpoint-url", endpoint, "--numworkers", "256", "run", cmds], env=env, stdout=subprocess.DEVNULL)
    print(f"  filled {len(lines) - removed:,} keys (and removed {removed:,}) in {time.monotonic() - t:.0f} s", file=sys.stderr)
    return len(lines)


def write_spec(path, endpoint, series=True, include=None):
    text = (f'schedule = "0 0 * * * *"\nmode = "direct"\n'
            f'[source]\nbucket = "src"\nprefix = "data/"\nendpoint = "{endpoint}"\n'
            f'[destination]\nbucket = "dst"\nprefix = "bronze/"\nendpoint = "{endpoint}"\n'
            '[verify]\nchecksum_sidecar = ".CHECKSUM"\nsidecar_wait = "0s"\n')
    if series:
        text += f'[series]\nkey = "{PATTERN}"\nreconcile = "0 0 4 1 1 *"\n'
    if include:
        text += "[filter]\ninclude = [" + ", ".join(f'"{p}"' for p in include) + "]\n"
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o640)


class Feed:
    """One spec with its own state directory (its own manifest)."""

    def __init__(self, name, exe, env, spec):
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "s3syncd.toml")
        with open(self.config, "w") as f:
            f.write(f'spec_dir = "{self.dir}"\nstate_dir = "{self.dir}/state"\n')
        self.exe, self.env, self.spec = exe, env, spec
        self.runs = 0

    def run(self, *args):
        t = time.monotonic()
        out = subprocess.run([self.exe, "run", "--config", self.config, self.spec, *args], env=self.env,
                             capture_output=True, text=True)
        wall = time.monotonic() - t
        self.runs += 1
        with open(os.path.join(self.dir, f"run-{self.runs:02}.log"), "w") as f:
            f.write(out.stderr)
        if out.returncode != 0:
            raise SystemExit(f"s3syncd run {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr[-3000:]}")
        db = sqlite3.connect(os.path.join(self.dir, "state", "manifest.db"))
        copied, details = db.execute("SELECT objects_copied, details FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        db.close()
        d = json.loads(details)
        return {"wall": wall, "copied": copied, "lists": d.get("requests", {}).get("ListObjectsV2", 0),
                "requests": sum(d.get("requests", {}).values()), "listing": d.get("listing")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=1000)
    # 3,500 keys a series: at 3,000 one request per due series is 0.333x a full listing's.
    ap.add_argument("--days", type=int, default=1750, help="days per series (two keys a day: zip and sidecar)")
    ap.add_argument("--port", type=int, default=19300)
    ap.add_argument("--keep", action="store_true", help="reuse Garage's data and the set-up copy")
    args = ap.parse_args()
    bench.KEEP = args.keep
    tools = bench.ensure_tools(False, True)
    s5cmd, exe = tools["s5cmd"], tools["s3syncd"]
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK, exist_ok=True)
    # Garage holds a key of this archive (source and destination) in about 1.7 KB of the tmpfs.
    keys = 2 * args.series * args.days
    data = os.path.join(bench.tmpfs_dir(max(6, math.ceil(2 * keys * 2000 * 1.2 / 2**30))), "garage-series")
    garage, endpoint = bench.start_garage(data, args.port, s5cmd, [])
    env = bench.env_for(endpoint, "garage")
    today = datetime.date.today()
    last_day = today - datetime.timedelta(days=2)
    # Two recent holes (probed by every series run until they are 35 days old), and one old
    # hole per 100 series (left to the reconcile runs): what a series run costs does not grow
    # with the archive, only with the holes that are recent.
    recent = {(i, last_day - datetime.timedelta(days=5)) for i in (0, args.series // 2)}
    old_holes = {(i, last_day - datetime.timedelta(days=60)) for i in range(100, args.series, 100) if i != args.series // 2}
    holes = recent | old_holes
    results = {}
    try:
        feed = Feed("series", exe, env, os.path.join(WORK, "series", "klines.toml"))
        write_spec(feed.spec, endpoint)
        marker = os.path.join(WORK, "filled")
        feed_db, setup_db = os.path.join(feed.dir, "state", "manifest.db"), os.path.join(WORK, "setup.db")
        if os.path.exists(marker):
            # --keep: every measured run starts again from the set-up copy's manifest.
            for stale in (feed_db + "-wal", feed_db + "-shm"):
                if os.path.exists(stale):
                    os.remove(stale)
            shutil.copy(setup_db, feed_db)
        # A kept fill that was complete (the marker) is not listed again: 3,500,000 keys take minutes.
        complete = os.path.exists(marker) and os.path.exists(os.path.join(WORK, f"days-{args.days}"))
        written = fill(s5cmd, endpoint, env, args.series, args.days, last_day, holes, complete)
        if written or not os.path.exists(marker):
            t = time.monotonic()
            feed.run("--full")  # the set-up copy (of what a kept one lacks): a full listing
            print(f"  set-up copy in {time.monotonic() - t:.0f} s", file=sys.stderr)
            shutil.copy(feed_db, setup_db)
            open(marker, "w").close()
            open(os.path.join(WORK, f"days-{args.days}"), "w").close()
        # The full-listing reference: the same spec without [series], on a copy of the manifest.
        full = Feed("full", exe, env, os.path.join(WORK, "full", "klines.toml"))
        write_spec(full.spec, endpoint, series=False)
        os.makedirs(os.path.join(full.dir, "state"), exist_ok=True)
        shutil.copy(feed_db, os.path.join(full.dir, "state", "manifest.db"))

        # (s1): yesterday's file for every series.
        new_day = today - datetime.timedelta(days=1)
        zip_body, sidecar = os.path.join(WORK, "body.zip"), os.path.join(WORK, "body.CHECKSUM")
        cmds = os.path.join(WORK, "new.txt")
        with open(cmds, "w") as f:
            for i in range(args.series):
                f.write(f"cp {zip_body} s3://src/data/{key(i, new_day)}\n")
                f.write(f"cp {sidecar} s3://src/data/{key(i, new_day)}.CHECKSUM\n")
        bench.run([s5cmd, "--endpoint-url", endpoint, "--numworkers", "64", "run", cmds], env=env, stdout=subprocess.DEVNULL)
        results["s1 full"] = full.run()
        results["s1 series"] = feed.run()
        # (s2), and (s3): 23 more hourly runs.
        hourly = [feed.run() for _ in range(23)]
        results["s2"] = hourly[0]
        day_series = results["s1 series"]["lists"] + sum(r["lists"] for r in hourly)
        day_full = 24 * results["s1 full"]["lists"]
        # (s4): an old file republished.
        old = key(7, last_day - datetime.timedelta(days=min(100, args.days - 1)))
        repub, repub_sidecar = os.path.join(WORK, "repub.zip"), os.path.join(WORK, "repub.CHECKSUM")
        write_pair(repub, repub_sidecar, b"republished " + os.urandom(100))
        for local, remote in ((repub, old), (repub_sidecar, old + ".CHECKSUM")):
            bench.run([s5cmd, "--endpoint-url", endpoint, "cp", local, f"s3://src/data/{remote}"], env=env, stdout=subprocess.DEVNULL)
        results["s4 series"] = feed.run()
        results["s4 reconcile"] = feed.run("--full")
        # (s5): 10 of the series named by the include filter, the whole source otherwise.
        inc = Feed("include", exe, env, os.path.join(WORK, "include", "klines.toml"))
        names = [symbol(i) for i in range(0, args.series, max(1, args.series // 10))][:10]
        write_spec(inc.spec, endpoint, series=False, include=["{" + ",".join(names) + "}/**"])
        results["s5"] = inc.run()
        own_pages = len(names) * math.ceil(2 * (args.days + 1) / 1000)
    finally:
        garage.terminate()
        garage.wait()

    s1s, s1f, s2 = results["s1 series"], results["s1 full"], results["s2"]
    print(f"\nSeries runs on Garage: {args.series:,} series x {args.days:,} days ({keys:,} keys), "
          f"{datetime.date.today()}, `python3 bench/series.py --series {args.series} --days {args.days}`\n")
    print("| measure | series runs | full listing | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| (s1) one new period per series: ListObjectsV2 ({args.series:,} due series, {len(recent)} of them with a recent hole; "
          f"discovery; the destination check) "
          f"| {s1s['lists']:,} | {s1f['lists']:,} | {s1s['lists'] / s1f['lists']:.3f}x | ≤ due series + discovery (+ 1), ≤ 0.3x |")
    print(f"| (s1) wall time (both copy the {s1s['copied']:,} new objects) | {s1s['wall']:.2f} s | {s1f['wall']:.2f} s | "
          f"{s1s['wall'] / s1f['wall']:.3f}x | ≤ 0.3x |")
    print(f"| (s2) nothing due: requests, wall time | {s2['requests']} requests, {s2['wall']:.2f} s | | | ≤ 10 requests, < 1 s |")
    print(f"| (s3) a day of hourly runs: ListObjectsV2 | {day_series:,} | {day_full:,} | {day_series / day_full:.4f}x | ≤ 0.05x |")
    print(f"| (s4) a republished old file (zip and sidecar): copied by the series run, by the reconcile run | "
          f"{results['s4 series']['copied']} | {results['s4 reconcile']['copied']} | | 0, then 2 |")
    print(f"| (s5) include of 10 series: ListObjectsV2 against their own pages | {results['s5']['lists']} | {own_pages} | "
          f"{results['s5']['lists'] / own_pages:.2f}x | ≤ 1.2x |")


if __name__ == "__main__":
    sys.exit(main())
