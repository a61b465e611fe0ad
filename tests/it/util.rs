//! What every test uses beside the servers of the testkit: a workspace with config, spec dir,
//! state dir and AWS profiles, and a runner for the real `s3syncd` binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use s3syncd_testkit::*;

/// Writes a spec-like file with an explicit mode, whatever the umask: s3syncd refuses files
/// that group or others may write, and a clone under umask 002 must still pass.
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// A copy of a directory of spec fixtures with explicit modes (files 0644, the directory
/// 0755), so that permission checks judge the fixture, not the clone's umask.
pub fn private_dir(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            private_copy(&p, &dir.path().join(p.file_name().unwrap()));
        }
    }
    dir
}

/// Copies a file and sets mode 0644 (`fs::copy` would keep the source's mode).
pub fn private_copy(from: &Path, to: &Path) {
    std::fs::write(to, std::fs::read(from).unwrap()).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Each server of the test ground, for tests that run on both: (name, endpoint, a client for
/// set-up and checks, the access and secret key s3syncd signs with).
pub fn both_servers(moto: &moto::Moto, server: &S3Server) -> [(&'static str, String, aws_sdk_s3::Client, (String, String)); 2] {
    [
        (
            "moto",
            moto.endpoint.clone(),
            moto.client(),
            ("moto-key".into(), "moto-secret".into()),
        ),
        (
            "s3s-fs",
            server.endpoint.clone(),
            server.client(),
            (server.access_key.clone(), server.secret_key.clone()),
        ),
    ]
}

/// An s3s-fs server with `src-bucket` holding `objects` and an empty `dst-bucket`, and a
/// workspace whose `src` and `dst` profiles hold the server's keys.
pub async fn seeded(objects: &[(String, Vec<u8>)]) -> (S3Server, aws_sdk_s3::Client, Workspace) {
    let server = S3Server::start();
    let c = server.client();
    create_bucket(&c, "src-bucket").await;
    create_bucket(&c, "dst-bucket").await;
    put_all(&c, "src-bucket", objects.to_vec()).await;
    let ws = Workspace::new(&[
        ("src", &server.access_key, &server.secret_key),
        ("dst", &server.access_key, &server.secret_key),
    ]);
    (server, c, ws)
}

/// A temporary installation: config, spec dir, state dir, and AWS profiles for both sides.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// `profiles`: (name, access key, secret key).
    pub fn new(profiles: &[(&str, &str, &str)]) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("specs.d")).unwrap();
        std::fs::set_permissions(root.join("specs.d"), std::fs::Permissions::from_mode(0o755)).unwrap();
        write_private(&root.join("s3syncd.toml"), "spec_dir = \"specs.d\"\nstate_dir = \"state\"\n");
        let mut creds = String::new();
        let mut conf = String::new();
        for (name, ak, sk) in profiles {
            creds.push_str(&format!("[{name}]\naws_access_key_id = {ak}\naws_secret_access_key = {sk}\n\n"));
            conf.push_str(&format!("[profile {name}]\nregion = us-east-1\n\n"));
        }
        std::fs::write(root.join("aws-credentials"), creds).unwrap();
        std::fs::write(root.join("aws-config"), conf).unwrap();
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config(&self) -> PathBuf {
        self.path().join("s3syncd.toml")
    }
    pub fn spec_dir(&self) -> PathBuf {
        self.path().join("specs.d")
    }
    pub fn manifest(&self) -> PathBuf {
        self.path().join("state/manifest.db")
    }

    pub fn write_spec(&self, name: &str, text: &str) -> PathBuf {
        let p = self.spec_dir().join(format!("{name}.toml"));
        write_private(&p, text);
        p
    }

    /// The real binary, with only this workspace's credentials in its environment, and no
    /// way to reach anything but loopback (the instance metadata service is disabled).
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_s3syncd"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("S3SYNCD_CONFIG", self.config())
            .env("AWS_CONFIG_FILE", self.path().join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.path().join("aws-credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("S3SYNCD_LOG", "s3syncd=debug,warn");
        c
    }

    /// A spec from `src-bucket/data/` to `dst-bucket/{prefix}` on one server (the `seeded` layout).
    pub fn seeded_spec(&self, name: &str, endpoint: &str, prefix: &str, extra: &str) -> PathBuf {
        self.write_spec(
            name,
            &spec_text(endpoint, "src-bucket", "data/", endpoint, "dst-bucket", prefix, extra),
        )
    }

    /// A config for `s3syncd daemon` that serves `metrics_listen` on `port`, and the spec
    /// directory and specs opened as the daemon's permission rule allows.
    pub fn daemon_config(&self, port: u16) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            self.config(),
            format!("spec_dir = \"specs.d\"\nstate_dir = \"state\"\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(self.spec_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for spec in std::fs::read_dir(self.spec_dir()).unwrap() {
            std::fs::set_permissions(spec.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `s3syncd run SPEC` in the background; await the handle for its output.
    pub fn spawn_run(&self, spec: &Path) -> tokio::task::JoinHandle<Output> {
        let mut cmd = self.command();
        cmd.arg("run").arg(spec);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    }

    /// Object rows in the manifest now, read as another process would (0 before it exists).
    pub fn recorded(&self) -> i64 {
        let db = rusqlite::Connection::open_with_flags(self.manifest(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY);
        db.and_then(|db| db.query_row("SELECT count(*) FROM objects", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    }

    pub fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.manifest()).unwrap()
    }
}

/// Waits until `cond` holds, polling every 20 ms; fails the test after `secs` seconds.
pub async fn until(secs: u64, what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.0 request on loopback (`"GET /metrics"`): the whole answer, head and body.
pub async fn http_get(port: u16, request: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("{request} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

pub fn text(o: &Output) -> String {
    format!(
        "--- exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A spec between two buckets of servers, with both sides signed by their profiles.
pub fn spec_text(
    src_endpoint: &str,
    src_bucket: &str,
    src_prefix: &str,
    dst_endpoint: &str,
    dst_bucket: &str,
    dst_prefix: &str,
    extra: &str,
) -> String {
    format!(
        r#"{extra}
[source]
bucket = "{src_bucket}"
prefix = "{src_prefix}"
endpoint = "{src_endpoint}"
profile = "src"

[destination]
bucket = "{dst_bucket}"
prefix = "{dst_prefix}"
endpoint = "{dst_endpoint}"
profile = "dst"
"#
    )
}
