//! `goldenctl check`: the verdict on an instance's AMI, from the instance metadata service (a local IMDSv2
//! stand-in below) or from EC2, against a manifest on the emulator; and that it fails fast, never hangs,
//! when what it reads cannot be reached. Each test publishes its own type, so tests never see each other.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{closed_port, goldenctl, json, normalise, normalise_table, publish, runtime, unique};
use golden_core::manifest::VersionStatus;
use golden_it::Emulator;
use predicates::prelude::*;

const REGION: &str = "us-east-1";
const TOKEN: &str = "stand-in-token-7f3a";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// A local instance metadata service, IMDSv2 only: `PUT /latest/api/token` (with the TTL header) gives a
/// token, and a GET without it is refused with 401, as on an instance that requires tokens. Every request
/// is logged as `PUT path ttl=...` or `GET path token=ok|missing|wrong`.
struct Imds {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Imds {
    fn start(paths: BTreeMap<String, String>) -> Imds {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the IMDS stand-in");
        let port = listener.local_addr().expect("address").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_log, thread_stop) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &paths, &thread_log);
                }
            }
        });
        Imds {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// The stand-in for an instance with these facts; `type_tag` None: metadata tags off (404).
    fn instance(ami: &str, instance_id: &str, type_tag: Option<&str>) -> Imds {
        let mut paths = BTreeMap::new();
        paths.insert("/latest/meta-data/ami-id".to_owned(), ami.to_owned());
        paths.insert(
            "/latest/meta-data/placement/region".to_owned(),
            REGION.to_owned(),
        );
        paths.insert(
            "/latest/meta-data/instance-id".to_owned(),
            instance_id.to_owned(),
        );
        if let Some(ty) = type_tag {
            paths.insert(
                format!(
                    "/latest/meta-data/tags/instance/{}",
                    golden_core::tags::TYPE
                ),
                ty.to_owned(),
            );
        }
        Imds::start(paths)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, paths: &BTreeMap<String, String>, log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, extra, text) = match method {
        "PUT" if path == "/latest/api/token" => {
            let ttl = headers.get(TTL_HEADER).cloned();
            log.lock().expect("log").push(format!(
                "PUT {path} ttl={}",
                ttl.as_deref().unwrap_or("missing")
            ));
            match ttl {
                Some(ttl) => (
                    "200 OK",
                    format!("{TTL_HEADER}: {ttl}\r\n"),
                    TOKEN.to_owned(),
                ),
                None => ("400 Bad Request", String::new(), String::new()),
            }
        }
        "GET" => {
            let token = match headers.get(TOKEN_HEADER).map(String::as_str) {
                Some(TOKEN) => "ok",
                Some(_) => "wrong",
                None => "missing",
            };
            log.lock()
                .expect("log")
                .push(format!("GET {path} token={token}"));
            if token != "ok" {
                ("401 Unauthorized", String::new(), String::new())
            } else {
                match paths.get(path) {
                    Some(value) => ("200 OK", String::new(), value.clone()),
                    None => ("404 Not Found", String::new(), String::new()),
                }
            }
        }
        _ => ("405 Method Not Allowed", String::new(), String::new()),
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// A server that accepts connections and never answers: a firewall that drops, a hung proxy.
struct Silent {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                held.extend(stream.ok());
            }
        });
        Silent {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A type with three versions on the emulator's manifest: v1 revoked, v2 published (stale), v3 current;
/// each with its own registered image in us-east-1.
struct Published {
    ty: String,
    revoked: String,
    stale: String,
    current: String,
}

const V1: &str = "20260101T000000Z";
const V2: &str = "20260201T000000Z";
const V3: &str = "20260301T000000Z";

fn published(prefix: &str) -> (Emulator, Published) {
    runtime().block_on(async {
        let emu = Emulator::from_env().await;
        let ty = unique(prefix);
        let mut ids = Vec::new();
        for v in [V1, V2, V3] {
            let tags = [
                (golden_core::tags::ROLE, golden_core::tags::ROLE_IMAGE),
                (golden_core::tags::TYPE, ty.as_str()),
                (golden_core::tags::VERSION, v),
            ];
            let (id, _) = emu
                .register_image(REGION, &format!("golden-{ty}-{v}"), &tags)
                .await;
            ids.push(id);
        }
        let bucket = emu.bucket.clone();
        publish(
            &emu,
            &bucket,
            &ty,
            vec![
                common::entry(V1, &[(REGION, &ids[0])], VersionStatus::Revoked),
                common::entry(V2, &[(REGION, &ids[1])], VersionStatus::Published),
                common::entry(V3, &[(REGION, &ids[2])], VersionStatus::Published),
            ],
        )
        .await;
        let p = Published {
            ty,
            revoked: ids[0].clone(),
            stale: ids[1].clone(),
            current: ids[2].clone(),
        };
        (emu, p)
    })
}

fn run_instance(emu: &Emulator, image: &str, tags: &[(&str, &str)]) -> String {
    runtime().block_on(emu.run_instance(REGION, image, tags))
}

/// Runs `goldenctl --output json check` against `imds`; returns (exit code, JSON or Null, stderr).
fn check_json(imds: &Imds, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = goldenctl()
        .args(["--output", "json", "check", "--imds-endpoint", &imds.url()])
        .args(extra)
        .output()
        .expect("run goldenctl");
    let value = if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        json(&out.stdout)
    };
    (
        out.status.code().unwrap_or(-1),
        value,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_imds_stand_in_refuses_reads_without_a_token() {
    // The stand-in must refuse IMDSv1, or a passing check would not show that goldenctl speaks IMDSv2.
    let imds = Imds::instance("ami-0123456789abcdef0", "i-0123456789abcdef0", None);
    let mut stream = TcpStream::connect(("127.0.0.1", imds.port)).expect("connect");
    write!(
        stream,
        "GET /latest/meta-data/ami-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert_eq!(
        imds.log(),
        vec!["GET /latest/meta-data/ami-id token=missing"]
    );
}

#[test]
fn check_at_boot_on_the_current_ami_exits_0_reading_imdsv2_with_a_token() {
    let (_emu, p) = published("chk-cur");
    let imds = Imds::instance(&p.current, "i-0aaaaaaaaaaaaaaa1", Some(&p.ty));
    // WHEN the instance checks itself
    let (code, report, stderr) = check_json(&imds, &[]);
    // THEN it is current, its type read from the metadata tags
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert_eq!(report["verdict"], "current");
    assert_eq!(report["typeSource"], "imds");
    assert_eq!(report["instanceId"], "i-0aaaaaaaaaaaaaaa1");
    assert_eq!(report["currentVersion"], V3);
    assert_eq!(report["imageVersion"], V3);
    assert_eq!(report["exitCode"], 0);
    // AND it took a token first and sent it with every read (the stand-in refuses reads without it)
    let log = imds.log();
    assert!(
        log.first()
            .is_some_and(|l| l.starts_with("PUT /latest/api/token ttl=")),
        "{log:?}"
    );
    assert!(!log[0].ends_with("ttl=missing"), "{log:?}");
    let gets: Vec<&String> = log.iter().filter(|l| l.starts_with("GET ")).collect();
    assert!(
        gets.len() >= 4,
        "ami-id, region, instance-id and the tag: {log:?}"
    );
    assert!(gets.iter().all(|l| l.ends_with("token=ok")), "{log:?}");
    let text = serde_json::to_string_pretty(&report).expect("JSON");
    insta::assert_snapshot!(
        "check_current_json",
        normalise(
            &text,
            &[
                (&p.current, "ami-CURRENT"),
                (&p.ty, "TYPE"),
                (&common_bucket(), "BUCKET")
            ]
        )
    );
}

fn common_bucket() -> String {
    std::env::var("GOLDEN_BUCKET").expect("GOLDEN_BUCKET (run under the emulator)")
}

#[test]
fn check_on_a_stale_ami_exits_3_and_names_the_current_one() {
    let (_emu, p) = published("chk-stale");
    let imds = Imds::instance(&p.stale, "i-0aaaaaaaaaaaaaaa2", Some(&p.ty));
    let (code, report, stderr) = check_json(&imds, &[]);
    assert_eq!(code, 3, "{stderr}\n{report}");
    assert_eq!(report["verdict"], "stale");
    assert_eq!(report["imageVersion"], V2);
    assert_eq!(report["currentVersion"], V3);
    assert_eq!(report["currentImage"], p.current.as_str());
    // and the table says the same
    let out = goldenctl()
        .args(["check", "--imds-endpoint", &imds.url()])
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    insta::assert_snapshot!(
        "check_stale_table",
        normalise_table(
            &String::from_utf8_lossy(&out),
            &[
                (&p.stale, "ami-STALE"),
                (&p.current, "ami-CURRENT"),
                (&p.ty, "TYPE"),
                (&common_bucket(), "BUCKET")
            ]
        )
    );
}

#[test]
fn check_on_a_revoked_ami_exits_4_with_the_reason() {
    let (_emu, p) = published("chk-rev");
    let imds = Imds::instance(&p.revoked, "i-0aaaaaaaaaaaaaaa3", Some(&p.ty));
    let (code, report, stderr) = check_json(&imds, &[]);
    assert_eq!(code, 4, "{stderr}\n{report}");
    assert_eq!(report["verdict"], "revoked");
    assert_eq!(report["imageVersion"], format!("{V1} (revoked)"));
    assert_eq!(report["revokedReason"], "test: bad image");
}

#[test]
fn check_reads_the_type_tag_through_ec2_when_metadata_tags_are_off() {
    let (emu, p) = published("chk-ec2tag");
    let instance = run_instance(&emu, &p.current, &[(golden_core::tags::TYPE, &p.ty)]);
    // GIVEN metadata tags are off: the tag path answers 404
    let imds = Imds::instance(&p.current, &instance, None);
    let (code, report, stderr) = check_json(&imds, &[]);
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert_eq!(report["typeSource"], "ec2");
    assert_eq!(report["type"], p.ty.as_str());
    assert_eq!(report["instanceId"], instance.as_str());
}

#[test]
fn check_from_outside_reads_the_instance_from_ec2() {
    let (emu, p) = published("chk-out");
    let instance = run_instance(&emu, &p.stale, &[(golden_core::tags::TYPE, &p.ty)]);
    // No metadata service is involved: it points at a closed port.
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let out = goldenctl()
        .args(["--output", "json", "check", "--imds-endpoint", &dead])
        .args(["--instance-id", &instance, "--region", REGION])
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let report = json(&out);
    assert_eq!(report["imageId"], p.stale.as_str());
    assert_eq!(report["typeSource"], "ec2");
    assert_eq!(report["verdict"], "stale");
    // --type overrides the tag: as a type the manifest lacks, it is not golden
    goldenctl()
        .args(["check", "--instance-id", &instance, "--region", REGION])
        .args(["--type", "no-such-type"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "has no current version of type \"no-such-type\"",
        ));
    // --instance-id without --region is a usage error
    goldenctl()
        .args(["check", "--instance-id", &instance])
        .assert()
        .code(2);
}

#[test]
fn check_of_an_instance_without_a_type_tag_exits_1_and_says_to_tag_it() {
    let (emu, p) = published("chk-notag");
    let instance = run_instance(&emu, &p.current, &[("Name", "untagged")]);
    let imds = Imds::instance(&p.current, &instance, None);
    let (code, report, stderr) = check_json(&imds, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(report.is_null(), "no verdict without a type: {report}");
    assert!(
        stderr.contains(&format!(
            "instance {instance} in {REGION} has no tag \"golden-ami:type\""
        )) && stderr.contains("pass --type TYPE"),
        "{stderr}"
    );
}

#[test]
fn check_with_the_metadata_service_unreachable_exits_1_and_says_how_to_check_from_outside() {
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let started = Instant::now();
    goldenctl()
        .args(["check", "--timeout", "5", "--imds-endpoint", &dead])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(format!(
                "cannot read /latest/meta-data/ami-id from the instance metadata service at {dead}"
            ))
            .and(predicate::str::contains("--instance-id ID --region REGION")),
        );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn check_with_a_bucket_that_does_not_exist_exits_1_naming_it() {
    let (_emu, p) = published("chk-nobucket");
    let imds = Imds::instance(&p.current, "i-0aaaaaaaaaaaaaaa4", Some(&p.ty));
    let bucket = format!("no-such-bucket-{}", std::process::id());
    let (code, report, stderr) = check_json(&imds, &["--bucket", &bucket]);
    assert_eq!(code, 1, "{report}");
    assert!(report.is_null(), "{report}");
    assert!(
        stderr.contains(&format!(
            "cannot read the manifest s3://{bucket}/manifest.json"
        )) && stderr.contains("NoSuchBucket")
            && stderr.contains("check the bucket (--bucket, GOLDEN_BUCKET or --stack)"),
        "{stderr}"
    );
}

#[test]
fn check_with_aws_on_a_closed_port_exits_1_within_its_timeout() {
    let imds = Imds::instance(
        "ami-0123456789abcdef0",
        "i-0aaaaaaaaaaaaaaa5",
        Some("anything"),
    );
    let started = Instant::now();
    let out = goldenctl()
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        .args(["check", "--timeout", "2", "--imds-endpoint", &imds.url()])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let stderr = String::from_utf8_lossy(&out);
    // Refused connections fail (after the SDK's retries) or run into the timeout; either names the manifest.
    assert!(
        stderr.contains(&format!("s3://{}/manifest.json", common_bucket())),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn check_gives_up_at_its_timeout_when_s3_never_answers() {
    let imds = Imds::instance(
        "ami-0123456789abcdef0",
        "i-0aaaaaaaaaaaaaaa6",
        Some("anything"),
    );
    let silent = Silent::start();
    let started = Instant::now();
    goldenctl()
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", silent.port),
        )
        .args(["check", "--timeout", "2", "--imds-endpoint", &imds.url()])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "check timed out after 2 s while reading s3://{}/manifest.json",
            common_bucket()
        )));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[test]
fn help_lists_the_check_exit_codes() {
    goldenctl().arg("--help").assert().code(0).stdout(
        predicate::str::contains("3 `check`: the AMI is stale")
            .and(predicate::str::contains("4 `check`: the AMI is revoked")),
    );
}
