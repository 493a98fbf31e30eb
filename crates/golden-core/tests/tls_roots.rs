//! The trust roots reach the HTTPS client. Against a local TLS server whose certificate a throwaway CA signed
//! (openssl, python3's `ssl`): the functions' client (`TrustRoots::Amazon`) refuses the handshake, fails at once
//! and names the setting to change; the system's store (`TrustRoots::Native`), pointed at that CA by
//! `SSL_CERT_FILE`, gets through to an HTTP answer. One test in a binary of its own: rustls-native-certs
//! reads `SSL_CERT_FILE` once per process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use aws_sdk_s3::config::{Credentials, Region};
use aws_smithy_types::retry::RetryConfig;
use golden_core::aws::{load_function_config, TrustRoots};
use golden_core::error::{AwsError, AwsErrorKind};

/// A TLS server on 127.0.0.1 that answers every request 404; stopped by PID when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SERVER: &str = r#"
import http.server, ssl, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate it signed for 127.0.0.1, in a fresh directory.
fn certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("golden-ami-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("the server certificate's extensions");
    run(
        &dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=golden-ami test CA",
        ],
    );
    run(
        &dir,
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    run(
        &dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ],
    );
    dir
}

fn serve(dir: &Path) -> Server {
    let mut child = Command::new("python3")
        .args(["-c", SERVER])
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("the server's stdout is piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its port");
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("server said {line:?}"));
    Server { child, port }
}

async fn get_object(roots: TrustRoots, port: u16) -> Result<(), AwsError> {
    let sdk = load_function_config("TlsTest", roots).await;
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .endpoint_url(format!("https://127.0.0.1:{port}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .force_path_style(true)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(config)
        .get_object()
        .bucket("b")
        .key("manifest.json")
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("GetObject", "s3://b/manifest.json", "us-east-1", e))
}

#[tokio::test]
async fn amazons_roots_refuse_another_ca_and_the_system_store_set_to_it_gets_through() {
    let dir = certificates();
    let server = serve(&dir);
    // Before any client reads the system's store (it is read once per process).
    std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem"));

    let refused = get_object(TrustRoots::Amazon, server.port)
        .await
        .expect_err("a certificate of the test CA is not Amazon's");
    assert_eq!(refused.kind, AwsErrorKind::Other, "{refused}");
    let text = refused.to_string();
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(text.contains("deploy with TlsRoots=native"), "{text}");

    // Through the handshake: the server's 404 is S3's answer, not a transport failure.
    let answered = get_object(TrustRoots::Native, server.port)
        .await
        .expect_err("the server answers 404");
    assert_eq!(answered.status, Some(404), "{answered}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
