//! Fuzzes the bootstrap bundle parser (`fleet_core::bundle::Bundle::parse`): what
//! parses re-encodes to a bundle that parses as itself.
#![no_main]

use fleet_core::bundle::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bundle::parse(data) {
        assert_eq!(Bundle::parse(&b.to_bytes()).expect("re-parse"), b);
    }
});
