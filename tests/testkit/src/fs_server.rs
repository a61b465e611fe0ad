//! s3s-fs, the Rust S3 server on files, run in-process on 127.0.0.1 with SigV4 keys.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// The server's temporary files, if any; removed when the server is dropped.
    _root: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server on an ephemeral port, on its own runtime thread (usable from sync and async tests).
    pub fn start() -> S3Server {
        Self::start_on(0).expect("start s3s-fs")
    }

    /// Starts a server on `port` (0: any free port), storing its files in a temporary directory.
    pub fn start_on(port: u16) -> std::io::Result<S3Server> {
        let root = tempfile::tempdir()?;
        let dir = root.path().to_path_buf();
        Self::start_with(port, dir, Some(root))
    }

    /// Starts a server on `port` storing its files in `dir` (kept after the server stops).
    pub fn start_in(port: u16, dir: std::path::PathBuf) -> std::io::Result<S3Server> {
        std::fs::create_dir_all(&dir)?;
        Self::start_with(port, dir, None)
    }

    fn start_with(port: u16, dir: std::path::PathBuf, root: Option<tempfile::TempDir>) -> std::io::Result<S3Server> {
        let (access_key, secret_key) = ("AKIATESTSERVER0001".to_string(), "secret-key-for-s3s-fs-tests-0001".to_string());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ak, sk) = (access_key.clone(), secret_key.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                let service = {
                    let mut b = S3ServiceBuilder::new(s3s_fs::FileSystem::new(&dir).unwrap());
                    b.set_auth(SimpleAuth::from_single(ak, sk));
                    b.build()
                };
                let _ = addr_tx.send(Ok(listener.local_addr().unwrap()));
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((socket, _)) = r else { continue };
                            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                            tokio::spawn(async move { let _ = conn.await; });
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        });
        let addr = addr_rx.recv().expect("server thread")?;
        Ok(S3Server {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            _root: root,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        super::objects::client(&self.endpoint, &self.access_key, &self.secret_key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
