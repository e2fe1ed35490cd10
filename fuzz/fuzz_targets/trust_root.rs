//! Fuzzes the root of trust (`fleet_core::trust`): a first version pinned by key
//! (`TrustedRoot::bootstrap`), the next version after a trusted one
//! (`TrustedRoot::next`), a re-read of a stored root (`reload`) and the unverified
//! version hint (`claimed_version`), on the raw bytes and on the bytes sealed with
//! the pinned key so the payload parser and `Root::validate` are reached.
#![no_main]

use std::sync::OnceLock;

use fleet_core::envelope;
use fleet_core::keys::{SecretKey, TrustedKeys};
use fleet_core::trust::chain::claimed_version;
use fleet_core::trust::{ROOT_FORMAT, ROOT_PAYLOAD_TYPE, Root, TrustedRoot};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("root-fuzz").expect("key"))
}

/// Version 1, root key [`key`], threshold 1: what `next` walks on from.
fn v1() -> &'static TrustedRoot {
    static V1: OnceLock<TrustedRoot> = OnceLock::new();
    V1.get_or_init(|| {
        let now = jiff::Timestamp::now();
        let root = Root {
            format: ROOT_FORMAT,
            version: 1,
            issued_at: now,
            expires_at: now + jiff::SignedDuration::from_hours(24),
            root_keys: vec![key().public()],
            threshold: 1,
            publisher_keys: Vec::new(),
            cache_keys: Vec::new(),
            admin_keys: Vec::new(),
        };
        let bytes = root.sign(std::slice::from_ref(key()));
        TrustedRoot::bootstrap(&bytes, "v1", &TrustedKeys::new([key().public()]), 1).expect("v1")
    })
}

fuzz_target!(|data: &[u8]| {
    let pinned = TrustedKeys::new([key().public()]);
    let sealed = envelope::seal(ROOT_PAYLOAD_TYPE, data, key());
    for bytes in [data, &sealed[..]] {
        let _ = claimed_version(bytes);
        let _ = TrustedRoot::bootstrap(bytes, "trust/1.root.json", &pinned, 1);
        let _ = TrustedRoot::reload(bytes, "trust/root.json");
        if let Ok(t) = v1().next(bytes, "trust/2.root.json") {
            assert_eq!(t.version(), 2);
            let _ = t.check_fresh(jiff::Timestamp::now());
        }
    }
});
