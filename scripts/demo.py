#!/usr/bin/env python3
"""Bake one golden AMI on the local emulator and show what came out.

Run it inside the emulator (it needs the environment that `scripts/emulator run` sets):
    scripts/emulator run -- .venv/bin/python scripts/demo.py      (or: make demo)

Starts an execution of the `bake` state machine for bld-linux64, follows it state by state, then prints the
outcome, the published manifest, the golden AMIs per region and what became of the builder instance.
Exits non-zero unless the execution succeeded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone

import boto3
from botocore.exceptions import ClientError

IMAGE_TYPE = "bld-linux64"
TIMEOUT_SECONDS = 15 * 60


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"demo: {name} is not set; run me as: scripts/emulator run -- .venv/bin/python scripts/demo.py")
    return value


def tag(tags: list[dict] | None, key: str) -> str:
    return next((t["Value"] for t in tags or [] if t["Key"] == key), "-")


def table(headers: list[str], rows: list[list[str]]) -> None:
    if not rows:
        print("  (none)")
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def follow(sfn, execution_arn: str) -> dict:
    """Print each state entered (and each failed Lambda call) until the execution ends."""
    started = time.monotonic()
    seen = 0
    while True:
        described = sfn.describe_execution(executionArn=execution_arn)
        events, token = [], None
        while True:
            page = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000,
                                             **({"nextToken": token} if token else {}))
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                break
        for event in events[seen:]:
            elapsed = time.monotonic() - started
            if event["type"].endswith("StateEntered"):
                print(f"  {elapsed:6.1f}s  {event['stateEnteredEventDetails']['name']}", flush=True)
            elif event["type"] == "LambdaFunctionFailed":
                details = event.get("lambdaFunctionFailedEventDetails", {})
                print(f"  {elapsed:6.1f}s    ! {details.get('error', '?')}", flush=True)
        seen = len(events)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() - started > TIMEOUT_SECONDS:
            print(f"demo: still RUNNING after {TIMEOUT_SECONDS} s; stopping the execution")
            sfn.stop_execution(executionArn=execution_arn, error="DemoTimeout", cause="demo.py gave up waiting")
            return sfn.describe_execution(executionArn=execution_arn)
        time.sleep(0.5)


def main() -> int:
    state_machine = env("GOLDEN_STATE_MACHINE_ARN")
    bucket = env("GOLDEN_BUCKET")
    regions = env("GOLDEN_REGIONS").split(",")
    env("AWS_ENDPOINT_URL")  # boto3 honours it: every call below goes to the emulator
    region = env("AWS_REGION")  # boto3 reads only AWS_DEFAULT_REGION; be explicit
    sfn = boto3.client("stepfunctions", region_name=region)

    name = f"demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    execution_input = {"type": IMAGE_TYPE, "pollSeconds": 1}
    print(f"Baking {IMAGE_TYPE}: execution {name} of {state_machine}")
    print(f"  input {json.dumps(execution_input)}")
    execution_arn = sfn.start_execution(stateMachineArn=state_machine, name=name,
                                        input=json.dumps(execution_input))["executionArn"]
    result = follow(sfn, execution_arn)

    status = result["status"]
    print(f"\nExecution {status}")
    if status != "SUCCEEDED":
        print(f"  error: {result.get('error', '-')}")
        print(f"  cause: {result.get('cause', '-')}")

    print(f"\ns3://{bucket}/manifest.json")
    try:
        body = boto3.client("s3", region_name=region).get_object(Bucket=bucket, Key="manifest.json")["Body"].read()
        print("\n".join("  " + line for line in json.dumps(json.loads(body), indent=2).splitlines()))
    except ClientError as err:
        print(f"  (not there: {err.response['Error'].get('Code', err)})")

    print("\nGolden AMIs (owned by this account, tagged golden-ami:role=image)")
    rows = []
    for region in regions:
        images = boto3.client("ec2", region_name=region).describe_images(
            Owners=["self"], Filters=[{"Name": "tag:golden-ami:role", "Values": ["image"]}])["Images"]
        for image in sorted(images, key=lambda i: i.get("CreationDate", "")):
            rows.append([region, image["ImageId"], image.get("Name", "-"), image.get("State", "-"),
                         tag(image.get("Tags"), "golden-ami:version")])
    table(["region", "image", "name", "state", "version"], rows)

    print("\nBuilders (instances tagged golden-ami:role=builder)")
    rows = []
    for region in regions:
        reservations = boto3.client("ec2", region_name=region).describe_instances(
            Filters=[{"Name": "tag:golden-ami:role", "Values": ["builder"]}])["Reservations"]
        for instance in (i for r in reservations for i in r["Instances"]):
            rows.append([region, instance["InstanceId"], instance["State"]["Name"],
                         tag(instance.get("Tags"), "golden-ami:execution")])
    table(["region", "instance", "state", "execution"], rows)

    return 0 if status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
