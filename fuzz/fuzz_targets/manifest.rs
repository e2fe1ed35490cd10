//! Fuzzes a manifest's verification: the DSSE envelope (`fleet_core::envelope::open`)
//! and, behind it, the payload parser. Payloads are only parsed after a valid
//! signature, so the envelope is fuzzed through `Manifest::verify` and the payload
//! bytes are fuzzed by sealing them with a key the policy trusts.
#![no_main]

use std::sync::OnceLock;

use fleet_core::keys::{SecretKey, TrustedKeys};
use fleet_core::manifest::{MANIFEST_PAYLOAD_TYPE, Manifest, VerifyPolicy};
use fleet_core::{HostName, envelope};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("publisher-fuzz").expect("key"))
}

fuzz_target!(|data: &[u8]| {
    let trusted = TrustedKeys::new([key().public()]);
    let host = HostName::new("web-1").expect("host");
    let policy = VerifyPolicy {
        trusted: &trusted,
        host: &host,
        highest_seen: None,
        now: None,
    };
    let _ = Manifest::verify(data, &policy);
    let sealed = envelope::seal(MANIFEST_PAYLOAD_TYPE, data, key());
    let _ = Manifest::verify(&sealed, &policy);
});
