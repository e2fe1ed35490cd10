//! Fuzzes a rollout state's verification (`fleet_core::rollout::RolloutState::verify`):
//! the envelope on the raw bytes, the payload parser on the bytes sealed with a
//! trusted key, and the state's own accessors on what verified.
#![no_main]

use std::sync::OnceLock;

use fleet_core::envelope;
use fleet_core::keys::{SecretKey, TrustedKeys};
use fleet_core::rollout::{ROLLOUT_PAYLOAD_TYPE, RolloutState};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate("publisher-fuzz").expect("key"))
}

fuzz_target!(|data: &[u8]| {
    let trusted = TrustedKeys::new([key().public()]);
    let _ = RolloutState::verify(data, "r-1", &trusted);
    let sealed = envelope::seal(ROLLOUT_PAYLOAD_TYPE, data, key());
    if let Ok(v) = RolloutState::verify(&sealed, "r-1", &trusted) {
        let mut s = v.state;
        let _ = s.current_wave();
        let _ = s.bad_hosts();
        for w in &s.waves {
            let _ = (w.counts(w.hosts.len()), w.stage());
        }
        s.record("publisher-fuzz", "step");
        let again = RolloutState::verify(&s.sign(key()), "r-1", &trusted).expect("re-verify");
        assert_eq!(again.state, s);
    }
});
