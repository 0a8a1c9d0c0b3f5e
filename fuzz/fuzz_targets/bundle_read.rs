//! Any bytes as a bundle archive: unpacking (gzip, tar, the path and size checks), then
//! opening the bundle (manifest parsing and validation, file digests). Errors are fine; a
//! panic, a write outside the destination or a hang is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let archive = dir.path().join("bundle.tar");
    std::fs::write(&archive, data).expect("write the archive");
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).expect("the destination");
    if vigil_core::bundle::unpack(&archive, &dest).is_ok() {
        let _ = vigil_core::bundle::Bundle::open(&dest);
    }
    // Also the manifest alone, as text.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vigil_core::bundle::Manifest::parse(text);
    }
});
