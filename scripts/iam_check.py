#!/usr/bin/env python3
"""The IAM check of `make test`: every AWS call the functions made, evaluated against their own policies.

moto enforces no IAM, so the emulator proves the flow but not the permissions. This check closes that gap:

  1. The policies: infra/template.yaml translated by the SAM translator (what `sam build`/CloudFormation
     deploy), each function's role resolved to plain policy documents for the emulator's account, region,
     bucket and state machine (the names come from scripts/emulator.py).
  2. The calls: <emulator run>/calls.jsonl, every call each function made during the run (iam_record.py),
     turned into the authorization requests IAM makes for it: the action, each resource ARN it authorizes
     and the condition keys of that resource (its tags as they were at call time, the request's tags,
     ec2:CreateAction for tag-on-create, the S3 key, the role passed, ...). One call can be several
     requests: RunInstances is authorized on the image, the instance, its volume, network interface, subnet
     and security groups, plus ec2:CreateTags for each tagged resource type and iam:PassRole for the role.
  3. Each request evaluated by a real IAM evaluator (scripts/iam-simulate.mjs, @cloud-copilot/iam-simulate)
     against that function's policies. Every one must be allowed.
  4. Least privilege the other way round: every action a function is granted that no call exercised must
     be listed with its reason in infra/iam/unexercised.toml; a listed action that is now exercised or no
     longer granted is a stale entry. Both fail the check.
  5. The negative cases of infra/iam/cases.toml (what each role must NOT be able to do, each beside the
     allowed request it differs from), plus generated ones: only publish writes manifest.json, nobody writes
     recipes/. Every expectation must hold.

Usage: scripts/iam_check.py [CALLS.jsonl]   (default: $GOLDEN_EMULATOR_DIR/calls.jsonl)
       scripts/iam_check.py --policies      print each function's resolved policies and exit
       scripts/iam_check.py --expanded      print the template with Fn::ForEach expanded (JSON) and exit
       scripts/iam_check.py --translated    print it SAM-translated too, as CloudFormation gets it, and exit
       scripts/iam_check.py --without FUNCTION:SID [...] [CALLS.jsonl]
                                            the check without that statement of the function's policy: how
                                            `make check-iam` proves the check fails when a needed grant goes
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulator import (  # noqa: E402
    ACCOUNT, BUCKET, INSTANCE_PROFILE, NOTIFICATIONS_TOPIC, REGION, SCHEDULE_GROUP, SCHEDULER_ROLE, STATE_MACHINE,
)

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "infra" / "template.yaml"
CASES = REPO / "infra" / "iam" / "cases.toml"
UNEXERCISED = REPO / "infra" / "iam" / "unexercised.toml"
SIMULATOR = REPO / "scripts" / "iam-simulate.mjs"
PARTITION = "aws"
STACK = "golden-ami"  # the stack name of infra/samconfig.toml's default environment
BUILDER_INSTANCE = "builder-instance"  # the builder's instance role, in the cases

# The physical names CloudFormation would give the template's resources, as the emulator has them.
PHYSICAL = {
    "GoldenBucket": BUCKET,
    "BakeStateMachine": f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}:stateMachine:{STATE_MACHINE}",
    "BakeScheduleGroup": SCHEDULE_GROUP,
    "NotificationsTopic": f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{NOTIFICATIONS_TOPIC}",
}
ATTRIBUTES = {
    ("SchedulerRole", "Arn"): SCHEDULER_ROLE,
    ("GoldenBucket", "Arn"): f"arn:{PARTITION}:s3:::{BUCKET}",
    ("BakeStateMachine", "Name"): STATE_MACHINE,
}
PSEUDO = {
    "AWS::Partition": PARTITION, "AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::StackName": STACK,
    "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": None,
}


class CheckError(Exception):
    """The check could not run (not: a call was denied); the message says what to fix."""


# --------------------------------------------------------------------------------------------------
# 1. the policies


def expand() -> dict:
    """infra/template.yaml with its Fn::ForEach loops (AWS::LanguageExtensions) in Resources expanded as
    CloudFormation expands them: each copy's `${Id}` and `&{Id}` (alphanumerics only) replaced by the item,
    nothing else resolved. Still a SAM template. (SAM CLI's own expander also resolves the intrinsics it can
    and leaves `${Resource.Attr}` as plain text, which would turn a policy's resource into a wildcard.)"""
    from samcli.yamlhelper import yaml_parse

    template = yaml_parse(TEMPLATE.read_text())
    resolver = Resolver(template)
    resources: dict = {}
    for key, value in template["Resources"].items():
        if not key.startswith("Fn::ForEach::"):
            resources[key] = value
            continue
        identifier, collection, body = value
        items = resolver.resolve(collection)
        if not isinstance(items, list):
            raise CheckError(f"{key}: its collection is not a list: {collection}")
        for item in items:
            for name, resource in _substitute(body, identifier, str(item)).items():
                if name in resources:
                    raise CheckError(f"{key}: {name} is made twice (two items with the same alphanumerics?)")
                resources[name] = resource
    transforms = template.get("Transform")
    if isinstance(transforms, list):
        rest = [t for t in transforms if t != "AWS::LanguageExtensions"]
        template["Transform"] = rest[0] if len(rest) == 1 else rest
    template["Resources"] = resources
    return template


def _substitute(value, identifier: str, item: str):
    if isinstance(value, str):
        alnum = "".join(c for c in item if c.isalnum())
        return value.replace("${" + identifier + "}", item).replace("&{" + identifier + "}", alnum)
    if isinstance(value, list):
        return [_substitute(v, identifier, item) for v in value]
    if isinstance(value, dict):
        if value == {"Ref": identifier}:  # `!Ref Identifier` inside the loop is the item itself
            return item
        return {_substitute(k, identifier, item): _substitute(v, identifier, item) for k, v in value.items()}
    return value


def translate() -> dict:
    """infra/template.yaml through the SAM translator, as CloudFormation gets it."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicyNames:  # the template names managed policies by ARN only
        def load(self) -> dict:
            return {}

    template = expand()
    # As `sam validate` does: local code locations become S3 ones (the translator accepts no other).
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "DefinitionUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = "s3://bucket/value"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)  # the translator asks boto for a region
    return transform(template, {}, NoManagedPolicyNames())


class Resolver:
    """CloudFormation's intrinsic functions over the template, for the emulator's names."""

    def __init__(self, template: dict, parameters: dict | None = None):
        self.template = template
        self.params = {name: p.get("Default") for name, p in template.get("Parameters", {}).items()}
        for name, value in (parameters or {}).items():
            if name not in self.params:
                raise CheckError(f"parameter {name} is not a parameter of the template")
            self.params[name] = value
        self.conditions = template.get("Conditions", {})

    def ref(self, name: str):
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.params:
            value = self.params[name]
            kind = self.template["Parameters"][name].get("Type", "String")
            if kind in ("CommaDelimitedList", "List<String>") and isinstance(value, str):
                return [v.strip() for v in value.split(",")]
            return value
        if name in PHYSICAL:
            return PHYSICAL[name]
        resource = self.template["Resources"].get(name)
        if resource is None:
            raise CheckError(f"Ref to {name}, which is no parameter or resource of the template")
        if resource["Type"] == "AWS::Lambda::Function":
            return self.function_name(name)
        if resource["Type"] == "AWS::IAM::Role":
            return self.role_name(name)
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{STACK}-{name}"
        return f"{STACK}-{name}"

    def function_name(self, logical: str) -> str:
        return self.template["Resources"][logical].get("Metadata", {}).get("BuildProperties", {}).get(
            "Binary", logical)

    def role_name(self, logical: str) -> str:
        name = self.template["Resources"][logical]["Properties"].get("RoleName")
        return self.resolve(name) if name is not None else f"{STACK}-{logical}"

    def get_att(self, name: str, attribute: str):
        if (name, attribute) in ATTRIBUTES:
            return ATTRIBUTES[(name, attribute)]
        resource = self.template["Resources"].get(name)
        if resource is None:
            raise CheckError(f"GetAtt {name}.{attribute}: no such resource")
        kind = resource["Type"]
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{self.role_name(name)}"
        if kind == "AWS::Lambda::Function" and attribute == "Arn":
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{self.function_name(name)}"
        if kind in ("AWS::SQS::Queue",) and attribute == "Arn":
            return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{STACK}-{name}"
        if kind == "AWS::Logs::LogGroup" and attribute == "Arn":
            group = self.resolve(resource["Properties"].get("LogGroupName", f"{STACK}-{name}"))
            return f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{group}:*"
        raise CheckError(f"GetAtt {name}.{attribute} ({kind}): add it to scripts/iam_check.py's Resolver")

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.conditions[name]))

    def resolve(self, value):
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not None]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return re.sub(r"\$\{([^}!][^}]*)\}", lambda m: self._sub(m.group(1), extra), text)
            if key == "Fn::Join":
                return self.resolve(arg[1]) and str(arg[0]).join(str(v) for v in self.resolve(arg[1]))
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if key == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                raise CheckError(f"intrinsic {key} is not supported by scripts/iam_check.py's Resolver")
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not None}  # AWS::NoValue removes the property

    def _sub(self, name: str, extra: dict) -> str:
        if name in extra:
            return str(extra[name])
        if "." in name:
            return str(self.get_att(*name.split(".", 1)))
        return str(self.ref(name))


@dataclass
class Function:
    logical: str  # e.g. LaunchBuilderFunction
    binary: str  # e.g. launch-builder
    role: str  # the role's ARN
    policies: list[dict]  # [{"name", "policy"}], resolved
    managed: list[str] = field(default_factory=list)  # managed policy ARNs (not evaluated, see report)
    lambda_function: bool = True  # False: another role of the template, checked by the cases only


def functions(parameters: dict | None = None) -> dict[str, Function]:
    """Every Lambda of the template by its binary name, with its role's policies resolved."""
    template = translate()
    resolver = Resolver(template, parameters)
    out: dict[str, Function] = {}
    for logical, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        binary = resolver.function_name(logical)
        role_ref = resource["Properties"]["Role"]
        role_logical = role_ref["Fn::GetAtt"][0] if isinstance(role_ref, dict) else None
        if role_logical is None:
            raise CheckError(f"{logical}'s role is not a role of the template: {role_ref}")
        role = template["Resources"][role_logical]["Properties"]
        policies = [{"name": p["PolicyName"], "policy": resolver.resolve(p["PolicyDocument"])}
                    for p in role.get("Policies", [])]
        managed = []
        for arn in role.get("ManagedPolicyArns", []):
            ref = arn.get("Ref") if isinstance(arn, dict) else None
            if ref and template["Resources"].get(ref, {}).get("Type") == "AWS::IAM::ManagedPolicy":
                document = resolver.resolve(template["Resources"][ref]["Properties"]["PolicyDocument"])
                policies.append({"name": ref, "policy": json.loads(document) if isinstance(document, str) else document})
            else:
                managed.append(str(resolver.resolve(arn)))
        out[binary] = Function(logical, binary, resolver.get_att(role_logical, "Arn"), policies, managed)
    # The builder instance's role, for the cases: its inline policies over a stand-in for what
    # AmazonSSMManagedInstanceCore grants on parameters (ssm:GetParameter and GetParameters on "*").
    builder = template["Resources"]["BuilderRole"]["Properties"]
    out[BUILDER_INSTANCE] = Function(
        "BuilderRole", BUILDER_INSTANCE, resolver.get_att("BuilderRole", "Arn"),
        [{"name": p["PolicyName"], "policy": resolver.resolve(p["PolicyDocument"])} for p in builder.get("Policies", [])]
        + [{"name": "AmazonSSMManagedInstanceCore (parameters)", "policy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "ManagedSsmCore", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"],
             "Resource": "*"}]}}],
        [str(resolver.resolve(a)) for a in builder.get("ManagedPolicyArns", [])], lambda_function=False)
    return out


def stages() -> dict[str, str]:
    """Stage name (what a function puts in its user agent) -> binary, from functions/*/src/main.rs."""
    out = {}
    for main in sorted((REPO / "functions").glob("*/src/main.rs")):
        match = re.search(r'runtime::serve(?:_with)?\(\s*"(\w+)"', main.read_text())
        if not match:
            raise CheckError(f"{main.relative_to(REPO)} does not call golden_core::runtime::serve(\"<Stage>\", ...) "
                             "or serve_with")
        out[match.group(1)] = main.parent.parent.name
    return out


# --------------------------------------------------------------------------------------------------
# 2. the calls -> authorization requests


@dataclass
class Auth:
    action: str
    resource: str
    context: dict = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps([self.action, self.resource, self.context], sort_keys=True)


def ec2_arn(region: str, resource_id: str) -> str:
    kind = {"i": "instance", "ami": "image", "snap": "snapshot", "vol": "volume", "subnet": "subnet",
            "sg": "security-group", "eni": "network-interface", "lt": "launch-template"}[resource_id.split("-")[0]]
    account = "" if kind in ("image", "snapshot") else ACCOUNT  # AMIs and snapshots have no account in ARNs
    return f"arn:{PARTITION}:ec2:{region}:{account}:{kind}/{resource_id}"


def tag_context(tags: dict[str, str], prefixes=("aws:ResourceTag", "ec2:ResourceTag")) -> dict:
    return {f"{p}/{k}": v for k, v in tags.items() for p in prefixes}


def request_tag_context(tags: dict[str, str]) -> dict:
    if not tags:
        return {}
    return {**{f"aws:RequestTag/{k}": v for k, v in tags.items()}, "aws:TagKeys": sorted(tags)}


def indexed(params: dict, prefix: str) -> list[str]:
    """Query-protocol list members: prefix.1, prefix.2, ... in order."""
    found = [(int(k[len(prefix) + 1:]), v) for k, v in params.items()
             if k.startswith(prefix + ".") and k[len(prefix) + 1:].isdigit()]
    return [v for _, v in sorted(found)]


def tag_specifications(params: dict) -> dict[str, dict[str, str]]:
    """{resource type: {key: value}} of an EC2 request's TagSpecification.N."""
    specs: dict[str, dict[str, str]] = {}
    for key, kind in params.items():
        match = re.fullmatch(r"TagSpecification\.(\d+)\.ResourceType", key)
        if match:
            specs[kind] = tag_list(params, f"TagSpecification.{match.group(1)}.Tag")
    return specs


def tag_list(params: dict, prefix: str) -> dict[str, str]:
    """{key: value} of a Query-protocol tag list: prefix.N.Key, prefix.N.Value."""
    tags = {}
    for k, v in params.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)\.Key", k)
        if m:
            tags[v] = params.get(f"{prefix}.{m.group(1)}.Value", "")
    return tags


def ec2_auths(call: dict) -> list[Auth]:
    op, region, params = call["operation"], call["region"], call["params"]
    tags = call.get("tags", {})
    created = dict(call.get("created", {}))
    # A call that failed (moto refused it) made nothing, but AWS authorizes before it creates: what it would
    # have made is requested under a stand-in id.
    if op == "RunInstances" and not any(r.startswith("i-") for r in created):
        created.update({"i-0000000000000000": {}, "vol-0000000000000000": {}})
    if op in ("CreateImage", "CopyImage") and not any(r.startswith("ami-") for r in created):
        created.update({"ami-0000000000000000": {}, "snap-0000000000000000": {}})

    def on(resource_id: str, extra: dict | None = None) -> Auth:
        return Auth(f"ec2:{op}", ec2_arn(region, resource_id),
                    {**tag_context(tags.get(resource_id, {})), **(extra or {})})

    def tag_on_create(kind: str, prefix: str) -> list[Auth]:
        spec = tag_specifications(params).get(kind)
        if not spec:
            return []
        return [Auth("ec2:CreateTags", ec2_arn(region, rid), {"ec2:CreateAction": op, **request_tag_context(spec)})
                for rid in sorted(created) if rid.startswith(prefix + "-")]

    if op.startswith("Describe"):
        return [Auth(f"ec2:{op}", "*")]
    if op in ("TerminateInstances", "StopInstances", "StartInstances", "RebootInstances"):
        return [on(i) for i in indexed(params, "InstanceId")]
    if op in ("DeregisterImage", "EnableImageDeprecation", "DisableImageDeprecation", "ModifyImageAttribute"):
        return [on(params["ImageId"])]
    if op in ("DeleteSnapshot", "ModifySnapshotAttribute"):
        return [on(params["SnapshotId"])]
    if op == "CreateTags":
        requested = request_tag_context(tag_list(params, "Tag"))
        return [Auth("ec2:CreateTags", ec2_arn(region, r), {**tag_context(tags.get(r, {})), **requested})
                for r in indexed(params, "ResourceId")]
    if op == "RunInstances":
        specs = tag_specifications(params)
        auths = [on(params["ImageId"])]
        instance_ctx = {**request_tag_context(specs.get("instance", {})),
                        "ec2:InstanceType": params.get("InstanceType", "m1.small")}
        if "MetadataOptions.HttpTokens" in params:
            instance_ctx["ec2:MetadataHttpTokens"] = params["MetadataOptions.HttpTokens"]
        for profile, _roles in call.get("roles", {}).items():
            instance_ctx["ec2:InstanceProfile"] = (
                profile if profile.startswith("arn:") else f"arn:{PARTITION}:iam::{ACCOUNT}:instance-profile/{profile}")
        auths += [Auth("ec2:RunInstances", ec2_arn(region, i), instance_ctx)
                  for i in sorted(created) if i.startswith("i-")]
        auths += [Auth("ec2:RunInstances", ec2_arn(region, v), request_tag_context(specs.get("volume", {})))
                  for v in sorted(created) if v.startswith("vol-")]
        subnet = params.get("NetworkInterface.1.SubnetId") or params.get("SubnetId")
        nic_ctx = {}
        if "NetworkInterface.1.AssociatePublicIpAddress" in params:
            nic_ctx["ec2:AssociatePublicIpAddress"] = params["NetworkInterface.1.AssociatePublicIpAddress"]
        if subnet:
            nic_ctx["ec2:Subnet"] = ec2_arn(region, subnet)
            auths.append(on(subnet))
        # The interface is created by the call; its id is not in the answer we record.
        auths.append(Auth("ec2:RunInstances", f"arn:{PARTITION}:ec2:{region}:{ACCOUNT}:network-interface/eni-new",
                          nic_ctx))
        auths += [on(g) for g in indexed(params, "NetworkInterface.1.SecurityGroupId") + indexed(params, "SecurityGroupId")]
        auths += tag_on_create("instance", "i") + tag_on_create("volume", "vol")
        for roles in call.get("roles", {}).values():
            auths += [Auth("iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"}) for role in roles]
        return auths
    if op in ("CreateImage", "CopyImage"):
        # Authorized on what it reads (the instance; the source image, in its own region, since 2024-10)
        # with that resource's tags, and on what it makes (the image, its snapshots) with the request's tags.
        specs = tag_specifications(params)
        if op == "CreateImage":
            auths = [on(params["InstanceId"])]
        else:
            source = params["SourceImageId"]
            auths = [Auth("ec2:CopyImage", ec2_arn(params["SourceRegion"], source), tag_context(tags.get(source, {})))]
        auths += [Auth(f"ec2:{op}", ec2_arn(region, i), request_tag_context(specs.get("image", {})))
                  for i in sorted(created) if i.startswith("ami-")]
        auths += [Auth(f"ec2:{op}", ec2_arn(region, s), request_tag_context(specs.get("snapshot", {})))
                  for s in sorted(created) if s.startswith("snap-")]
        return auths + tag_on_create("image", "ami") + tag_on_create("snapshot", "snap")
    raise CheckError(f"no IAM model for ec2:{op}: add one to scripts/iam_check.py (ec2_auths)")


# AWS's own SSM parameters (/aws/service/...) and documents (AWS-RunShellScript) have an empty account field in
# their ARNs. The simulator accepts no ARN with an empty field, so they are requested with the account; the
# template grants them with `*` there, which matches both.
def ssm_parameter_arn(region: str, name: str) -> str:
    return f"arn:{PARTITION}:ssm:{region}:{ACCOUNT}:parameter/{name.lstrip('/')}"


def ssm_auths(call: dict) -> list[Auth]:
    op, region, params = call["operation"], call["region"], call["params"]
    action = f"ssm:{op}"
    if op in ("GetParameter", "PutParameter", "DeleteParameter", "LabelParameterVersion"):
        return [Auth(action, ssm_parameter_arn(region, params["Name"]))]
    if op in ("GetParameters", "DeleteParameters"):
        return [Auth(action, ssm_parameter_arn(region, n)) for n in params["Names"]]
    if op == "GetParametersByPath":
        return [Auth(action, ssm_parameter_arn(region, params["Path"]))]
    if op == "SendCommand":
        auths = [Auth(action, f"arn:{PARTITION}:ssm:{region}:{ACCOUNT}:document/{params['DocumentName']}")]
        for instance in params.get("InstanceIds", []):
            tags = call.get("tags", {}).get(instance, {})
            auths.append(Auth(action, ec2_arn(region, instance),
                              tag_context(tags, ("aws:ResourceTag", "ssm:resourceTag"))))
        return auths
    if op in ("GetCommandInvocation", "ListCommands", "ListCommandInvocations", "DescribeInstanceInformation"):
        return [Auth(action, "*")]
    raise CheckError(f"no IAM model for ssm:{op}: add one to scripts/iam_check.py (ssm_auths)")


def s3_auths(call: dict) -> list[Auth]:
    op, params = call["operation"], call["params"]
    bucket = f"arn:{PARTITION}:s3:::{params['Bucket']}"
    obj = f"{bucket}/{params['Key']}"
    versioned = "?versionId" in params
    if op in ("GetObject", "HeadObject"):
        auths = [Auth("s3:GetObjectVersion" if versioned else "s3:GetObject", obj)]
        # S3 answers a missing key with 404 only to a caller that may list the bucket (else 403).
        if call.get("status") == 404:
            auths.append(Auth("s3:ListBucket", bucket))
        return auths
    if op == "PutObject":
        return [Auth("s3:PutObject", obj)]
    if op == "DeleteObject":
        return [Auth("s3:DeleteObjectVersion" if versioned else "s3:DeleteObject", obj)]
    if op in ("ListObjectsV2", "ListObjects"):
        return [Auth("s3:ListBucket", bucket, {"s3:prefix": params["?prefix"]} if "?prefix" in params else {})]
    if op == "ListObjectVersions":
        return [Auth("s3:ListBucketVersions", bucket)]
    raise CheckError(f"no IAM model for s3 {op}: add one to scripts/iam_check.py (s3_auths)")


def states_auths(call: dict) -> list[Auth]:
    op, params = call["operation"], call["params"]
    if op in ("DescribeExecution", "StopExecution", "GetExecutionHistory"):
        return [Auth(f"states:{op}", params["executionArn"])]
    if op in ("StartExecution", "ListExecutions", "DescribeStateMachine"):
        return [Auth(f"states:{op}", params["stateMachineArn"])]
    raise CheckError(f"no IAM model for states:{op}: add one to scripts/iam_check.py (states_auths)")


def scheduler_auths(call: dict) -> list[Auth]:
    op, region, params = call["operation"], call["region"], call["params"]
    if op == "ListSchedules":  # no resource-level permission
        return [Auth("scheduler:ListSchedules", "*")]
    schedule = f"arn:{PARTITION}:scheduler:{region}:{ACCOUNT}:schedule/{params.get('GroupName', 'default')}/" \
               f"{params['Name']}"
    if op in ("GetSchedule", "DeleteSchedule"):
        return [Auth(f"scheduler:{op}", schedule)]
    if op in ("UpdateSchedule", "CreateSchedule"):
        # The schedule's role is passed to Scheduler again with every write of the schedule.
        role = params.get("Target", {}).get("RoleArn")
        passed = [Auth("iam:PassRole", role, {"iam:PassedToService": "scheduler.amazonaws.com"})] if role else []
        return [Auth(f"scheduler:{op}", schedule), *passed]
    raise CheckError(f"no IAM model for scheduler:{op}: add one to scripts/iam_check.py (scheduler_auths)")


def sns_auths(call: dict) -> list[Auth]:
    op, params = call["operation"], call["params"]
    if op == "Publish":
        return [Auth("sns:Publish", params["TopicArn"])]
    raise CheckError(f"no IAM model for sns:{op}: add one to scripts/iam_check.py (sns_auths)")


MODELS = {"ec2": ec2_auths, "ssm": ssm_auths, "s3": s3_auths, "states": states_auths,
          "scheduler": scheduler_auths, "sns": sns_auths}


def authorizations(call: dict) -> list[Auth]:
    model = MODELS.get(call["service"])
    if model is None:
        raise CheckError(f"no IAM model for service {call['service']!r} ({call['operation']}): "
                         "add one to scripts/iam_check.py")
    return model(call)


# --------------------------------------------------------------------------------------------------
# 3. the simulator


def simulate(requests: list[dict]) -> dict[str, dict]:
    if not requests:
        return {}
    node_modules = REPO / "node_modules" / "@cloud-copilot" / "iam-simulate"
    if not node_modules.is_dir():
        raise CheckError("node_modules/@cloud-copilot/iam-simulate is missing: run `npm ci` at the repository root")
    proc = subprocess.run(["node", str(SIMULATOR)], input=json.dumps({"account": ACCOUNT, "requests": requests}),
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise CheckError(f"scripts/iam-simulate.mjs failed ({proc.returncode}):\n{proc.stderr}")
    return {r["id"]: r for r in json.loads(proc.stdout)}


def granted_actions(function: Function) -> set[str]:
    actions = set()
    for policy in function.policies:
        statements = policy["policy"]["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            if statement.get("Effect") == "Allow":
                action = statement.get("Action", [])
                actions.update(action if isinstance(action, list) else [action])
    return actions


# --------------------------------------------------------------------------------------------------
# 4. the check


def load_calls(path: Path) -> list[dict]:
    if not path.is_file():
        raise CheckError(f"no call log at {path}: run the check inside `scripts/emulator run` after the tests")
    calls = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    broken = [c for c in calls if "lookupError" in c]
    if broken:
        raise CheckError(f"{len(broken)} recorded calls lack their tags (the recorder's lookup failed), e.g. "
                         f"{broken[0]['stage']} {broken[0]['operation']}: {broken[0]['lookupError']}")
    return calls


def fmt_placeholders(text: str) -> str:
    return text.format(account=ACCOUNT, region=REGION, bucket=BUCKET, partition=PARTITION,
                       builder_role=f"arn:{PARTITION}:iam::{ACCOUNT}:role/{STACK}-builder",
                       other_role=f"arn:{PARTITION}:iam::{ACCOUNT}:role/admin")


def cases(fns: dict[str, Function]) -> list[dict]:
    """infra/iam/cases.toml, and the generated write cases of the bucket's contract keys."""
    doc = tomllib.loads(CASES.read_text())
    out = []
    for case in doc.get("case", []):
        if case["function"] not in fns:
            raise CheckError(f"{CASES.relative_to(REPO)}: no function {case['function']!r} in the template")
        if case["expect"] not in ("allowed", "denied"):
            raise CheckError(f"{CASES.relative_to(REPO)}: expect must be allowed or denied, not {case['expect']!r}")
        out.append({**case, "resource": fmt_placeholders(case["resource"]),
                    "context": {k: (fmt_placeholders(v) if isinstance(v, str) else v)
                                for k, v in case.get("context", {}).items()}})
    writers = set(doc.get("manifest_writers", []))
    for name in sorted(n for n, f in fns.items() if f.lambda_function):
        out.append({"function": name, "action": "s3:PutObject", "resource": f"arn:{PARTITION}:s3:::{BUCKET}/manifest.json",
                    "context": {}, "expect": "allowed" if name in writers else "denied",
                    "why": "only " + ", ".join(sorted(writers)) + " may write manifest.json"})
        for action in ("s3:PutObject", "s3:DeleteObject"):
            out.append({"function": name, "action": action,
                        "resource": f"arn:{PARTITION}:s3:::{BUCKET}/recipes/bld-linux64.json", "context": {},
                        "expect": "denied", "why": "operators push recipes with their own credentials"})
    return out


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def without(fns: dict[str, Function], spec: str) -> None:
    """Drops the statement `Sid` from `function`'s policies (spec `function:Sid`): the check must then fail."""
    name, _, sid = spec.partition(":")
    if name not in fns:
        raise CheckError(f"--without {spec}: no function {name!r}")
    dropped = 0
    for policy in fns[name].policies:
        statements = policy["policy"]["Statement"]
        kept = [st for st in statements if st.get("Sid") != sid]
        dropped += len(statements) - len(kept)
        policy["policy"]["Statement"] = kept
    if not dropped:
        raise CheckError(f"--without {spec}: {name} has no statement {sid!r}")


def run(calls_path: Path, drop: list[str] | None = None) -> int:
    fns = functions()
    for spec in drop or []:
        without(fns, spec)
    by_stage = stages()
    missing = sorted(set(by_stage.values()) - set(fns))
    if missing:
        raise CheckError(f"functions without a Lambda in infra/template.yaml: {missing}")
    calls = load_calls(calls_path)

    requests: dict[str, dict] = {}  # simulation id -> request
    uses: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))  # (fn, action) -> id -> n
    calls_per: dict[tuple[str, str], set[int]] = defaultdict(set)  # (fn, action) -> the calls that needed it
    for n, call in enumerate(calls):
        binary = by_stage.get(call["stage"])
        if binary is None:
            raise CheckError(f"a call from stage {call['stage']!r}, which no functions/*/src/main.rs serves")
        fn = fns[binary]
        for auth in authorizations(call):
            rid = f"{binary} {auth.key()}"
            requests.setdefault(rid, {"id": rid, "principal": fn.role, "action": auth.action, "resource": auth.resource,
                                      "context": auth.context, "policies": fn.policies})
            uses[(binary, auth.action)][rid] += 1
            calls_per[(binary, auth.action)].add(n)
    case_list = cases(fns)
    deployed: dict[str, dict[str, Function]] = {}
    for i, case in enumerate(case_list):
        # A case may deploy the template with other parameter values (e.g. BuilderPublicIp=true).
        params = case.get("parameters") or {}
        key = json.dumps(params, sort_keys=True)
        if key not in deployed:
            deployed[key] = functions(params) if params else fns
        fn = deployed[key][case["function"]]
        requests[f"case {i}"] = {"id": f"case {i}", "principal": fn.role, "action": case["action"],
                                 "resource": case["resource"], "context": case["context"], "policies": fn.policies}
    results = simulate(list(requests.values()))

    failures: list[str] = []
    rows = []
    exercised: dict[str, set[str]] = defaultdict(set)
    for (binary, action), ids in sorted(uses.items()):
        allowed = sum(n for rid, n in ids.items() if results[rid]["result"] == "Allowed")
        total = sum(ids.values())
        statements = sorted({s for rid in ids for s in results[rid].get("statements", [])
                             if results[rid]["result"] == "Allowed"})
        rows.append([binary, action, len(calls_per[(binary, action)]), total, f"{allowed}/{total}",
                     ", ".join(statements)])
        if allowed:
            exercised[binary].add(action)
        for rid, n in ids.items():
            r = results[rid]
            if r["result"] != "Allowed":
                req = requests[rid]
                failures.append(f"{binary}: {action} on {req['resource']} is {r['result']}"
                                f"{' ' + r['error'] if r.get('error') else ''}\n      context {json.dumps(req['context'])}")
    print(f"IAM check: {len(calls)} recorded calls of {len({c['stage'] for c in calls})} functions -> "
          f"{sum(sum(i.values()) for i in uses.values())} authorization requests "
          f"({len(uses)} function/action pairs), each evaluated against the function's policies "
          "(infra/template.yaml, SAM-translated)\n")
    print(table(rows, ["function", "action", "calls", "requests", "allowed", "allowed by (Sid)"]))

    # least privilege: granted, not exercised
    listed = tomllib.loads(UNEXERCISED.read_text())
    unexercised_rows = []
    for binary, fn in sorted((b, f) for b, f in fns.items() if f.lambda_function):
        reasons = listed.get(binary, {})
        for action in sorted(granted_actions(fn) - exercised[binary]):
            if action in reasons:
                unexercised_rows.append([binary, action, reasons[action]])
            else:
                failures.append(f"{binary}: {action} is granted but no test exercised it; remove the grant or list "
                                f"it with its reason in {UNEXERCISED.relative_to(REPO)}")
        for action in sorted(reasons):
            if action in exercised[binary]:
                failures.append(f"{binary}: {action} is listed in {UNEXERCISED.relative_to(REPO)} but the tests "
                                "exercise it now: remove the entry")
            elif action not in granted_actions(fn):
                failures.append(f"{binary}: {action} is listed in {UNEXERCISED.relative_to(REPO)} but not granted: "
                                "remove the entry")
    for binary in sorted(set(listed) - set(fns)):
        failures.append(f"{UNEXERCISED.relative_to(REPO)} lists {binary!r}, which is no function of the template")
    print(f"\nGranted but not exercised by any test ({len(unexercised_rows)}), with the reason each is kept "
          f"({UNEXERCISED.relative_to(REPO)}):\n")
    print(table(unexercised_rows, ["function", "action", "why"]) if unexercised_rows else "  (none)")

    case_rows = []
    for i, case in enumerate(case_list):
        r = results[f"case {i}"]
        got = "allowed" if r["result"] == "Allowed" else ("error" if r["result"] == "Error" else "denied")
        ok = got == case["expect"]
        context = ", ".join(f"{k}={v}" for k, v in {**case["context"], **{
            f"(parameter {k})": v for k, v in (case.get("parameters") or {}).items()}}.items()) or "-"
        case_rows.append([case["function"], case["action"], case["resource"].split(":", 5)[-1], context,
                          case["expect"], "ok" if ok else f"FAIL ({got})"])
        if not ok:
            failures.append(f"case: {case['function']} {case['action']} on {case['resource']} ({context}) should be "
                            f"{case['expect']} but is {r['result']}{' ' + r['error'] if r.get('error') else ''}: "
                            f"{case.get('why', '')}")
    print(f"\nCases ({len(case_rows)}; {CASES.relative_to(REPO)} and the generated manifest/recipes writes):\n")
    print(table(case_rows, ["function", "action", "resource", "context", "expect", "result"]))

    managed = sorted({a for fn in fns.values() if fn.lambda_function for a in fn.managed})
    if managed:
        print(f"\nManaged policies attached by SAM, not evaluated (the Lambda service uses them, not our code): "
              f"{', '.join(managed)}")
    if failures:
        print(f"\nIAM check FAILED ({len(failures)}):", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"\nIAM check passed: every recorded request allowed, {len(unexercised_rows)} unexercised grants "
          f"explained, {len(case_rows)} cases as expected.")
    return 0


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["--expanded"]:  # for checkov, which does not know Fn::ForEach
            print(json.dumps(expand(), indent=1, default=str))
            return 0
        if argv[:1] == ["--translated"]:  # for checkov: the roles, rules and permissions SAM generates
            print(json.dumps(translate(), indent=1, default=str))
            return 0
        if argv[:1] == ["--policies"]:
            for binary, fn in sorted(functions().items()):
                print(f"# {binary} ({fn.logical}, {fn.role})")
                print(json.dumps(fn.policies, indent=2))
            return 0
        drop = []
        while len(argv) >= 2 and argv[0] == "--without":
            drop.append(argv[1])
            argv = argv[2:]
        if argv:
            path = Path(argv[0])
        elif os.environ.get("GOLDEN_EMULATOR_DIR"):
            path = Path(os.environ["GOLDEN_EMULATOR_DIR"]) / "calls.jsonl"
        else:
            raise CheckError("no call log: pass CALLS.jsonl or run inside `scripts/emulator run`")
        return run(path, drop)
    except CheckError as err:
        print(f"iam_check: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
