#!/usr/bin/env python3
"""Every EventBridge rule of infra/template.yaml matches its sample events in events/, and only those.

Run it inside the emulator (it needs the AWS_ENDPOINT_URL that `scripts/emulator run` exports):
    scripts/emulator run -- .venv/bin/python scripts/test_event_rules.py [--template PATH]

Takes the Pattern of every `EventBridgeRule` event source of the template's functions, creates each as a rule
on a fresh event bus of the emulator, each targeting its own SQS queue (moto's PutEvents delivers only to SQS,
Logs and buses: a Lambda target makes it fail), puts every events/*.json envelope (the files with a
"detail-type") plus a few in-memory near misses, and asserts which rules received which events against
EXPECTED below. A rule in the template but not in EXPECTED (or the reverse) fails too, so a new rule comes with
its expectations. Prints one line per check, then `event rules: N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import uuid
from pathlib import Path

import boto3
import yaml
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parent.parent
# What `!Ref BakeStateMachine` is in the samples (the emulator's state machine is named `bake`).
STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:bake"
REFS = {"BakeStateMachine": STATE_MACHINE_ARN}

# (function, event source) -> the samples its rule must receive; every other sample must miss it.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("PruneInstanceTerminated", "EventPattern"): {"ec2-terminated"},
    ("ReapBuildersFunction", "BakeExecutionEnded"): {
        "sfn-execution-failed", "sfn-execution-timed-out", "sfn-execution-aborted"},
    ("ReapBuildersFunction", "InstanceStateChange"): {"ec2-running", "ec2-stopped"},
    ("ScheduleGuardFunction", "BakeEndedBadly"): {
        "sfn-execution-failed", "sfn-execution-timed-out", "sfn-execution-aborted"},
    ("EnforceFreshnessFunction", "InstanceRunning"): {"ec2-running"},
    # Rules of their own (AWS::Events::Rule), whose target is the notifications topic.
    ("BakeEndedBadlyNotification", "EventPattern"): {
        "sfn-execution-failed", "sfn-execution-timed-out", "sfn-execution-aborted"},
    ("BakePublishedNotification", "EventPattern"): {
        "sfn-execution-succeeded", "(in memory) sfn-execution-succeeded"},
}
# Each function's schedule events (checked on the template only: moto never fires schedules).
SCHEDULES: dict[tuple[str, str], str] = {
    ("PruneFunction", "DailySchedule"): "cron(0 3 * * ? *)",
    ("ReapBuildersFunction", "Sweep"): "rate(15 minutes)",
    ("EnforceFreshnessFunction", "Sweep"): "rate(1 hour)",
}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short tags (!Ref, !GetAtt, !Sub, ...) as their long forms."""


def _short_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_tag)


def resolve(value, where: str):
    """The pattern with each `Ref` replaced by its sample value; any other intrinsic is an error."""
    if isinstance(value, dict):
        if len(value) == 1 and ("Ref" in value or next(iter(value)).startswith("Fn::")):
            name = value.get("Ref")
            if name in REFS:
                return REFS[name]
            sys.exit(f"test_event_rules: {where}: cannot resolve {value} (known: Ref {', '.join(REFS)})")
        return {k: resolve(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, where) for v in value]
    return value


def template_events(path: Path) -> tuple[dict[tuple[str, str], dict], dict[tuple[str, str], object]]:
    """(function, event) -> resolved Pattern of each EventBridgeRule and (rule, "EventPattern") -> that of
    each AWS::Events::Rule; (function, event) -> Schedule of each Schedule."""
    template = yaml.load(path.read_text(), Loader=CfnLoader)
    patterns, schedules = {}, {}
    for name, resource in template["Resources"].items():
        if not isinstance(resource, dict):  # an Fn::ForEach loop: schedules and alarms, no rule
            continue
        if resource.get("Type") == "AWS::Events::Rule" and "EventPattern" in resource["Properties"]:
            patterns[(name, "EventPattern")] = resolve(resource["Properties"]["EventPattern"], name)
            continue
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event, source in (resource["Properties"].get("Events") or {}).items():
            props = source.get("Properties") or {}
            if source["Type"] == "EventBridgeRule":
                patterns[(name, event)] = resolve(props["Pattern"], f"{name}.Events.{event}")
            elif source["Type"] == "Schedule":
                schedules[(name, event)] = props.get("Schedule")
    return patterns, schedules


def samples() -> dict[str, dict]:
    """Every envelope in events/ plus in-memory near misses that no rule may take."""
    found = {}
    for file in sorted((ROOT / "events").glob("*.json")):
        body = json.loads(file.read_text())
        if isinstance(body, dict) and "detail-type" in body:
            found[file.stem] = body
    files = {n for n in set().union(*EXPECTED.values()) if not n.startswith("(in memory)")}
    missing = (files | {"scheduled-event"}) - set(found)
    if missing:
        sys.exit(f"test_event_rules: events/ lacks {', '.join(sorted(missing))}.json")

    def variant(base: str, edit) -> dict:
        event = copy.deepcopy(found[base])
        edit(event)
        return event

    def detail(**changes):
        return lambda e: e["detail"].update(changes)

    def set_source(source: str):
        return lambda e: e.update(source=source)

    found.update({
        "(in memory) sfn-execution-succeeded": variant(
            "sfn-execution-failed", detail(status="SUCCEEDED", error=None, cause=None, output="{}")),
        "(in memory) sfn-execution-running": variant(
            "sfn-execution-failed", detail(status="RUNNING", stopDate=None, error=None, cause=None)),
        "(in memory) sfn-execution-failed of another state machine": variant(
            "sfn-execution-failed",
            detail(stateMachineArn="arn:aws:states:us-east-1:123456789012:stateMachine:other")),
        "(in memory) ec2-pending": variant("ec2-running", detail(state="pending")),
        "(in memory) ec2-stopping": variant("ec2-running", detail(state="stopping")),
        "(in memory) ec2-shutting-down": variant("ec2-running", detail(state="shutting-down")),
        "(in memory) ec2-terminated from a custom source": variant("ec2-terminated", set_source("golden-ami.test")),
    })
    return found


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def check(self, ok: bool, line: str, detail: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"ok    {line}")
        else:
            self.failed += 1
            print(f"FAIL  {line}{': ' + detail if detail else ''}")


def rule_name(key: tuple[str, str]) -> str:
    return f"{key[0]}-{key[1]}"[:64]


def drain(sqs, queue_url: str) -> list[dict]:
    messages = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  VisibilityTimeout=300).get("Messages", [])
        if not got:
            return messages
        messages += [json.loads(m["Body"]) for m in got]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=ROOT / "infra" / "template.yaml")
    args = parser.parse_args()
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        sys.exit("test_event_rules: AWS_ENDPOINT_URL is not set; run me as: "
                 "scripts/emulator run -- .venv/bin/python scripts/test_event_rules.py")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    checks = Checks()
    patterns, schedules = template_events(args.template)
    for key in sorted(set(EXPECTED) | set(patterns)):
        checks.check(key in patterns and key in EXPECTED, f"rule {'.'.join(key)} is in the template and EXPECTED",
                     "only in EXPECTED" if key not in patterns else "only in the template: add its expectations")
    for key, expression in sorted(SCHEDULES.items()):
        checks.check(schedules.get(key) == expression, f"schedule {'.'.join(key)} is {expression}",
                     f"template says {schedules.get(key)!r}")
    for key in sorted(set(schedules) - set(SCHEDULES)):
        checks.check(False, f"schedule {'.'.join(key)} is expected", "only in the template: add it to SCHEDULES")

    sent = samples()
    names = list(sent)
    events_client = boto3.client("events", endpoint_url=endpoint, region_name=region)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=region)
    run = uuid.uuid4().hex[:8]
    bus = f"golden-ami-rules-{run}"
    events_client.create_event_bus(Name=bus)
    queues: dict[tuple[str, str], str] = {}
    try:
        for i, (key, pattern) in enumerate(sorted(patterns.items())):
            queues[key] = queue_url = sqs.create_queue(QueueName=f"rules-{run}-{i}")["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            events_client.put_rule(Name=rule_name(key), EventBusName=bus, EventPattern=json.dumps(pattern))
            events_client.put_targets(Rule=rule_name(key), EventBusName=bus,
                                      Targets=[{"Id": "queue", "Arn": queue_arn}])

        by_id: dict[str, str] = {}
        for start in range(0, len(names), 10):  # PutEvents takes at most 10 entries
            batch = names[start:start + 10]
            answer = events_client.put_events(Entries=[{
                "EventBusName": bus,
                "Source": sent[n]["source"],
                "DetailType": sent[n]["detail-type"],
                "Detail": json.dumps(sent[n]["detail"]),
                "Resources": sent[n]["resources"],
            } for n in batch])
            if answer.get("FailedEntryCount"):
                sys.exit(f"test_event_rules: PutEvents rejected entries: {answer['Entries']}")
            by_id.update({entry["EventId"]: n for n, entry in zip(batch, answer["Entries"])})

        for key, queue_url in sorted(queues.items()):
            received: dict[str, dict] = {}
            for message in drain(sqs, queue_url):
                received[by_id.get(message.get("id"), f"unknown event {message.get('id')}")] = message
            want = EXPECTED.get(key, set())
            for name in names:
                hit = name in received
                should = name in want
                ok = hit == should and (not hit or received[name]["detail"] == sent[name]["detail"])
                checks.check(ok, f"{'.'.join(key)} {'receives' if should else 'ignores'} {name}",
                             "received it" if hit and not should else
                             "did not receive it" if should and not hit else "detail changed in delivery")
            for name in sorted(set(received) - set(names)):
                checks.check(False, f"{'.'.join(key)} receives only the samples", name)
    finally:
        # Tidy for a long-lived moto; a rule that was never created is not an error here.
        for key, queue_url in queues.items():
            with contextlib.suppress(ClientError):
                events_client.remove_targets(Rule=rule_name(key), EventBusName=bus, Ids=["queue"])
                events_client.delete_rule(Name=rule_name(key), EventBusName=bus)
            sqs.delete_queue(QueueUrl=queue_url)
        events_client.delete_event_bus(Name=bus)

    print(f"event rules: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
