//! A streaming `multipart/form-data` parser for `POST /files` uploads. The
//! body is fed in chunks as it arrives ([`Parser::push`]) and read back as
//! [`Event`]s: a part's start (its `Content-Disposition` name and
//! filename), pieces of its data, its end. Memory stays bounded: part data
//! is handed out as it comes, keeping back only the few bytes that could
//! begin the next boundary; part headers may take [`MAX_HEADERS`] bytes.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem::Finder;

/// Longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY: usize = 70;
/// Largest header block of one part.
pub const MAX_HEADERS: usize = 16 << 10;

/// The boundary of a `multipart/form-data; boundary=..` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut it = content_type.split(';');
    let mime = it.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    it.filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty())
}

/// A `key="value"` (or unquoted) parameter of a header value.
fn param(header: &str, key: &str) -> Option<String> {
    let mut rest = header;
    while let Some(i) = rest.find(';') {
        rest = &rest[i + 1..];
        let t = rest.trim_start();
        let Some((k, v)) = t.split_once('=') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case(key) {
            continue;
        }
        let v = v.trim_start();
        if let Some(q) = v.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    '"' => break,
                    c => out.push(c),
                }
            }
            return Some(out);
        }
        return Some(v.split(';').next().unwrap_or("").trim().to_string());
    }
    None
}

/// What the parser found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A part begins.
    Part {
        name: String,
        filename: Option<String>,
    },
    /// A piece of the current part's data.
    Data(Bytes),
    /// The current part ended.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary (the preamble is skipped).
    Preamble,
    /// Right after a boundary: `--` ends the form, CRLF starts a part.
    AfterBoundary,
    Headers,
    Body,
    Done,
}

/// The incremental parser of one form body.
pub struct Parser {
    /// `\r\n--boundary`: what ends a part's data.
    delim: Finder<'static>,
    delim_len: usize,
    headers_end: Finder<'static>,
    buf: BytesMut,
    state: State,
}

impl Parser {
    /// A parser for `boundary` (1 to [`MAX_BOUNDARY`] characters).
    pub fn new(boundary: &str) -> Result<Parser, String> {
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
            return Err(format!(
                "the multipart boundary is {} bytes long; RFC 2046 allows 1 to {MAX_BOUNDARY}",
                boundary.len()
            ));
        }
        let delim = format!("\r\n--{boundary}").into_bytes();
        let mut buf = BytesMut::with_capacity(64 << 10);
        // The first boundary may open the body: a virtual CRLF before it
        // lets one pattern find them all.
        buf.extend_from_slice(b"\r\n");
        Ok(Parser {
            delim_len: delim.len(),
            delim: Finder::new(&delim).into_owned(),
            headers_end: Finder::new(b"\r\n\r\n").into_owned(),
            buf,
            state: State::Preamble,
        })
    }

    /// Feeds the next chunk of the body; read the events with [`Parser::next`]
    /// before pushing more.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether the closing boundary was seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The body ended: an error unless the closing boundary was seen.
    pub fn finish(&self) -> Result<(), String> {
        match self.state {
            State::Done => Ok(()),
            State::Preamble => Err("the multipart body does not contain its boundary".into()),
            State::Headers => Err("a multipart part has no end of headers".into()),
            _ => Err("the multipart body ended before its closing boundary".into()),
        }
    }

    /// The next event, or `None` when more of the body is needed.
    pub fn next(&mut self) -> Result<Option<Event>, String> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Preamble => match self.delim.find(&self.buf) {
                    Some(i) => {
                        self.buf.advance(i + self.delim_len);
                        self.state = State::AfterBoundary;
                    }
                    None => {
                        let keep = self.delim_len - 1;
                        if self.buf.len() > keep {
                            self.buf.advance(self.buf.len() - keep);
                        }
                        return Ok(None);
                    }
                },
                State::AfterBoundary => {
                    // Transport padding (spaces, tabs) may follow a boundary.
                    let pad = self
                        .buf
                        .iter()
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                    if self.buf.len() < pad + 2 {
                        if pad > 1024 {
                            return Err("a multipart boundary is followed by garbage".into());
                        }
                        return Ok(None);
                    }
                    match &self.buf[..2] {
                        b"--" => {
                            self.state = State::Done;
                            self.buf.clear();
                            return Ok(None);
                        }
                        _ if &self.buf[pad..pad + 2] == b"\r\n" => {
                            self.buf.advance(pad + 2);
                            self.state = State::Headers;
                        }
                        _ => {
                            return Err(
                                "a multipart boundary is not followed by CRLF or \"--\"".into()
                            )
                        }
                    }
                }
                State::Headers => {
                    // A part without headers starts with the blank line.
                    let (block_end, skip) = if self.buf.starts_with(b"\r\n") {
                        (0, 2)
                    } else {
                        match self.headers_end.find(&self.buf) {
                            Some(i) => (i, i + 4),
                            None if self.buf.len() > MAX_HEADERS => {
                                return Err(format!(
                                    "a multipart part's headers exceed {MAX_HEADERS} bytes"
                                ))
                            }
                            None => return Ok(None),
                        }
                    };
                    if block_end > MAX_HEADERS {
                        return Err(format!(
                            "a multipart part's headers exceed {MAX_HEADERS} bytes"
                        ));
                    }
                    let headers = String::from_utf8_lossy(&self.buf[..block_end]).into_owned();
                    self.buf.advance(skip);
                    self.state = State::Body;
                    let mut name = String::new();
                    let mut filename = None;
                    for line in headers.split("\r\n") {
                        let Some((k, v)) = line.split_once(':') else {
                            continue;
                        };
                        if k.trim().eq_ignore_ascii_case("content-disposition") {
                            name = param(v, "name").unwrap_or_default();
                            filename = param(v, "filename");
                        }
                    }
                    return Ok(Some(Event::Part { name, filename }));
                }
                State::Body => match self.delim.find(&self.buf) {
                    Some(0) => {
                        self.buf.advance(self.delim_len);
                        self.state = State::AfterBoundary;
                        return Ok(Some(Event::End));
                    }
                    Some(i) => return Ok(Some(Event::Data(self.buf.split_to(i).freeze()))),
                    None => {
                        // Keep what could be the start of the boundary.
                        let keep = self.delim_len - 1;
                        if self.buf.len() <= keep {
                            return Ok(None);
                        }
                        let n = self.buf.len() - keep;
                        return Ok(Some(Event::Data(self.buf.split_to(n).freeze())));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, filename, data) of a parsed part.
    type Parsed = (String, Option<String>, Vec<u8>);

    /// Parses `body` fed in pieces of `step` bytes into (name, filename, data).
    fn parse(body: &[u8], boundary: &str, step: usize) -> Result<Vec<Parsed>, String> {
        let mut p = Parser::new(boundary)?;
        let mut out: Vec<Parsed> = Vec::new();
        let mut open = false;
        for c in body.chunks(step.max(1)) {
            p.push(c);
            while let Some(ev) = p.next()? {
                match ev {
                    Event::Part { name, filename } => {
                        assert!(!open);
                        open = true;
                        out.push((name, filename, Vec::new()));
                    }
                    Event::Data(b) => {
                        assert!(open);
                        assert!(b.len() <= step + boundary.len() + 4);
                        out.last_mut().unwrap().2.extend_from_slice(&b);
                    }
                    Event::End => {
                        assert!(open);
                        open = false;
                    }
                }
            }
        }
        p.finish()?;
        Ok(out)
    }

    const TWO: &[u8] = b"preamble\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\\\"q.bin\"\r\n\r\n\x00\r\n\x01\r\n--x\r\n--xyz--\r\nepilogue";

    #[test]
    fn parses_two_files_in_any_pieces() {
        assert_eq!(
            boundary("multipart/form-data; boundary=xyz").as_deref(),
            Some("xyz")
        );
        for step in [1, 2, 3, 5, 7, 16, 1000] {
            let p = parse(TWO, "xyz", step).unwrap();
            assert_eq!(p.len(), 2, "step {step}");
            assert_eq!(p[0].0, "file");
            assert_eq!(p[0].1.as_deref(), Some("/home/user/a.txt"));
            assert_eq!(p[0].2, b"hello");
            assert_eq!(p[1].1.as_deref(), Some("b\"q.bin"));
            assert_eq!(p[1].2, b"\x00\r\n\x01\r\n--x");
        }
    }

    #[test]
    fn body_starting_with_the_boundary_and_empty_parts() {
        let body =
            b"--b\r\n\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n\r\n--b--";
        let p = parse(body, "b", 4).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "");
        assert!(p[0].2.is_empty() && p[1].2.is_empty());
    }

    #[test]
    fn rejects_truncated_bodies_and_bad_boundaries() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc";
        assert!(parse(body, "xyz", 4).is_err());
        assert!(parse(b"no boundary here", "xyz", 4).is_err());
        assert!(boundary("application/octet-stream").is_none());
        assert!(Parser::new(&"a".repeat(71)).is_err());
        assert!(Parser::new(&"a".repeat(70)).is_ok());
    }

    #[test]
    fn oversized_headers_are_refused() {
        let mut body = b"--b\r\nX: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_HEADERS + 10));
        assert!(parse(&body, "b", 4096)
            .unwrap_err()
            .contains("headers exceed"));
    }

    #[test]
    fn memory_stays_bounded_on_a_large_part() {
        let mut p = Parser::new("bnd").unwrap();
        p.push(b"--bnd\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n");
        assert!(matches!(p.next().unwrap(), Some(Event::Part { .. })));
        let chunk = vec![b'z'; 64 << 10];
        let mut total = 0;
        for _ in 0..64 {
            p.push(&chunk);
            while let Some(Event::Data(b)) = p.next().unwrap() {
                total += b.len();
            }
            assert!(p.buf.len() < 16, "only a boundary's worth is held back");
        }
        p.push(b"\r\n--bnd--\r\n");
        while let Some(ev) = p.next().unwrap() {
            if let Event::Data(b) = ev {
                total += b.len();
            }
        }
        assert!(p.is_done());
        assert_eq!(total, 64 * (64 << 10));
    }
}
