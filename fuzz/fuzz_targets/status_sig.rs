//! Fuzzes the signed status check (`fleet_core::status_sig::verify`) behind the
//! status parser: the signature field is read from bytes any bucket writer could
//! have written, and the signed message is re-encoded from what was parsed.
#![no_main]

use std::sync::OnceLock;

use fleet_core::keys::SecretKey;
use fleet_core::status::StatusReport;
use fleet_core::{HostName, status_sig};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("web-1-identity").expect("key"))
}

fuzz_target!(|data: &[u8]| {
    let host = HostName::new("web-1").expect("host");
    if let Ok(mut r) = StatusReport::parse(data, "status/web-1/status.json", &host) {
        let _ = status_sig::verify(&r, &key().public());
        // Whatever parsed, signed by the host's key, verifies after a round trip.
        status_sig::sign(&mut r, key());
        let back = StatusReport::parse(&r.to_bytes(), "again", &host).expect("re-parse");
        status_sig::verify(&back, &key().public()).expect("re-verify");
    }
});
