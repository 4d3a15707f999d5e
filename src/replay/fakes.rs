//! The other side of a replay: the tape's upstream (connection by connection, at the taped
//! times, each reply waiting for its cause) and the tape's tool webhooks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callgate_handlers::tape::Dir;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::compare::{is_audio, item};
use super::{said_before, said_times, wait_for, Entry, Heard, Tape};

/// The tape's upstream: connection N answers with the tape's events for connection N, at
/// their times after it opened, and closes when the tape's upstream closed.
pub(super) async fn fake_upstream(
    tape: &Tape,
    heard: Arc<Mutex<Heard>>,
    speed: f64,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    let mut scripts: HashMap<u32, (u64, Vec<Entry>)> = HashMap::new();
    for entry in &tape.entries {
        let Some(conn) = entry.conn else { continue };
        match entry.dir.as_str() {
            "upstream_open" => scripts.entry(conn).or_default().0 = entry.t,
            "upstream_in" => scripts.entry(conn).or_default().1.push(entry.clone()),
            "upstream_close" if entry.by.as_deref() == Some("upstream") => {
                scripts.entry(conn).or_default().1.push(entry.clone())
            }
            _ => {}
        }
    }
    let redaction = tape.redaction();
    let needs: HashMap<(u32, u64), usize> = scripts
        .iter()
        .flat_map(|(conn, (_, entries))| {
            let said = said_times(tape, "upstream_out", Some(*conn));
            entries
                .iter()
                .map(|e| ((*conn, e.t), said_before(&said, e.t)))
                .collect::<Vec<_>>()
        })
        .collect();
    let needs = Arc::new(needs);
    let scripts = Arc::new(Mutex::new(scripts));
    tokio::spawn(async move {
        // Numbered as WebSocket sessions: the gateway's reachability probe opens bare TCP
        // connections that never become one.
        let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
        while let Ok((stream, _)) = listener.accept().await {
            let (heard, scripts, next) = (heard.clone(), scripts.clone(), next.clone());
            let (heard_out, needs) = (heard.clone(), needs.clone());
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let conn = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (opened_at, script) = scripts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&conn)
                    .unwrap_or_default();
                let opened = Instant::now();
                let (mut sink, mut stream) = ws.split();
                let reading = tokio::spawn(async move {
                    while let Some(Ok(message)) = stream.next().await {
                        if let Message::Text(text) = message {
                            let t =
                                opened_at + (opened.elapsed().as_secs_f64() * speed * 1e6) as u64;
                            let mut heard = heard.lock().unwrap_or_else(|p| p.into_inner());
                            let said = item(t, Some(&text), None, Dir::UpstreamOut, redaction);
                            heard.upstream.entry(conn).or_default().push(said);
                        }
                    }
                });
                let mut script: VecDeque<Entry> = script.into();
                while let Some(entry) = script.pop_front() {
                    let after =
                        Duration::from_micros(entry.t.saturating_sub(opened_at)).div_f64(speed);
                    tokio::time::sleep_until(opened + after).await;
                    // The model answers what it was sent: wait for the gateway's events that
                    // came before this one on the tape.
                    let needed = needs.get(&(conn, entry.t)).copied().unwrap_or(0);
                    let heard_enough = || {
                        let heard = heard_out.lock().unwrap_or_else(|p| p.into_inner());
                        let said = heard.upstream.get(&conn).map_or(0, |items| {
                            items.iter().filter(|i| !is_audio(&i.value)).count()
                        });
                        said >= needed
                    };
                    wait_for(heard_enough).await;
                    let message = match (&entry.text, entry.code) {
                        (Some(text), _) => Message::Text(text.clone().into()),
                        (None, Some(code)) => Message::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: "".into(),
                        })),
                        _ => continue,
                    };
                    let closing = matches!(message, Message::Close(_));
                    if sink.send(message).await.is_err() || closing {
                        break;
                    }
                }
                let _ = reading.await;
            });
        }
    });
    Ok(url)
}

/// The tape's tool webhooks: each name answers with its taped outputs, in order.
pub(super) async fn fake_tools(tape: &Tape) -> anyhow::Result<String> {
    let mut outputs: HashMap<String, VecDeque<String>> = HashMap::new();
    for entry in tape.entries.iter().filter(|e| e.dir == "tool") {
        if let (Some(name), Some(output)) = (&entry.name, &entry.output) {
            outputs
                .entry(name.clone())
                .or_default()
                .push_back(output.clone());
        }
    }
    let outputs = Arc::new(Mutex::new(outputs));
    let app = axum::Router::new().route(
        "/tool",
        axum::routing::post(move |body: axum::Json<Value>| {
            let outputs = outputs.clone();
            async move {
                let name = body.0["name"].as_str().unwrap_or_default().to_owned();
                let next = outputs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&name)
                    .and_then(VecDeque::pop_front);
                match next {
                    Some(output) => (axum::http::StatusCode::OK, output),
                    None => (
                        axum::http::StatusCode::NOT_FOUND,
                        "not on the tape".to_owned(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/tool"))
}
