//! The carrier-to-gateway half of a call before the event stack: telling which carrier is
//! calling (on detection routes) and turning socket messages into frames (taped first).

use std::collections::VecDeque;
use std::time::Duration;

use callgate_handlers::dialect::detect::{self, Detection};
use callgate_handlers::dialect::Dialect;
use callgate_handlers::event::Frame;
use callgate_handlers::tape::{Dir, Tape};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::carrier_socket::CarrierSocket;

/// Reads up to [`detect::MAX_FRAMES`] frames (for at most 5 s) to recognise the carrier;
/// the frames read are queued for the call.
pub(super) async fn detect_dialect(
    socket: &mut CarrierSocket,
    queued: &mut VecDeque<Frame>,
    tape: Option<&Tape>,
) -> Result<Dialect, String> {
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    while queued.len() < detect::MAX_FRAMES {
        let frame = tokio::select! {
            message = socket.next() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => frame_in(message, tape),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                _ => return Err("socket closed before any event".into()),
            },
            _ = &mut deadline => return Err("no event within 5 s".into()),
        };
        let detection = detect::detect(&frame);
        queued.push_back(frame);
        match detection {
            Detection::Found(dialect) => return Ok(dialect),
            Detection::NeedMore => continue,
            Detection::Unknown(why) => return Err(why),
        }
    }
    Err("no start event".into())
}

/// A carrier frame as the event stack takes it, taped first when the call is taped.
pub(super) fn frame_in(message: Message, tape: Option<&Tape>) -> Frame {
    match message {
        Message::Binary(bytes) => {
            if let Some(tape) = tape {
                tape.binary(Dir::CarrierIn, &bytes);
            }
            Frame::Binary(bytes)
        }
        message => {
            let text = message.into_text().unwrap_or_default();
            if let Some(tape) = tape {
                tape.text(Dir::CarrierIn, None, &text);
            }
            Frame::Text(text.into())
        }
    }
}
