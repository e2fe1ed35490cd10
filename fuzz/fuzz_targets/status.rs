//! Fuzzes the status report parser (`fleet_core::status::StatusReport::parse`): the
//! reporter reads every host's `status.json`, written by hosts it does not trust.
#![no_main]

use fleet_core::HostName;
use fleet_core::status::StatusReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let host = HostName::new("web-1").expect("host");
    if let Ok(r) = StatusReport::parse(data, "status/web-1/status.json", &host) {
        let _ = StatusReport::parse(&r.to_bytes(), "again", &host);
    }
});
