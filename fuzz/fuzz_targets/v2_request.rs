//! Any body as an Open Inference Protocol infer request, with and without the binary tensor
//! extension (the first two bytes choose the JSON header's length): JSON parsing, every
//! client-declared size (shape, datatype, byte lengths, BYTES element lengths) checked against
//! the bytes sent. Errors must be 4xx; a panic, a 5xx or an allocation the body did not pay
//! for is a finding.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let body = Bytes::copy_from_slice(body);
    let mut headers = HeaderMap::new();
    let json_len = usize::from(u16::from_le_bytes(*head));
    if json_len != 0 {
        headers.insert(
            "inference-header-content-length",
            HeaderValue::from(json_len.min(body.len() + 1)),
        );
    }
    if let Err(e) = vigil_server::routes::v2_infer::parse_body(&headers, body) {
        assert!(e.status().is_client_error(), "{}: {e}", e.status());
    }
});
