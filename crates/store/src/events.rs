//! Small notices between the processes that share one database: "there is new work",
//! "a run's log grew". [`Store::publish`] sends one; [`Store::subscribe`] hands out a
//! [`Subscription`] that receives every notice published by any process on the same
//! database (the publisher's own included).
//!
//! **PostgreSQL:** `NOTIFY` on one channel per [`Topic`] (`wharf_work`, `wharf_log`).
//! One background task per store listens on a connection of its own (not one of the
//! pool's), started by the first `subscribe`, and feeds a `tokio` broadcast channel.
//! When that connection is lost it reconnects (backing off up to
//! [`MAX_BACKOFF`]) and tells every subscriber [`Event::Missed`]: notices sent while it
//! was away are gone, so whoever waits re-checks the database.
//!
//! **SQLite:** one process owns the file, so the broadcast channel is all there is.
//!
//! **Bounds.** A payload is a few dozen bytes (PostgreSQL's limit is 8,000); the
//! broadcast channel keeps the last [`CAPACITY`] notices. A subscriber that falls
//! further behind never slows the publisher: it loses the oldest and receives
//! [`Event::Missed`] instead, and re-checks. So a notice is a hint to look, never the
//! data itself: a reader always reads the truth from the database after waking (and
//! also wakes on a bounded timer, in case a hint was lost).

use crate::db::{self, On};
use crate::logs::LogKey;
use crate::{Result, Store, StoreError};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Notices a subscriber may lag behind before it is told [`Event::Missed`].
pub const CAPACITY: usize = 1024;
/// The longest wait between two attempts to reconnect the listener.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the first [`Store::subscribe`] waits for the listener to be listening.
const READY_WAIT: Duration = Duration::from_secs(5);

/// What a notice is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A run was queued, or a lease lapsed: a replica with room may claim work.
    Work,
    /// A run's log grew.
    Log,
}

impl Topic {
    pub const ALL: [Topic; 2] = [Topic::Work, Topic::Log];

    /// The PostgreSQL channel.
    pub fn channel(self) -> &'static str {
        match self {
            Topic::Work => "wharf_work",
            Topic::Log => "wharf_log",
        }
    }

    fn from_channel(channel: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.channel() == channel)
    }
}

/// One notice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// New work: `run` was queued (or its lease lapsed), when the publisher names one.
    Work { run: Option<i64> },
    /// Log `key` of run `run` is now `size` bytes long.
    Log { run: i64, key: LogKey, size: u64 },
    /// Notices may have been lost (the listener reconnected, or this subscriber fell
    /// more than [`CAPACITY`] behind): re-check whatever is awaited.
    Missed,
}

impl Event {
    pub fn topic(&self) -> Option<Topic> {
        match self {
            Event::Work { .. } => Some(Topic::Work),
            Event::Log { .. } => Some(Topic::Log),
            Event::Missed => None,
        }
    }

    /// The text sent with `NOTIFY` (`Missed` is never sent).
    pub fn payload(&self) -> String {
        match self {
            Event::Work { run: Some(run) } => run.to_string(),
            Event::Work { run: None } | Event::Missed => String::new(),
            Event::Log { run, key, size } => format!("{run} {key} {size}"),
        }
    }

    /// Reads a notice back from its topic and payload; `None` for a payload this
    /// version does not understand (another version's replica, a hand-sent NOTIFY).
    pub fn parse(topic: Topic, payload: &str) -> Option<Event> {
        match topic {
            Topic::Work if payload.is_empty() => Some(Event::Work { run: None }),
            Topic::Work => payload.parse().ok().map(|run| Event::Work { run: Some(run) }),
            Topic::Log => {
                let mut parts = payload.split(' ');
                let run = parts.next()?.parse().ok()?;
                let key = parts.next()?.parse().ok()?;
                let size = parts.next()?.parse().ok()?;
                parts.next().is_none().then_some(Event::Log { run, key, size })
            }
        }
    }
}

/// Receives the notices published after it was made.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next notice; `None` once the store is gone. A subscriber that fell behind
    /// gets [`Event::Missed`] (once) and then the newest notices.
    pub async fn recv(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Event::Missed),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next notice if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Event::Missed),
            Err(_) => None,
        }
    }
}

/// The store's side of the notices (shared by every clone of the store).
#[derive(Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<Event>,
    /// The PostgreSQL listener task, once started; aborted with the last store clone.
    listener: Mutex<Option<Listener>>,
}

#[derive(Debug)]
struct Listener {
    task: tokio::task::JoinHandle<()>,
    listening: watch::Receiver<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(CAPACITY).0, listener: Mutex::new(None) }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get_mut().ok().and_then(Option::take) {
            listener.task.abort();
        }
    }
}

impl Store {
    /// Tells every subscriber, in this process and (on PostgreSQL) every other one on
    /// the same database. Never waits for subscribers.
    pub async fn publish(&self, event: &Event) -> Result<()> {
        publish_on(&self.pool, &self.events, event).await
    }

    /// Publishes `event` when the transaction `tx` commits (PostgreSQL delivers
    /// `NOTIFY` at commit, not at all on rollback). On SQLite the notice goes out at
    /// once, so call this right before committing.
    pub async fn publish_in(&self, tx: &mut db::Tx, event: &Event) -> Result<()> {
        publish_on(tx, &self.events, event).await
    }

    /// A new subscription. On PostgreSQL the first call starts the listener and waits
    /// (a few seconds at most) until it listens, so a notice published after this
    /// returns is received; if the database cannot be reached the subscription still
    /// works and receives [`Event::Missed`] once the listener is back.
    pub async fn subscribe(&self) -> Subscription {
        let rx = self.events.tx.subscribe();
        if let Some(pool) = self.postgres_pool() {
            let mut listening = {
                let mut slot = self.events.listener.lock().unwrap_or_else(|e| e.into_inner());
                let listener = slot.get_or_insert_with(|| start_listener(pool, self.events.tx.clone()));
                listener.listening.clone()
            };
            let _ = tokio::time::timeout(READY_WAIT, listening.wait_for(|l| *l)).await;
        }
        Subscription { rx }
    }
}

async fn publish_on<'c>(on: impl Into<On<'c>>, events: &Events, event: &Event) -> Result<()> {
    let Some(topic) = event.topic() else {
        return Err(StoreError::Conflict("Missed is received, never published".into()));
    };
    let on = on.into();
    let postgres = match &on {
        On::Pool(pool) => pool.is_postgres(),
        On::Tx(tx) => tx.is_postgres(),
    };
    if postgres {
        db::query("SELECT pg_notify(?, ?)").bind(topic.channel()).bind(event.payload()).execute(on).await?;
    } else {
        // No receivers is fine: nobody is waiting.
        let _ = events.tx.send(event.clone());
    }
    Ok(())
}

/// Starts the task that listens on every topic's channel and forwards to `tx`.
fn start_listener(pool: &PgPool, tx: broadcast::Sender<Event>) -> Listener {
    // A pool of one connection of its own, so listening never takes one of the
    // store's connections; the listener reconnects through it.
    let options = (*pool.connect_options()).clone();
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options);
    let (listening_tx, listening) = watch::channel(false);
    let task = tokio::spawn(listen(own, tx, listening_tx));
    Listener { task, listening }
}

async fn listen(pool: PgPool, tx: broadcast::Sender<Event>, listening: watch::Sender<bool>) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match listen_once(&pool, &tx, &listening, &mut first, &mut backoff).await {
            Ok(()) => {}
            Err(e) => {
                listening.send_replace(false);
                eprintln!("wharf: listening for database notices failed, retrying in {backoff:?}: {e}");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: listen, forward until an error. A lost connection that
/// sqlx re-establishes by itself is reported as [`Event::Missed`] and goes on.
async fn listen_once(
    pool: &PgPool,
    tx: &broadcast::Sender<Event>,
    listening: &watch::Sender<bool>,
    first: &mut bool,
    backoff: &mut Duration,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    let channels: Vec<&str> = Topic::ALL.iter().map(|t| t.channel()).collect();
    listener.listen_all(channels).await?;
    listening.send_replace(true);
    if !std::mem::replace(first, false) {
        let _ = tx.send(Event::Missed);
    }
    *backoff = Duration::from_millis(100);
    loop {
        match listener.try_recv().await? {
            Some(notice) => {
                let event = Topic::from_channel(notice.channel()).and_then(|t| Event::parse(t, notice.payload()));
                if let Some(event) = event {
                    let _ = tx.send(event);
                }
            }
            // Lost and reconnected (listening again on every channel).
            None => {
                let _ = tx.send(Event::Missed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back() {
        for event in [
            Event::Work { run: None },
            Event::Work { run: Some(42) },
            Event::Log { run: 7, key: LogKey::Task(2, 3), size: 4096 },
            Event::Log { run: 7, key: LogKey::Checkout, size: 0 },
            Event::Log { run: 7, key: LogKey::Run, size: 1 },
        ] {
            let topic = event.topic().unwrap();
            assert_eq!(Event::parse(topic, &event.payload()), Some(event));
        }
        assert_eq!(Event::parse(Topic::Log, "7 run"), None);
        assert_eq!(Event::parse(Topic::Log, "7 run 1 2"), None);
        assert_eq!(Event::parse(Topic::Log, "x 1-2 3"), None);
        assert_eq!(Event::parse(Topic::Work, "nope"), None);
    }

    on_both!(url: a_published_notice_reaches_every_subscriber, a_lagging_subscriber_is_told_it_missed);

    async fn a_published_notice_reaches_every_subscriber(url: String) {
        // Two stores on one database stand for two replicas.
        let a = Store::open(&url).await.unwrap();
        let b = if a.is_postgres() { Store::open(&url).await.unwrap() } else { a.clone() };
        let mut on_a = a.subscribe().await;
        let mut on_b = b.subscribe().await;
        let event = Event::Log { run: 3, key: LogKey::Task(0, 1), size: 120 };
        a.publish(&event).await.unwrap();
        b.publish(&Event::Work { run: Some(9) }).await.unwrap();
        for sub in [&mut on_a, &mut on_b] {
            let first = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap();
            let second = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap();
            assert_eq!(first, Some(event.clone()));
            assert_eq!(second, Some(Event::Work { run: Some(9) }));
        }
        // Inside a transaction: sent at commit, not at all on rollback.
        let mut tx = a.pool().begin().await.unwrap();
        a.publish_in(&mut tx, &Event::Work { run: Some(1) }).await.unwrap();
        drop(tx);
        let mut tx = a.pool().begin().await.unwrap();
        a.publish_in(&mut tx, &Event::Work { run: Some(2) }).await.unwrap();
        tx.commit().await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), on_b.recv()).await.unwrap();
        if a.is_postgres() {
            assert_eq!(next, Some(Event::Work { run: Some(2) }));
        } else {
            // SQLite sends at once (see publish_in).
            assert_eq!(next, Some(Event::Work { run: Some(1) }));
        }
        assert!(a.publish(&Event::Missed).await.is_err());
    }

    /// The listener's connection killed under it: subscribers hear `Missed`, and
    /// notices flow again once it is back.
    #[tokio::test]
    async fn the_listener_reconnects_after_its_connection_dies() {
        let Some((_keep, url)) = crate::backends::postgres_url() else { return };
        let store = Store::open(&url).await.unwrap();
        let mut sub = store.subscribe().await;
        let killed = db::query(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%') AS t",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get::<i64>(0);
        assert_eq!(killed, 1, "one listening connection");
        let event = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await.unwrap();
        assert_eq!(event, Some(Event::Missed));
        store.publish(&Event::Work { run: Some(5) }).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await.unwrap();
        assert_eq!(event, Some(Event::Work { run: Some(5) }));
    }

    async fn a_lagging_subscriber_is_told_it_missed(url: String) {
        let store = Store::open(&url).await.unwrap();
        let mut slow = store.subscribe().await;
        let mut fast = store.subscribe().await;
        let total = CAPACITY as i64 + 50;
        let mut seen = 0;
        for run in 0..total {
            // The publisher never waits, however far `slow` is behind.
            tokio::time::timeout(Duration::from_secs(5), store.publish(&Event::Work { run: Some(run) }))
                .await
                .unwrap()
                .unwrap();
            while let Some(event) = fast.try_recv() {
                assert_eq!(event, Event::Work { run: Some(seen) });
                seen += 1;
            }
        }
        while seen < total {
            let event = tokio::time::timeout(Duration::from_secs(10), fast.recv()).await.unwrap();
            assert_eq!(event, Some(Event::Work { run: Some(seen) }));
            seen += 1;
        }
        // On PostgreSQL the listener forwards as notices arrive, so `slow` may or may
        // not have fallen behind; wait until the last one is through, then drain.
        let mut missed = false;
        let mut last = None;
        while last != Some(total - 1) {
            match tokio::time::timeout(Duration::from_secs(10), slow.recv()).await.unwrap() {
                Some(Event::Missed) => missed = true,
                Some(Event::Work { run }) => last = run,
                other => panic!("unexpected {other:?}"),
            }
        }
        if !store.is_postgres() {
            assert!(missed, "more than CAPACITY behind on SQLite must report Missed");
        }
    }
}
