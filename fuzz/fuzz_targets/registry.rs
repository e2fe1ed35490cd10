//! Fuzzes a host registry entry's verification
//! (`fleet_core::registry::HostEntry::verify`): the envelope on the raw bytes, the
//! payload parser and label checks on the bytes sealed with a trusted key.
#![no_main]

use std::sync::OnceLock;

use fleet_core::HostName;
use fleet_core::envelope;
use fleet_core::keys::{SecretKey, TrustedKeys};
use fleet_core::registry::{HOST_ENTRY_PAYLOAD_TYPE, HostEntry};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("admin-fuzz").expect("key"))
}

fuzz_target!(|data: &[u8]| {
    let trusted = TrustedKeys::new([key().public()]);
    let host = HostName::new("web-1").expect("host");
    let _ = HostEntry::verify(data, &host, &trusted);
    let sealed = envelope::seal(HOST_ENTRY_PAYLOAD_TYPE, data, key());
    let _ = HostEntry::verify(&sealed, &host, &trusted);
});
