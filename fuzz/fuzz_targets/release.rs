//! Fuzzes a release's verification (`fleet_core::release::Release::verify`): the
//! envelope on the raw bytes, and the payload parser and plan check (wave
//! resolution, budgets, globs) on the bytes sealed with a trusted key.
#![no_main]

use std::sync::OnceLock;

use fleet_core::envelope;
use fleet_core::keys::{SecretKey, TrustedKeys};
use fleet_core::release::{RELEASE_PAYLOAD_TYPE, Release};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("publisher-fuzz").expect("key"))
}

fuzz_target!(|data: &[u8]| {
    let trusted = TrustedKeys::new([key().public()]);
    let _ = Release::verify(data, "r-1", &trusted);
    let sealed = envelope::seal(RELEASE_PAYLOAD_TYPE, data, key());
    if let Ok(v) = Release::verify(&sealed, "r-1", &trusted) {
        // What verified signs and verifies again as itself.
        let again = Release::verify(&v.release.sign(key()), "r-1", &trusted).expect("re-verify");
        assert_eq!(again.release, v.release);
    }
});
