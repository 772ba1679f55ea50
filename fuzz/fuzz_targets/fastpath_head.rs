//! The sendfile fast path's request-head parser on arbitrary bytes: never panics, and a head it
//! accepts is framed exactly as httparse (hyper's parser) frames it, so no request means one
//! thing to the fast path and another to hyper.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret::proxy::fastpath::parse_head;

fuzz_target!(|data: &[u8]| {
    let Some((len, head)) = parse_head(data) else {
        return;
    };
    assert!(len <= data.len());
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    assert_eq!(req.parse(data).ok(), Some(httparse::Status::Complete(len)));
    assert_eq!(req.method, Some("GET"));
    assert!(head.path.starts_with('/') && head.path.contains("/blobs/"));
    assert!(!head.path.contains('?'));
});
