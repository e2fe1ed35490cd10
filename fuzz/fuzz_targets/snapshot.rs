//! Fuzzes the reporter's snapshot decoder (`fleet_reporter::snapshot::Snapshot::parse`:
//! zstd frames of JSON lines, read back from the bucket on every refresh).
#![no_main]

use fleet_reporter::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Snapshot::parse(data, "reporter/snapshot") {
        let _ = Snapshot::parse(&s.to_bytes(), "again");
    }
});
