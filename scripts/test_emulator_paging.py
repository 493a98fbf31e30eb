#!/usr/bin/env python3
"""The emulator pages DescribeImages and DescribeSnapshots as EC2 does (scripts/emulator.py `_page`).

Run it inside the emulator (it needs the AWS_ENDPOINT_URL that `scripts/emulator run` exports):
    scripts/emulator run -- .venv/bin/python scripts/test_emulator_paging.py

`make bench` counts prune's calls page by page and times it against moto, so the shim must hand out every item
once across pages, and a NextToken must be good only for the request that got it. Makes 12 images (and their
snapshots) tagged with a run id of its own in a region no test uses (and removes them after), pages them by 5,
and checks the pages (5, 5, 2, each item once) and that a token replayed on another filter, another operation
or another region, or a malformed one, is EC2's InvalidNextToken (HTTP 400). Prints one line per check, then
`emulator paging: N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import sys
import uuid

import boto3
from botocore.exceptions import ClientError

REGION = "ap-southeast-2"  # none of the suite's resources live here
IMAGES = 12
PAGE = 5


def main() -> int:
    ec2 = boto3.client("ec2", region_name=REGION)
    run = uuid.uuid4().hex[:8]
    tag = [{"Name": "tag:paging-test", "Values": [run]}]
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8)["VolumeId"]
    made, snapshots = set(), []
    for i in range(IMAGES):
        snapshots.append(ec2.create_snapshot(VolumeId=volume)["SnapshotId"])
        made.add(ec2.register_image(Name=f"paging-{run}-{i}", RootDeviceName="/dev/xvda", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshots[-1]}}])["ImageId"])
    ec2.create_tags(Resources=sorted(made) + snapshots, Tags=[{"Key": "paging-test", "Value": run}])

    passed = failed = 0

    def check(what: str, ok: bool, detail: str = "") -> None:
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'ok' if ok else 'FAILED'}: {what}{'' if ok else ': ' + detail}")

    def pages(op, key: str, **params) -> tuple[list[int], list[str], str | None]:
        sizes, ids, token, first_token = [], [], None, None
        while True:
            page = op(**params, MaxResults=PAGE, **({"NextToken": token} if token else {}))
            sizes.append(len(page[key]))
            ids += [item["ImageId" if key == "Images" else "SnapshotId"] for item in page[key]]
            token = page.get("NextToken")
            first_token = first_token or token
            if not token:
                return sizes, ids, first_token

    sizes, ids, image_token = pages(ec2.describe_images, "Images", Owners=["self"], Filters=tag)
    check("12 images come in pages of 5, 5, 2", sizes == [5, 5, 2], str(sizes))
    check("every image once across the pages", sorted(ids) == sorted(made) and len(set(ids)) == len(ids),
          f"{len(ids)} ids, {len(set(ids))} distinct, {len(made)} made")
    sizes, snaps, snapshot_token = pages(ec2.describe_snapshots, "Snapshots", OwnerIds=["self"], Filters=tag)
    check("their 12 snapshots come in pages of 5, 5, 2", sizes == [5, 5, 2], str(sizes))
    check("every snapshot once across the pages", len(set(snaps)) == len(snaps) == IMAGES, str(len(snaps)))

    def refused(what: str, call) -> None:
        try:
            call()
        except ClientError as err:
            code = err.response["Error"]["Code"]
            status = err.response["ResponseMetadata"]["HTTPStatusCode"]
            check(what, (code, status) == ("InvalidNextToken", 400), f"{code} {status}")
        else:
            check(what, False, "answered")

    # A listing's token stays good until its last page is served: open a fresh one for each replay.
    def open_token(op, key: str, **params) -> str:
        return op(**params, MaxResults=PAGE)["NextToken"]

    token = open_token(ec2.describe_images, "Images", Owners=["self"], Filters=tag)
    refused("an image token on another filter is InvalidNextToken",
            lambda: ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["x"]}],
                                        MaxResults=PAGE, NextToken=token))
    refused("an image token on DescribeSnapshots is InvalidNextToken",
            lambda: ec2.describe_snapshots(OwnerIds=["self"], Filters=tag, MaxResults=PAGE, NextToken=token))
    refused("an image token in another region is InvalidNextToken",
            lambda: boto3.client("ec2", region_name="eu-west-1").describe_images(
                Owners=["self"], Filters=tag, MaxResults=PAGE, NextToken=token))
    refused("a malformed token is InvalidNextToken",
            lambda: ec2.describe_images(Owners=["self"], Filters=tag, MaxResults=PAGE, NextToken="5"))
    second = ec2.describe_images(Owners=["self"], Filters=tag, MaxResults=PAGE, NextToken=token)
    check("the token still serves its own listing", len(second["Images"]) == PAGE, str(len(second["Images"])))
    check("a listing's tokens are its own (images and snapshots differ)",
          None not in (image_token, snapshot_token) and image_token != snapshot_token)

    for image in made:
        ec2.deregister_image(ImageId=image)
    for snapshot in snapshots:
        ec2.delete_snapshot(SnapshotId=snapshot)
    ec2.delete_volume(VolumeId=volume)
    print(f"emulator paging: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
