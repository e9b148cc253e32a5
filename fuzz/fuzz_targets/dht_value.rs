#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = waypost_protocol::dht::value::Value::unpack(data) {
        // Whatever decodes must re-encode without panicking.
        let _ = v.pack();
        let _ = v.to_sign();
    }
});
