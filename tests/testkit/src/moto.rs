//! moto (Python, in memory) on 127.0.0.1: broad S3 semantics (ETags in listings, public ACLs for
//! anonymous reads). Installed from PyPI into `target/test-venv` on first use ([`pypi_tool`]);
//! `$S3SYNCD_MOTO_SERVER` names another binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    pub endpoint: String,
    child: Child,
}

fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("S3SYNCD_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    pypi_tool("moto[server]>=5,<6", "moto_server")
}

/// A command of a PyPI package, installed into `target/test-venv` on first use, under a file
/// lock so that parallel test binaries install it once.
pub fn pypi_tool(requirement: &str, command: &str) -> PathBuf {
    // The workspace's target directory (this crate lives in tests/testkit).
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let venv = target.join("test-venv");
    let bin = venv.join("bin").join(command);
    std::fs::create_dir_all(&target).unwrap();
    let lock = std::fs::File::create(target.join("test-venv.lock")).unwrap();
    lock.lock().unwrap();
    if !bin.exists() {
        let ok = (venv.join("bin/pip").exists()
            || Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success()))
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", requirement])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not install {requirement} into {} (needs python3 and PyPI)",
            venv.display()
        );
    }
    bin
}

impl Moto {
    pub fn start() -> Moto {
        let bin = moto_binary();
        for _ in 0..5 {
            let port = crate::free_port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // it could not bind: another port
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let endpoint = format!("http://127.0.0.1:{port}");
                    return Moto { endpoint, child };
                }
                assert!(Instant::now() < deadline, "moto_server did not start on port {port}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto_server did not start on any of 5 ports");
    }

    /// moto accepts any credentials.
    pub fn client(&self) -> aws_sdk_s3::Client {
        super::objects::client(&self.endpoint, "moto-key", "moto-secret")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
