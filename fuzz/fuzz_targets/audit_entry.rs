//! Fuzzes an audit chain entry's verification (`fleet_core::audit_chain`): the DSSE
//! envelope and, behind it, the payload parser, sealed with a trusted key as the
//! manifest target does, and the replay of a chain made of the input.
#![no_main]

use std::sync::OnceLock;

use fleet_core::audit_chain::{AUDIT_PAYLOAD_TYPE, ChainEntry};
use fleet_core::audit_replay::replay_chain;
use fleet_core::envelope;
use fleet_core::keys::{SecretKey, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("publisher-fuzz").expect("key"))
}

fuzz_target!(|data: &[u8]| {
    let trusted = TrustedKeys::new([key().public()]);
    let _ = ChainEntry::verify(data, "audit/chain/x.json", &trusted);
    let sealed = envelope::seal(AUDIT_PAYLOAD_TYPE, data, key());
    let _ = ChainEntry::verify(&sealed, "audit/chain/x.json", &trusted);
    let _ = replay_chain(vec![(1, data.to_vec()), (2, sealed)], &trusted, None);
});
