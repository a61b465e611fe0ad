//! `s3syncd validate`: every broken spec gives exit 2 and a located `FILE:LINE:COLUMN: message`,
//! never a panic; good specs exit 0 with a one-line summary each. Fixtures are validated from
//! private copies (`private_dir`), so their modes never depend on the clone's umask.

use crate::util::*;
use std::path::{Path, PathBuf};

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/specs").join(dir)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn each_invalid_spec_reports_its_located_error() {
    let ws = Workspace::new(&[]);
    let fixtures = private_dir(&data("invalid"));
    let specs = files(fixtures.path(), "toml");
    assert!(specs.len() >= 77, "{} fixtures", specs.len());
    let mut failures = Vec::new();
    for spec in specs {
        let expected = std::fs::read_to_string(spec.with_extension("expected")).unwrap();
        let out = ws.run(&["validate", spec.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {}", spec.display(), text(&out));
        // Every fixture names where its error is: LINE:COLUMN: message.
        assert!(
            expected.starts_with(|c: char| c.is_ascii_digit()),
            "{}: the .expected file must start with LINE:COLUMN",
            spec.display()
        );
        let want = format!("{}:{}", spec.display(), expected.trim_end());
        if !stderr.contains(&want) {
            failures.push(format!(
                "{}\n  wanted: {want}\n  got:    {}",
                spec.display(),
                stderr.lines().next().unwrap_or("")
            ));
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_invalid_config_reports_its_located_error() {
    let ws = Workspace::new(&[]);
    let configs = files(&data("invalid-config"), "toml");
    assert!(configs.len() >= 10);
    for config in configs {
        let expected = std::fs::read_to_string(config.with_extension("expected")).unwrap();
        let out = ws.run(&["validate", "--config", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {}", config.display(), text(&out));
        let want = format!("{}:{}", config.display(), expected.trim_end());
        assert!(stderr.contains(&want), "{}\nwanted: {want}\ngot: {stderr}", config.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn valid_specs_pass_with_a_summary_line_each() {
    let ws = Workspace::new(&[]);
    let valid = private_dir(&data("valid"));
    let out = ws.run(&["validate", valid.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok binance-spot-klines-1m ("), "{stdout}");
    assert!(stdout.contains("s3://data.binance.vision/data/spot/daily/klines/ -> s3://crypto-lakehouse-bronze/binance/archive/spot/daily/klines/ mode auto schedule \"0 30 9 * * *\""), "{stdout}");
    assert!(stdout.contains("ok five-field-cron ("), "{stdout}");
}

#[test]
fn a_directory_with_three_broken_specs_reports_all_three() {
    let ws = Workspace::new(&[]);
    let dir = ws.spec_dir();
    private_copy(&data("valid/binance-spot-klines-1m.toml"), &dir.join("good.toml"));
    for name in ["bad-cron", "unknown-key", "overlap"] {
        private_copy(&data("invalid").join(format!("{name}.toml")), &dir.join(format!("{name}.toml")));
    }
    // Not spec files: ignored.
    std::fs::write(dir.join(".good.toml.swp"), "junk").unwrap();
    std::fs::write(dir.join("README"), "junk").unwrap();
    std::fs::write(dir.join("x.toml.dpkg-new"), "junk").unwrap();

    // Default targets: the config's spec_dir.
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let located: Vec<&str> = stderr.lines().filter(|l| l.contains(".toml:")).collect();
    assert_eq!(located.len(), 3, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1:12: invalid cron expression", dir.join("bad-cron.toml").display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:3:1: unknown field `bukcet`", dir.join("unknown-key.toml").display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:5:10: source and destination overlap",
            dir.join("overlap.toml").display()
        )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok binance-spot-klines-1m"));

    for name in ["bad-cron", "unknown-key", "overlap"] {
        std::fs::remove_file(dir.join(format!("{name}.toml"))).unwrap();
    }
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn duplicate_names_across_files_are_an_error() {
    let ws = Workspace::new(&[]);
    let spec = "name = \"feed\"\n[source]\nbucket = \"src-bucket\"\n[destination]\nbucket = \"dst-bucket\"\n";
    ws.write_spec("a", spec);
    ws.write_spec("b", spec);
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (file, other) in [("a", "b"), ("b", "a")] {
        let want = format!(
            "{}:1:8: spec name \"feed\" is also used by {}",
            ws.spec_dir().join(format!("{file}.toml")).display(),
            ws.spec_dir().join(format!("{other}.toml")).display()
        );
        assert!(stderr.contains(&want), "wanted {want}\n{}", text(&out));
    }
    // `run NAME` refuses too, rather than pick one of the two files.
    let out = ws.run(&["run", "feed"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is also used by"), "{}", text(&out));
}

/// One owner per destination key: specs whose destinations overlap (one prefix inside the
/// other, on one server and bucket, however the endpoint is spelt) are refused, both named.
#[test]
fn specs_whose_destinations_overlap_are_refused_both() {
    let ws = Workspace::new(&[]);
    let spec = |endpoint: &str, prefix: &str| {
        format!("[source]\nbucket = \"src-bucket\"\nendpoint = \"{endpoint}\"\n[destination]\nbucket = \"dst-bucket\"\nprefix = \"{prefix}\"\nendpoint = \"{endpoint}\"\n")
    };
    ws.write_spec("one", &spec("http://127.0.0.1:9000", "data/"));
    ws.write_spec("two", &spec("http://LOCALHOST:9000/", "data/sub/"));
    ws.write_spec("three", &spec("http://127.0.0.1:9000", "other/"));
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (file, other, prefix) in [("one", "two", "data/"), ("two", "one", "data/sub/")] {
        let want = format!(
            "{}:5:10: destination s3://dst-bucket/{prefix} overlaps the destination of {}",
            ws.spec_dir().join(format!("{file}.toml")).display(),
            ws.spec_dir().join(format!("{other}.toml")).display()
        );
        assert!(stderr.contains(&want), "wanted {want}\n{}", text(&out));
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok three ("), "{}", text(&out));
    // The source-against-destination check sees through the spelling too.
    let same = "[source]\nbucket = \"b\"\nprefix = \"in/\"\nendpoint = \"http://localhost:9000\"\n[destination]\nbucket = \"b\"\nprefix = \"in/x/\"\nendpoint = \"http://127.0.0.1:9000/\"\n";
    let file = ws.path().join("self.toml");
    write_private(&file, same);
    let out = ws.run(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("source and destination overlap"),
        "{}",
        text(&out)
    );
}

#[test]
fn run_with_an_invalid_spec_exits_2_and_copies_nothing() {
    let ws = Workspace::new(&[]);
    let spec = ws.spec_dir().join("bad-cron.toml");
    private_copy(&data("invalid/bad-cron.toml"), &spec);
    let out = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad-cron.toml:1:12: invalid cron expression"));
    assert!(!ws.manifest().exists(), "nothing was recorded");
}

#[test]
fn a_broken_config_is_located_too() {
    let ws = Workspace::new(&[]);
    std::fs::write(ws.config(), "spec_dir = \"specs.d\"\nmax_transfers = 0\nlog_format = \"xml\"\n").unwrap();
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{}:3:14: unknown variant `xml`", ws.config().display())),
        "{}",
        text(&out)
    );
}

#[test]
fn the_shipped_examples_are_valid() {
    let ws = Workspace::new(&[]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["etc/s3syncd/specs.d", "examples/specs"] {
        let copy = private_dir(&root.join(dir));
        let out = ws.run(&["validate", copy.path().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{dir}: {}", text(&out));
    }
    let specs = private_dir(&root.join("etc/s3syncd/specs.d"));
    let out = ws.run(&[
        "validate",
        "--config",
        root.join("etc/s3syncd/s3syncd.toml").to_str().unwrap(),
        specs.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Mutates every fixture spec many ways (byte flips, cuts, splices, odd tokens): parsing must
/// return a spec or located diagnostics inside the file, and never panic. The cargo-fuzz target
/// in fuzz/ does the same with coverage guidance, for longer runs.
#[test]
fn mutated_specs_never_panic_and_errors_stay_in_the_file() {
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for dir in ["valid", "invalid"] {
        for f in files(&data(dir), "toml") {
            corpus.push(std::fs::read(f).unwrap());
        }
    }
    let tokens: [&[u8]; 12] = [
        b"\"",
        b"[",
        b"]]",
        b"=",
        b"\n",
        b"\xff\xfe",
        b"'''",
        b"\\u{0}",
        b"99999999999999999999",
        b"-1",
        b"inf",
        b"[transfer]\n",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let path = Path::new("mutant.toml");
    let (mut parsed, mut diagnosed) = (0, 0);
    for base in &corpus {
        for _ in 0..400 {
            let mut m = base.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(0..=m.len());
                match rng.u8(0..4) {
                    0 if !m.is_empty() => {
                        let i = rng.usize(0..m.len());
                        m[i] ^= 1 << rng.u8(0..8);
                    }
                    1 => m.truncate(at),
                    2 => {
                        let t = tokens[rng.usize(0..tokens.len())];
                        m.splice(at..at, t.iter().copied());
                    }
                    _ => {
                        let other = &corpus[rng.usize(0..corpus.len())];
                        let from = rng.usize(0..=other.len());
                        m.splice(at..at, other[from..].iter().copied());
                    }
                }
            }
            let lines = m.split(|b| *b == b'\n').count();
            match s3syncd::Spec::parse(path, &m) {
                Ok(_) => parsed += 1,
                Err(e) => {
                    diagnosed += 1;
                    assert!(!e.diagnostics().is_empty(), "an error without a diagnostic");
                    for d in e.diagnostics() {
                        assert!(d.line >= 1 && d.line <= lines.max(1), "line {} of {lines}: {d}", d.line);
                        assert!(d.column >= 1 && !d.message.is_empty(), "{d}\n{}", String::from_utf8_lossy(&m));
                    }
                }
            }
        }
    }
    // Both outcomes must occur: a parser that accepted or refused everything would pass the
    // checks above vacuously.
    assert!(diagnosed > 10_000 && parsed > 100, "{diagnosed} mutants refused, {parsed} accepted");
}

/// Only regular files are specs: a FIFO named like one never hangs `validate` or `run`, and a
/// directory named `x.toml` is reported, not skipped in silence.
#[test]
fn a_fifo_or_a_directory_named_like_a_spec_is_refused_at_once() {
    let ws = Workspace::new(&[]);
    let fifo = ws.spec_dir().join("fifo.toml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::create_dir(ws.spec_dir().join("x.toml")).unwrap();
    let started = std::time::Instant::now();
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in ["fifo.toml", "x.toml"] {
        let want = format!("{}:1:1: not a regular file", ws.spec_dir().join(name).display());
        assert!(stderr.contains(&want), "wanted {want}\n{stderr}");
    }
    let out = ws.run(&["run", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "a FIFO held s3syncd");

    // A generated spec gone wrong (2 MiB) is refused before it is read, with what to do.
    std::fs::remove_file(&fifo).unwrap();
    std::fs::remove_dir(ws.spec_dir().join("x.toml")).unwrap();
    let huge = ws.write_spec(
        "huge",
        &format!(
            "# {}\n[source]\nbucket = \"a-bucket\"\n[destination]\nbucket = \"b-bucket\"\n",
            "x".repeat(2 << 20)
        ),
    );
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let want = format!("{}:1:1: spec file is 2097", huge.display());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&want) && text(&out).contains("the limit is 1048576"),
        "{}",
        text(&out)
    );
}

/// A delivery prefix or `keep_previous` inside another spec's destination would be listed as
/// that spec's data: both files are refused, each naming the other.
#[test]
fn a_delivery_prefix_inside_another_destination_is_refused() {
    let ws = Workspace::new(&[]);
    let spec = |prefix: &str, extra: &str| {
        format!("{extra}[source]\nbucket = \"src-bucket\"\n[destination]\nbucket = \"dst-bucket\"\nprefix = \"{prefix}\"\n")
    };
    ws.write_spec(
        "klines",
        &spec("binance/klines/", "[deliveries]\nprefix = \"_s3syncd/deliveries/\"\n"),
    );
    ws.write_spec("everything", &spec("_s3syncd/", ""));
    ws.write_spec("trades", &spec("binance/trades/", "keep_previous = \"_previous/\"\n"));
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (file, at, other) in [("klines", "6:10", "everything"), ("everything", "4:10", "klines")] {
        let want = format!(
            "{}:{at}: a delivery prefix or keep_previous of this spec or of {} lies inside the other's destination prefix",
            ws.spec_dir().join(format!("{file}.toml")).display(),
            ws.spec_dir().join(format!("{other}.toml")).display()
        );
        assert!(stderr.contains(&want), "wanted {want}\n{}", text(&out));
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok trades ("), "{}", text(&out));
}

/// A delivery prefix or `keep_previous` inside another spec's source in the same bucket would
/// be copied back in as that spec's data on every run: both files are refused, each naming the
/// other.
#[test]
fn a_delivery_prefix_inside_another_source_is_refused() {
    let ws = Workspace::new(&[]);
    ws.write_spec(
        "bronze",
        "keep_previous = \"_previous/\"\n[deliveries]\nprefix = \"_s3syncd/\"\n[source]\nbucket = \"upstream\"\n[destination]\nbucket = \"lake\"\nprefix = \"bronze/\"\n",
    );
    ws.write_spec(
        "export",
        "[source]\nbucket = \"lake\"\n[destination]\nbucket = \"partner\"\nprefix = \"in/\"\n",
    );
    let out = ws.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (file, other) in [("bronze", "export"), ("export", "bronze")] {
        let want = format!(
            "a delivery prefix or keep_previous of this spec or of {} lies inside the other's source prefix",
            ws.spec_dir().join(format!("{other}.toml")).display()
        );
        let path = ws.spec_dir().join(format!("{file}.toml")).display().to_string();
        assert!(
            stderr.lines().any(|l| l.starts_with(&path) && l.contains(&want)),
            "wanted {want}\n{}",
            text(&out)
        );
    }
}

/// The permission rule, mode by mode: a spec file or directory that group or others may
/// write is refused (0664 and 0775 as much as 0666 and 0777); one only its owner writes passes.
#[test]
fn group_or_other_write_bits_are_refused_mode_by_mode() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new(&[]);
    let spec = ws.write_spec(
        "feed",
        "[source]\nbucket = \"src-bucket\"\n[destination]\nbucket = \"dst-bucket\"\n",
    );
    let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    for (file_mode, dir_mode, refused) in [
        (0o644, 0o755, None),
        (0o600, 0o700, None),
        (0o664, 0o755, Some("664")),
        (0o646, 0o755, Some("646")),
        (0o644, 0o775, Some("775")),
        (0o644, 0o757, Some("757")),
    ] {
        set(&spec, file_mode);
        set(&ws.spec_dir(), dir_mode);
        let out = ws.run(&["validate"]);
        match refused {
            None => assert_eq!(out.status.code(), Some(0), "{file_mode:o}/{dir_mode:o}: {}", text(&out)),
            Some(m) => {
                assert_eq!(out.status.code(), Some(2), "{file_mode:o}/{dir_mode:o}: {}", text(&out));
                let want = format!("is writable by group or others (mode {m})");
                assert!(String::from_utf8_lossy(&out.stderr).contains(&want), "{}", text(&out));
            }
        }
    }
    set(&ws.spec_dir(), 0o755);
}

/// A notification secret others can read signs nothing: 0644 and 0640 are refused, 0600 and
/// 0400 pass.
#[test]
fn a_notification_secret_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new(&[]);
    let secret = ws.spec_dir().join("hook.secret");
    std::fs::write(&secret, "s\n").unwrap();
    ws.write_spec(
        "feed",
        "[source]\nbucket = \"src-bucket\"\n[destination]\nbucket = \"dst-bucket\"\n[[notify]]\nurl = \"https://hooks.example.com/x\"\nsecret_file = \"hook.secret\"\n",
    );
    for (mode, ok) in [(0o644, false), (0o640, false), (0o600, true), (0o400, true)] {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = ws.run(&["validate"]);
        if ok {
            assert_eq!(out.status.code(), Some(0), "{mode:o}: {}", text(&out));
        } else {
            assert_eq!(out.status.code(), Some(2), "{mode:o}: {}", text(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(&format!("is readable by others (mode {mode:o}): chmod 600 it")),
                "{}",
                text(&out)
            );
        }
    }
}
