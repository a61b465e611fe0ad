//! A Binance-like fixture: the key layout of `data.binance.vision` (spot and USD-M futures,
//! daily and monthly, klines / aggTrades / trades), each archive with a `.CHECKSUM` sidecar
//! (`<sha256 hex>  <file name>`), deterministic pseudo-random contents, a few keys with
//! awkward characters, and the sizes that code paths disagree on (an empty `_SUCCESS` marker,
//! a 1-byte object): a 0-byte object once failed in `stream` while every test passed, because
//! no test object was empty. Used by the tests, the demo example and the benchmarks.

use sha2::{Digest, Sha256};

/// One object to upload.
#[derive(Debug, Clone)]
pub struct FixtureObject {
    pub key: String,
    pub body: Vec<u8>,
}

/// Shape of a fixture; `small()` is the default for tests and the demo.
#[derive(Debug, Clone)]
pub struct FixtureSpec {
    pub symbols: Vec<&'static str>,
    /// Daily files per (market, dataset, symbol): consecutive days from 2024-01-01.
    pub days: u32,
    /// Monthly files per (market, dataset, symbol).
    pub months: u32,
    /// Archive sizes are drawn between these bounds (bytes).
    pub min_size: usize,
    pub max_size: usize,
    /// Daily 1m klines of the first symbol: one folder with this many archives (plus sidecars).
    pub big_folder_days: u32,
    pub awkward_keys: bool,
    pub seed: u64,
}

impl FixtureSpec {
    /// About 530 objects, a few MiB in all: fast enough for every test run.
    pub fn small() -> Self {
        FixtureSpec {
            symbols: vec!["BTCUSDT", "ETHUSDT"],
            days: 20,
            months: 2,
            min_size: 1024,
            max_size: 48 * 1024,
            big_folder_days: 0,
            awkward_keys: true,
            seed: 42,
        }
    }

    /// `small()` plus one folder of 1,100 daily archives (2,200 keys), so listings page.
    pub fn with_big_folder(mut self, days: u32) -> Self {
        self.big_folder_days = days;
        self
    }
}

/// A small deterministic generator (SplitMix64): fixtures must be the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        // A zip local-file header first, so the archives look like what Binance serves.
        v.extend_from_slice(b"PK\x03\x04");
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn date(day: u32) -> String {
    let d = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(u64::from(day));
    d.format("%Y-%m-%d").to_string()
}

fn month(m: u32) -> String {
    let d = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Months::new(m);
    d.format("%Y-%m").to_string()
}

/// Generates the fixture's objects in key order of generation (not sorted).
pub fn generate(spec: &FixtureSpec) -> Vec<FixtureObject> {
    let mut rng = Rng(spec.seed);
    let mut out = Vec::new();
    let archive = |out: &mut Vec<FixtureObject>, rng: &mut Rng, dir: String, file: String| {
        let size = rng.range(spec.min_size, spec.max_size);
        let body = rng.bytes(size);
        let sum = hex::encode(Sha256::digest(&body));
        out.push(FixtureObject {
            key: format!("{dir}/{file}.CHECKSUM"),
            body: format!("{sum}  {file}\n").into_bytes(),
        });
        out.push(FixtureObject {
            key: format!("{dir}/{file}"),
            body,
        });
    };
    for market in ["spot", "futures/um"] {
        for dataset in ["klines", "aggTrades", "trades"] {
            for sym in &spec.symbols {
                let (dir_sym, tag) = if dataset == "klines" {
                    (format!("{sym}/1m"), format!("{sym}-1m"))
                } else {
                    (sym.to_string(), format!("{sym}-{dataset}"))
                };
                for d in 0..spec.days {
                    archive(
                        &mut out,
                        &mut rng,
                        format!("data/{market}/daily/{dataset}/{dir_sym}"),
                        format!("{tag}-{}.zip", date(d)),
                    );
                }
                for m in 0..spec.months {
                    archive(
                        &mut out,
                        &mut rng,
                        format!("data/{market}/monthly/{dataset}/{dir_sym}"),
                        format!("{tag}-{}.zip", month(m)),
                    );
                }
            }
        }
    }
    if spec.big_folder_days > 0 {
        for d in 0..spec.big_folder_days {
            archive(
                &mut out,
                &mut rng,
                "data/spot/daily/klines/BNBUSDT/1m".into(),
                format!("BNBUSDT-1m-{}.zip", date(d)),
            );
        }
    }
    if spec.awkward_keys {
        for name in [
            "with space.zip",
            "plus+sign.zip",
            "percent%20literal.zip",
            "ünïcödé-€.zip",
            "question?hash#.zip",
            "amp&eq=.zip",
        ] {
            let size = rng.range(spec.min_size, spec.max_size);
            let body = rng.bytes(size);
            out.push(FixtureObject {
                key: format!("data/spot/daily/awkward/{name}"),
                body,
            });
        }
        for (key, body) in [
            ("data/spot/daily/_SUCCESS", Vec::new()),
            ("data/spot/daily/awkward/one-byte.bin", vec![0x5a]),
        ] {
            out.push(FixtureObject { key: key.into(), body });
        }
    }
    out
}
