#!/usr/bin/env python3
"""`make bench`: what golden-ami exists for, measured side by side on this machine, written to BENCHMARKS.md.

    scripts/bench.py all                 every section, then BENCHMARKS.md (what `make bench` runs)
    scripts/bench.py section NAME [N]    one section, inside `GOLDEN_EMULATOR_PROFILE=release scripts/emulator
                                         run` (but `features` and `profile`, which need none); its figures go to
                                         target/bench/NAME[-N].json
    scripts/bench.py report              BENCHMARKS.md from target/bench/*.json (no measuring)

Sections (BENCHMARKS.md says what each figure means and how it was taken):
    bake         one bake of bld-linux64 on the emulator (release functions behind `cargo lambda watch`):
                 invocations, state transitions, handler time, AWS calls; then each function's cold start,
                 first invocation and peak RSS against a Lambda Runtime API stand-in, and the same for a
                 Python 3.11 + boto3 handler, interleaved run by run
    idle         the three scheduled sweeps (prune, reap, enforce) on an estate with nothing to do
    retention N  N golden images over 2 regions and 10 types; prune's plan beside aws-amicleaner's
    enforce N    N instances on golden images; enforce's sweep
    features     one function's dependency tree with the SDK features as shipped and with the SDK's defaults
                 (`cargo tree`, no build)
    profile      one function's arm64 zip with each release-profile setting put back to cargo's default,
                 one at a time (`all` runs it last; four full builds, 11 to 16 minutes each here)
Package sizes come from `make package` (target/lambda/*/bootstrap.zip), which `all` runs first.

Nothing here asserts a time: figures are written down, targets are compared in the report.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "target" / "bench"
RELEASE = REPO / "target" / "release"
VENV_PY = REPO / ".venv" / "bin" / "python"
BENCH_VENV = REPO / ".venv-bench"
BAKE_TYPE = "bld-linux64"
INIT_RUNS = 21
RETENTION_SIZES = [500, 2000, 5000]
ENFORCE_SIZES = [1000, 5000]
TYPES = [f"bench-{i:02d}" for i in range(10)]
ESTATE_REGIONS = ["us-east-1", "us-west-2"]
KEEP = 10  # golden_core::retention::DEFAULT_KEEP: the bench types have no recipe
MEMORY_MB = 256  # infra/template.yaml Globals.Function.MemorySize

# Public list prices, us-east-1, as published on the AWS pricing pages (no network here: not fetched by the
# bench; check them before quoting). Free tiers are ignored.
PRICES = {
    "sfn_transition": 0.000025,  # Step Functions Standard, per state transition
    "lambda_gb_second_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get": 0.0004 / 1000,  # GET and all other requests
    "ssm_standard": 0.0,  # standard parameters, standard throughput: no charge per API call
    "ec2_api": 0.0,  # EC2 API calls are not billed
    "sqs_request": 0.40 / 1e6,  # SQS standard queue, per request (ReceiveMessage included)
    "cloudwatch_alarm_month": 0.10,  # CloudWatch standard-resolution metric alarm, per month
}
# An SQS event source mapping polls its queue whether or not anything arrives: Lambda keeps (at least) five
# long-polling connections, each a ReceiveMessage of up to 20 seconds.
SQS_POLLERS, SQS_LONG_POLL_SECONDS = 5, 20
PRICES_AS_OF = ("2026-11 list prices (Step Functions, Lambda arm64, S3 Standard, SSM Parameter Store, SQS, "
                "CloudWatch alarms)")


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def write(name: str, data: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    say(f"wrote {(OUT / f'{name}.json').relative_to(REPO)}")


def emulator_dir() -> Path:
    return Path(os.environ["GOLDEN_EMULATOR_DIR"])


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def boto(service: str, region: str = "us-east-1"):
    import boto3

    return boto3.client(service, region_name=region, endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def router_port() -> int:
    return int(os.environ["GOLDEN_LAMBDA_ENDPOINT"].rsplit(":", 1)[1])


def invoke(function: str, event: dict, timeout: int = 900) -> tuple[float, dict, str | None]:
    """Invoke a function through the emulator's router (so its AWS calls are recorded): (seconds, payload,
    function error)."""
    conn = http.client.HTTPConnection("127.0.0.1", router_port(), timeout=timeout)
    started = time.perf_counter()
    conn.request("POST", f"/2015-03-31/functions/{function}/invocations", body=json.dumps(event).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds, json.loads(body or b"null"), resp.getheader("X-Amz-Function-Error")


class Calls:
    """The functions' AWS calls recorded by the emulator's router (calls.jsonl) from now on."""

    def __init__(self) -> None:
        self.path = emulator_dir() / "calls.jsonl"
        self.start = len(read_jsonl(self.path))

    def since(self) -> list[dict]:
        return read_jsonl(self.path)[self.start:]


def emulator_time(calls: list[dict]) -> dict[str, float]:
    """Of a caller's time, what the emulator spent answering its calls (the router's records): moto's answers
    (`moto_seconds`), and those plus the recorder's own tag lookups (`emulator_seconds`). The caller's own time
    is the rest: its requests, their parsing and its planning."""
    return {"moto_seconds": round(sum(c.get("motoSeconds", 0.0) for c in calls), 3),
            "emulator_seconds": round(sum(c.get("routerSeconds", 0.0) for c in calls), 3)}


def by_operation(calls: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter(f"{c['service']}:{c['operation']}" for c in calls).items()))


# --------------------------------------------------------------------------------------------------
# the Lambda Runtime API stand-in

class RuntimeApi(ThreadingHTTPServer):
    """The part of the Lambda Runtime API a function's first minute uses: /next hands out at most one event,
    /response and /error take its outcome. Times are time.perf_counter() of this process."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.port = self.server_address[1]
        self.reset(None)

    def handle_error(self, request, client_address) -> None:
        pass  # a killed function's connection: expected, every run ends so

    def reset(self, event: dict | None) -> None:
        self.event = event
        self.first_next: float | None = None
        self.handed: float | None = None
        self.done: float | None = None
        self.outcome: dict | None = None
        self.arrived = threading.Event()
        self.finished = threading.Event()
        self.release = threading.Event()


class RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeApi

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        s = self.server
        now = time.perf_counter()
        if self.path.endswith("/invocation/next"):
            if s.first_next is None:
                s.first_next = now
                s.arrived.set()
            if s.event is not None and s.handed is None:
                s.handed = time.perf_counter()
                deadline = int((time.time() + 900) * 1000)
                self._reply(200, json.dumps(s.event).encode(), {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": "bench-0001",
                    "Lambda-Runtime-Deadline-Ms": str(deadline),
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:bench",
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                })
                return
            s.release.wait(60)  # the process is killed meanwhile
            self._reply(410)
            return
        self._reply(404)

    def do_POST(self) -> None:  # noqa: N802
        s = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if "/invocation/" in self.path or self.path.endswith("/init/error"):
            s.done = time.perf_counter()
            kind = self.path.rsplit("/", 1)[1]
            try:
                payload = json.loads(body or b"null")
            except ValueError:
                payload = body.decode(errors="replace")
            s.outcome = {"kind": kind, "payload": payload}
            self._reply(202, b"{}")
            s.finished.set()
            return
        self._reply(404)


def lambda_env(api: RuntimeApi, name: str) -> dict[str, str]:
    # The host's environment but for what Lambda would not set: its own AWS_LAMBDA_* below, and no CA
    # settings (some hosts export SSL_CERT_FILE, SSL_CERT_DIR, AWS_CA_BUNDLE; Lambda does not, and with them
    # set the functions' GOLDEN_TLS_ROOTS=auto would read the system's store).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_LAMBDA") and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "AWS_CA_BUNDLE")}
    for line in (emulator_dir() / "functions.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    env.update(
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.port}",
        AWS_LAMBDA_FUNCTION_NAME=name,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(MEMORY_MB),
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{name}",
        AWS_LAMBDA_LOG_STREAM_NAME="bench",
        RUST_LOG="warn",
    )
    return env


def run_once(api: RuntimeApi, argv: list[str], env: dict, event: dict | None) -> dict:
    """Start a process, time its first /next (and, given an event, the invocation), then kill it: its peak RSS
    from wait4."""
    api.reset(event)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    waited = api.finished if event is not None else api.arrived
    ok = waited.wait(120)
    # The high-water mark of the process as it runs now. Not wait4's ru_maxrss: exec carries the forked
    # parent's peak (this Python process, ~70 MB) into it.
    peak_kb = peak_rss_kb(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    api.release.set()
    if not ok or api.first_next is None:
        raise RuntimeError(f"{argv[0]} never reached the Runtime API (or never answered):\n{stderr[-2000:]}")
    result = {"init_ms": (api.first_next - started) * 1000, "peak_rss_kb": peak_kb}
    if event is not None:
        assert api.handed is not None and api.done is not None and api.outcome is not None
        result["invoke_ms"] = (api.done - api.handed) * 1000
        payload = api.outcome["payload"]
        result["outcome"] = ("ok" if api.outcome["kind"] == "response"
                             else f"error {payload.get('errorType') if isinstance(payload, dict) else payload}")
    return result


def peak_rss_kb(pid: int) -> int:
    """VmHWM of /proc/PID/status: the peak resident set of the program PID runs."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


PYTHON_PEER = '''
import json, os, time, urllib.request
import boto3

# What a Python golden-AMI Lambda does at init: the same three clients the functions create.
session = boto3.session.Session()
ec2 = session.client("ec2")
ssm = session.client("ssm")
s3 = session.client("s3")
api = os.environ["AWS_LAMBDA_RUNTIME_API"]


def handler(event):
    # The work of image-status's first call: describe the image; and of every stage: read the manifest.
    images = ec2.describe_images(ImageIds=[event["imageId"]])["Images"]
    manifest = s3.get_object(Bucket=os.environ["GOLDEN_BUCKET"], Key="manifest.json")["Body"].read()
    return {"state": images[0]["State"] if images else "missing", "manifestBytes": len(manifest)}


while True:  # the loop of awslambdaric, reduced to what the bench uses
    with urllib.request.urlopen(f"http://{api}/2018-06-01/runtime/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    try:
        body, kind = json.dumps(handler(event)).encode(), "response"
    except Exception as e:  # noqa: BLE001
        body, kind = json.dumps({"errorType": type(e).__name__, "errorMessage": str(e)}).encode(), "error"
    urllib.request.urlopen(urllib.request.Request(
        f"http://{api}/2018-06-01/runtime/invocation/{request_id}/{kind}", data=body, method="POST"))
'''


# The floor of the method: a std-only Rust program that does nothing but ask for its first event, built by
# rustc alone (opt-level 3, one codegen unit, stripped). Its init is what exec, the dynamic loader and the
# stand-in cost.
NULL_FUNCTION = '''
use std::io::{Read, Write};
fn main() {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API");
    let mut s = std::net::TcpStream::connect(&api).expect("connect");
    write!(s, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nHost: {api}\\r\\n\\r\\n").expect("write");
    let mut buf = [0u8; 1];
    let _ = s.read(&mut buf);
}
'''


CERT_VARIANTS = {
    # What GOLDEN_TLS_ROOTS=native costs: rustls-native-certs reads the CA bundle, then every file of the CA
    # directory (about 140 on Debian; provided.al2023 has a bundle and a handful), at client creation.
    "system trust store (GOLDEN_TLS_ROOTS=native)": {"GOLDEN_TLS_ROOTS": "native"},
    "system trust store, bundle only (and SSL_CERT_DIR empty)": {
        "GOLDEN_TLS_ROOTS": "native", "SSL_CERT_FILE": ssl.get_default_verify_paths().openssl_cafile,
        "SSL_CERT_DIR": str(OUT / "empty-cert-dir")},
}


def null_function() -> Path:
    (OUT / "empty-cert-dir").mkdir(parents=True, exist_ok=True)
    src = OUT / "null_function.rs"
    exe = OUT / "null_function"
    src.write_text(NULL_FUNCTION)
    subprocess.run(["rustc", "--edition", "2021", "-C", "opt-level=3", "-C", "codegen-units=1", "-C", "strip=symbols",
                    "-o", str(exe), str(src)], check=True)
    return exe


def cold_starts(bake_events: dict[str, dict], image_id: str) -> dict:
    """Each release function and the Python peer: INIT_RUNS init-only runs, interleaved, then one run with an
    event each."""
    api = RuntimeApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    functions = sorted(p.name for p in (REPO / "functions").iterdir() if (RELEASE / p.name).is_file())
    peer = OUT / "python_peer.py"
    peer.write_text(PYTHON_PEER)
    peer_argv = [str(VENV_PY), str(peer)]
    floor = null_function()
    runs: dict[str, list[dict]] = defaultdict(list)
    say(f"cold starts: {INIT_RUNS} runs of each of {len(functions)} functions and the Python peer, interleaved")
    for i in range(INIT_RUNS):
        for name in functions:
            runs[name].append(run_once(api, [str(RELEASE / name)], lambda_env(api, name), None))
        runs["python-boto3"].append(run_once(api, peer_argv, lambda_env(api, "python-boto3"), None))
        runs["floor (std-only Rust)"].append(run_once(api, [str(floor)], lambda_env(api, "floor"), None))
        # The same binary trusting the system's store instead of the compiled-in Amazon roots.
        for label, extra in CERT_VARIANTS.items():
            env = dict(lambda_env(api, "builder-ready"), **extra)
            runs[f"builder-ready, {label}"].append(run_once(api, [str(RELEASE / "builder-ready")], env, None))
        if i == 0:
            say(f"  first round: {runs[functions[0]][0]['init_ms']:.1f} ms ({functions[0]}), "
                f"{runs['python-boto3'][0]['init_ms']:.0f} ms (Python)")
    first: dict[str, dict] = {}
    # Functions outside the bake get a manual request of their own: the sweeps a dry run, the schedule
    # guard a report on the baked type.
    manual = {"schedule-guard": {"type": "bld-linux64"}}
    for name in functions:
        event = bake_events.get(name, manual.get(name, {"dryRun": True}))
        calls = Calls()
        first[name] = run_once(api, [str(RELEASE / name)], lambda_env(api, name), event)
        first[name]["event"] = "the bake's first event" if name in bake_events else json.dumps(event)
        first[name]["aws_calls"] = len(calls.since())
    first["python-boto3"] = run_once(api, peer_argv, lambda_env(api, "python-boto3"), {"imageId": image_id})
    first["python-boto3"]["event"] = '{"imageId": <the baked image>}: DescribeImages + GetObject manifest.json'
    api.shutdown()
    summary = {}
    for name, rs in runs.items():
        inits = sorted(r["init_ms"] for r in rs)
        if name not in first:
            summary[name] = {"init_ms_median": statistics.median(inits), "init_ms_p10": inits[len(inits) // 10],
                             "init_ms_p90": inits[(len(inits) * 9) // 10],
                             "init_peak_rss_kb_max": max(r["peak_rss_kb"] for r in rs)}
            continue
        summary[name] = {
            "init_ms_median": statistics.median(inits),
            "init_ms_p10": inits[len(inits) // 10],
            "init_ms_p90": inits[(len(inits) * 9) // 10],
            "init_peak_rss_kb_max": max(r["peak_rss_kb"] for r in rs),
            "first_invoke_ms": first[name]["invoke_ms"],
            "first_invoke_outcome": first[name]["outcome"],
            "first_invoke_event": first[name]["event"],
            "first_invoke_aws_calls": first[name].get("aws_calls"),
            "peak_rss_kb_after_first_invoke": first[name]["peak_rss_kb"],
        }
    return {"runs": INIT_RUNS, "functions": summary}


# --------------------------------------------------------------------------------------------------
# sections

def section_bake() -> None:
    ctl = RELEASE / "goldenctl"
    invocations = emulator_dir() / "invocations.jsonl"
    skip = len(read_jsonl(invocations))
    calls = Calls()
    say(f"goldenctl bake {BAKE_TYPE} --wait")
    started = time.perf_counter()
    subprocess.run([str(ctl), "bake", BAKE_TYPE, "--wait", "--poll-seconds", "1"], check=True)
    wall = time.perf_counter() - started
    bake_calls = calls.since()
    invoked = [i for i in read_jsonl(invocations)[skip:] if not i["warm_up"]]
    sfn = boto("stepfunctions")
    arn = os.environ["GOLDEN_STATE_MACHINE_ARN"]
    execution = sfn.list_executions(stateMachineArn=arn)["executions"][0]
    history = []
    kwargs = {"executionArn": execution["executionArn"], "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        history += page["events"]
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    events = Counter(e["type"] for e in history)
    entered = Counter(e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered"))
    manifest = json.loads(boto("s3").get_object(Bucket=os.environ["GOLDEN_BUCKET"], Key="manifest.json")["Body"].read())
    entry = manifest["types"][BAKE_TYPE]
    current = next(v for v in entry["versions"] if v["version"] == entry["current"])
    per_function = defaultdict(lambda: {"invocations": 0, "seconds": 0.0})
    for i in invoked:
        per_function[i["function"]]["invocations"] += 1
        per_function[i["function"]]["seconds"] += i["seconds"]
    first_events = {}
    for i in invoked:
        first_events.setdefault(i["function"], i["event"])
    billed_ms = sum(max(1, round(i["seconds"] * 1000)) for i in invoked)
    data = {
        "status": execution["status"],
        "wall_seconds": wall,
        "execution": execution["name"],
        "version": entry["current"],
        "images": current["images"],
        "invocations": len(invoked),
        "per_function": per_function,
        "handler_seconds": sum(i["seconds"] for i in invoked),
        "billed_ms": billed_ms,
        "state_transitions": sum(entered.values()),
        "states_entered": dict(sorted(entered.items())),
        "history_events": dict(sorted(events.items())),
        "aws_calls": len(bake_calls),
        "calls_by_operation": by_operation(bake_calls),
        "calls_by_stage": {stage: by_operation([c for c in bake_calls if c["stage"] == stage])
                           for stage in sorted({c["stage"] for c in bake_calls})},
    }
    write("bake", data)
    image_id = current["images"]["us-east-1"]
    write("coldstart", cold_starts(first_events, image_id))


def section_idle() -> None:
    """The scheduled sweeps on an estate with nothing to do (what an idle deployment pays for)."""
    scheduled = json.loads((REPO / "events" / "scheduled-event.json").read_text())
    out = {}
    for function in ["prune", "reap-builders", "enforce-freshness"]:
        invoke(function, {"dryRun": True})  # the process is warm, as a sweep every 15 minutes finds it
        calls = Calls()
        seconds, payload, error = invoke(function, scheduled)
        made = calls.since()
        out[function] = {"seconds": seconds, "error": error, "aws_calls": len(made),
                         "calls_by_operation": by_operation(made)}
    write("idle", out)


def put_manifest(versions_by_type: dict[str, list[tuple[str, dict[str, str]]]], revoked: set[tuple[str, str]],
                 now: datetime) -> None:
    types = {}
    for ty, versions in versions_by_type.items():
        entries = []
        for version, images in sorted(versions, reverse=True)[:KEEP]:  # publish trims the history to keep
            status = "revoked" if (ty, version) in revoked else "published"
            e = {"version": version, "createdAt": now.isoformat().replace("+00:00", "Z"),
                 "sourceAmi": "ami-0123456789abcdef0", "execution": f"bench-{ty}-{version}",
                 "images": images, "status": status}
            if status == "revoked":
                e.update(revokedReason="bench: a bad image", revokedAt=now.isoformat().replace("+00:00", "Z"))
            entries.append(e)
        current = next(e["version"] for e in entries if e["status"] == "published")
        types[ty] = {"current": current, "versions": entries}
    doc = {"schema": 1, "generation": 1, "updatedAt": now.isoformat().replace("+00:00", "Z"), "types": types}
    boto("s3").put_object(Bucket=os.environ["GOLDEN_BUCKET"], Key="manifest.json", Body=json.dumps(doc).encode())


def seed_images(n: int) -> dict:
    """n golden images over ESTATE_REGIONS x TYPES, each with its snapshot, tagged as a bake tags them."""
    per_group = n // (len(ESTATE_REGIONS) * len(TYPES))
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    versions = [(base + timedelta(hours=6 * k)).strftime("%Y%m%dT%H%M%SZ") for k in range(per_group)]
    images: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)  # (type, version) -> region -> image
    started = time.perf_counter()
    for region in ESTATE_REGIONS:
        ec2 = boto("ec2", region)
        source = os.environ["GOLDEN_SEED_BASE_AMI"]  # the emulator's base AMI (us-east-1), copied elsewhere
        if region != "us-east-1":
            source = ec2.copy_image(SourceImageId=source, SourceRegion="us-east-1", Name="bench-base")["ImageId"]
        builder = ec2.run_instances(ImageId=source, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        for ty in TYPES:
            for version in versions:
                tags = [{"Key": "golden-ami:role", "Value": "image"}, {"Key": "golden-ami:type", "Value": ty},
                        {"Key": "golden-ami:version", "Value": version}]
                image = ec2.create_image(
                    InstanceId=builder, Name=f"golden-{ty}-{version}",
                    TagSpecifications=[{"ResourceType": "image", "Tags": tags},
                                       {"ResourceType": "snapshot", "Tags": tags}],
                )["ImageId"]
                images[(ty, version)][region] = image
        ec2.terminate_instances(InstanceIds=[builder])
    say(f"  seeded {len(images) * len(ESTATE_REGIONS)} images in {time.perf_counter() - started:.0f} s")
    return {"versions": versions, "images": images}


def seed_protections(estate: dict, instances: int) -> dict:
    """Instances on some old images, launch templates and SSM parameters naming others, a revoked version:
    what a prune must not touch, and which of it amicleaner can see."""
    rng = random.Random(42)
    versions = estate["versions"]
    old = versions[: max(1, len(versions) - KEEP)]  # beyond the kept window: prune-eligible by rank
    protected: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    in_use = rng.sample([(ty, v) for ty in TYPES for v in old], k=min(50, len(TYPES) * len(old)))
    per = instances // len(in_use)
    for region in ESTATE_REGIONS:
        ec2 = boto("ec2", region)
        ssm = boto("ssm", region)
        for k, (ty, version) in enumerate(in_use):
            image = estate["images"][(ty, version)][region]
            count = per // len(ESTATE_REGIONS)
            # Ten instances a reservation, as fleets launch them.
            for start in range(0, count, 10):
                ec2.run_instances(ImageId=image, MinCount=min(10, count - start), MaxCount=min(10, count - start),
                                  TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                      {"Key": "golden-ami:type", "Value": ty},
                                      {"Key": "Name", "Value": f"{ty}-{k}"}]}])
            protected[region][image].append("instance")
        lt_images = rng.sample([(ty, v) for ty in TYPES for v in old if (ty, v) not in in_use], k=10)
        for k, (ty, version) in enumerate(lt_images):
            image = estate["images"][(ty, version)][region]
            ec2.create_launch_template(LaunchTemplateName=f"bench-{region}-{k}", LaunchTemplateData={"ImageId": image})
            protected[region][image].append("launch template")
        param_images = rng.sample([(ty, v) for ty in TYPES for v in old
                                   if (ty, v) not in in_use and (ty, v) not in lt_images], k=10)
        for k, (ty, version) in enumerate(param_images):
            image = estate["images"][(ty, version)][region]
            ssm.put_parameter(Name=f"/golden-ami/{ty}/pinned-{k}", Value=image, Type="String", Overwrite=True)
            protected[region][image].append("SSM parameter")
        # keep=true on a few
        for ty in TYPES[:5]:
            image = estate["images"][(ty, old[0])][region]
            ec2.create_tags(Resources=[image], Tags=[{"Key": "golden-ami:keep", "Value": "true"}])
            protected[region][image].append("golden-ami:keep tag")
    return protected


def section_retention(n: int) -> None:
    say(f"retention at {n} images")
    estate = seed_images(n)
    now = datetime.now(timezone.utc)
    versions_by_type = defaultdict(list)
    for (ty, version), regions in estate["images"].items():
        versions_by_type[ty].append((version, regions))
    newest = estate["versions"][-1]
    # The newest manifest version of bench-00 is revoked: prune deletes it; amicleaner, which reads no
    # manifest, keeps it as the newest of its group.
    revoked = {(TYPES[0], newest)}
    put_manifest(versions_by_type, revoked, now)
    protected = seed_protections(estate, 1000)
    # Same estate, two planners. Prune as deployed but for its age floor (every seeded image is seconds
    # old) and its delete cap (so the plan shows every deletion it would make, over as many runs).
    calls = Calls()
    seconds, report, error = invoke("prune", {"dryRun": True})
    made = calls.since()
    if error:
        raise RuntimeError(f"prune failed: {report}")
    decisions = report["plan"]["decisions"]
    deletes = {(d["region"], d["imageId"]) for d in decisions if d["action"] == "delete"}
    reasons = Counter((d["action"], d["reasons"][0]["rule"]) for d in decisions)
    ours = {
        "seconds": seconds, "aws_calls": len(made), "calls_by_operation": by_operation(made),
        **emulator_time(made),
        "decisions": len(decisions), "deletes": len(deletes),
        "decisions_by_first_reason": {f"{a}:{r}": c for (a, r), c in sorted(reasons.items())},
        "deletes_protected": sorted(f"{img} ({region}): {', '.join(protected[region][img])}"
                                    for region, img in deletes if img in protected[region]),
        "revoked_deleted": sum(1 for region, img in deletes
                               if img == estate["images"][(TYPES[0], newest)][region]),
    }
    theirs = amicleaner(estate, protected, newest)
    write(f"retention-{n}", {"images": n, "instances": 1000, "prune": ours, "amicleaner": theirs})


def amicleaner(estate: dict, protected: dict, newest: str) -> dict:
    exe = BENCH_VENV / "bin" / "amicleaner"
    out = {"seconds": 0.0, "aws_calls": 0, "calls_by_operation": Counter(), "deletes": 0,
           "deletes_protected": [], "revoked_deleted": 0, "version": AMICLEANER_VERSION}
    for region in ESTATE_REGIONS:
        env = dict(os.environ, AWS_DEFAULT_REGION=region, AWS_REGION=region,
                   AWS_ENDPOINT_URL=os.environ["GOLDEN_LAMBDA_ENDPOINT"],  # the router records its calls
                   AWS_SDK_UA_APP_ID="golden-ami-amicleaner", TERM="dumb")
        calls = Calls()
        started = time.perf_counter()
        proc = subprocess.run([str(exe), "--mapping-key", "tags", "--mapping-values", "golden-ami:type",
                               "--keep-previous", str(KEEP), "--full-report"],
                              input="n\n", capture_output=True, text=True, env=env)
        out["seconds"] += time.perf_counter() - started
        made = [c for c in calls.since() if c["stage"] == "amicleaner"]
        out["aws_calls"] += len(made)
        out["calls_by_operation"].update(by_operation(made))
        for k, v in emulator_time(made).items():
            out[k] = out.get(k, 0.0) + v
        if proc.returncode != 0:
            raise RuntimeError(f"amicleaner failed in {region}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        ids = amicleaner_deletes(proc.stdout)
        out["deletes"] += len(ids)
        out["deletes_protected"] += sorted(f"{img} ({region}): {', '.join(protected[region][img])}"
                                           for img in ids if img in protected[region])
        out["revoked_deleted"] += int(estate["images"][(TYPES[0], newest)][region] in ids)
    out["calls_by_operation"] = dict(sorted(out["calls_by_operation"].items()))
    return out


AMICLEANER_VERSION = "aws-amicleaner==0.2.2"


def amicleaner_deletes(report: str) -> set[str]:
    """The AMI ids of amicleaner's --full-report: a group name line, then its table of AMIs to remove; the
    group "no-tags (excluded)" lists what it leaves alone."""
    ids: set[str] = set()
    counting = False
    for line in report.splitlines():
        text = line.strip()
        if text.startswith("AMIs to be removed"):
            break
        if text.startswith("|"):
            cell = text.strip("|").split("|")[0].strip()
            if counting and cell.startswith("ami-"):
                ids.add(cell)
        elif text and not text.startswith("+"):
            counting = text != "no-tags (excluded)"
    return ids


def section_enforce(n: int) -> None:
    say(f"enforce over {n} instances")
    estate = seed_images(len(ESTATE_REGIONS) * len(TYPES) * 3)  # three versions of each type
    versions_by_type = defaultdict(list)
    for (ty, version), regions in estate["images"].items():
        versions_by_type[ty].append((version, regions))
    put_manifest(versions_by_type, set(), datetime.now(timezone.utc) - timedelta(days=2))
    started = time.perf_counter()
    per_group = n // (len(ESTATE_REGIONS) * len(TYPES))
    for region in ESTATE_REGIONS:
        ec2 = boto("ec2", region)
        for ty in TYPES:
            # Most of a fleet on current, the rest on the two older versions (stale).
            for k, version in enumerate(estate["versions"]):
                older = len(estate["versions"]) - 1
                count = per_group - older * (per_group // 4) if k == older else per_group // 4
                image = estate["images"][(ty, version)][region]
                for start in range(0, count, 10):
                    ec2.run_instances(ImageId=image, MinCount=min(10, count - start), MaxCount=min(10, count - start),
                                      TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                          {"Key": "golden-ami:type", "Value": ty}]}])
    say(f"  launched {n} instances in {time.perf_counter() - started:.0f} s")
    invoke("enforce-freshness", {"dryRun": True})  # warm, as hourly sweeps find it
    calls = Calls()
    seconds, report, error = invoke("enforce-freshness", {"dryRun": True})
    made = calls.since()
    if error:
        raise RuntimeError(f"enforce failed: {report}")
    verdicts = Counter(json.dumps(d["verdict"], sort_keys=True)[:60] for d in report["decisions"])
    assert len(report["decisions"]) == n, f"{len(report['decisions'])} decisions for {n} instances"
    write(f"enforce-{n}", {
        "instances": n, "seconds": seconds, "decisions": len(report["decisions"]),
        "decisions_per_second": len(report["decisions"]) / seconds,
        "would_act": sum(1 for d in report["decisions"] if d["act"]),
        "verdicts": dict(verdicts), "aws_calls": len(made), "calls_by_operation": by_operation(made),
        **emulator_time(made),
        "manifest_bytes": len(boto("s3").get_object(Bucket=os.environ["GOLDEN_BUCKET"],
                                                    Key="manifest.json")["Body"].read()),
    })


# --------------------------------------------------------------------------------------------------
# orchestration

def emulated(section: str, *args: str, extra_env: dict | None = None) -> None:
    # The router gives up on an invocation after GOLDEN_EMULATOR_INVOKE_TIMEOUT: moto takes minutes to plan 5,000 images.
    env = dict(os.environ, GOLDEN_EMULATOR_PROFILE="release", GOLDEN_EMULATOR_CREATION_CLOCK="sequential",
               GOLDEN_EMULATOR_INVOKE_TIMEOUT="1800",
               **(extra_env or {}))
    cmd = [str(REPO / "scripts" / "emulator"), "run", "--", str(VENV_PY), str(Path(__file__)), "section",
           section, *args]
    say(f"$ GOLDEN_EMULATOR_PROFILE=release {' '.join(cmd[:4])} scripts/bench.py section {section} {' '.join(args)}")
    subprocess.run(cmd, check=True, env=env, cwd=REPO)


def bench_tools() -> None:
    """A venv of its own for aws-amicleaner: it pins awscli and boto, which must not change .venv/."""
    if not (BENCH_VENV / "bin" / "amicleaner").exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", AMICLEANER_VERSION], check=True)


def head_commit() -> str:
    """The measured tree's commit, short, for each section that records one ("?" outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO).stdout.strip() or "?"
    except OSError:
        return "?"


def machine() -> dict:
    def out(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    moto = subprocess.run([str(VENV_PY), "-c", "import moto, boto3; print(moto.__version__, boto3.__version__)"],
                          capture_output=True, text=True).stdout.split()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": head_commit(),
        "cpu": f"{os.cpu_count()} x {cpu}", "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(), "rustc": out("rustc", "--version"), "python": out(str(VENV_PY), "--version"),
        "moto": moto[0] if moto else "?", "boto3": moto[1] if len(moto) > 1 else "?",
        "cargo_lambda": out(str(REPO / ".venv" / "bin" / "cargo-lambda"), "lambda", "--version"),
        "amicleaner": AMICLEANER_VERSION,
    }


def packages() -> dict:
    zips = sorted((REPO / "target" / "lambda").glob("*/bootstrap.zip"))
    return {z.parent.name: {"zip_bytes": z.stat().st_size,
                            "bootstrap_bytes": zipfile.ZipFile(z).getinfo("bootstrap").file_size}
            for z in zips}


# What each setting of the release profile buys: one function's arm64 zip built with the profile as shipped,
# then with one setting at a time put back to cargo's default, each in a target directory of its own (a full
# build of the SDK each: 11 to 16 minutes here). Built with `-p`, so every variant, the shipped one too, has
# the same features (a workspace build unifies goldenctl's in).
# Each variant is a CARGO_PROFILE_RELEASE_* variable, which overrides Cargo.toml; it cannot undo what cargo
# lambda passes as --config (which outranks the environment): panic = "abort" where Cargo.toml sets no panic.
# A panic = "unwind" row would need `--config 'profile.release.panic="unwind"'` on its build instead.
PROFILE_FUNCTION = "prune"
PROFILE_VARIANTS = {
    "as shipped": {},
    "strip = false": {"CARGO_PROFILE_RELEASE_STRIP": "false"},
    "lto = false (thin-local)": {"CARGO_PROFILE_RELEASE_LTO": "false"},
    "codegen-units = 16": {"CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16"},
    "opt-level = 3": {"CARGO_PROFILE_RELEASE_OPT_LEVEL": "3"},
}


def section_profile(shipped_zip: Path | None = None) -> None:
    """Each PROFILE_VARIANTS build of PROFILE_FUNCTION; figures written after each, so a run cut short keeps
    what it measured. `shipped_zip`: the function's zip of a `make package` of the same tree, which is the
    "as shipped" build (a workspace build gives this function the features a `-p` build does: `cargo tree`
    shows the same for both), so it is not built again."""
    commit = head_commit()
    out: dict = {"function": PROFILE_FUNCTION, "target": "aarch64 (cargo lambda --arm64)", "commit": commit,
                 "variants": {}}
    for label, env in PROFILE_VARIANTS.items():
        if label == "as shipped" and shipped_zip:
            say(f"profile: {PROFILE_FUNCTION} as shipped: {shipped_zip} (make package)")
            out["variants"][label] = {"env": env, "zip_bytes": shipped_zip.stat().st_size, "from": "make package",
                                      "bootstrap_bytes": zipfile.ZipFile(shipped_zip).getinfo("bootstrap").file_size}
            continue
        slug = "-".join("".join(c if c.isalnum() else " " for c in label).split())
        target = OUT / f"profile-{slug}"
        say(f"profile: {PROFILE_FUNCTION} with {label} ({' '.join(f'{k}={v}' for k, v in env.items()) or 'Cargo.toml'})")
        started = time.perf_counter()
        # CARGO_TARGET_DIR, not --target-dir: cargo-lambda 1.9 hands that flag to `cargo metadata`, which refuses it.
        subprocess.run(["cargo", "lambda", "build", "--release", "--arm64", "-p", PROFILE_FUNCTION,
                        "--output-format", "zip", "--lambda-dir", str(target / "lambda")],
                       check=True, cwd=REPO, env=dict(os.environ, PATH=f"{VENV_PY.parent}:{os.environ['PATH']}",
                                                      CARGO_TARGET_DIR=str(target / "cargo"), **env))
        z = target / "lambda" / PROFILE_FUNCTION / "bootstrap.zip"
        out["variants"][label] = {"env": env, "zip_bytes": z.stat().st_size,
                                  "bootstrap_bytes": zipfile.ZipFile(z).getinfo("bootstrap").file_size,
                                  "build_seconds": round(time.perf_counter() - started)}
        write("profile", out)
        shutil.rmtree(target / "cargo", ignore_errors=True)  # gigabytes each
    write("profile", out)


# What the SDK feature choice buys, counted in what it pulls in: PROFILE_FUNCTION's dependency tree for the
# shipped target (normal and build dependencies, as `cargo tree` resolves them) with the workspace's SDK
# features, and with the SDK crates' default features back on (the manifest's `default-features = false`
# dropped, in a copy of the committed tree). No build: `cargo tree` only resolves (and may fetch the index).
SDK_DEPENDENCY = re.compile(r"^(aws-config|aws-sdk-[a-z0-9]+) = \{.*default-features = false, ", re.M)
SDK_KEY = re.compile(r"^(aws-config|aws-sdk-[a-z0-9]+)\s*=", re.M)


def dependency_tree(root: Path) -> list[str]:
    tree = subprocess.run(["cargo", "tree", "-p", PROFILE_FUNCTION, "--target", "aarch64-unknown-linux-gnu",
                           "-e", "normal,build", "--prefix", "none", "-f", "{p}"],
                          cwd=root, check=True, capture_output=True, text=True).stdout
    # "name vX.Y.Z", then " (path)", " (proc-macro)" or " (*)" for a crate already shown.
    return sorted({line.split(" (")[0] for line in tree.splitlines() if line.strip()})


def section_features() -> None:
    """Writes target/bench/features.json; a failure (cargo cannot reach the index for the defaults' crates,
    a manifest this cannot rewrite) is written there as the reason, so the rest of `make bench` goes on."""
    commit = head_commit()
    out: dict = {"function": PROFILE_FUNCTION, "target": "aarch64-unknown-linux-gnu", "commit": commit}
    copy = OUT / "features"
    try:
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
        manifest = copy / "Cargo.toml"
        original = manifest.read_text()
        section = original.split("[workspace.dependencies]", 1)[-1].split("\n[", 1)[0]
        every = sorted(set(SDK_KEY.findall(section)))
        changed = sorted(set(SDK_DEPENDENCY.findall(original)))
        if not changed or changed != every:
            raise RuntimeError(f"Cargo.toml's [workspace.dependencies] has SDK crates {', '.join(every) or 'none'}, "
                               f"of which {', '.join(changed) or 'none'} read `name = {{ ..., default-features = "
                               "false, ... }`; update SDK_DEPENDENCY in scripts/bench.py to the manifest's form")
        text = SDK_DEPENDENCY.sub(lambda m: m.group(0).replace("default-features = false, ", ""), original)
        say(f"features: {PROFILE_FUNCTION}'s dependency tree as shipped, and with the default features of "
            f"{', '.join(changed)}")
        shipped = dependency_tree(copy)
        manifest.write_text(text)
        defaults = dependency_tree(copy)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
        detail = getattr(e, "stderr", None)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        out["error"] = f"{e}" + (f": {detail.strip()[-600:]}" if detail else "")
        say(f"features: not measured: {out['error']}")
        write("features", out)
        return
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    write("features", dict(out, sdk_crates=changed, shipped=len(shipped), defaults=len(defaults),
                           added=sorted(set(defaults) - set(shipped)), removed=sorted(set(shipped) - set(defaults))))


def run_all() -> None:
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    known = {"package", "bake", "idle", "retention", "enforce", "features", "profile",
             *(f"retention-{n}" for n in RETENTION_SIZES), *(f"enforce-{n}" for n in ENFORCE_SIZES)}
    if only - known:
        raise SystemExit(f"bench: BENCH_ONLY names no section {', '.join(sorted(only - known))}; "
                         f"the sections: {', '.join(sorted(known))}")
    started = time.perf_counter()
    bench_tools()
    write("machine", machine())

    def wanted(name: str) -> bool:
        return not only or name in only

    if wanted("package"):
        t0 = time.perf_counter()
        subprocess.run(["make", "--no-print-directory", "package"], check=True, cwd=REPO)
        write("package", {"seconds": time.perf_counter() - t0, "functions": packages()})
    if wanted("features"):  # seconds, and no emulator: before the long sections
        section_features()
    if wanted("bake"):
        emulated("bake")
    if wanted("idle"):
        emulated("idle")
    for n in RETENTION_SIZES:
        if wanted("retention") or wanted(f"retention-{n}"):
            emulated("retention", str(n), extra_env={"GOLDEN_PRUNE_MIN_AGE_HOURS": "0",
                                                       "GOLDEN_PRUNE_MAX_DELETES": "10000"})
    for n in ENFORCE_SIZES:
        if wanted("enforce") or wanted(f"enforce-{n}"):
            emulated("enforce", str(n))
    if wanted("profile"):
        section_profile(REPO / "target" / "lambda" / PROFILE_FUNCTION / "bootstrap.zip" if wanted("package") else None)
    say(f"measured in {time.perf_counter() - started:.0f} s")
    report()


def report() -> None:
    """BENCHMARKS.md from target/bench/*.json, by scripts/bench_report.py under .venv/'s Python (it reads the
    template with PyYAML, which `make tools` installs there)."""
    subprocess.run([str(VENV_PY), str(REPO / "scripts" / "bench_report.py")], check=True, cwd=REPO)


def main(argv: list[str]) -> int:
    if argv[:1] == ["all"]:
        run_all()
        return 0
    if argv[:1] == ["report"]:
        report()
        return 0
    if argv[:1] == ["section"] and len(argv) >= 2:
        name, args = argv[1], argv[2:]
        if name == "bake":
            section_bake()
        elif name == "idle":
            section_idle()
        elif name == "retention":
            section_retention(int(args[0]))
        elif name == "enforce":
            section_enforce(int(args[0]))
        elif name == "features":  # needs no emulator
            section_features()
        elif name == "profile":  # needs no emulator; ARGS: the as-shipped zip of a make package of this tree
            section_profile(Path(args[0]) if args else None)
        else:
            print(f"bench: unknown section {name}", file=sys.stderr)
            return 2
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
