//! The carrier's WebSocket: our own upgrade, so that every byte the carrier sends passes a
//! meter that counts WebSocket frames (data, ping, pong, close and continuation alike)
//! against the per-socket budget; and the close handshake, done so the peer hears our code.
//!
//! tungstenite answers pings and gathers continuation frames inside its read loop: a socket
//! can make it do that millions of times a second without ever handing a message to the
//! call loop, so a limit counted in messages never sees the flood. The meter sits below
//! tungstenite, on the byte stream, reads only frame headers (payloads are skipped by
//! length) and signals the call loop when the budget is spent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use callgate_layers::http::admission::is_websocket_upgrade;
use callgate_layers::http::limit::GlobalLimiter;
use futures_util::{SinkExt, StreamExt};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::close::CloseReason;

/// The only subprotocol we echo (a token may ride beside it in `Sec-WebSocket-Protocol`).
const PROTOCOL: &str = "callgate";

/// An upgraded carrier socket.
pub type CarrierSocket = WebSocketStream<Metered<TokioIo<Upgraded>>>;

/// The upgrade half of a carrier request: an extractor that checks the opening handshake
/// and, once the route has admitted the call, answers 101 and hands over the socket.
pub struct CarrierUpgrade {
    on_upgrade: OnUpgrade,
    accept: HeaderValue,
    protocol: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for CarrierUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let refuse = || (StatusCode::UPGRADE_REQUIRED, "not a WebSocket upgrade\n").into_response();
        if !is_websocket_upgrade(&parts.method, &parts.headers) {
            return Err(refuse());
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or_else(refuse)?;
        let accept =
            HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| refuse())?;
        let protocol = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == PROTOCOL);
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(refuse)?;
        Ok(Self {
            on_upgrade,
            accept,
            protocol,
        })
    }
}

impl CarrierUpgrade {
    /// Answers 101 and runs `serve` on the socket, metered by `budget`, once the HTTP
    /// connection has been handed over.
    pub fn on_upgrade<F, Fut>(
        self,
        config: WebSocketConfig,
        budget: GlobalLimiter,
        serve: F,
    ) -> Response
    where
        F: FnOnce(CarrierSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let io = Metered::new(TokioIo::new(upgraded), budget);
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            serve(socket).await;
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        if self.protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(PROTOCOL),
            );
        }
        response
    }
}

/// Reads WebSocket frame headers out of a byte stream and skips payloads by their length,
/// so it costs a few instructions per frame whatever the frames carry (RFC 6455 §5.2).
#[derive(Debug, Clone, Default)]
pub struct FrameScanner {
    header: [u8; 14],
    have: usize,
    /// Payload bytes still to skip; `None` while reading a header.
    payload_left: Option<u64>,
}

impl FrameScanner {
    /// Consumes `bytes`; returns how many frames began in them.
    pub fn scan(&mut self, mut bytes: &[u8]) -> u64 {
        let mut frames = 0;
        while !bytes.is_empty() {
            if let Some(left) = self.payload_left {
                let skip = left.min(bytes.len() as u64);
                bytes = &bytes[skip as usize..];
                self.payload_left = (left > skip).then_some(left - skip);
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have < 2 {
                continue;
            }
            let (len7, masked) = (self.header[1] & 0x7f, self.header[1] & 0x80 != 0);
            let extended = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let need = 2 + extended + if masked { 4 } else { 0 };
            if self.have < need {
                continue;
            }
            let payload = match extended {
                0 => u64::from(len7),
                n => self.header[2..2 + n]
                    .iter()
                    .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
            };
            frames += 1;
            self.have = 0;
            self.payload_left = (payload > 0).then_some(payload);
        }
        frames
    }
}

/// The carrier's byte stream, metered: every frame takes one unit of the socket's budget;
/// the first frame over it wakes [`Metered::flooded`] (the call loop closes 1008). Writes
/// pass through untouched.
pub struct Metered<T> {
    inner: T,
    scanner: FrameScanner,
    budget: GlobalLimiter,
    flooded: Arc<Notify>,
    tripped: bool,
}

impl<T> Metered<T> {
    /// Meters `inner` against `budget`.
    pub fn new(inner: T, budget: GlobalLimiter) -> Self {
        Self {
            inner,
            scanner: FrameScanner::default(),
            budget,
            flooded: Arc::new(Notify::new()),
            tripped: false,
        }
    }

    /// Notified once, when the peer first exceeds its frame budget.
    pub fn flooded(&self) -> Arc<Notify> {
        self.flooded.clone()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.tripped {
            let frames = this.scanner.scan(&buf.filled()[before..]);
            for _ in 0..frames {
                if this.budget.check().is_err() {
                    this.tripped = true;
                    this.flooded.notify_one();
                    break;
                }
            }
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// ----- The close handshake (RFC 6455 §5.5.1) -----

/// After our close frame, how long we keep reading (and discarding) for the peer's, so it
/// receives the code rather than a TCP reset (RFC 6455 §5.5.1).
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Sends our close frame.
pub async fn send_close(socket: &mut CarrierSocket, reason: &CloseReason) {
    let frame = CloseFrame {
        code: reason.code.into(),
        reason: reason.reason.as_ref().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// After our close frame, reads and discards until the peer's close, the end of the stream
/// or `CLOSE_LINGER`: closing the TCP connection with unread data in it would reset it,
/// and the peer would see 1006 instead of our code. Returns at once when the handshake
/// is already complete.
///
/// A peer we closed for what it sends (1007, 1008, 1009) is likely still sending, and a
/// client busy sending may not read until its writes block: so first we stop reading for
/// `CLOSE_LINGER`. TCP backpressure (the accept loop keeps receive buffers small) then
/// stalls its writes, it reads our close frame and answers, and only then do we read again.
pub async fn linger(socket: &mut CarrierSocket, close: &CloseReason) {
    if matches!(close.code, 1007..=1009) {
        tokio::time::sleep(CLOSE_LINGER).await;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: FIN + opcode, masked, with `len` payload bytes.
    fn frame(opcode: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=65535 => {
                out.push(0x80 | 126);
                out.extend((len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend((len as u64).to_be_bytes());
            }
        }
        out.extend([1, 2, 3, 4]);
        out.extend(std::iter::repeat_n(b'x', len));
        out
    }

    #[test]
    fn counts_every_kind_of_frame_at_any_split() {
        let stream: Vec<u8> = [
            frame(0x1, 300),   // text, 16-bit length
            frame(0x9, 0),     // ping
            frame(0xA, 4),     // pong
            frame(0x0, 0),     // continuation
            frame(0x2, 70000), // binary, 64-bit length
            frame(0x8, 2),     // close
        ]
        .concat();
        assert_eq!(FrameScanner::default().scan(&stream), 6);
        for chunk in [1, 2, 3, 7, 13, 4096] {
            let mut scanner = FrameScanner::default();
            let total: u64 = stream.chunks(chunk).map(|c| scanner.scan(c)).sum();
            assert_eq!(total, 6, "in chunks of {chunk}");
        }
    }

    #[test]
    fn unmasked_frames_are_read_too() {
        // Servers' frames carry no mask; the scanner reads whichever it is given.
        let mut scanner = FrameScanner::default();
        assert_eq!(scanner.scan(&[0x89, 0x00, 0x8A, 0x02, b'h', b'i']), 2);
    }
}
