//! The connection under the HTTP server, so that the answers actix's HTTP/1 decoder gives on
//! its own are problem+json too.
//!
//! When a request head is too large (431), cannot be parsed (400), does not arrive within
//! `client_request_timeout` (408) or the connection breaks mid-body (500), actix-http writes
//! an empty response and closes the connection, with no hook to shape it. Those responses are
//! recognisable: the last thing written on the connection, a status line of one of those
//! codes, `content-length: 0` and no `content-type`; nothing the application answers looks so
//! (its error answers all carry a problem body). [`ProblemConnection`] replaces exactly those
//! with the same status, a problem body, and the headers every answer carries.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ApiError, ErrorCode};

/// A connection whose decoder-made empty error answers are rewritten as problem+json.
pub struct ProblemConnection<T> {
    inner: T,
    /// A rewritten write in progress: the bytes to send, how many went, and the length of
    /// the caller's buffer to report once all of them went.
    rewrite: Option<Rewrite>,
}

struct Rewrite {
    bytes: Vec<u8>,
    sent: usize,
    reported: usize,
}

impl<T> ProblemConnection<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            rewrite: None,
        }
    }
}

/// Statuses actix-http answers by itself, and why, in the words of a problem's detail.
fn decoder_answer(status: &[u8]) -> Option<(ErrorCode, &'static str)> {
    match status {
        b"400" => Some((
            ErrorCode::MalformedRequest,
            "the request head is not valid HTTP/1.1",
        )),
        b"408" => Some((
            ErrorCode::RequestTimeout,
            "the request head did not arrive in time",
        )),
        b"431" => Some((
            ErrorCode::HeadersTooLarge,
            "the request head is larger than 128 KiB or has more than 96 header fields",
        )),
        b"500" => Some((ErrorCode::Internal, "the connection broke mid-request")),
        _ => None,
    }
}

/// Where, in what is about to be written, an empty decoder answer starts, and its
/// replacement; `None` when `written` ends with anything else.
fn rewritten(written: &[u8]) -> Option<(usize, Vec<u8>)> {
    const END: &[u8] = b"\r\n\r\n";
    if !written.ends_with(END) {
        return None;
    }
    // The head is the tail after the previous blank line (or the whole write).
    let body_end = written.len() - END.len();
    let start = find_last(&written[..body_end], b"HTTP/1.1 ")?;
    let head = &written[start..body_end];
    let status_line_end = find_first(head, b"\r\n").unwrap_or(head.len());
    let status_line = &head[..status_line_end];
    let status = status_line.get(9..12)?;
    let (code, detail) = decoder_answer(status)?;
    let fields = &head[status_line_end..];
    let lower = fields.to_ascii_lowercase();
    if find_first(&lower, b"\r\ncontent-length: 0").is_none()
        || find_first(&lower, b"\r\ncontent-type:").is_some()
        || find_first(&lower, b"\r\ntransfer-encoding:").is_some()
    {
        return None;
    }
    let date = fields
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .find(|line| line.to_ascii_lowercase().starts_with(b"date:"));
    let problem = ApiError::new(code, detail).to_problem();
    let body = serde_json::to_vec(&problem).ok()?;
    let mut answer = Vec::with_capacity(256 + body.len());
    answer.extend_from_slice(status_line);
    answer.extend_from_slice(b"\r\ncontent-type: application/problem+json");
    answer.extend_from_slice(format!("\r\ncontent-length: {}", body.len()).as_bytes());
    answer.extend_from_slice(b"\r\nx-content-type-options: nosniff");
    answer.extend_from_slice(b"\r\ncache-control: no-store");
    answer.extend_from_slice(b"\r\nconnection: close");
    if let Some(date) = date {
        answer.extend_from_slice(b"\r\n");
        answer.extend_from_slice(date);
    }
    answer.extend_from_slice(END);
    answer.extend_from_slice(&body);
    Some((start, answer))
}

fn find_first(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemConnection<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemConnection<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewrite.is_none() {
            // Only a write that could hold a whole empty answer is looked at; the usual
            // response passes untouched.
            match rewritten(buf) {
                Some((start, answer)) => {
                    let mut bytes = buf[..start].to_vec();
                    bytes.extend_from_slice(&answer);
                    this.rewrite = Some(Rewrite {
                        bytes,
                        sent: 0,
                        reported: buf.len(),
                    });
                }
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let Some(rewrite) = this.rewrite.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while rewrite.sent < rewrite.bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &rewrite.bytes[rewrite.sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => rewrite.sent += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let reported = rewrite.reported;
        this.rewrite = None;
        Poll::Ready(Ok(reported))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\r\n";

    #[test]
    fn an_empty_decoder_answer_becomes_a_problem() {
        let (start, answer) = rewritten(EMPTY_431).unwrap();
        assert_eq!(start, 0);
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("date: Thu, 26 Nov 2026 10:00:00 GMT"));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 431);
        assert_eq!(problem["type"], "urn:problem:headers-too-large");
    }

    #[test]
    fn an_answer_before_it_in_the_same_write_is_kept() {
        let mut written = b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n".to_vec();
        written.extend_from_slice(EMPTY_431);
        let (start, _) = rewritten(&written).unwrap();
        assert_eq!(
            &written[..start],
            b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n"
        );
    }

    #[test]
    fn application_answers_pass_untouched() {
        for written in [
            &b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 12\r\n\r\n",
            b"partial HTTP/1.1 408",
        ] {
            assert!(rewritten(written).is_none(), "{}", String::from_utf8_lossy(written));
        }
    }
}
