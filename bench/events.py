#!/usr/bin/env python3
"""Feeds driven by S3 events on moto (server mode: S3 sends its notifications to SQS), in one
invocation, for docs/benchmarks.md:

  (e1) event-to-copied latency: UPLOADS objects put at an even rate over a minute into a bucket
       whose events reach a feed's queue; for each, the time from its PUT's answer to its row in
       the manifest (`objects.copied_at`); p50 and p99.
  (e2) the idle cost of FEEDS feeds with events and nothing arriving: SQS requests a minute (moto's
       access log) and the daemon's RSS, over IDLE seconds.

    python3 bench/events.py                       # 1,000 uploads a minute; 50 idle feeds for 120 s
    python3 bench/events.py --uploads 200 --feeds 10 --idle 60

Uses the release binary and moto from PyPI (into target/bench-venv). Not part of `cargo test`.
"""
import argparse
import datetime
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

WORK = os.path.join(bench.WORK, "events")
CREDS = {"AWS_ACCESS_KEY_ID": "moto-key", "AWS_SECRET_ACCESS_KEY": "moto-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(port):
    venv = os.path.join(bench.ROOT, "target", "bench-venv")
    server = os.path.join(venv, "bin", "moto_server")
    if not os.path.exists(server):
        bench.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "moto[server]>=5,<6"])
    log = open(os.path.join(WORK, "moto.log"), "w")
    p = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            import urllib.request
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return p, endpoint
        except Exception:
            time.sleep(0.1)
    raise SystemExit("moto did not start")


def clients(endpoint):
    import boto3
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="moto-key", aws_secret_access_key="moto-secret")
    return boto3.client("s3", **kw), boto3.client("sqs", **kw)


def queue(sqs, name):
    """A queue with a dead-letter queue; its URL and ARN."""
    dead = sqs.create_queue(QueueName=name + "-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": f'{{"deadLetterTargetArn":"{dead_arn}","maxReceiveCount":"5"}}'})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


class Daemon:
    def __init__(self, exe, name):
        self.dir = os.path.join(WORK, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "specs.d"))
        os.chmod(os.path.join(self.dir, "specs.d"), 0o755)
        self.config = os.path.join(self.dir, "s3syncd.toml")
        with open(self.config, "w") as f:
            f.write(f'spec_dir = "{self.dir}/specs.d"\nstate_dir = "{self.dir}/state"\n')
        os.chmod(self.config, 0o640)
        self.exe = exe

    def spec(self, name, endpoint, bucket, queue_url):
        path = os.path.join(self.dir, "specs.d", name + ".toml")
        with open(path, "w") as f:
            f.write(f'schedule = "0 0 0 1 1 *"\n'
                    f'[source]\nbucket = "{bucket}"\nprefix = "in/"\nendpoint = "{endpoint}"\n'
                    f'[source.events]\nqueue_url = "{queue_url}"\n'
                    f'[destination]\nbucket = "dst"\nprefix = "{name}/"\nendpoint = "{endpoint}"\n')
        os.chmod(path, 0o640)

    def start(self):
        self.log = open(os.path.join(self.dir, "daemon.log"), "w")
        self.p = subprocess.Popen([self.exe, "daemon", "--config", self.config], env={**os.environ, **CREDS},
                                  stdout=subprocess.DEVNULL, stderr=self.log)

    def rss_mib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    def stop(self):
        self.p.terminate()
        self.p.wait()


def copied_at(db_path):
    if not os.path.exists(db_path):
        return {}
    db = sqlite3.connect(db_path)
    try:
        return dict(db.execute("SELECT source_key, copied_at FROM objects").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def latency(exe, endpoint, uploads):
    """(e1): uploads at an even rate over a minute; returns (p50, p99, max) in seconds."""
    s3, sqs = clients(endpoint)
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="dst")
    url, arn = queue(sqs, "latency")
    s3.put_bucket_notification_configuration(Bucket="src", NotificationConfiguration={"QueueConfigurations": [
        {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
    d = Daemon(exe, "latency")
    d.spec("feed", endpoint, "src", url)
    d.start()
    time.sleep(2)  # the daemon's first receive is on its way
    put_at = {}
    interval = 60.0 / uploads
    start = time.monotonic()
    for i in range(uploads):
        target = start + i * interval
        time.sleep(max(0.0, target - time.monotonic()))
        key = f"in/obj-{i:05}.bin"
        s3.put_object(Bucket="src", Key=key, Body=os.urandom(1024))
        put_at[key] = datetime.datetime.now(datetime.timezone.utc)
    took = time.monotonic() - start
    db = os.path.join(d.dir, "state", "manifest.db")
    deadline = time.monotonic() + 120
    rows = {}
    while time.monotonic() < deadline:
        rows = copied_at(db)
        if len(rows) >= uploads:
            break
        time.sleep(0.5)
    d.stop()
    if len(rows) < uploads:
        raise SystemExit(f"only {len(rows)} of {uploads} objects copied; see {d.dir}/daemon.log")
    lags = sorted((datetime.datetime.fromisoformat(rows[k].replace("Z", "+00:00")) - t).total_seconds() for k, t in put_at.items())
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]  # noqa: E731
    return pick(0.5), pick(0.99), lags[-1], took


def idle(exe, endpoint, feeds, seconds):
    """(e2): `feeds` feeds with events and nothing arriving; SQS requests a minute and RSS."""
    s3, sqs = clients(endpoint)
    d = Daemon(exe, "idle")
    for i in range(feeds):
        s3.create_bucket(Bucket=f"idle-{i:03}")
        url, _ = queue(sqs, f"idle-{i:03}")
        d.spec(f"feed{i:03}", endpoint, f"idle-{i:03}", url)
    d.start()
    time.sleep(10)  # start-up: each feed's first sample of its queue
    log = os.path.join(WORK, "moto.log")
    before = sum(1 for line in open(log) if '"POST / HTTP' in line)
    time.sleep(seconds)
    after = sum(1 for line in open(log) if '"POST / HTTP' in line)
    rss = d.rss_mib()
    d.stop()
    return (after - before) * 60.0 / seconds, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=1000, help="uploads in one minute")
    ap.add_argument("--feeds", type=int, default=50, help="idle feeds with events")
    ap.add_argument("--idle", type=int, default=120, help="seconds the idle feeds are watched")
    ap.add_argument("--port", type=int, default=19400)
    args = ap.parse_args()
    exe = bench.ensure_tools(False, False)["s3syncd"]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    moto, endpoint = start_moto(args.port)
    try:
        p50, p99, worst, took = latency(exe, endpoint, args.uploads)
        per_minute, rss = idle(exe, endpoint, args.feeds, args.idle)
    finally:
        moto.terminate()
        moto.wait()
    print(f"\nS3 events on moto, {datetime.date.today()}, `python3 bench/events.py --uploads {args.uploads} --feeds {args.feeds} --idle {args.idle}`\n")
    print("| measure | result | goal |")
    print("|---|---|---|")
    print(f"| (e1) event to copied, {args.uploads:,} uploads in {took:.0f} s: p50, p99 (max) | {p50:.2f} s, {p99:.2f} s ({worst:.2f} s) | p99 < 2 s |")
    print(f"| (e2) {args.feeds} idle feeds: SQS requests a minute, daemon RSS | {per_minute:.0f} a minute ({per_minute / args.feeds:.1f} a feed), {rss:.0f} MiB | |")


if __name__ == "__main__":
    sys.exit(main())
