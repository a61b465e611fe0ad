//! The test data set itself: Binance-shaped keys and sidecars, the edge sizes, and the same
//! objects on every call.

use s3syncd_testkit::fixture::{generate, FixtureSpec};
use sha2::{Digest, Sha256};

#[test]
fn small_fixture_is_binance_shaped_and_deterministic() {
    let a = generate(&FixtureSpec::small());
    let b = generate(&FixtureSpec::small());
    assert!(a.len() >= 500, "{} objects", a.len());
    assert_eq!(
        a.iter().map(|o| &o.key).collect::<Vec<_>>(),
        b.iter().map(|o| &o.key).collect::<Vec<_>>()
    );
    assert!(a
        .iter()
        .any(|o| o.key == "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"));
    assert!(a
        .iter()
        .any(|o| o.key == "data/futures/um/monthly/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-02.zip"));
    assert!(
        a.iter().any(|o| o.body.is_empty()) && a.iter().any(|o| o.body.len() == 1),
        "edge sizes"
    );
    let zip = a.iter().find(|o| o.key.ends_with("BTCUSDT-1m-2024-01-01.zip")).unwrap();
    let sum = a.iter().find(|o| o.key.ends_with("BTCUSDT-1m-2024-01-01.zip.CHECKSUM")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sum.body),
        format!("{}  BTCUSDT-1m-2024-01-01.zip\n", hex::encode(Sha256::digest(&zip.body)))
    );
}
