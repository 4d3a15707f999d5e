//! The call directory: every live call of the cluster, where it runs, and its live feed.
//!
//! Each call has an entry `call:{call_sid}` (its admin JSON plus `replica` and
//! `replica_url`) with a TTL, indexed in the sorted set `calls` by expiry. The replica
//! serving the call writes the entry at `start`, refreshes it (and so its counters) every
//! third of the TTL, and deletes it at the end; its feed events are published on
//! `feed:{call_sid}`, where any replica's live-feed socket subscribes.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use callgate_handlers::call_state::{CallState, CallStore};
use callgate_handlers::feed::FeedEvent;
use futures_util::{Stream, StreamExt};
use redis::AsyncCommands;
use serde_json::Value;

use super::{scripts, Cluster};

impl Cluster {
    /// Lists `session` in the directory and publishes its feed until the call ends, then
    /// removes it.
    pub fn follow(self: &Arc<Self>, session: &Arc<CallState>) {
        if session.call_sid.is_empty() {
            return;
        }
        let cluster = self.clone();
        let session = session.clone();
        let mut feed = session.feed.subscribe();
        tokio::spawn(async move {
            let sid = session.call_sid.clone();
            cluster
                .register(std::slice::from_ref(&session), false)
                .await;
            // Only the feed is needed from here: holding the call would keep its feed open
            // (and this task alive) after the call is gone.
            drop(session);
            let channel = cluster.key(format_args!("feed:{sid}"));
            loop {
                let event = match feed.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let ended = matches!(event, FeedEvent::CallEnded { .. });
                let text = serde_json::to_string(&event).unwrap_or_default();
                cluster
                    .ask("feed", |mut redis| {
                        let channel = channel.clone();
                        async move { redis.publish::<_, _, ()>(channel, text).await }
                    })
                    .await;
                if ended {
                    break;
                }
            }
            let index = cluster.key(format_args!("calls"));
            let entry = cluster.key(format_args!("call:{sid}"));
            cluster
                .ask("directory", |mut redis| async move {
                    redis::pipe()
                        .del(entry)
                        .ignore()
                        .zrem(index, &sid)
                        .ignore()
                        .query_async::<()>(&mut redis)
                        .await
                })
                .await;
        });
    }

    /// Writes the entries of `sessions`; `only_existing` refreshes only what Redis still
    /// has, so a call that has just ended stays gone (a new call, and every call after
    /// Redis came back, is written regardless).
    async fn register(&self, sessions: &[Arc<CallState>], only_existing: bool) {
        let sessions: Vec<_> = sessions.iter().filter(|s| !s.call_sid.is_empty()).collect();
        if sessions.is_empty() {
            return;
        }
        let ttl_ms = self.ttl.as_millis() as u64;
        let as_of = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut pipe = redis::pipe();
        for session in &sessions {
            let mut entry = crate::admin::call_json(session);
            entry["replica"] = self.replica.clone().into();
            entry["replica_url"] = self.advertise_url.clone().into();
            entry["as_of"] = as_of.into();
            let mut set = redis::cmd("SET");
            set.arg(self.key(format_args!("call:{}", session.call_sid)))
                .arg(entry.to_string())
                .arg("PX")
                .arg(ttl_ms);
            if only_existing {
                set.arg("XX");
            }
            pipe.add_command(set).ignore();
        }
        self.ask("directory", |mut redis| async move {
            pipe.query_async::<()>(&mut redis).await
        })
        .await;
        let sids: Vec<String> = sessions.iter().map(|s| s.call_sid.clone()).collect();
        let index = self.key(format_args!("calls"));
        self.renew_set(&index, &sids, !only_existing).await;
    }

    /// Refreshes every live call's entry (counters included).
    pub(super) async fn renew_directory(&self, store: &CallStore, restore: bool) {
        self.register(&store.all(), !restore).await;
    }

    /// Every live call in the cluster (entries as [`crate::admin::call_json`] plus where).
    pub async fn calls(&self) -> Option<Vec<Value>> {
        let index = self.key(format_args!("calls"));
        let prefix = self.key(format_args!("call:"));
        let entries: Vec<String> = self
            .ask("directory", |mut redis| async move {
                scripts::DIRECTORY
                    .key(index)
                    .arg(prefix)
                    .invoke_async(&mut redis)
                    .await
            })
            .await?;
        Some(
            entries
                .iter()
                .filter_map(|e| serde_json::from_str(e).ok())
                .collect(),
        )
    }

    /// The directory entry of `call_sid`, if it is live somewhere.
    pub async fn find(&self, call_sid: &str) -> Option<Value> {
        let key = self.key(format_args!("call:{call_sid}"));
        let entry: Option<String> = self
            .ask("directory", |mut redis| async move { redis.get(key).await })
            .await?;
        serde_json::from_str(&entry?).ok()
    }

    /// The feed of `call_sid` (running on any replica) as the JSON texts its replica
    /// publishes; ends after `call_ended`, or when the call leaves the directory (its
    /// replica died).
    pub async fn subscribe(
        self: &Arc<Self>,
        call_sid: &str,
    ) -> Option<impl Stream<Item = String> + Send + 'static> {
        let channel = self.key(format_args!("feed:{call_sid}"));
        let mut pubsub = self.subscriber().await?;
        pubsub.subscribe(channel).await.ok()?;
        let messages = pubsub
            .into_on_message()
            .filter_map(|m| async move { m.get_payload::<String>().ok() });
        let cluster = self.clone();
        let sid = call_sid.to_owned();
        let check_every = self.ttl;
        Some(futures_util::stream::unfold(
            (Box::pin(messages), false),
            move |(mut messages, done)| {
                let cluster = cluster.clone();
                let sid = sid.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        match tokio::time::timeout(check_every, messages.next()).await {
                            Ok(Some(text)) => {
                                let ended = text.contains("\"type\":\"call_ended\"");
                                return Some((text, (messages, ended)));
                            }
                            Ok(None) => return None,
                            Err(_) if cluster.find(&sid).await.is_none() => return None,
                            Err(_) => continue,
                        }
                    }
                }
            },
        ))
    }
}
