#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = waypost_protocol::stun::frame_len(data);
    if let Ok(msg) = waypost_protocol::stun::Message::parse(data) {
        let _ = format!("{msg:?}");
    }
});
