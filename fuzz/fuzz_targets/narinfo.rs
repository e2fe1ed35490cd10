//! Fuzzes the narinfo parser and what runs on a parsed narinfo: signature check and
//! re-serialisation (`fleet_core::narinfo::NarInfo`).
#![no_main]

use std::sync::OnceLock;

use fleet_core::keys::{SecretKey, TrustedKeys};
use fleet_core::narinfo::NarInfo;
use libfuzzer_sys::fuzz_target;

fn trusted() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| TrustedKeys::new([SecretKey::generate("cache-1").expect("key").public()]))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ni) = NarInfo::parse(data, "cache/fuzz.narinfo") {
        let _ = ni.verify(trusted(), "cache/fuzz.narinfo");
        let _ = NarInfo::parse(ni.to_text().as_bytes(), "again");
    }
});
