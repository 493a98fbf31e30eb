#!/usr/bin/env python3
"""The local AWS emulator of golden-ami; run through `scripts/emulator run -- CMD [ARGS...]`.

What it does, in order (facts and quirks of the tools: shared/EMULATOR.md):
  1. builds the Lambda binaries once (`cargo build --workspace --bins --features golden-core/test-deps`);
  2. starts, each on 127.0.0.1 and a free port picked now:
       - the router (a thread of this process): Lambda Invoke API -> `cargo lambda watch`, all else -> moto;
         the functions' AWS endpoint, it records each of their calls in calls.jsonl (iam_record.py);
       - moto_server, with MOTO_PORT = the router's port, so that Step Functions' Lambda tasks (which moto
         sends to http://localhost:$MOTO_PORT) reach the router and so the real Rust functions;
       - `cargo lambda watch`, serving every binary under functions/ with the functions' environment;
  3. warms every function up (one dry-run invoke each, through the router);
  4. seeds moto: network, instance profile, base AMI + SSM parameter, bucket, recipes, state machine `bake`;
  5. runs CMD with the environment described in README.md, then tears everything down by PID.

Logs of one run are in .emulator/<run-id>/ (.emulator/latest points at the newest run).
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from iam_record import Recorder

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
ASL = REPO / "infra" / "statemachine" / "bake.asl.json"
RECIPES = REPO / "infra" / "recipes"

ACCOUNT = "123456789012"
REGION = "us-east-1"
COPY_REGIONS = ["us-west-2", "eu-west-1"]
REGIONS = [REGION, *COPY_REGIONS]
BUCKET = "golden-ami-local"
STATE_MACHINE = "bake"
STATE_MACHINE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/golden-ami-bake-local"
INSTANCE_PROFILE = "golden-ami-builder"
BASE_AMI_PARAMETER = "/golden-ami/base/al2023"
SUBNET_NAME = "golden-ami-builders"
TEMPLATE = REPO / "infra" / "template.yaml"
# The stack's bake schedules (one per pushed recipe's type), its notifications topic and the
# role its schedules start bakes with; moto never fires a schedule, the tests start their executions.
SCHEDULE_GROUP = "golden-ami-local-bakes"
NOTIFICATIONS_TOPIC = "golden-ami-local-notifications"
SCHEDULER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/golden-ami-scheduler-local"
STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STATE_MACHINE}"

# ${...} of bake.asl.json -> the function it names (docs/stages.md).
ASL_FUNCTIONS = {
    "LaunchBuilderArn": "launch-builder",
    "BuilderReadyArn": "builder-ready",
    "RunCommandArn": "run-command",
    "CommandStatusArn": "command-status",
    "CreateImageArn": "create-image",
    "ImageStatusArn": "image-status",
    "CopyImageArn": "copy-image",
    "PublishArn": "publish",
    "TerminateBuilderArn": "terminate-builder",
}

# Variables of the caller's environment that would point children at a real account or change the SDKs'
# behaviour; the emulator's children get none of them.
SCRUBBED_ENV = {
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_EC2_METADATA_DISABLED", "AWS_CA_BUNDLE", "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT", "MOTO_PORT",
}

# Every cargo command of the emulator builds with these features: the tests turn them on through their
# dev-dependencies, so the functions, the tests and clippy share one build of the AWS SDK
# (crates/golden-core/Cargo.toml, `test-deps`). Without them each `cargo run` of `cargo lambda watch` would
# compile the SDK a second time.
CARGO_FEATURES = ["--features", "golden-core/test-deps"]
# GOLDEN_EMULATOR_PROFILE=release (what `make bench` uses): the functions and goldenctl are built and served
# as Lambda runs them, optimized (`--release`, no test features: the bench measures what ships).
RELEASE = os.environ.get("GOLDEN_EMULATOR_PROFILE") == "release"
PROFILE_ARGS = ["--release"] if RELEASE else CARGO_FEATURES

WARMUP_TIMEOUT = 20 * 60  # the first invoke may make `cargo run` compile (see warm_up)
# The router's limit for one function invocation. A function process that died makes `cargo lambda watch`
# hold the invoke open, so this bounds how long a caller (a test, a state machine) waits for it.
INVOKE_TIMEOUT = int(os.environ.get("GOLDEN_EMULATOR_INVOKE_TIMEOUT") or 300)


class SetupError(Exception):
    """The emulator could not be set up; the message says what and where to look."""


def template_schedule_input() -> str:
    """The bake schedules' Target Input of infra/template.yaml, with its `${Type}` left in."""
    match = re.search(r"Input: !Sub\n\s*- '([^']*\$\{Type\}[^']*)'", TEMPLATE.read_text())
    if not match:
        raise SetupError(f"no bake schedule Input (`Input: !Sub` then `- '...${{Type}}...'`) in {TEMPLATE}")
    json.loads(match.group(1).replace("${Type}", "t"))
    return match.group(1)


def say(msg: str) -> None:
    print(f"emulator: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    | {line}" for line in text[-lines:])


# --------------------------------------------------------------------------------------------------
# processes


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    children = _proc_children()
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def group_alive(pgid: int) -> bool:
    """Whether any living (not zombie) process is in the process group."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class Child:
    """A process started in its own session; stopped by signalling its process group (by PID)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.name, self.log = name, log
        self.log_file = open(log, "ab")
        self.proc = subprocess.Popen(
            argv, cwd=cwd or REPO, env=env, stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> list[str]:
        """SIGTERM the group, then SIGKILL what is left, including descendants that left the group
        (`cargo lambda watch` starts each function in a session of its own). Returns what survived."""
        tree = descendants(self.pid)
        if self.running():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.running() and not group_alive(self.pid) and not any(alive(p) for p in tree):
                break
            time.sleep(0.1)
        leftovers = [p for p in tree if alive(p)]
        targets = ([self.pid] if self.running() or group_alive(self.pid) else []) + leftovers
        for target in targets:
            for kill in (lambda t: os.killpg(t, signal.SIGKILL), lambda t: os.kill(t, signal.SIGKILL)):
                try:
                    kill(target)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log_file.close()
        time.sleep(0.2)
        return [str(p) for p in [self.pid, *tree] if alive(p)] + (
            [f"group {self.pid}"] if group_alive(self.pid) else []
        )


def set_child_subreaper() -> None:
    """Orphaned descendants are re-parented to us instead of init, so teardown can still find them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------------------------------
# the router

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "content-length", "host",
}


def function_name(raw: str) -> str:
    """`name`, `name:qualifier`, `123456789012:function:name` or a full ARN -> `name`."""
    name = urllib.parse.unquote(raw)
    if "function:" in name:
        name = name.split("function:", 1)[1]
    return name.split(":", 1)[0]


class Router(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, log: Path):
        super().__init__(("127.0.0.1", 0), RouterHandler)
        self.port = self.server_address[1]
        self.moto_port = 0
        self.watch_port = 0
        self.recorder: Recorder | None = None
        self.log_lock = threading.Lock()
        self.log_file = open(log, "a", buffering=1)
        # One JSON line per Lambda invocation (function, type, outcome, seconds as the caller saw them, and the
        # event): what `make bench` counts and replays. Warm-up dry runs are in it too, marked "warm_up".
        self.invocations = open(log.with_name("invocations.jsonl"), "a", buffering=1)

    def record_invocation(self, entry: dict) -> None:
        with self.log_lock:
            self.invocations.write(json.dumps(entry) + "\n")

    def log(self, line: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        with self.log_lock:
            self.log_file.write(f"{stamp} {line}\n")


class RouterHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Router

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        self.server.log(f"{self.address_string()} {format % args}")

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]], head: bool = False) -> None:
        self.send_response_only(status)
        for key, value in headers:
            self.send_header(key, value)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _handle(self) -> None:
        started = time.monotonic()
        body = self._body()
        path = self.path.split("?", 1)[0]
        match = INVOKE_PATH.match(path)
        if self.command == "POST" and match:
            note = self._invoke(function_name(match.group(1)), body)
        else:
            note = self._proxy(body)
        self.server.log(f"{self.command} {self.path} {note} {time.monotonic() - started:.2f}s")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

    # everything but Lambda: verbatim to moto (a function's call recorded on the way, see iam_record.py)
    def _proxy(self, body: bytes) -> str:
        recorder = self.server.recorder
        began = time.monotonic()
        call = recorder.begin(self.command, self.path, self.headers, body) if recorder else None
        conn = http.client.HTTPConnection("127.0.0.1", self.server.moto_port, timeout=600)
        try:
            sent = time.monotonic()
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    conn.putheader(key, value)
            conn.putheader("Host", self.headers.get("Host", f"127.0.0.1:{self.server.moto_port}"))
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            head = self.command == "HEAD"
            headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in HOP_BY_HOP or (head and k.lower() == "content-length")]
            if call is not None and recorder is not None:
                # Recorded before the caller has its answer, so its calls are all on file when it returns.
                # What the emulator, not the function, spent on the call goes with it: moto's answer, and
                # that plus the recorder's lookups (make bench takes these from a function's time).
                call["motoSeconds"] = round(time.monotonic() - sent, 4)
                recorder.finish(call, resp.status, data, began=began)
            self._send(resp.status, data, headers, head=head)
            if call is not None:
                return f"-> moto {resp.status} (recorded {call['stage']} {call['operation']})"
            return f"-> moto {resp.status}"
        except OSError as err:
            msg = json.dumps({"message": f"emulator router: moto did not answer: {err}"}).encode()
            self._send(502, msg, [("Content-Type", "application/json")])
            return f"-> moto failed: {err}"
        finally:
            conn.close()

    # Lambda Invoke API: to `cargo lambda watch`
    def _invoke(self, name: str, body: bytes) -> str:
        started = time.time()
        note = self._invoke_watch(name, body)
        try:
            event = json.loads(body or b"null")
        except ValueError:
            event = body.decode(errors="replace")
        self.server.record_invocation({
            "function": name, "type": self.headers.get("X-Amz-Invocation-Type", "RequestResponse"),
            "warm_up": "X-Emulator-Invoke-Timeout" in self.headers, "started": started,
            "seconds": round(time.time() - started, 4), "outcome": note, "event": event,
        })
        return note

    def _invoke_watch(self, name: str, body: bytes) -> str:
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            self._send(204, b"", [])
            return f"-> {name} DryRun 204"
        if invocation_type == "Event":
            threading.Thread(target=self._call_watch, args=(name, body, INVOKE_TIMEOUT), daemon=True).start()
            self._send(202, b"", [])
            return f"-> {name} Event 202"
        # The warm-up allows for a first start that compiles (see Emulator.warm_up).
        timeout = int(self.headers.get("X-Emulator-Invoke-Timeout") or INVOKE_TIMEOUT)
        status, payload, error = self._call_watch(name, body, timeout)
        headers = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", "$LATEST")]
        if status == 404:
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
            msg = json.dumps({"Type": "User", "message": f"Function not found: {arn}"}).encode()
            self._send(404, msg, [("Content-Type", "application/json"),
                                  ("x-amzn-ErrorType", "ResourceNotFoundException")])
            return f"-> {name} 404 (no such function)"
        if status == 502:
            self._send(502, payload, [("Content-Type", "application/json"),
                                      ("x-amzn-ErrorType", "ServiceException")])
            return f"-> {name} ServiceException: {payload.decode(errors='replace')}"
        if error:
            # A function error is a successful Invoke call (200) that says so in X-Amz-Function-Error; the
            # body's errorType is what Step Functions' Retry/Catch match.
            self._send(200, payload, [*headers, ("X-Amz-Function-Error", "Unhandled")])
            return f"-> {name} 200 function error {error}"
        self._send(200, payload, headers)
        return f"-> {name} 200"

    def _call_watch(self, name: str, body: bytes, timeout: int) -> tuple[int, bytes, str | None]:
        """(status for the caller, payload, errorType if the function failed)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.watch_port, timeout=timeout)
        try:
            conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            status, function_error = resp.status, resp.getheader("X-Amz-Function-Error")
        except TimeoutError:
            err = {"errorType": "Sandbox.Timedout",
                   "errorMessage": f"{name} did not answer within {timeout} s (emulator router)"}
            return 200, json.dumps(err).encode(), err["errorType"]
        except OSError as err:
            msg = {"Type": "Service", "message": f"emulator router: cargo lambda watch did not answer: {err}"}
            return 502, json.dumps(msg).encode(), None
        finally:
            conn.close()
        if status == 404:
            return 404, data, None
        if status >= 500 or function_error:
            try:
                doc = json.loads(data)
                error_type = doc["errorType"]
            except (ValueError, KeyError, TypeError):
                doc = {"errorType": "Unhandled", "errorMessage": data.decode(errors="replace")}
                error_type = "Unhandled"
            return 200, json.dumps(doc).encode(), str(error_type)
        return 200, data, None



# --------------------------------------------------------------------------------------------------
# moto, with what it lacks for a bake


def describe_instance_information(self):  # a method of moto's SimpleSystemManagerResponse
    """SSM DescribeInstanceInformation, which moto 5.2 does not implement (HTTP 500): every running EC2
    instance of the region is a managed instance whose agent is Online (moto's SendCommand also "runs" on any
    instance at once); a stopped one is ConnectionLost; others are not listed. Filters by instance id only."""
    from moto.core.responses import ActionResult
    from moto.ec2 import ec2_backends

    wanted: set[str] = set()
    for f in self._get_param("InstanceInformationFilterList", []) or []:
        if f.get("key") == "InstanceIds":
            wanted |= set(f.get("valueSet", []))
    for f in self._get_param("Filters", []) or []:
        if f.get("Key") in ("InstanceIds", "tag:InstanceIds"):
            wanted |= set(f.get("Values", []))
    ping = {"running": "Online", "stopping": "ConnectionLost", "stopped": "ConnectionLost"}
    now = time.time()
    items = []
    for reservation in ec2_backends[self.current_account][self.region].all_reservations():
        for instance in reservation.instances:
            if (wanted and instance.id not in wanted) or instance.state not in ping:
                continue
            windows = (instance.platform or "").lower() == "windows"
            items.append({
                "InstanceId": instance.id, "PingStatus": ping[instance.state], "LastPingDateTime": now,
                "AgentVersion": "3.3.0.0", "IsLatestVersion": True, "ResourceType": "EC2Instance",
                "PlatformType": "Windows" if windows else "Linux",
                "PlatformName": "Microsoft Windows Server" if windows else "Amazon Linux",
                "IPAddress": instance.private_ip,
            })
    return ActionResult({"InstanceInformationList": items})


def _tag_specs(response, resource_type: str) -> list[dict]:
    """The tags of one ResourceType of an EC2 request's TagSpecifications."""
    return [tag for spec in response._get_param("TagSpecifications", []) or []
            if spec.get("ResourceType") == resource_type for tag in spec.get("Tags", [])]


# GOLDEN_EMULATOR_CREATION_CLOCK=sequential (`make bench`): images made by CreateImage and CopyImage get
# creation times one second apart, from a day before moto started. moto 5.2 answers CreationDate in whole
# seconds (milliseconds zeroed), so the hundreds of images a seeding makes per second would tie, and whoever
# orders by CreationDate (aws-amicleaner) would order them at random.
_SEQUENTIAL = os.environ.get("GOLDEN_EMULATOR_CREATION_CLOCK") == "sequential"
_next_created = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - timedelta(days=1)


def _stamp_creation(image) -> None:
    global _next_created
    if _SEQUENTIAL:
        image.creation_date = _next_created
        _next_created += timedelta(seconds=1)


def _tag_image_and_snapshots(response, image_id: str) -> None:
    image = response.ec2_backend.amis[image_id]
    _stamp_creation(image)
    for tag in _tag_specs(response, "image"):
        image.add_tag(tag["Key"], tag["Value"])
    for tag in _tag_specs(response, "snapshot"):  # a moto image has one snapshot, of its root device
        image.ebs_snapshot.add_tag(tag["Key"], tag["Value"])


def create_image(self):  # a method of moto's AmisResponse
    """EC2 CreateImage whose TagSpecifications may tag the snapshots too: moto 5.2 tags the image only and
    answers a `snapshot` spec with HTTP 500 (NotImplementedError)."""
    from moto.core.responses import ActionResult

    self.error_on_dryrun()
    image = self.ec2_backend.create_image(
        self._get_param("InstanceId"), self._get_param("Name"), self._get_param("Description", ""),
        tag_specifications=[],
    )
    _tag_image_and_snapshots(self, image.id)
    return ActionResult({"ImageId": image.id})


def copy_image(self):  # a method of moto's AmisResponse
    """EC2 CopyImage with its TagSpecifications (image and snapshots), which moto 5.2 ignores."""
    from moto.core.responses import ActionResult

    self.error_on_dryrun()
    image = self.ec2_backend.copy_image(
        self._get_param("SourceImageId"), self._get_param("SourceRegion"), self._get_param("Name"),
        self._get_param("Description"),
    )
    _tag_image_and_snapshots(self, image.id)
    return ActionResult({"ImageId": image.id})


def enable_image_deprecation(self):  # a method of moto's AmisResponse
    """EC2 EnableImageDeprecation, which moto 5.2 lacks: records DeprecateAt on the image (minute precision,
    as EC2 keeps it), which DescribeImages then returns as DeprecationTime."""
    from moto.core.responses import ActionResult

    self.error_on_dryrun()
    image_id = self._get_param("ImageId")
    image = self.ec2_backend.describe_images(ami_ids=[image_id])[0]  # InvalidAMIID.NotFound if absent
    at = self._get_param("DeprecateAt")  # moto parses the timestamp into a datetime
    image.deprecation_time = at.strftime("%Y-%m-%dT%H:%M:00.000Z") if hasattr(at, "strftime") else str(at)
    return ActionResult({"Return": True})


# Listings being paged, by the id their NextToken carries: (the request they answer, the items), each computed
# on its listing's first page.
_LISTINGS: dict[str, tuple[tuple, list]] = {}
_LISTINGS_LOCK = threading.Lock()
_LISTINGS_KEPT = 256


def _page(self, key: str, describe):
    """One page of a Describe* answer as EC2 pages it: MaxResults items from NextToken on, and a NextToken while
    more remain (moto 5.2 answers DescribeImages and DescribeSnapshots in one piece whatever MaxResults says,
    which would hide how a caller's calls grow with the estate). `describe()` (moto's filtering of the whole
    estate) runs on the first page only and later pages slice what it returned, so moto filters a listing
    once, not once per page. A token is good only for the request that got it (same operation, account,
    region and parameters), as EC2's are: any other, a malformed one, or one of a listing dropped (more than
    _LISTINGS_KEPT open at once, the oldest go) is EC2's InvalidNextToken, a 400."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidNextToken

    max_results = self._get_param("MaxResults")
    if not max_results:
        return ActionResult({key: describe()})
    request = (type(self).__name__, self.current_account, self.region,
               tuple(sorted((k, tuple(v)) for k, v in self.querystring.items() if k != "NextToken")))
    token = self._get_param("NextToken")
    if token:
        listing, _, offset = token.partition(":")
        with _LISTINGS_LOCK:
            kept = _LISTINGS.get(listing)
        if kept is None or kept[0] != request or not offset.isdigit():
            raise InvalidNextToken(token)
        items, start = kept[1], int(offset)
    else:
        items, start = describe(), 0
        listing = os.urandom(8).hex()
        with _LISTINGS_LOCK:
            _LISTINGS[listing] = (request, items)
            while len(_LISTINGS) > _LISTINGS_KEPT:
                del _LISTINGS[next(iter(_LISTINGS))]
    end = start + int(max_results)
    result = {key: items[start:end]}
    if end < len(items):
        result["NextToken"] = f"{listing}:{end}"
    else:
        with _LISTINGS_LOCK:
            _LISTINGS.pop(listing, None)
    return ActionResult(result)


def describe_images(self):  # a method of moto's AmisResponse
    """EC2 DescribeImages, paged by MaxResults and NextToken (see _page)."""
    self.error_on_dryrun()
    return _page(self, "Images", lambda: self.ec2_backend.describe_images(
        ami_ids=self._get_param("ImageIds", []), filters=self._filters_from_querystring(),
        exec_users=self._get_param("ExecutableUsers", []), owners=self._get_param("Owners", []),
    ))


def describe_snapshots(self):  # a method of moto's ElasticBlockStore response
    """EC2 DescribeSnapshots, paged by MaxResults and NextToken (see _page)."""
    return _page(self, "Snapshots", lambda: self.ec2_backend.describe_snapshots(
        snapshot_ids=self._get_param("SnapshotIds", []), filters=self._filters_from_querystring(),
    ))


def get_bucket_versioning(self):  # a method of moto's S3Response
    """S3 GetBucketVersioning answered with the document S3 sends, rooted at VersioningConfiguration: moto 5.2.5
    roots it at GetBucketVersioningResponse, which boto3 tolerates and the Rust SDK rejects as invalid XML
    (goldenctl doctor reads it)."""
    status = self.backend.get_bucket_versioning(self.bucket_name)  # NoSuchBucket if absent
    inner = f"<Status>{status}</Status>" if status else ""
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</VersioningConfiguration>')
    return 200, {"Content-Type": "application/xml"}, body


# What the Windows Sanitize script runs last (golden_core::scripts::windows_sanitize).
SYSPREP_SHUTDOWN = "-ArgumentList 'sysprep', '--shutdown=true'"


# A command line holding this (a shell or PowerShell comment, so a real builder ignores it) makes the SSM
# stand-in report the command Failed, exit 1, with the rest of the line as its stderr: how a test provokes a
# failing provision, sanitize or test command on the emulator, e.g. `true  # emulator: fail smoke test failed`.
FAIL_MARKER = "# emulator: fail"


def command_outcome(commands: list[str]) -> tuple[str, int, str, str]:
    """(status, exit code, stdout, stderr) the stand-in gives a command: moto runs nothing, so stdout lists
    what a builder would have run; a line with FAIL_MARKER fails it, and the lines after it do not "run"."""
    ran = []
    for line in commands:
        ran.append(f"emulator (runs nothing): {line}")
        if FAIL_MARKER in line:
            message = line.split(FAIL_MARKER, 1)[1].strip() or "failed on purpose"
            return "Failed", 1, "\n".join(ran) + "\n", message + "\n"
    return "Success", 0, "\n".join(ran) + "\n", ""


def send_command(self):  # a method of moto's SimpleSystemManagerResponse
    """SSM SendCommand as moto runs it (at once), plus what a builder would do with it:
    - the outcome of `command_outcome` (Success; Failed for a line with FAIL_MARKER), with its output;
    - with OutputS3BucketName, that output written to S3 where the SSM agent writes it:
      <prefix>/<command id>/<instance id>/<plugin>/0.<plugin>/stdout (and stderr when there is any);
    - a PowerShell command that starts EC2Launch's `sysprep --shutdown` stops the instance, as sysprep would
      once it has generalized it."""
    from moto.ec2 import ec2_backends
    from moto.s3.models import s3_backends
    from moto.ssm.models import ssm_backends

    result = _moto_send_command(self)
    commands = (self._get_param("Parameters", {}) or {}).get("commands", [])
    document = self._get_param("DocumentName")
    command_id = result.result["Command"]["CommandId"]
    command = ssm_backends[self.current_account][self.region].get_command_by_id(command_id)
    status, code, stdout, stderr = command_outcome(commands)
    plugin = "aws:runPowerShellScript" if document == "AWS-RunPowerShellScript" else "aws:runShellScript"
    for invocation in command.invocations:
        invocation.update({"Status": status, "StatusDetails": status, "ResponseCode": code, "PluginName": plugin,
                           "StandardOutputContent": stdout, "StandardErrorContent": stderr})
    if status != "Success":
        command.status = command.status_details = status
        command.error_count, command.completed_count = len(command.instance_ids), 0
    bucket = self._get_param("OutputS3BucketName")
    if bucket:
        prefix = (self._get_param("OutputS3KeyPrefix") or "").strip("/")
        folder = plugin.replace(":", "")
        s3 = s3_backends[self.current_account]["global"]
        # moto's command also lists every other instance of the region (its empty Targets filter matches them
        # all): the agents of the instances asked for are the ones that would write.
        for instance_id in self._get_param("InstanceIds", []) or command.instance_ids:
            base = "/".join(p for p in (prefix, command_id, instance_id, folder, f"0.{folder}") if p)
            for name, body in (("stdout", stdout), ("stderr", stderr)):
                if body:
                    s3.put_object(bucket, f"{base}/{name}", body.encode())
    if document == "AWS-RunPowerShellScript" and any(SYSPREP_SHUTDOWN in c for c in commands):
        ec2_backends[self.current_account][self.region].stop_instances(self._get_param("InstanceIds", []))
    return result


_moto_send_command = None


def moto_server(argv: list[str]) -> int:
    """`moto_server` with the shims above patched in (this is what the emulator starts)."""
    from moto.ec2.responses.amis import AmisResponse
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore
    from moto.s3.responses import S3Response
    from moto.server import main as moto_main
    from moto.ssm.responses import SimpleSystemManagerResponse

    SimpleSystemManagerResponse.describe_instance_information = describe_instance_information
    global _moto_send_command
    _moto_send_command = SimpleSystemManagerResponse.send_command
    SimpleSystemManagerResponse.send_command = send_command
    AmisResponse.create_image = create_image
    AmisResponse.copy_image = copy_image
    AmisResponse.enable_image_deprecation = enable_image_deprecation
    AmisResponse.describe_images = describe_images
    ElasticBlockStore.describe_snapshots = describe_snapshots
    S3Response.get_bucket_versioning = get_bucket_versioning
    moto_main(argv)
    return 0


# --------------------------------------------------------------------------------------------------
# the emulator


class Emulator:
    def __init__(self) -> None:
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
        self.dir = REPO / ".emulator" / run_id
        self.dir.mkdir(parents=True)
        latest = REPO / ".emulator" / "latest"
        try:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(run_id)
        except OSError:
            pass
        self.children: list[Child] = []
        self.router: Router | None = None
        self.moto_port = 0
        self.watch_port = 0
        self.functions: list[str] = []
        self.seed: dict[str, str] = {}
        self.state_machine_arn = ""
        self.base_env = {k: v for k, v in os.environ.items()
                         if k not in SCRUBBED_ENV and not k.startswith("AWS_ENDPOINT_URL")}
        self.base_env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"

    # -- 1. build
    def build(self) -> None:
        meta = subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=REPO, capture_output=True, text=True,
        )
        if meta.returncode != 0:
            raise SetupError(f"cargo metadata failed:\n{meta.stderr}")
        functions_dir = str(REPO / "functions") + os.sep
        self.functions = sorted(
            target["name"]
            for package in json.loads(meta.stdout)["packages"]
            if package["manifest_path"].startswith(functions_dir)
            for target in package["targets"]
            if "bin" in target["kind"]
        )
        missing = sorted(set(ASL_FUNCTIONS.values()) - set(self.functions))
        if missing:
            raise SetupError(f"bake.asl.json needs functions that are not binaries under functions/: {missing}")

        log = self.dir / "build.log"
        argv = ["cargo", "build", "--workspace", "--bins", *PROFILE_ARGS]
        say(f"building the Lambda binaries: {' '.join(argv)} (log: {self.rel(log)})")
        started = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT, env=self.base_env)
            last_note = started
            while proc.poll() is None:
                time.sleep(1)
                if time.monotonic() - last_note >= 60:
                    last_note = time.monotonic()
                    compiled = log.read_text(errors="replace").count("Compiling ")
                    say(f"  still building ({int(last_note - started)} s, {compiled} crates compiled; "
                        f"a fresh {'release build takes ~35' if RELEASE else 'build takes ~8'} min on 2 cores, "
                        "most of it aws-sdk-ec2)")
        if proc.returncode != 0:
            raise SetupError(f"cargo build failed:\n{tail(log, 60)}")
        say(f"  built {len(self.functions)} functions in {time.monotonic() - started:.0f} s")

    # -- 2. start
    def start_router(self) -> None:
        self.router = Router(self.dir / "router.log")
        threading.Thread(target=self.router.serve_forever, name="router", daemon=True).start()

    def start_moto(self) -> None:
        assert self.router
        for attempt in range(3):
            port = free_port()
            env = dict(self.base_env, MOTO_PORT=str(self.router.port), MOTO_EC2_LOAD_DEFAULT_AMIS="false")
            argv = [str(VENV_BIN / "python"), str(Path(__file__).resolve()), "moto-server",
                    "-H", "127.0.0.1", "-p", str(port)]
            child = Child("moto", argv, env, self.dir / "moto.log")
            self.children.append(child)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and child.running():
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/moto-api/")
                    if conn.getresponse().status < 500:
                        self.moto_port = self.router.moto_port = port
                        self.router.recorder = Recorder(self.dir / "calls.jsonl", f"http://127.0.0.1:{port}")
                        return
                except OSError:
                    time.sleep(0.1)
            self.stop_child(child)
            say(f"moto did not start on port {port} (attempt {attempt + 1}):\n{tail(child.log, 15)}")
        raise SetupError(f"moto_server did not start; log: {self.rel(self.dir / 'moto.log')}")

    def moto_config(self) -> None:
        # Executions only run when this is switched on, and it must be BEFORE the state machine is created.
        conn = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=10)
        conn.request("POST", "/moto-api/config", body=json.dumps({"stepfunctions": {"execute_state_machine": True}}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201 and resp.status != 200:
            raise SetupError(f"POST /moto-api/config answered {resp.status}")

    def function_env(self) -> dict[str, str]:
        assert self.router
        return {
            # The router, which records each call for the IAM check (iam_record.py) and passes it to moto.
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.router.port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": REGION,
            "GOLDEN_BUCKET": BUCKET,
            "GOLDEN_REGIONS": ",".join(REGIONS),
            "GOLDEN_STACK_NAME": "golden-ami-local",  # publish's metric line lands in watch.log
            # The schedule guard's deployment (seed_moto makes them; the state machine's name is fixed).
            "GOLDEN_STATE_MACHINE_ARN": STATE_MACHINE_ARN,
            "GOLDEN_SCHEDULE_GROUP": SCHEDULE_GROUP,
            "GOLDEN_NOTIFICATIONS_TOPIC_ARN": f"arn:aws:sns:{REGION}:{ACCOUNT}:{NOTIFICATIONS_TOPIC}",
            # The tests poll every second; a deployed stack refuses less than 15 (the default).
            "GOLDEN_MIN_POLL_SECONDS": "1",
            "RUST_LOG": "info",
        }

    def start_watch(self) -> None:
        assert self.router
        fenv = self.function_env()
        (self.dir / "functions.env").write_text("".join(f"{k}={v}\n" for k, v in fenv.items()))
        for attempt in range(3):
            port = free_port()
            # `cargo lambda watch` runs each function as `cargo run --bin NAME` (dev profile) on its first
            # invoke and keeps it running; the functions inherit watch's environment, and --env-file adds
            # the same variables explicitly. --ignore-changes: an edit must not restart functions mid-test.
            argv = ["cargo", "lambda", "watch", "--ignore-changes", "--invoke-address", "127.0.0.1",
                    "--invoke-port", str(port), "--env-file", str(self.dir / "functions.env"), *PROFILE_ARGS]
            child = Child("watch", argv, dict(self.base_env, **fenv), self.dir / "watch.log")
            self.children.append(child)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.running():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    self.watch_port = self.router.watch_port = port
                    return
                except OSError:
                    time.sleep(0.2)
            self.stop_child(child)
            say(f"cargo lambda watch did not start on port {port} (attempt {attempt + 1}):\n{tail(child.log, 15)}")
        raise SetupError(f"cargo lambda watch did not start; log: {self.rel(self.dir / 'watch.log')}")

    # -- 3. warm up
    def warm_up(self) -> None:
        assert self.router
        say(f"warming up {len(self.functions)} functions through the router")
        started = time.monotonic()
        log = self.dir / "watch.log"
        for name in self.functions:
            t0 = time.monotonic()
            offset = log.stat().st_size
            result: dict = {}

            def invoke() -> None:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.router.port, timeout=WARMUP_TIMEOUT)
                    # A dry run: the lifecycle functions plan and change nothing; the bake stages refuse it
                    # as InvalidInput without calling AWS.
                    conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=b'{"dryRun": true}',
                                 headers={"X-Emulator-Invoke-Timeout": str(WARMUP_TIMEOUT)})
                    resp = conn.getresponse()
                    result.update(status=resp.status, error=resp.getheader("X-Amz-Function-Error"),
                                  body=resp.read())
                except OSError as err:
                    result.update(exc=err)

            thread = threading.Thread(target=invoke, daemon=True)
            thread.start()
            noted = False
            while thread.is_alive():
                thread.join(0.2)
                with open(log, "rb") as f:
                    f.seek(offset)
                    new = f.read().decode(errors="replace")
                # watch logs this when the function process ends; the invoke would then hang.
                if "ERROR command exited" in new or "could not compile" in new:
                    raise SetupError(f"function {name} could not start:\n{tail(log, 30)}")
                if not noted and time.monotonic() - t0 > 15:
                    noted = True
                    say(f"  {name} is still starting (cargo may be compiling it; log: {self.rel(log)})")
                if time.monotonic() - t0 > WARMUP_TIMEOUT:
                    raise SetupError(f"function {name} did not answer within {WARMUP_TIMEOUT} s:\n{tail(log)}")
            if "exc" in result or result.get("status") != 200:
                raise SetupError(f"warm-up invoke of {name} failed: {result}\n{tail(log, 30)}")
            outcome = "error " + json.loads(result["body"]).get("errorType", "?") if result["error"] else "ok"
            if outcome == "error Sandbox.Timedout":
                raise SetupError(f"function {name} did not answer within {WARMUP_TIMEOUT} s:\n{tail(log)}")
            say(f"  {name}: up in {time.monotonic() - t0:.1f} s ({outcome} for a dry run)")
        say(f"  all functions up in {time.monotonic() - started:.1f} s")

    # -- 4. seed
    def seed_moto(self) -> None:
        import boto3

        endpoint = f"http://127.0.0.1:{self.moto_port}"

        def client(service: str, region: str = REGION):
            return boto3.client(service, region_name=region, endpoint_url=endpoint,
                                aws_access_key_id="test", aws_secret_access_key="test")

        ec2 = client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(
            VpcId=vpc, CidrBlock="10.42.1.0/24", AvailabilityZone=f"{REGION}a",
            TagSpecifications=[{"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": SUBNET_NAME}]}],
        )["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName="golden-ami-builder", Description="golden-ami builders",
                                       VpcId=vpc)["GroupId"]

        iam = client("iam")
        iam.create_role(RoleName=INSTANCE_PROFILE, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                           "Action": "sts:AssumeRole"}]}))
        iam.create_instance_profile(InstanceProfileName=INSTANCE_PROFILE)
        iam.add_role_to_instance_profile(InstanceProfileName=INSTANCE_PROFILE, RoleName=INSTANCE_PROFILE)

        # moto's RegisterImage makes an available image with a real (auto-created) root snapshot.
        base_ami = ec2.register_image(
            Name="al2023-base-emulator", Description="base AMI seeded by scripts/emulator.py",
            Architecture="x86_64", RootDeviceName="/dev/xvda", VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "VolumeType": "gp3"}}],
        )["ImageId"]
        ec2.create_tags(Resources=[base_ami], Tags=[{"Key": "Name", "Value": "al2023-base-emulator"}])
        client("ssm").put_parameter(Name=BASE_AMI_PARAMETER, Value=base_ami, Type="String",
                                    DataType="aws:ec2:image", Overwrite=True)

        s3 = client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

        # The recipe files name resources of a real account; the emulator's ids replace them so that a bake
        # here launches into the seeded subnet from the seeded base AMI. The seeded parameter replaces the
        # public AL2023 one, which does not resolve to an image that exists in this moto (its built-in AMIs
        # are switched off); a recipe that names base_ami keeps it. Copies go to both other regions so every
        # bake exercises the Map with two items.
        pushed = []
        for path in sorted(RECIPES.glob("*.toml")):
            with open(path, "rb") as f:
                recipe = tomllib.load(f)
            if "base_ami_parameter" in recipe:
                recipe["base_ami_parameter"] = BASE_AMI_PARAMETER
            recipe.update(subnet_id=subnet, security_group_ids=[sg],
                          instance_profile=INSTANCE_PROFILE, build_region=REGION, copy_to_regions=COPY_REGIONS)
            s3.put_object(Bucket=BUCKET, Key=f"recipes/{recipe['type']}.json",
                          Body=json.dumps(recipe, indent=2).encode(), ContentType="application/json")
            pushed.append(recipe["type"])
        # The stack's notifications topic and bake schedules, each with the template's schedule input.
        client("sns").create_topic(Name=NOTIFICATIONS_TOPIC)
        scheduler = client("scheduler")
        scheduler.create_schedule_group(Name=SCHEDULE_GROUP)
        schedule_input = template_schedule_input()
        for ty in pushed:
            # Named as CloudFormation names them (not after the type): the guard finds them by their input.
            alnum = "".join(c for c in ty if c.isalnum())
            scheduler.create_schedule(
                GroupName=SCHEDULE_GROUP, Name=f"golden-ami-local-Bake{alnum}-SEEDED",
                ScheduleExpression="cron(10 1 * * ? *)",
                ScheduleExpressionTimezone="UTC", FlexibleTimeWindow={"Mode": "OFF"}, State="ENABLED",
                Target={"Arn": STATE_MACHINE_ARN, "RoleArn": SCHEDULER_ROLE,
                        "Input": schedule_input.replace("${Type}", ty),
                        "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}})
        self.seed = {"subnet": subnet, "security_group": sg, "base_ami": base_ami, "vpc": vpc}
        say(f"seeded moto: vpc {vpc}, subnet {subnet}, sg {sg}, base AMI {base_ami} "
            f"({BASE_AMI_PARAMETER}), s3://{BUCKET} with recipes {', '.join(pushed) or '(none)'}, "
            f"bake schedules in {SCHEDULE_GROUP}, topic {NOTIFICATIONS_TOPIC}")

        # -- the state machine, from the real ASL
        text = ASL.read_text()
        unknown = sorted(set(re.findall(r"\$\{([^}]*)\}", text)) - set(ASL_FUNCTIONS))
        if unknown:
            raise SetupError(f"{self.rel(ASL)} has substitutions the emulator does not know: {unknown}")
        for key, fn in ASL_FUNCTIONS.items():
            text = text.replace("${" + key + "}", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn}")
        if "${" in text:
            raise SetupError(f"{self.rel(ASL)} still has a '${{' after substitution")
        json.loads(text)
        sfn = client("stepfunctions")
        self.state_machine_arn = sfn.create_state_machine(
            name=STATE_MACHINE, definition=text, roleArn=STATE_MACHINE_ROLE, type="STANDARD",
        )["stateMachineArn"]
        if self.state_machine_arn != STATE_MACHINE_ARN:
            raise SetupError(f"the state machine is {self.state_machine_arn}, not {STATE_MACHINE_ARN} as the "
                             "functions were told (GOLDEN_STATE_MACHINE_ARN)")
        (self.dir / "bake.asl.json").write_text(text)
        say(f"created state machine {self.state_machine_arn}")

    # -- 5. CMD
    def cmd_env(self) -> dict[str, str]:
        assert self.router
        env = dict(self.base_env)
        env.update(
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.moto_port}",
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,  # boto3 and the AWS CLI read this one, not AWS_REGION
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            GOLDEN_BUCKET=BUCKET,
            GOLDEN_STATE_MACHINE_ARN=self.state_machine_arn,
            GOLDEN_REGIONS=",".join(REGIONS),
            GOLDEN_MIN_POLL_SECONDS="1",
            GOLDEN_LAMBDA_ENDPOINT=f"http://127.0.0.1:{self.router.port}",
            GOLDEN_SEED_SUBNET_ID=self.seed["subnet"],
            GOLDEN_SEED_SECURITY_GROUP_ID=self.seed["security_group"],
            GOLDEN_SEED_BASE_AMI=self.seed["base_ami"],
            GOLDEN_SEED_BASE_AMI_PARAMETER=BASE_AMI_PARAMETER,
            GOLDEN_SEED_INSTANCE_PROFILE=INSTANCE_PROFILE,
            GOLDEN_SCHEDULE_GROUP=SCHEDULE_GROUP,
            GOLDEN_NOTIFICATIONS_TOPIC_ARN=f"arn:aws:sns:{REGION}:{ACCOUNT}:{NOTIFICATIONS_TOPIC}",
            GOLDEN_EMULATOR_DIR=str(self.dir),
            GOLDEN_EMULATOR="1",
        )
        return env

    # -- teardown
    def stop_child(self, child: Child) -> None:
        survivors = child.stop()
        if survivors:
            say(f"WARNING: {child.name} left processes behind after SIGKILL: {survivors}")

    def teardown(self) -> None:
        for child in reversed(self.children):
            self.stop_child(child)
        self.children.clear()
        if self.router:
            self.router.shutdown()
            self.router.server_close()
            self.router = None
        # Anything else re-parented to us (we are a child subreaper) is a leftover of ours too.
        left = [p for p in descendants(os.getpid()) if alive(p)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            say(f"killed leftover processes {left}")

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(REPO))
        except ValueError:
            return str(path)

    def log_hint(self) -> str:
        return f"logs: {self.rel(self.dir)}/ (build.log, moto.log, watch.log, router.log)"


class Terminated(BaseException):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


def prune_old_runs(keep: int = 10) -> None:
    root = REPO / ".emulator"
    runs = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and p.name[:8].isdigit())
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def run(cmd: list[str]) -> int:
    # Explicit, also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGHUP, _raise_terminated)
    set_child_subreaper()
    emu = Emulator()
    prune_old_runs()
    say(f"run directory {emu.rel(emu.dir)}/")
    proc: subprocess.Popen | None = None
    code = 1
    try:
        t0 = time.monotonic()
        emu.build()
        t1 = time.monotonic()
        emu.start_router()
        emu.start_moto()
        emu.moto_config()
        emu.start_watch()
        emu.warm_up()
        emu.seed_moto()
        assert emu.router
        say(f"ready in {time.monotonic() - t1:.1f} s after the build ({time.monotonic() - t0:.0f} s in all): "
            f"moto 127.0.0.1:{emu.moto_port}, router 127.0.0.1:{emu.router.port}, "
            f"cargo lambda watch 127.0.0.1:{emu.watch_port}")
        say(f"running: {' '.join(cmd)}")
        try:
            proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=emu.cmd_env())
        except OSError as err:
            raise SetupError(f"cannot run {cmd[0]}: {err}") from err
        code = proc.wait()
        if code < 0:
            code = 128 - code
        say(f"{cmd[0]} exited with {code}")
    except SetupError as err:
        say(f"SETUP FAILED: {err}")
        say(emu.log_hint())
        code = 3
    except Exception as err:  # e.g. a seeding call that moto refused
        import traceback

        traceback.print_exc()
        say(f"SETUP FAILED: {type(err).__name__}: {err}\n  moto.log:\n{tail(emu.dir / 'moto.log', 20)}")
        say(emu.log_hint())
        code = 3
    except (KeyboardInterrupt, Terminated) as err:
        signum = err.signum if isinstance(err, Terminated) else signal.SIGINT
        say(f"interrupted ({signal.Signals(signum).name}); tearing down")
        if proc and proc.poll() is None:
            # On Ctrl-C the terminal already sent SIGINT to CMD (same process group); otherwise pass it on.
            if signum != signal.SIGINT:
                proc.send_signal(signum)
            try:
                proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, KeyboardInterrupt, Terminated):
                proc.kill()
                proc.wait()
        code = 128 + signum
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        emu.teardown()
        say(f"stopped everything; {emu.log_hint()}")
    return code


def main(argv: list[str]) -> int:
    if argv and argv[0] == "moto-server":
        return moto_server(argv[1:])
    if len(argv) >= 2 and argv[0] == "run":
        cmd = argv[1:]
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        if cmd:
            return run(cmd)
    print("usage: scripts/emulator run -- CMD [ARGS...]   (see scripts/emulator)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
