//! The node: shared state, the listener and the background tasks.
//!
//! How it fits: [`Node`] holds what every connection shares (the store behind its lock,
//! settings, clients, pub/sub, counters). [`serve`] accepts connections, bounded by
//! `maxclients`, and runs the active expiry sweep; a shutdown signal stops the listener,
//! tells every connection to finish, and returns once they have.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::config::Settings;
use crate::pubsub::Hub;
use crate::store::Store;

/// How often the active expiry sweep runs (Redis's `hz 10`).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Most entries one sweep tick examines, so it never holds the store lock for long.
pub const SWEEP_BUDGET: usize = 20_000;

/// What CLIENT LIST and CLIENT INFO show about a connection, and the handle to kill it.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    pub name: Mutex<Option<String>>,
    pub lib_name: Mutex<Option<String>>,
    pub lib_ver: Mutex<Option<String>>,
    pub last_cmd: Mutex<&'static str>,
    pub last_active: Mutex<Instant>,
    pub db: AtomicUsize,
    pub resp: AtomicUsize,
    pub subs: AtomicUsize,
    pub psubs: AtomicUsize,
    /// Commands queued in MULTI, or -1 (as `multi=` shows).
    pub multi: Mutex<i64>,
    killed: AtomicBool,
    kill_signal: Notify,
}

impl ClientInfo {
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr) -> Self {
        let now = Instant::now();
        ClientInfo {
            id,
            addr,
            laddr,
            created: now,
            name: Mutex::new(None),
            lib_name: Mutex::new(None),
            lib_ver: Mutex::new(None),
            last_cmd: Mutex::new("NULL"),
            last_active: Mutex::new(now),
            db: AtomicUsize::new(0),
            resp: AtomicUsize::new(2),
            subs: AtomicUsize::new(0),
            psubs: AtomicUsize::new(0),
            multi: Mutex::new(-1),
            killed: AtomicBool::new(false),
            kill_signal: Notify::new(),
        }
    }

    /// Asks the connection to close (CLIENT KILL, a pub/sub client that lags).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill_signal.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    pub async fn killed(&self) {
        self.kill_signal.notified().await
    }

    /// One line of CLIENT LIST, in Redis's field order.
    pub fn describe(&self) -> String {
        let now = Instant::now();
        let flags = if self.subs.load(Ordering::Relaxed) + self.psubs.load(Ordering::Relaxed) > 0 {
            "P"
        } else if *self.multi.lock() >= 0 {
            "x"
        } else {
            "N"
        };
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub={} psub={} ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.name.lock().as_deref().unwrap_or(""),
            now.duration_since(self.created).as_secs(),
            now.duration_since(*self.last_active.lock()).as_secs(),
            flags,
            self.db.load(Ordering::Relaxed),
            self.subs.load(Ordering::Relaxed),
            self.psubs.load(Ordering::Relaxed),
            *self.multi.lock(),
            self.last_cmd.lock(),
            self.resp.load(Ordering::Relaxed),
            self.lib_name.lock().as_deref().unwrap_or(""),
            self.lib_ver.lock().as_deref().unwrap_or(""),
        )
    }
}

/// Counters INFO reports.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub commands_processed: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
}

/// Everything the connections of one node share.
pub struct Node {
    pub store: Mutex<Store>,
    pub settings: RwLock<Settings>,
    pub clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    pub pubsub: Hub,
    pub stats: Stats,
    pub started: Instant,
    /// 40 hex characters, new each start, as Redis's `run_id`.
    pub run_id: String,
    pub local_addr: SocketAddr,
    next_client_id: AtomicU64,
    shutdown_tx: watch::Sender<bool>,
}

impl Node {
    pub fn new(settings: Settings, local_addr: SocketAddr) -> Arc<Node> {
        use rand::Rng;
        let mut store = Store::default();
        store.notify_flags = settings.notify_flags;
        let run_id: String = {
            let mut rng = rand::thread_rng();
            (0..40)
                .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
                .collect()
        };
        let (shutdown_tx, _) = watch::channel(false);
        Arc::new(Node {
            store: Mutex::new(store),
            settings: RwLock::new(settings),
            clients: Mutex::new(HashMap::new()),
            pubsub: Hub::default(),
            stats: Stats::default(),
            started: Instant::now(),
            run_id,
            local_addr,
            next_client_id: AtomicU64::new(1),
            shutdown_tx,
        })
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a graceful shutdown (SHUTDOWN, SIGTERM, SIGINT).
    pub fn shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Publishes keyspace notifications that commands queued.
    pub fn publish_events(&self, events: &mut Vec<crate::notify::KeyEvent>) {
        if events.is_empty() {
            return;
        }
        if self.pubsub.is_idle() {
            events.clear();
            return;
        }
        let flags = self.store.lock().notify_flags;
        for ev in events.drain(..) {
            if flags & crate::notify::KEYSPACE != 0 {
                let mut channel = format!("__keyspace@{}__:", ev.db).into_bytes();
                channel.extend_from_slice(&ev.key);
                self.pubsub.publish(&channel, ev.event.as_bytes());
            }
            if flags & crate::notify::KEYEVENT != 0 {
                let channel = format!("__keyevent@{}__:{}", ev.db, ev.event);
                self.pubsub.publish(channel.as_bytes(), &ev.key);
            }
        }
    }

    /// One tick of the active expiry sweep: walks slots with expiring keys from where the
    /// last tick stopped, deletes what has expired, and stops after [`SWEEP_BUDGET`]
    /// entries. Returns how many keys it deleted.
    pub fn sweep_expired(&self, now_ms: u64) -> usize {
        let mut events = Vec::new();
        let mut deleted = 0;
        {
            let mut store = self.store.lock();
            let dbs: Vec<usize> = store
                .dbs()
                .filter(|(_, k)| k.expires_count() > 0)
                .map(|(i, _)| i)
                .collect();
            for db in dbs {
                let mut budget = SWEEP_BUDGET;
                let mut doomed = Vec::new();
                let ks = store.db(db);
                let mut visited_slots = 0;
                while budget > 0 && visited_slots < kelvin_protocol::SLOT_COUNT {
                    let slot = ks.sweep_slot;
                    ks.sweep_slot = (slot + 1) % kelvin_protocol::SLOT_COUNT;
                    visited_slots += 1;
                    let table = ks.slot(slot);
                    if table.expires == 0 {
                        continue;
                    }
                    budget = budget.saturating_sub(table.map.len());
                    doomed.extend(
                        table
                            .map
                            .iter()
                            .filter(|(_, e)| e.is_expired(now_ms))
                            .map(|(k, _)| k.clone()),
                    );
                }
                let mut out = kelvin_protocol::ReplyWriter::default();
                let mut lazy = Vec::new();
                let mut exec = crate::cmd::Exec {
                    store: &mut store,
                    db,
                    now_ms,
                    out: &mut out,
                    events: &mut events,
                    lazy_expired: &mut lazy,
                    may_block: false,
                    block: None,
                };
                for key in doomed {
                    if exec.expire_if_needed(&key) {
                        deleted += 1;
                    }
                }
            }
        }
        self.publish_events(&mut events);
        deleted
    }
}

/// Accepts connections until shutdown, then waits for them to finish.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> anyhow::Result<()> {
    let mut shutdown = node.shutdown_signal();
    let active = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());

    let sweeper = {
        let node = node.clone();
        let mut shutdown = node.shutdown_signal();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => { node.sweep_expired(crate::cmd::unix_ms()); }
                    _ = shutdown.changed() => break,
                }
            }
        })
    };

    loop {
        let accepted = tokio::select! {
            res = listener.accept() => res,
            _ = shutdown.changed() => break,
        };
        let (socket, addr) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(cause = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        node.stats
            .connections_received
            .fetch_add(1, Ordering::Relaxed);
        let _ = socket.set_nodelay(true);
        let maxclients = node.settings.read().maxclients;
        if active.load(Ordering::Acquire) >= maxclients {
            node.stats
                .rejected_connections
                .fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut socket = socket;
                let _ = socket
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let node = node.clone();
        let active = active.clone();
        let all_done = all_done.clone();
        tokio::spawn(async move {
            crate::conn::Connection::run(node, socket, addr).await;
            if active.fetch_sub(1, Ordering::AcqRel) == 1 {
                all_done.notify_waiters();
            }
        });
    }
    tracing::info!("shutting down: waiting for connections to close");
    // Connections watch the same signal; give them a bounded time to flush replies.
    let drain = async {
        while active.load(Ordering::Acquire) > 0 {
            let notified = all_done.notified();
            if active.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    sweeper.abort();
    Ok(())
}
