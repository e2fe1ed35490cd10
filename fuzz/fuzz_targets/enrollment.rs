//! Fuzzes an enrollment request (`fleet_core::enrollment::EnrollmentRequest::open`):
//! self-signed, so the key it is checked with is read from the unverified payload
//! first, the part most exposed to bad input.
#![no_main]

use fleet_core::enrollment::EnrollmentRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = EnrollmentRequest::open(data);
});
