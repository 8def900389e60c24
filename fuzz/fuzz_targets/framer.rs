//! Fuzzes the line framer and the message classifier.
//!
//! Input layout: byte 0 picks the line limit, byte 1 the chunk size, the rest is
//! the stream. Checked: no panic; the frames do not depend on the chunking; every
//! line is within the limit and holds no `\n`; the buffer stays within its bound;
//! every invalid message gets -32700 or -32600.
#![no_main]

use deputy_rpc::framing::{Frame, LineFramer};
use deputy_rpc::message::{Incoming, classify};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Line(Vec<u8>),
    Oversized(usize),
}

fn drain(framer: &mut LineFramer, max: usize, out: &mut Vec<Owned>) {
    while let Some(frame) = framer.next_frame() {
        match frame {
            Frame::Line(line) => {
                assert!(line.len() <= max);
                assert!(!line.contains(&b'\n'));
                check_classify(line);
                out.push(Owned::Line(line.to_vec()));
            }
            Frame::Oversized { len } => {
                assert!(len > max);
                out.push(Owned::Oversized(len));
            }
        }
    }
    assert!(framer.buffer_capacity() <= framer.capacity_bound());
}

fn check_classify(line: &[u8]) {
    let codes = [-32700, -32600];
    match classify(line) {
        Incoming::Invalid(e) => assert!(codes.contains(&e.code), "{e}"),
        Incoming::Batch(items) => {
            assert!(!items.is_empty());
            for item in items {
                if let Err(e) = item {
                    assert_eq!(e.code, -32600);
                }
            }
        }
        Incoming::Single(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = usize::from(data[0]) * 4;
    let chunk = usize::from(data[1]).max(1);
    let input = &data[2..];

    // In chunks, through the reader's path.
    let mut framer = LineFramer::new(max);
    let mut chunked = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let buf = framer.read_buffer();
        let n = (buf.capacity() - buf.len()).min(chunk).min(rest.len());
        assert!(n > 0);
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        drain(&mut framer, max, &mut chunked);
    }
    let chunked_tail = framer.finish();

    // All at once.
    let mut whole = LineFramer::new(max);
    whole.push(input);
    let mut at_once = Vec::new();
    while let Some(frame) = whole.next_frame() {
        at_once.push(match frame {
            Frame::Line(l) => Owned::Line(l.to_vec()),
            Frame::Oversized { len } => Owned::Oversized(len),
        });
    }
    assert_eq!(chunked, at_once);
    assert_eq!(chunked_tail, whole.finish());
});
