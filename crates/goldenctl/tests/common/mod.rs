//! What goldenctl's test files share: the binary, JSON of its output, and buckets and manifests of their
//! own on the emulator (scripts/emulator run, as `make test` does).

#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use assert_cmd::Command;
use golden_core::aws::S3Store;
use golden_core::manifest::{Edit, VersionEntry, VersionStatus};
use golden_core::publishing::update_manifest;
use golden_core::version::Version;
use golden_it::Emulator;
use serde_json::Value;

pub fn goldenctl() -> Command {
    let mut cmd = Command::cargo_bin("goldenctl").expect("the goldenctl binary");
    cmd.env_remove("NO_COLOR");
    cmd
}

/// Runs goldenctl with `args`, expects `code`, and parses what it printed as JSON.
pub fn json_of(args: &[&str], code: i32) -> Value {
    let out = goldenctl()
        .args(args)
        .assert()
        .code(code)
        .get_output()
        .stdout
        .clone();
    json(&out)
}

/// The emulator's bucket; these tests need `scripts/emulator run` (as `make test` does).
pub fn emulator_bucket() -> String {
    std::env::var("GOLDEN_BUCKET")
        .ok()
        .filter(|_| std::env::var("GOLDEN_EMULATOR").is_ok())
        .expect("run under the emulator: scripts/emulator run -- cargo test -p goldenctl")
}

/// Parses what a command printed as JSON.
pub fn json(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "goldenctl printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(stdout)
        )
    })
}

/// Replaces each `(actual, placeholder)` in `text`, so a snapshot holds no id that changes run to run.
pub fn normalise(text: &str, ids: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (actual, placeholder) in ids {
        assert!(!actual.is_empty(), "an empty id would replace nothing");
        out = out.replace(actual, placeholder);
    }
    out
}

/// [`normalise`] for a table: each placeholder is padded with `.` to its id's width, so the columns stay
/// aligned as the table was laid out.
pub fn normalise_table(text: &str, ids: &[(&str, &str)]) -> String {
    let padded: Vec<(&str, String)> = ids
        .iter()
        .map(|(actual, placeholder)| {
            (
                *actual,
                format!("{placeholder:.<width$}", width = actual.len()),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = padded.iter().map(|(a, p)| (*a, p.as_str())).collect();
    normalise(text, &pairs)
}

/// A name no other test or run uses, of a fixed length (unlike `golden_it::unique_type`'s), so tables that
/// show it are laid out the same in every run and can be snapshots: `prefix-PPPPPPPP-NNNNNNNN`, the
/// process id and a per-process count mixed with the clock, in hex.
pub fn unique(prefix: &str) -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = nanos.wrapping_add(
        COUNT
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_mul(0x9e37_79b9),
    );
    format!("{prefix}-{:08x}-{n:08x}", std::process::id())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// A bucket of the test's own (so what other tests push cannot change the outcome), versioned or not.
pub async fn bucket(emu: &Emulator, name: &str, versioned: bool) {
    let s3 = emu.s3();
    s3.create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("CreateBucket");
    if versioned {
        s3.put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("PutBucketVersioning");
    }
}

pub async fn put(emu: &Emulator, bucket: &str, key: &str, body: Vec<u8>) {
    emu.s3()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .expect("PutObject");
}

/// A version entry as a bake publishes it.
pub fn entry(version: &str, images: &[(&str, &str)], status: VersionStatus) -> VersionEntry {
    let version = Version::parse(version).expect("a version");
    VersionEntry {
        recipe_hash: None,
        shared_with: None,
        extra: Default::default(),
        created_at: version.created_at(),
        version,
        source_ami: "ami-0123456789abcdef0".into(),
        execution: "arn:aws:states:us-east-1:123456789012:execution:bake:test".into(),
        images: images
            .iter()
            .map(|(r, i)| ((*r).to_owned(), (*i).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        status,
        revoked_reason: (status == VersionStatus::Revoked).then(|| "test: bad image".to_owned()),
        revoked_at: None,
    }
}

/// Adds `versions` of `ty` to `bucket`'s manifest (read-modify-write, so other types' entries stay);
/// published ones become current in order, so the newest published is current.
pub async fn publish(emu: &Emulator, bucket: &str, ty: &str, versions: Vec<VersionEntry>) {
    let store = S3Store::new(emu.s3(), bucket);
    update_manifest(&store, chrono::Utc::now(), |m| {
        let mut edit = Edit::Unchanged;
        for v in &versions {
            let current = v.status == VersionStatus::Published;
            if m.add_version(ty, v.clone(), current)? == Edit::Changed {
                edit = Edit::Changed;
            }
        }
        Ok(edit)
    })
    .await
    .expect("publish to the manifest");
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Creates a CloudFormation stack in moto from `template` (JSON); returns its name, unique to the test.
pub async fn create_stack(emu: &Emulator, prefix: &str, template: &Value) -> String {
    let name = unique(prefix);
    aws_sdk_cloudformation::Client::new(&emu.sdk)
        .create_stack()
        .stack_name(&name)
        .template_body(template.to_string())
        .send()
        .await
        .expect("CreateStack");
    name
}

/// Every line of `text` fits a 100-column terminal.
pub fn assert_fits_100_columns(text: &str) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}",
            line.chars().count()
        );
    }
}
