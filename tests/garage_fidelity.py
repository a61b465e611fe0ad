#!/usr/bin/env python3
"""Fidelity on Garage: the size boundaries, a folder marker and every header, copied by s3syncd
in every mode and compared object by object (bytes, then each header from a HEAD of both sides).
Garage takes about 8 minutes to build, so this is not part of `cargo test`.

    cargo build --bin s3syncd && cargo test --no-run   # s3syncd, and target/test-venv (boto3)
    python3 tests/garage_fidelity.py                    # cargo-installs Garage 2.5 if missing

Uses target/test-venv's boto3 (the test harness installs it with moto) to fill and compare.
Prints one line per mode and a line per difference; exits 1 on any difference.
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402  (start_garage, KEYS)

MIB5 = 5 << 20
HEADERS = dict(ContentType="text/csv", ContentEncoding="gzip", ContentDisposition='attachment; filename="x.csv.gz"',
               ContentLanguage="en", CacheControl="max-age=60", Metadata={"origin": "binance", "note": "=?UTF-8?B?Y2Fmw6k=?="},  # non-ASCII, RFC 2047 as S3 returns it
               WebsiteRedirectLocation="/elsewhere")
COMPARED = ["ContentLength", "ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl",
            "Metadata", "WebsiteRedirectLocation"]


def main():
    venv_python = os.path.join(ROOT, "target", "test-venv", "bin", "python")
    if sys.executable != venv_python and os.path.exists(venv_python):
        os.execv(venv_python, [venv_python] + sys.argv)
    import boto3
    from botocore.config import Config
    if not shutil.which("garage"):
        subprocess.run(["cargo", "install", "garage@2.5.0", "--locked", "--quiet"], check=True)
    exe = os.path.join(ROOT, "target", "debug", "s3syncd")
    work = tempfile.mkdtemp(prefix="garage-fidelity-")
    proc, endpoint = bench.start_garage(os.path.join(work, "garage"), 19310, None, [])
    ak, sk = bench.KEYS["garage"]
    c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1",
                     config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                   response_checksum_validation="when_required"))
    failures = 0
    try:
        for b in ("fid-src", "fid-dst"):
            c.create_bucket(Bucket=b)
        # A website bucket: only there do redirects take effect, and `direct` reads them.
        c.put_bucket_website(Bucket="fid-src", WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}})
        objects = {f"data/size-{n}.bin": bytes((i * 31 + n) % 251 for i in range(n)) for n in (0, 1, MIB5 - 1, MIB5 + 1, 2 * MIB5 + 1)}
        objects["data/day=1/"] = b""
        for key, body in objects.items():
            c.put_object(Bucket="fid-src", Key=key, Body=body, **HEADERS)
        with open(os.path.join(work, "aws-credentials"), "w") as f:
            f.write(f"[garage]\naws_access_key_id = {ak}\naws_secret_access_key = {sk}\n")
        os.chmod(os.path.join(work, "aws-credentials"), 0o600)
        with open(os.path.join(work, "s3syncd.toml"), "w") as f:
            f.write(f'spec_dir = "{work}/specs.d"\nstate_dir = "{work}/state"\n')
        env = {"PATH": os.environ["PATH"], "HOME": work, "AWS_SHARED_CREDENTIALS_FILE": os.path.join(work, "aws-credentials"),
               "AWS_CONFIG_FILE": os.path.join(work, "aws-config"), "AWS_EC2_METADATA_DISABLED": "true"}
        open(env["AWS_CONFIG_FILE"], "w").close()
        for mode in ("direct", "stream", "staged", "auto"):
            spec = os.path.join(work, f"{mode}.toml")
            with open(spec, "w") as f:
                f.write(f'mode = "{mode}"\n[transfer]\npart_size = "5MiB"\nmultipart_threshold = "5MiB"\ncopy_threshold = "5MiB"\n'
                        f'[source]\nbucket = "fid-src"\nprefix = "data/"\nendpoint = "{endpoint}"\nprofile = "garage"\n'
                        f'[destination]\nbucket = "fid-dst"\nprefix = "{mode}/"\nendpoint = "{endpoint}"\nprofile = "garage"\n')
            os.chmod(spec, 0o600)
            run = lambda: subprocess.run([exe, "run", "--config", os.path.join(work, "s3syncd.toml"), spec], env=env,
                                         capture_output=True, text=True)
            first, again = run(), run()
            diffs = []
            if first.returncode != 0:
                diffs.append(f"exit {first.returncode}: {first.stdout[-800:]}")
            if "copied        0 objects" not in again.stdout:
                diffs.append("the re-run copied again: " + again.stdout[:300])
            for key, body in objects.items():
                dest = f"{mode}/{key[len('data/'):]}"
                try:
                    got = c.get_object(Bucket="fid-dst", Key=dest)["Body"].read()
                except c.exceptions.NoSuchKey:
                    diffs.append(f"{dest}: missing")
                    continue
                if got != body:
                    diffs.append(f"{dest}: bytes differ ({len(got)} vs {len(body)})")
                src, dst = c.head_object(Bucket="fid-src", Key=key), c.head_object(Bucket="fid-dst", Key=dest)
                for h in COMPARED:
                    if src.get(h) != dst.get(h):
                        diffs.append(f"{dest}: {h} {dst.get(h)!r} where the source has {src.get(h)!r}")
            print(f"{mode:7} {'ok' if not diffs else f'{len(diffs)} differences'} ({len(objects)} objects)")
            for d in diffs:
                print(f"  {d}")
            failures += len(diffs)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
