//! Fuzzes the NAR validator (`fleet_core::nar::validate`), which reads every NAR an
//! agent downloads before anything is imported.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fleet_core::nar::validate(data);
});
