//! The main job on an embedded default: starts a local S3 server (s3s-fs) on 127.0.0.1:19000,
//! fills a bucket with a Binance-like archive, and runs the real spec
//! `examples/specs/binance-demo.toml` through the engine twice (a full copy, then a no-op),
//! printing each run's summary and what the manifest holds.
//!
//!     cargo run --example demo

use s3syncd::cli;
use s3syncd::{ByteSize, Config};
use s3syncd_testkit::fixture::{generate, FixtureSpec};
use s3syncd_testkit::{objects, S3Server};
use std::os::unix::fs::PermissionsExt;

const SPEC: &str = "examples/specs/binance-demo.toml";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Port 19000 as the spec says; if it is taken, any free port, written into a copy of the spec.
    let server = match S3Server::start_on(19000) {
        Ok(s) => s,
        Err(_) => S3Server::start_on(0)?,
    };
    println!("local S3 server (s3s-fs) at {}", server.endpoint);
    let work = std::env::current_dir()?.join("target/demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    std::fs::write(
        work.join("credentials"),
        format!(
            "[demo]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            server.access_key, server.secret_key
        ),
    )?;
    std::fs::write(work.join("s3syncd.toml"), "spec_dir = \"specs.d\"\nstate_dir = \"state\"\n")?;
    std::fs::create_dir_all(work.join("specs.d"))?;
    let spec_path = work.join("specs.d/binance-demo.toml");
    std::fs::write(
        &spec_path,
        std::fs::read_to_string(SPEC)?.replace("http://127.0.0.1:19000", &server.endpoint),
    )?;
    // s3syncd refuses spec files and directories that others may write, whatever the umask.
    std::fs::set_permissions(work.join("specs.d"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&spec_path, std::fs::Permissions::from_mode(0o644))?;
    // SAFETY: set before any other thread reads the environment (the server thread does not).
    unsafe {
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", work.join("credentials"));
        std::env::set_var("AWS_CONFIG_FILE", work.join("no-aws-config"));
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    tracing_subscriber::fmt()
        .with_env_filter("s3syncd=warn")
        .with_writer(std::io::stderr)
        .init();

    let c = server.client();
    objects::create_bucket(&c, "data.binance.vision").await;
    objects::create_bucket(&c, "crypto-lakehouse-bronze").await;
    let objects = generate(&FixtureSpec::small().with_big_folder(600));
    let bytes: usize = objects.iter().map(|o| o.body.len()).sum();
    println!("source: {} Binance-like objects, {}", objects.len(), ByteSize(bytes as u64));
    objects::put_all(&c, "data.binance.vision", objects.into_iter().map(|o| (o.key, o.body)).collect()).await;

    let config = Config::load(&work.join("s3syncd.toml"), true)?;
    let spec = spec_path.to_string_lossy().to_string();
    println!("\n$ s3syncd run {SPEC}");
    let first = cli::run(config.clone(), &spec, cli::RunFlags::default()).await?;
    println!("\n$ s3syncd run {SPEC}    # again: nothing new at the source");
    let second = cli::run(config, &spec, cli::RunFlags::default()).await?;

    let db = rusqlite::Connection::open(work.join("state/manifest.db"))?;
    let (rows, total, verified): (i64, i64, i64) = db.query_row(
        "SELECT count(*), coalesce(sum(size),0), sum(verified = 'sha256') FROM objects",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    println!(
        "\nmanifest {}: {rows} objects, {}, {verified} checked against their .CHECKSUM sidecar",
        work.join("state/manifest.db").display(),
        ByteSize(total as u64)
    );
    println!(
        "audit it:  sqlite3 {} \"SELECT id, status, objects_copied, objects_skipped FROM runs\"",
        work.join("state/manifest.db").display()
    );
    if first != 0 || second != 0 {
        anyhow::bail!("a run failed (exit codes {first}, {second})");
    }
    Ok(())
}
