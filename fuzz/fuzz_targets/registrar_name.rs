#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = waypost_protocol::names::check_registration_name(s);
        let _ = waypost_protocol::names::normalize_lookup_name(s);
        let _ = waypost_protocol::names::parse_address(s);
        let _ = waypost_protocol::names::percent_decode(s);
    }
});
