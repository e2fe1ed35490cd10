//! Fuzzes a hold's verification (`fleet_core::hold::Hold::verify`): the envelope on
//! the raw bytes, the payload parser on the bytes sealed with a trusted key.
#![no_main]

use std::sync::OnceLock;

use fleet_core::HostName;
use fleet_core::envelope;
use fleet_core::hold::{HOLD_PAYLOAD_TYPE, Hold};
use fleet_core::keys::{SecretKey, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("publisher-fuzz").expect("key"))
}

fuzz_target!(|data: &[u8]| {
    let trusted = TrustedKeys::new([key().public()]);
    let host = HostName::new("web-1").expect("host");
    let _ = Hold::verify(data, &host, &trusted);
    let sealed = envelope::seal(HOLD_PAYLOAD_TYPE, data, key());
    let _ = Hold::verify(&sealed, &host, &trusted);
});
