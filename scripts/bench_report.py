#!/usr/bin/env python3
"""BENCHMARKS.md from the figures `scripts/bench.py` wrote to target/bench/*.json (`scripts/bench.py report`).

Every number in BENCHMARKS.md comes from those files; the prose around them is here. A section whose figures
are missing says so and names the command that makes them.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "target" / "bench"
DOC = REPO / "BENCHMARKS.md"

INIT_TARGET_MS = 8.0
INIT_RATIO_TARGET = 50.0
RSS_TARGET_MB = 16.0
ZIP_TARGET_MB = 5.0

# What each AWS call of one bake is for (stage:service:operation), and how many a bake needs at the least.
# The report flags any call seen that is not listed here.
BAKE_CALLS = {
    "ec2:RunInstances": (1, "LaunchBuilder: the builder"),
    "ec2:DescribeInstances": (1, "CheckBuilder: is the builder running (1). Above it: LaunchBuilder 1 (a builder an "
                              "earlier attempt of this execution launched is reused, never a second one); "
                              "TerminateBuilder 2 per region the recipe builds or copies in (the builders, then the "
                              "testers, tagged with this execution, wherever a partial failure may have left one: "
                              "3 regions here) and 1 for the builder's own state (its tags may never have landed)"),
    "ec2:DescribeInstanceStatus": (1, "are the builder's status checks ok"),
    "ssm:DescribeInstanceInformation": (1, "CheckBuilder: is the SSM agent online"),
    "ssm:SendCommand": (2, "RunCommand: provision, then sanitize"),
    "ssm:ListCommands": (0, "RunCommand: was this command already sent by an earlier attempt (a retried stage must "
                         "not provision twice)"),
    "ssm:GetCommandInvocation": (2, "CommandStatus: each command's outcome (one poll each here)"),
    "ec2:StopInstances": (0, "stop before imaging (Windows stops itself)"),
    "ec2:CreateImage": (1, "CreateImage: the golden image"),
    "ec2:DescribeImages": (3, "ImageStatus: the image and each copy available (one poll each here). Above it: "
                           "LaunchBuilder 1 (the base AMI exists and is available); CreateImage 1 and CopyImage 1 "
                           "per copy (an image of this name an earlier attempt made is reused, never a second); "
                           "CopyImage 1 per copy (the source image is available)"),
    "ec2:CopyImage": (2, "CopyImage: one copy per copy region"),
    "ec2:CreateTags": (0, "tags that CreateImage/CopyImage cannot set at creation"),
    "ec2:EnableImageDeprecation": (0, "deprecation time on the image and each copy"),
    "ec2:TerminateInstances": (1, "TerminateBuilder: the builder"),
    "s3:GetObject": (2, "LaunchBuilder: the recipe; Publish: the manifest. Above it: Publish 1 (re-reads the manifest "
                     "it wrote, so the SSM parameters come from the latest manifest, not a superseded one); "
                     "TerminateBuilder 1 (reads the lock, to delete only the copy it read)"),
    "s3:PutObject": (2, "LaunchBuilder: take the type's lock (If-None-Match); Publish: write the manifest"),
    "s3:DeleteObject": (1, "TerminateBuilder: release the lock"),
    "s3:ListObjectsV2": (0, "lists keys (a missing key reads as 404, not 403)"),
    "ssm:GetParameter": (1, "LaunchBuilder: resolve the base AMI parameter"),
    "ssm:PutParameter": (3, "Publish: the current image id, one parameter per region"),
    "ssm:GetParametersByPath": (0, "find parameters to rewrite"),
}


BASELINE = REPO / "docs" / "bench-baseline"
BASELINE_WHAT = ("before: the functions of b1268a1, at `opt-level = 3`, trusting the system's store, on tokio's "
                 "multi-thread runtime (docs/bench-baseline/)")


def baseline(name: str) -> dict | None:
    path = BASELINE / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def load(name: str) -> dict | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def mb(n: float) -> str:
    return f"{n / 1024 / 1024:.2f}"


def missing(what: str, cmd: str) -> str:
    return f"_Not measured in this run: `{cmd}` makes {what}._\n"


def section_machine(m: dict | None) -> str:
    if not m:
        return missing("the machine description", "make bench")
    rows = [("date", m["date"]), ("commit", m["commit"]), ("CPU", m["cpu"]), ("memory", f"{m['memory_gib']} GiB"),
            ("kernel", m["kernel"]), ("rustc", m["rustc"]), ("Python", m["python"]), ("moto", m["moto"]),
            ("boto3", m["boto3"]), ("cargo-lambda", m["cargo_lambda"]), ("peer", m["amicleaner"])]
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def section_coldstart(c: dict | None) -> str:
    if not c:
        return missing("these figures", "BENCH_ONLY=bake make bench")
    f = c["functions"]
    py = f.get("python-boto3")
    lines = ["| function | init median ms (p10-p90) | x faster than Python | peak RSS at init MiB | "
             "first invocation ms | its outcome | peak RSS after it MiB |",
             "|---|---:|---:|---:|---:|---|---:|"]
    worst_init, worst_ratio, worst_rss = 0.0, float("inf"), 0.0
    for name, r in sorted(f.items(), key=lambda kv: ("first_invoke_ms" not in kv[1], kv[0] == "python-boto3", kv[0])):
        ours = name != "python-boto3" and "first_invoke_ms" in r
        ratio = py["init_ms_median"] / r["init_ms_median"] if py and name != "python-boto3" else None
        if ours:
            rss = max(r["init_peak_rss_kb_max"], r["peak_rss_kb_after_first_invoke"]) / 1024
            worst_init = max(worst_init, r["init_ms_median"])
            worst_ratio = min(worst_ratio, ratio or worst_ratio)
            worst_rss = max(worst_rss, rss)
        invoked = (f"{r['first_invoke_ms']:.1f} | {r['first_invoke_outcome']} | "
                   f"{r['peak_rss_kb_after_first_invoke'] / 1024:.1f}") if "first_invoke_ms" in r else "- | - | -"
        lines.append(
            f"| {name} | {r['init_ms_median']:.1f} ({r['init_ms_p10']:.1f}-{r['init_ms_p90']:.1f}) | "
            f"{f'{ratio:.0f}x' if ratio else '-'} | {r['init_peak_rss_kb_max'] / 1024:.1f} | {invoked} |")
    verdicts = [
        verdict("median init under 8 ms (slowest function)", worst_init, INIT_TARGET_MS, "ms", lower=True),
        verdict("at least 50x faster than the Python peer (least ratio)", worst_ratio, INIT_RATIO_TARGET, "x",
                lower=False),
        verdict("peak RSS at most 16 MiB (largest, init or first invocation)", worst_rss, RSS_TARGET_MB, "MiB",
                lower=True),
        verdict("peak RSS at most 16 MB of 10^6 bytes (largest, init or first invocation)",
                worst_rss * 1048576 / 1e6, RSS_TARGET_MB, "MB", lower=True),
    ]
    before = baseline("coldstart")
    if before:
        lines.append("")
        lines.append(f"Against the baseline ({BASELINE_WHAT}), function by function: init median ms and peak RSS "
                     "MiB (largest of init and first invocation), before -> now. Two runs hours apart on a shared "
                     "machine: the last two rows, which did not change, show how much the machine itself moved.")
        lines.append("")
        lines.append("| function | init before | init now | RSS before | RSS now |")
        lines.append("|---|---:|---:|---:|---:|")
        for name, r in sorted(f.items(), key=lambda kv: ("first_invoke_ms" not in kv[1] or kv[0] == "python-boto3",
                                                         kv[0])):
            b = before["functions"].get(name)
            if not b or ("first_invoke_ms" not in r and not name.startswith("floor")):
                continue  # the trust-store rows differ between the runs
            rss_b = max(b["init_peak_rss_kb_max"], b.get("peak_rss_kb_after_first_invoke", 0)) / 1024
            rss_n = max(r["init_peak_rss_kb_max"], r.get("peak_rss_kb_after_first_invoke", 0)) / 1024
            lines.append(f"| {name} | {b['init_ms_median']:.1f} | {r['init_ms_median']:.1f} | {rss_b:.1f} | "
                         f"{rss_n:.1f} |")
        newer = sorted(n for n, r in f.items() if "first_invoke_ms" in r and n not in before["functions"])
        if newer:
            lines += ["", f"Newer than the baseline, so not compared: {', '.join(newer)}."]
    events = sorted({(n, r["first_invoke_event"]) for n, r in f.items() if "first_invoke_event" in r})
    return ("\n".join(lines) + "\n\n" + "".join(f"- {v}\n" for v in verdicts) +
            f"\n{c['runs']} init runs of each, interleaved function by function with the Python peer. "
            "First invocation events: " + "; ".join(f"{n}: {e}" for n, e in events) + ".\n")


def verdict(what: str, value: float, target: float, unit: str, lower: bool) -> str:
    met = value <= target if lower else value >= target
    if met:
        return f"**met**: {what}: {value:.2f} {unit} (target {target:g} {unit})"
    gap = value - target if lower else target - value
    return f"**missed**: {what}: {value:.2f} {unit}, {gap:.2f} {unit} past the target of {target:g} {unit}"


def section_package(p: dict | None) -> str:
    if not p:
        return missing("the zips", "make package (or BENCH_ONLY=package make bench)")
    lines = ["| function | zip bytes | zip MB (10^6) | zip MiB | bootstrap MiB |", "|---|---:|---:|---:|---:|"]
    for name, r in sorted(p["functions"].items()):
        z = r["zip_bytes"]
        lines.append(f"| {name} | {z} | {z / 1e6:.2f} | {z / 1048576:.2f} | {r['bootstrap_bytes'] / 1048576:.2f} |")
    largest = max(r["zip_bytes"] for r in p["functions"].values())
    over = sorted(n for n, r in p["functions"].items() if r["zip_bytes"] > 5_000_000)
    return ("\n".join(lines) + "\n\n- " +
            verdict("each zip at most 5 MiB (largest)", largest / 1048576, ZIP_TARGET_MB, "MiB", lower=True) +
            "\n- " + verdict("each zip at most 5 MB of 10^6 bytes (largest)", largest / 1e6, ZIP_TARGET_MB, "MB",
                             lower=True) +
            (f" ({len(over)} of {len(p['functions'])} over: {', '.join(over)})" if over else "") +
            f"\n\n`make package` built all {len(p['functions'])} in one cargo run: {p['seconds'] / 60:.0f} min "
            "(a fresh arm64 build of the SDK; `aws-sdk-ec2` alone is most of it).\n" + package_against_baseline(p))


def section_profile(pr: dict | None) -> str:
    import bench

    if not pr or "as shipped" not in pr["variants"]:
        return missing("the per-setting builds", "BENCH_ONLY=profile make bench")
    v = pr["variants"]
    shipped = v["as shipped"]["zip_bytes"]
    rows = [f"`{pr['function']}` of commit {pr.get('commit', '?')}, {pr['target']}. The first row is the shipped "
            "zip (from `make package`, whose workspace build gives this function the same features as building it "
            "alone). Each other row is the function built alone (`-p`) with one setting put back to cargo's "
            "default, so what that setting buys is how much bigger that row's zip is.", "",
            "| profile | zip bytes | without the setting, the zip is bigger by | bootstrap bytes | build (wall time, machine shared) |",
            "|---|---:|---:|---:|---:|"]
    for label, r in v.items():
        saves = "-" if label == "as shipped" else \
            f"{r['zip_bytes'] - shipped} bytes ({(r['zip_bytes'] - shipped) / shipped * 100:.1f}%)"
        built = f"{r['build_seconds'] / 60:.0f} min" if "build_seconds" in r else r.get("from", "-")
        rows.append(f"| {label} | {r['zip_bytes']} | {saves} | {r['bootstrap_bytes']} | {built} |")
    rows.append("")
    for label, r in v.items():
        if label == "as shipped":
            continue
        delta = r["zip_bytes"] - shipped
        rows.append(f"- `{label}`: " + (
            f"the zip changed by {delta:+} bytes, under 0.5%: the shipped setting buys no size here."
            if abs(delta) < shipped * 0.005 else
            f"the shipped setting saves {delta} bytes ({delta / shipped * 100:.1f}% of the shipped zip)."
            if delta > 0 else
            f"the zip is {-delta} bytes smaller: the shipped setting costs that much size."))
    not_built = [label for label in bench.PROFILE_VARIANTS if label not in v]
    if not_built:
        rows += ["", "Not measured in this run (its builds did not finish): " + ", ".join(f"`{x}`" for x in not_built)
                 + "."]
    return "\n".join(rows) + "\n"


def section_features(f: dict | None) -> str:
    if not f:
        return missing("the dependency trees", "BENCH_ONLY=features make bench")
    if "error" in f:
        return f"_Not measured in the last run (commit {f.get('commit', '?')}): {f['error']}_\n"
    added = f["added"]
    cmd = f"cargo tree -p {f['function']} --target {f['target']} -e normal,build"
    return (f"`{f['function']}`'s dependency tree (commit {f.get('commit', '?')}, `{cmd}`, distinct crates): "
            f"**{f['shipped']}** as shipped; **{f['defaults']}** with the default features of the workspace's "
            f"SDK crates ({', '.join(f['sdk_crates'])}) back on, "
            + (f"{len(added)} more: " + ", ".join(f"`{c}`" for c in added) + "." if added else "none more.")
            + (" Dropped with the defaults: " + ", ".join(f"`{c}`" for c in f["removed"]) + "." if f["removed"] else "")
            + "\n")


def package_against_baseline(p: dict) -> str:
    before = baseline("package")
    if not before:
        return ""
    rows = ["", f"Against the baseline ({BASELINE_WHAT}): each zip, before -> now.", "",
            "| function | zip bytes before | now | change |", "|---|---:|---:|---:|"]
    changes = []
    for name, r in sorted(p["functions"].items()):
        b = before["functions"].get(name)
        if not b:
            continue
        change = r["zip_bytes"] / b["zip_bytes"] - 1
        changes.append(change)
        rows.append(f"| {name} | {b['zip_bytes']} | {r['zip_bytes']} | {change * 100:+.1f}% |")
    if changes:
        newer = sorted(set(p["functions"]) - set(before["functions"]))
        rows += ["", f"Each of the {len(changes)} zips compared changed by {min(changes) * 100:+.1f}% to "
                 f"{max(changes) * 100:+.1f}%; before, "
                 f"{sum(1 for r in before['functions'].values() if r['zip_bytes'] > 5_000_000)} of "
                 f"{len(before['functions'])} were over 5,000,000 bytes."
                 + (f" Newer than the baseline, so not compared: {', '.join(newer)}." if newer else "")]
    return "\n".join(rows) + "\n"


def section_bake(b: dict | None, idle: dict | None) -> str:
    if not b:
        return missing("these figures", "BENCH_ONLY=bake make bench")
    lines = [f"Execution `{b['execution']}`: {b['status']} in {b['wall_seconds']:.0f} s of wall time "
             f"(the emulator polls every second), version {b['version']}, images "
             + ", ".join(f"{r} {i}" for r, i in sorted(b["images"].items())) + ".", "",
             "| | count |", "|---|---:|",
             f"| Lambda invocations | {b['invocations']} |",
             f"| state transitions (states entered) | {b['state_transitions']} |",
             f"| summed handler time, as the router saw it | {b['handler_seconds']:.2f} s |",
             f"| AWS API calls by the functions | {b['aws_calls']} |", "",
             "Invocations per function: " + ", ".join(
                 f"{n} {r['invocations']} ({r['seconds']:.2f} s)" for n, r in sorted(b["per_function"].items())) + ".",
             "", "States entered: " + ", ".join(f"{n} {c}" for n, c in b["states_entered"].items()) + ".", "",
             "| call | seen | a bake needs at least | what it is for |", "|---|---:|---:|---|"]
    unexplained = []
    minimum = 0
    for op, count in b["calls_by_operation"].items():
        need, why = BAKE_CALLS.get(op, (None, None))
        if need is None:
            unexplained.append(op)
            lines.append(f"| {op} | {count} | ? | **not explained** |")
        else:
            minimum += need
            lines.append(f"| {op} | {count} | {need} | {why} |")
    lines.append(f"| **all** | **{b['aws_calls']}** | **{minimum}** | |")
    lines.append("")
    lines.append("Calls by stage: " + "; ".join(
        f"{stage}: " + ", ".join(f"{op} {n}" for op, n in ops.items()) for stage, ops in b["calls_by_stage"].items()) + ".")
    if unexplained:
        lines.append(f"\n**Calls not explained above**: {', '.join(unexplained)}.")
    lines.append("")
    lines.append(cost(b, idle, load("coldstart")))
    return "\n".join(lines) + "\n"


S3_PUT_CLASS = ("s3:PutObject", "s3:CopyObject", "s3:ListObjectsV2", "s3:ListObjects")  # PUT, COPY, POST, LIST
S3_FREE = ("s3:DeleteObject",)  # DELETE is not billed


def s3_requests(calls: dict[str, int]) -> tuple[int, int]:
    """(PUT-class, GET-class) S3 requests among calls by operation, as S3 bills them."""
    put = sum(n for op, n in calls.items() if op in S3_PUT_CLASS)
    get = sum(n for op, n in calls.items() if op.startswith("s3:") and op not in S3_PUT_CLASS + S3_FREE)
    return put, get


def template_alarms() -> tuple[int, str]:
    """How many CloudWatch alarms infra/template.yaml makes with its default parameters (each Fn::ForEach
    loop's alarms once per item, `!Ref Types` taken at its default), and how they break down."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: (
        {"Ref": loader.construct_scalar(node)} if suffix == "Ref" else None))
    doc = yaml.load((REPO / "infra" / "template.yaml").read_text(), Loader=Loader)
    defaults = {k: v.get("Default") for k, v in doc.get("Parameters", {}).items()}
    total, parts = 0, []
    for key, value in doc["Resources"].items():
        if key.startswith("Fn::ForEach::"):
            items = value[1]
            if isinstance(items, dict) and "Ref" in items:
                items = [i for i in str(defaults[items["Ref"]]).split(",") if i]
            alarms = sum(1 for r in value[2].values() if r.get("Type") == "AWS::CloudWatch::Alarm")
            if alarms:
                total += alarms * len(items)
                parts.append(f"{alarms * len(items)} of {key.removeprefix('Fn::ForEach::')}")
        elif isinstance(value, dict) and value.get("Type") == "AWS::CloudWatch::Alarm":
            total += 1
            parts.append(key)
    return total, ", ".join(parts)


def cost(b: dict, idle: dict | None, coldstart: dict | None) -> str:
    import bench

    p = bench.PRICES
    gb = bench.MEMORY_MB / 1024
    s3_put, s3_get = s3_requests(b["calls_by_operation"])
    parts = {
        "Step Functions transitions": b["state_transitions"] * p["sfn_transition"],
        "Lambda requests": b["invocations"] * p["lambda_request"],
        "Lambda GB-seconds": b["billed_ms"] / 1000 * gb * p["lambda_gb_second_arm64"],
        "S3 PUT/LIST": s3_put * p["s3_put"],
        "S3 GET": s3_get * p["s3_get"],
    }
    total = sum(parts.values())
    out = [f"**Orchestration cost of one bake** at {bench.PRICES_AS_OF} (the builder's EC2 time and the "
           "images' EBS storage are not orchestration and not counted; EC2 and standard SSM API calls are free; "
           f"Lambda billed at {bench.MEMORY_MB} MB, each invocation's router-measured time rounded up to 1 ms; "
           "free tiers ignored):", "", "| part | USD |", "|---|---:|"]
    out += [f"| {k} | {v:.6f} |" for k, v in parts.items()]
    # The emulator answers every poll at once, so each polling loop ran once. In AWS each loop runs once per
    # pollSeconds until its wait is over; each further round is a Wait, a Task and a Choice (3 transitions)
    # and one invocation. Assumed waits (minutes) of a typical Linux bake, polled at the default 30 s:
    waits = {"builder boot": 3, "provision": 20, "sanitize": 2, "image": 15, "each of 2 copies": 15}
    polls = sum(m * 2 for m in waits.values()) + waits["each of 2 copies"] * 2  # copies poll side by side
    emulator_polls = 6  # CheckBuilder, provision, sanitize, image, and the two copies: once each above
    extra = max(0, polls - emulator_polls)
    per_poll_ms = b["billed_ms"] / max(1, b["invocations"])
    typical = (total + extra * 3 * p["sfn_transition"] + extra * p["lambda_request"]
               + extra * per_poll_ms / 1000 * gb * p["lambda_gb_second_arm64"])
    out += [f"| **one bake on the emulator** (each poll once) | **{total:.6f}** |",
            f"| 3 types baked nightly, 30 days, at that | {total * 90:.4f} |",
            f"| **one bake in AWS, estimated**: {polls} polls at 30 s for "
            + ", ".join(f"{k} {v} min" for k, v in waits.items())
            + f" (assumed, not measured): {extra} more polls than above, each 3 transitions and an invocation "
            f"| **{typical:.6f}** |",
            f"| 3 types baked nightly, 30 days, at that | {typical * 90:.4f} |", ""]
    if idle:
        # Schedules of infra/template.yaml: prune daily, reap every 15 minutes, enforce hourly.
        per_day = {"prune": 1, "reap-builders": 96, "enforce-freshness": 24}
        inits = (coldstart or {}).get("functions", {})
        monthly = 0.0
        rows = []
        for fn, n in per_day.items():
            r = idle[fn]
            calls = r["calls_by_operation"]
            puts, gets = s3_requests(calls)
            # Lambda bills a custom runtime's init; a sweep 15 minutes or more after the last may find no
            # warm process, so each run is counted as a cold start (an upper bound).
            init_ms = inits.get(fn, {}).get("init_ms_median", 0.0)
            billed_ms = max(1, round(r["seconds"] * 1000 + init_ms))
            one = (p["lambda_request"] + billed_ms / 1000 * gb * p["lambda_gb_second_arm64"]
                   + gets * p["s3_get"] + puts * p["s3_put"])
            monthly += one * n * 30
            rows.append(f"| {fn} | {n} | {r['seconds'] * 1000:.0f} ms + {init_ms:.0f} ms init | {r['aws_calls']} "
                        f"({', '.join(f'{k} {v}' for k, v in calls.items())}) | {one * n * 30:.4f} |")
        polls = bench.SQS_POLLERS * 30 * 24 * 3600 // bench.SQS_LONG_POLL_SECONDS
        sqs = polls * p["sqs_request"]
        alarms, which = template_alarms()
        alarm_cost = alarms * p["cloudwatch_alarm_month"]
        rows.append(f"| prune's SQS event source mapping (PruneEventsQueue) | continuous | "
                    f"{bench.SQS_POLLERS} long polls of {bench.SQS_LONG_POLL_SECONDS} s at a time | "
                    f"{polls} ReceiveMessage (not measured: Lambda's pollers, at their documented minimum) | "
                    f"{sqs:.4f} |")
        rows.append(f"| CloudWatch alarms of the template | - | - | {alarms} alarms ({which}) | {alarm_cost:.4f} |")
        monthly += sqs + alarm_cost
        out += ["**Standing cost of an idle deployment** per 30 days: the three scheduled sweeps on an estate "
                "with nothing to do (measured on the emulator: `BENCH_ONLY=idle make bench`), each run billed "
                "with its cold start's init (section 1), plus what a deployed stack pays while nothing happens: "
                "prune's queue being polled and the template's alarms (counted from infra/template.yaml with "
                "its default parameters). EventBridge rules on a schedule are free, and the 3 bake schedules' "
                "90 Scheduler invocations a month cost under $0.0001; CloudWatch Logs ingestion of the sweeps' "
                "few lines is not counted.", "",
                "| what | runs a day | one run | its AWS calls | USD / 30 days |", "|---|---:|---:|---|---:|",
                *rows, f"| **idle deployment** | | | | **{monthly:.4f}** |", ""]
    return "\n".join(out)


def own_time(r: dict) -> float | None:
    """A function's time less the emulator's answers to its calls; None where that was not recorded or the
    remainder is within the timers' noise (under 10 ms)."""
    if "emulator_seconds" not in r:
        return None
    own = r["seconds"] - r["emulator_seconds"]
    return own if own >= 0.01 else None


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def section_retention() -> str:
    import bench

    runs = [load(f"retention-{n}") for n in bench.RETENTION_SIZES]
    runs = [r for r in runs if r]
    if not runs:
        return missing("these figures", "BENCH_ONLY=retention make bench")
    out = ["| images | prune: plan s | of it, the emulator's answers s | prune's own s | calls | deletes | "
           "protected it would delete | amicleaner: s | of it, the emulator's s | calls | deletes | "
           "protected it would delete |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        p, a = r["prune"], r["amicleaner"]
        out.append(f"| {r['images']} | {p['seconds']:.2f} | {seconds(p.get('emulator_seconds'))} | "
                   f"{seconds(own_time(p))} | {p['aws_calls']} | {p['deletes']} | "
                   f"{len(p['deletes_protected'])} | {a['seconds']:.2f} | {seconds(a.get('emulator_seconds'))} | "
                   f"{a['aws_calls']} | {a['deletes']} | {len(a['deletes_protected'])} |")
    out.append("")
    for r in runs:
        p, a = r["prune"], r["amicleaner"]
        out.append(f"- **{r['images']} images**: prune's calls: " + ", ".join(f"{k} {v}" for k, v in p["calls_by_operation"].items())
                   + "; amicleaner's: " + ", ".join(f"{k} {v}" for k, v in a["calls_by_operation"].items()) + ".")
        out.append("  Prune's decisions by first reason: " + ", ".join(
            f"{k} {v}" for k, v in p["decisions_by_first_reason"].items()) + ".")
        out.append(f"  The revoked newest version of bench-00: prune deletes {p['revoked_deleted']} of its 2 images, "
                   f"amicleaner {a['revoked_deleted']}.")
        if a["deletes_protected"]:
            shown = a["deletes_protected"][:6]
            out.append(f"  amicleaner would delete {len(a['deletes_protected'])} protected images, e.g. "
                       + "; ".join(shown) + ".")
        if p["deletes_protected"]:
            out.append(f"  **prune would delete {len(p['deletes_protected'])} protected images**: "
                       + "; ".join(p["deletes_protected"][:6]) + ".")
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        scale = last["images"] / first["images"]
        out.append("")
        own_first, own_last = own_time(first["prune"]), own_time(last["prune"])
        own_growth = f"x{own_last / own_first:.2f}" if own_first and own_last else "not measured"
        out.append(f"Growth from {first['images']} to {last['images']} images ({scale:.0f}x): prune's calls "
                   f"x{last['prune']['aws_calls'] / first['prune']['aws_calls']:.2f}, its plan time "
                   f"x{last['prune']['seconds'] / first['prune']['seconds']:.2f} (its own, without the emulator's "
                   f"answers, {own_growth}); amicleaner's calls "
                   f"x{last['amicleaner']['aws_calls'] / max(1, first['amicleaner']['aws_calls']):.2f}, its time "
                   f"x{last['amicleaner']['seconds'] / first['amicleaner']['seconds']:.2f}.")
        owns = [(r["images"], own_time(r["prune"])) for r in runs]
        if all(t for _, t in owns):
            slopes = [(t2 - t1) / ((n2 - n1) / 1000) for (n1, t1), (n2, t2) in zip(owns, owns[1:])]
            out.append("Prune's own time (its plan time less the emulator's answers): "
                       + ", ".join(f"{t:.2f} s at {n}" for n, t in owns)
                       + ". That is a fixed part (its calls that do not grow with the images: recipes, launch "
                       "templates, parameters) and a part that grows with them: "
                       + ", then ".join(f"{sl:+.2f} s per 1,000 more images from {n1} to {n2}"
                                        for sl, ((n1, _), (n2, _)) in zip(slopes, zip(owns, owns[1:])))
                       + " (a slope that does not rise as the estate grows is growth no faster than linear).")
            calls = [(r["images"], r["prune"]["aws_calls"]) for r in runs]
            call_slopes = [(c2 - c1) / ((n2 - n1) / 1000) for (n1, c1), (n2, c2) in zip(calls, calls[1:])]
            per_call = [t / c * 1000 if c else None for (_, t), (_, c) in zip(owns, calls)]
            out.append("Its calls: " + ", then ".join(f"{sl:+.1f} per 1,000 more images" for sl in call_slopes)
                       + "; its own time per call: "
                       + ", ".join(f"{ms:.0f} ms at {n}" if ms else f"- at {n}" for ms, (n, _) in zip(per_call, owns))
                       + " (most of it each call's transport through the router, below).")
            for i in range(len(slopes) - 1):
                if slopes[i + 1] <= slopes[i]:
                    continue
                n1, n2 = owns[i + 1][0], owns[i + 2][0]
                calls_rose = call_slopes[i + 1] > call_slopes[i]
                before, after = per_call[i + 1], per_call[i + 2]
                per_call_rose = before is None or after is None or after > before * 1.05
                if calls_rose and not per_call_rose:
                    out.append(f"The own-time slope rose from {n1} to {n2} images, where the calls' slope rose "
                               "too (more page boundaries fall in that step), and the time per call did not: "
                               "there the own time grew with the number of calls.")
                else:
                    out.append(f"**The own-time slope rose from {n1} to {n2} images** while "
                               + ("the time per call rose" if calls_rose else "the calls' slope did not")
                               + ": on these runs, faster than linear, or the machine's noise (each size ran once).")
    return "\n".join(out) + "\n"


def section_enforce() -> str:
    import bench

    runs = [r for r in (load(f"enforce-{n}") for n in bench.ENFORCE_SIZES) if r]
    if not runs:
        return missing("these figures", "BENCH_ONLY=enforce make bench")
    out = ["| instances | sweep s | of it, the emulator's answers s | decisions | decisions/s | "
           "decisions/s without the emulator's time | would act on | AWS calls | calls by operation | "
           "manifest bytes |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in runs:
        own = own_time(r)
        own_rate = f"{r['decisions'] / own:.0f}" if own else "-"
        out.append(f"| {r['instances']} | {r['seconds']:.2f} | {seconds(r.get('emulator_seconds'))} | "
                   f"{r['decisions']} | {r['decisions_per_second']:.0f} | "
                   f"{own_rate} | "
                   f"{r['would_act']} | {r['aws_calls']} | "
                   + ", ".join(f"{k} {v}" for k, v in r["calls_by_operation"].items()) + f" | {r['manifest_bytes']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    template = (REPO / "docs" / "benchmarks.template.md").read_text()
    parts = {
        "machine": section_machine(load("machine")),
        "coldstart": section_coldstart(load("coldstart")),
        "package": section_package(load("package")),
        "profile": section_profile(load("profile")),
        "features": section_features(load("features")),
        "bake": section_bake(load("bake"), load("idle")),
        "retention": section_retention(),
        "enforce": section_enforce(),
    }
    text = template
    for key, value in parts.items():
        text = text.replace("{{" + key + "}}", value.rstrip() + "\n")
    DOC.write_text(text)
    print(f"bench: wrote {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
