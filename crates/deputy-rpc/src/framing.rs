//! The line framer: splits a byte stream into newline-terminated lines.
//!
//! This is the low-level half of the transport, exposed for tests, fuzzing and
//! anyone who wants NDJSON framing without the peer. Exact semantics:
//!
//! - A frame ends at `\n`. One trailing `\r` before it is removed.
//! - One UTF-8 byte order mark (`EF BB BF`) at the start of a line is removed.
//! - Lines that are empty, or contain only spaces, tabs and `\r`, are skipped.
//! - A line whose content (without `\n` and the trailing `\r`) is longer than
//!   `max_line_bytes` yields exactly one [`Frame::Oversized`], whose `len` counts
//!   every byte before the `\n`. Its bytes are dropped as they arrive, so the
//!   buffer never holds more than `max_line_bytes + 1` bytes of one line plus one
//!   read chunk. Lines after it are yielded at once, without further input.
//! - The frames produced do not depend on how the input is chunked.
//! - At end of input, [`LineFramer::finish`] reports how many bytes of an
//!   unterminated last line there were (they are never parsed as a message).
//! - The first [`OVERSIZED_HEAD_BYTES`] bytes of the last oversized line are
//!   kept ([`LineFramer::oversized_head`]), for error reports.

use memchr::memchr;

/// How many bytes one read asks for (and the initial buffer size).
pub const READ_CHUNK: usize = 64 * 1024;

/// An empty buffer larger than this is released before the next read.
const SHRINK_ABOVE: usize = 16 * READ_CHUNK;

/// How many bytes of an oversized line [`LineFramer::oversized_head`] keeps.
pub const OVERSIZED_HEAD_BYTES: usize = 200;

/// One frame produced by [`LineFramer::next_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its terminator, trailing `\r` and leading BOM.
    Line(&'a [u8]),
    /// A line longer than the limit was dropped; `len` counts its bytes before `\n`.
    Oversized {
        /// The dropped line's length in bytes (terminator excluded, `\r` included).
        len: usize,
    },
}

/// An incremental newline framer over an internal buffer with a hard size bound.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Start of the bytes not yet yielded.
    pos: usize,
    /// Where the next search for `\n` starts (everything in `pos..scan` has none).
    scan: usize,
    /// `Some(n)` while dropping an oversized line of which `n` bytes were seen.
    discarding: Option<usize>,
    /// The first bytes of the last oversized line.
    oversized_head: Vec<u8>,
    max_line_bytes: usize,
}

impl LineFramer {
    /// A framer that accepts lines of at most `max_line_bytes` bytes.
    pub fn new(max_line_bytes: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            discarding: None,
            oversized_head: Vec::new(),
            max_line_bytes,
        }
    }

    /// The first bytes (at most [`OVERSIZED_HEAD_BYTES`]) of the last line
    /// reported as [`Frame::Oversized`] (after a leading BOM, if any); empty
    /// before the first one.
    pub fn oversized_head(&self) -> &[u8] {
        &self.oversized_head
    }

    /// Keeps the first bytes of `buf[start..end]`, an oversized line.
    fn keep_head(&mut self, start: usize, end: usize) {
        let end = end.min(start.saturating_add(OVERSIZED_HEAD_BYTES + 3));
        let mut head = &self.buf[start..end];
        head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let n = head.len().min(OVERSIZED_HEAD_BYTES);
        self.oversized_head.clear();
        self.oversized_head.extend_from_slice(&head[..n]);
    }

    /// The configured limit.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// The most bytes the buffer will ever hold: one line at the limit plus its
    /// `\r` plus one read chunk.
    pub fn capacity_bound(&self) -> usize {
        self.max_line_bytes.saturating_add(1).saturating_add(READ_CHUNK)
    }

    /// The buffer's current allocation, for memory assertions.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes buffered and not yet yielded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends input. To keep memory bounded, call [`next_frame`](Self::next_frame)
    /// until it returns `None` between pushes.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        let needed = self.buf.len() + data.len();
        if needed > self.buf.capacity() {
            // Amortized growth, but never past the bound unless this push needs it.
            let target = (self.buf.capacity() * 2).min(self.capacity_bound()).max(needed);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read into: append at most its spare capacity (always at
    /// least one byte). Call it only after [`next_frame`](Self::next_frame)
    /// returned `None`; then the bound holds.
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        self.compact();
        if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
            // Give back the memory of a past long line.
            self.buf = Vec::new();
        }
        let spare = self.buf.capacity() - self.buf.len();
        if spare < READ_CHUNK / 4 {
            let bound = self.capacity_bound().max(self.buf.len() + 1);
            let target = (self.buf.capacity() * 2).max(self.buf.len() + READ_CHUNK).min(bound);
            if target > self.buf.capacity() {
                self.buf.reserve_exact(target - self.buf.len());
            }
        }
        if self.buf.capacity() == self.buf.len() {
            self.buf.reserve_exact(1);
        }
        &mut self.buf
    }

    /// Moves unyielded bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
        }
        self.scan -= self.pos;
        self.pos = 0;
    }

    /// The next complete frame, or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            if let Some(seen) = self.discarding {
                return match memchr(b'\n', &self.buf[self.pos..]) {
                    Some(i) => {
                        self.discarding = None;
                        self.pos += i + 1;
                        self.scan = self.pos;
                        Some(Frame::Oversized { len: seen + i })
                    }
                    None => {
                        self.discarding = Some(seen + (self.buf.len() - self.pos));
                        self.buf.clear();
                        self.pos = 0;
                        self.scan = 0;
                        None
                    }
                };
            }
            let Some(i) = memchr(b'\n', &self.buf[self.scan..]) else {
                self.scan = self.buf.len();
                let partial = self.buf.len() - self.pos;
                if partial > self.max_line_bytes.saturating_add(1) {
                    // Longer than any acceptable line even if a `\r` follows: drop it.
                    self.keep_head(self.pos, self.buf.len());
                    self.discarding = Some(partial);
                    self.buf.clear();
                    self.pos = 0;
                    self.scan = 0;
                    continue;
                }
                return None;
            };
            let start = self.pos;
            let end = self.scan + i;
            self.pos = end + 1;
            self.scan = self.pos;
            let raw_len = end - start;
            let mut content_end = end;
            if content_end > start && self.buf[content_end - 1] == b'\r' {
                content_end -= 1;
            }
            if content_end - start > self.max_line_bytes {
                self.keep_head(start, content_end);
                return Some(Frame::Oversized { len: raw_len });
            }
            let mut content_start = start;
            if self.buf[start..content_end].starts_with(b"\xEF\xBB\xBF") {
                content_start += 3;
            }
            let line = &self.buf[content_start..content_end];
            if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                continue;
            }
            return Some(Frame::Line(&self.buf[content_start..content_end]));
        }
    }

    /// Call at end of input, after draining frames: the length of the unterminated
    /// last line (including dropped bytes of an oversized one), if there was one.
    /// Resets the framer.
    pub fn finish(&mut self) -> Option<usize> {
        let partial = self.discarding.take().unwrap_or(0) + (self.buf.len() - self.pos);
        self.buf.clear();
        self.pos = 0;
        self.scan = 0;
        (partial > 0).then_some(partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Line(Vec<u8>),
        Oversized(usize),
    }

    fn frames(framer: &mut LineFramer) -> Vec<Owned> {
        let mut out = Vec::new();
        while let Some(f) = framer.next_frame() {
            out.push(match f {
                Frame::Line(l) => Owned::Line(l.to_vec()),
                Frame::Oversized { len } => Owned::Oversized(len),
            });
        }
        out
    }

    fn line(s: &str) -> Owned {
        Owned::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_lines_and_strips_cr_bom_and_blank_lines() {
        let mut f = LineFramer::new(100);
        f.push(b"a\r\n\n  \t\n\xEF\xBB\xBFb\n\r\nc\r\r\nd");
        assert_eq!(frames(&mut f), vec![line("a"), line("b"), line("c\r")]);
        assert_eq!(f.finish(), Some(1));
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn partial_line_waits_for_more_input() {
        let mut f = LineFramer::new(100);
        f.push(b"{\"a\":");
        assert_eq!(frames(&mut f), vec![]);
        f.push(b"1}\n{");
        assert_eq!(frames(&mut f), vec![line("{\"a\":1}")]);
        f.push(b"}\n");
        assert_eq!(frames(&mut f), vec![line("{}")]);
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn oversized_line_in_one_chunk() {
        let mut f = LineFramer::new(4);
        f.push(b"12345\n1234\n1234\r\n12345\r\nok\n");
        assert_eq!(
            frames(&mut f),
            vec![Owned::Oversized(5), line("1234"), line("1234"), Owned::Oversized(6), line("ok")]
        );
    }

    #[test]
    fn oversized_line_across_chunks_yields_one_error_then_next_line() {
        let mut f = LineFramer::new(4);
        f.push(b"123");
        assert_eq!(frames(&mut f), vec![]);
        f.push(b"4567");
        assert_eq!(frames(&mut f), vec![]);
        assert_eq!(f.buffered(), 0, "oversized bytes are dropped as they arrive");
        f.push(b"89");
        assert_eq!(frames(&mut f), vec![]);
        f.push(b"0\nnext\naft\n");
        assert_eq!(frames(&mut f), vec![Owned::Oversized(10), line("next"), line("aft")]);
    }

    #[test]
    fn the_head_of_an_oversized_line_is_kept() {
        let mut f = LineFramer::new(4);
        assert_eq!(f.oversized_head(), b"");
        f.push(b"\xEF\xBB\xBFabcdef\nok\n");
        assert_eq!(frames(&mut f), vec![Owned::Oversized(9), line("ok")]);
        assert_eq!(f.oversized_head(), b"abcdef");
        // Across chunks, and cut at OVERSIZED_HEAD_BYTES.
        let long = vec![b'y'; 3 * OVERSIZED_HEAD_BYTES];
        f.push(b"x");
        f.push(&long);
        assert_eq!(frames(&mut f), vec![]);
        f.push(b"\n");
        assert_eq!(frames(&mut f), vec![Owned::Oversized(1 + long.len())]);
        let mut expected = b"x".to_vec();
        expected.extend_from_slice(&long[..OVERSIZED_HEAD_BYTES - 1]);
        assert_eq!(f.oversized_head(), &expected[..]);
    }

    #[test]
    fn line_at_limit_with_cr_split_before_newline() {
        let mut f = LineFramer::new(4);
        f.push(b"1234\r");
        assert_eq!(frames(&mut f), vec![]);
        f.push(b"\n");
        assert_eq!(frames(&mut f), vec![line("1234")]);
    }

    #[test]
    fn oversized_partial_at_eof_is_reported_with_full_length() {
        let mut f = LineFramer::new(4);
        f.push(b"ok\n1234567");
        assert_eq!(frames(&mut f), vec![line("ok")]);
        f.push(b"89");
        assert_eq!(frames(&mut f), vec![]);
        assert_eq!(f.finish(), Some(9));
    }

    #[test]
    fn zero_limit_rejects_every_non_empty_line() {
        let mut f = LineFramer::new(0);
        f.push(b"\n\r\nx\n");
        assert_eq!(frames(&mut f), vec![Owned::Oversized(1)]);
    }

    #[test]
    fn a_long_line_s_memory_is_released_afterwards() {
        let mut f = LineFramer::new(4 * 1024 * 1024);
        let mut line = vec![b'x'; 2 * 1024 * 1024];
        line.push(b'\n');
        let mut rest = &line[..];
        while !rest.is_empty() {
            let buf = f.read_buffer();
            let n = (buf.capacity() - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while f.next_frame().is_some() {}
        }
        assert!(f.buffer_capacity() >= 2 * 1024 * 1024);
        f.read_buffer();
        assert!(f.buffer_capacity() <= 2 * READ_CHUNK);
    }

    #[test]
    fn read_buffer_respects_the_bound() {
        let mut f = LineFramer::new(10);
        for _ in 0..10 {
            let buf = f.read_buffer();
            let spare = buf.capacity() - buf.len();
            assert!(spare >= 1);
            buf.extend(std::iter::repeat_n(b'x', spare));
            assert!(f.buffer_capacity() <= f.capacity_bound());
            let _ = frames(&mut f);
        }
    }
}
