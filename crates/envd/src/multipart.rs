//! A small `multipart/form-data` parser for `POST /files` uploads: the body
//! is held in memory (the SDK sends file-like and large data as
//! octet-stream, which is streamed), split at the boundary, and each part's
//! `Content-Disposition` name and filename are read.

use bytes::Bytes;

/// One form part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Bytes,
}

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

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
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

/// Splits a form body into parts.
pub fn parse(body: &Bytes, boundary: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0)
        .ok_or_else(|| "the multipart body does not contain its boundary".to_string())?
        + delim.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        if body[pos..].starts_with(b"\r\n") {
            pos += 2;
        }
        let hdr_end = find(body, b"\r\n\r\n", pos)
            .ok_or_else(|| "a multipart part has no end of headers".to_string())?;
        let headers = String::from_utf8_lossy(&body[pos..hdr_end]).into_owned();
        let data_start = hdr_end + 4;
        let mut close = Vec::with_capacity(delim.len() + 2);
        close.extend_from_slice(b"\r\n");
        close.extend_from_slice(delim);
        let data_end = find(body, &close, data_start)
            .ok_or_else(|| "a multipart part is not terminated by the boundary".to_string())?;
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
        parts.push(Part {
            name,
            filename,
            data: body.slice(data_start..data_end),
        });
        pos = data_end + close.len();
        if pos > body.len() {
            return Err("the multipart body ended inside a boundary".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_files() {
        let body = Bytes::from_static(
            b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\\\"q.bin\"\r\n\r\n\x00\r\n\x01\r\n--xyz--\r\n",
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=xyz").as_deref(),
            Some("xyz")
        );
        let p = parse(&body, "xyz").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "file");
        assert_eq!(p[0].filename.as_deref(), Some("/home/user/a.txt"));
        assert_eq!(&p[0].data[..], b"hello");
        assert_eq!(p[1].filename.as_deref(), Some("b\"q.bin"));
        assert_eq!(&p[1].data[..], b"\x00\r\n\x01");
    }

    #[test]
    fn rejects_truncated_bodies() {
        let body = Bytes::from_static(
            b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
        );
        assert!(parse(&body, "xyz").is_err());
        assert!(boundary("application/octet-stream").is_none());
    }
}
