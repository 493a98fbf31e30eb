"""The emulator's call recorder: every AWS API call a function makes, for `make test`'s IAM check.

The functions' AWS_ENDPOINT_URL is the emulator's router, which passes each call on to moto and, when the
caller is one of our functions, hands it to `Recorder` first. A function names itself in its user agent
(`app/golden-ami-<Stage>`, golden_core::aws::load_function_config); the test harness and the emulator's own
seeding talk to moto directly, so nothing of theirs is recorded.

One JSON line per call in <emulator run>/calls.jsonl:
  stage, service, region, operation, params (the request, flattened), status (moto's HTTP status),
  tags ({resource id: {key: value}} of every resource the request names, read from moto just BEFORE the
  call, since IAM evaluates a resource's tags as they are when it is called), created (ids the call made,
  with their tags just after it), roles ({instance profile: role ARN} for RunInstances' iam:PassRole),
  motoSeconds (moto's answer) and routerSeconds (the call's whole time in the emulator, these lookups too).

What IAM authorizes for each call (actions, resource ARNs, condition keys) is modelled from these records by
scripts/iam_check.py, not here: this module only observes.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

APP_PREFIX = "golden-ami-"
USER_AGENT_APP = re.compile(r"\bapp/" + re.escape(APP_PREFIX) + r"([A-Za-z0-9]+)")
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
EC2_ID = re.compile(r"^(i|ami|snap|vol|subnet|sg|eni|lt)-[0-9a-f]+$")


def stage_of(headers) -> str | None:
    """The calling function's stage from its user agent, or None for any other caller."""
    for name in ("x-amz-user-agent", "user-agent"):
        match = USER_AGENT_APP.search(headers.get(name, "") or "")
        if match:
            return match.group(1)
    return None


def _xml_texts(body: bytes, tag: str) -> list[str]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    return [el.text or "" for el in root.iter() if el.tag.rsplit("}", 1)[-1] == tag]


def parse_request(method: str, path: str, headers, body: bytes) -> dict:
    """service, region, operation and params of a signed AWS request (Query, JSON or S3 REST protocol)."""
    scope = CREDENTIAL_SCOPE.search(headers.get("Authorization", "") or "")
    region, service = (scope.group(1), scope.group(2)) if scope else ("", "")
    raw_path, _, query = path.partition("?")
    target = headers.get("X-Amz-Target", "") or ""
    if service == "s3":
        parts = urllib.parse.unquote(raw_path).lstrip("/").split("/", 1)
        bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
        q = {k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        return {"service": service, "region": region, "operation": _s3_operation(method, key, q, headers),
                "params": {"Bucket": bucket, "Key": key, **{f"?{k}": v for k, v in q.items()},
                           **{h: headers[h] for h in ("If-Match", "If-None-Match") if headers.get(h)}}}
    if service == "scheduler":  # REST-JSON: /schedules/<name>, the group in the query (GET) or the body
        name = urllib.parse.unquote(raw_path).rstrip("/").rsplit("/", 1)[-1]
        q = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        operation = {"GET": "GetSchedule", "PUT": "UpdateSchedule", "POST": "CreateSchedule",
                     "DELETE": "DeleteSchedule"}.get(method, f"{method}Schedule")
        if raw_path.rstrip("/") == "/schedules" and method == "GET":
            operation, name = "ListSchedules", ""
        elif not raw_path.startswith("/schedules/"):
            operation = f"{method} {raw_path}"  # not a schedule call: iam_check.py has no model and says so
        params.update(Name=name, **({"GroupName": q["groupName"]} if "groupName" in q else {}))
        if "ScheduleGroup" in q:
            params["GroupName"] = q["ScheduleGroup"]
        return {"service": service, "region": region, "operation": operation, "params": params}
    if target:  # JSON protocol: X-Amz-Target is Service_Version.Operation
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        return {"service": service, "region": region, "operation": target.rsplit(".", 1)[-1], "params": params}
    form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
    return {"service": service, "region": region, "operation": form.pop("Action", "?"), "params": form}


def _s3_operation(method: str, key: str, q: dict, headers) -> str:
    if not key:
        if method == "GET":
            if "versions" in q:
                return "ListObjectVersions"
            return "ListObjectsV2" if q.get("list-type") == "2" else "ListObjects"
        return {"HEAD": "HeadBucket"}.get(method, f"{method}Bucket")
    if method == "PUT":
        return "CopyObject" if headers.get("x-amz-copy-source") else "PutObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, f"{method}Object")


# Request parameters that name an EC2 resource (Query protocol, flattened: InstanceId.1, ...; SSM: InstanceIds).
ID_PARAM = re.compile(r"^(?:NetworkInterface\.\d+\.)?(InstanceIds?|ImageId|SourceImageId|SnapshotId|VolumeId|SubnetId"
                      r"|SecurityGroupId|ResourceId|Targets)(\.\d+)*$")


def named_ids(call: dict) -> list[str]:
    """The EC2 resource ids a request names (instances, images, snapshots, ...); tag values are not ids."""
    values: list = []
    for key, value in call["params"].items():
        if ID_PARAM.match(key):
            values.extend(value if isinstance(value, list) else [value])
    return sorted({v for v in values if isinstance(v, str) and EC2_ID.match(v)})


class Recorder:
    """Writes one JSON line per function call to `path`; reads tags from moto through `ec2(region)`."""

    def __init__(self, path: Path, moto_endpoint: str):
        self.path = path
        self.endpoint = moto_endpoint
        self.lock = threading.Lock()
        self.clients: dict[tuple[str, str], object] = {}
        self.file = open(path, "a", buffering=1)

    def client(self, service: str, region: str):
        import boto3

        with self.lock:
            if (service, region) not in self.clients:
                self.clients[(service, region)] = boto3.client(
                    service, region_name=region or "us-east-1", endpoint_url=self.endpoint,
                    aws_access_key_id="recorder", aws_secret_access_key="recorder")
            return self.clients[(service, region)]

    def tags(self, region: str, ids: list[str]) -> dict[str, dict[str, str]]:
        if not ids:
            return {}
        out: dict[str, dict[str, str]] = {i: {} for i in ids}
        pages = self.client("ec2", region).get_paginator("describe_tags").paginate(
            Filters=[{"Name": "resource-id", "Values": ids}])
        for page in pages:
            for tag in page["Tags"]:
                out.setdefault(tag["ResourceId"], {})[tag["Key"]] = tag["Value"]
        return out

    def begin(self, method: str, path: str, headers, body: bytes) -> dict | None:
        stage = stage_of(headers)
        if stage is None:
            return None
        call = {"stage": stage, **parse_request(method, path, headers, body)}
        try:
            ids = named_ids(call) if call["service"] in ("ec2", "ssm") else []
            call["tags"] = self.tags(call["region"], ids)
            source_region = call["params"].get("SourceRegion")
            if call["operation"] == "CopyImage" and source_region:
                call["tags"].update(self.tags(source_region, [call["params"].get("SourceImageId", "")]))
            profile = call["params"].get("IamInstanceProfile.Name") or call["params"].get("IamInstanceProfile.Arn")
            if call["operation"] == "RunInstances" and profile:
                iam = self.client("iam", call["region"])
                try:
                    roles = iam.get_instance_profile(InstanceProfileName=profile.rsplit("/", 1)[-1])[
                        "InstanceProfile"]["Roles"]
                except iam.exceptions.NoSuchEntityException:
                    roles = []  # EC2 refuses the launch; no role is passed
                call["roles"] = {profile: [r["Arn"] for r in roles]}
        except Exception as err:  # noqa: BLE001 (a lookup that fails is recorded, never fatal to the call)
            call["lookupError"] = f"{type(err).__name__}: {err}"
        return call

    def finish(self, call: dict, status: int, body: bytes, began: float | None = None) -> None:
        """Completes `call` with moto's answer and writes its line; `began` (time.monotonic() when the router
        took the request) adds `routerSeconds`, the call's time in the emulator including these lookups."""
        call["status"] = status
        try:
            created: list[str] = []
            if status < 300 and call["operation"] == "RunInstances":
                created = _xml_texts(body, "instanceId") + _xml_texts(body, "volumeId")
            elif status < 300 and call["operation"] in ("CreateImage", "CopyImage"):
                images = _xml_texts(body, "imageId")
                created = list(images)
                if images:
                    described = self.client("ec2", call["region"]).describe_images(ImageIds=images)["Images"]
                    created += [m["Ebs"]["SnapshotId"] for i in described for m in i.get("BlockDeviceMappings", [])
                                if m.get("Ebs", {}).get("SnapshotId")]
            if created:
                call["created"] = self.tags(call["region"], sorted(set(created)))
        except Exception as err:  # noqa: BLE001
            call["lookupError"] = f"{type(err).__name__}: {err}"
        if began is not None:
            call["routerSeconds"] = round(time.monotonic() - began, 4)
        line = json.dumps(call, sort_keys=True)
        with self.lock:
            self.file.write(line + "\n")
