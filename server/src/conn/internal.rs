//! Kelvin's own requests, made by the node itself (the migration driver): run as a
//! connection of the main port would run them, routed, relayed and waited for, without
//! a socket.

use bytes::Bytes;
use kelvin_protocol::{ReplyWriter, RespVersion};

use super::*;

/// How long one request to another node's client port may take.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Relay connections that Kelvin's own connections ([`Internal`]) left behind, ready for
/// the next one: a transaction's coordinator makes a few of those per transaction, and
/// a relay connection's set-up (connect, AUTH, HELLO) costs more than a request.
#[derive(Default)]
pub struct RelayPool {
    idle: parking_lot::Mutex<Vec<(RespVersion, Vec<crate::relay::Relay>)>>,
}

/// Most sets of relay connections the pool keeps.
const POOLED: usize = 64;

impl RelayPool {
    fn take(&self, version: RespVersion) -> Vec<crate::relay::Relay> {
        let mut idle = self.idle.lock();
        match idle.iter().position(|(v, _)| *v == version) {
            Some(at) => idle.swap_remove(at).1,
            None => Vec::new(),
        }
    }

    fn give(&self, version: RespVersion, relays: Vec<crate::relay::Relay>) {
        let mut idle = self.idle.lock();
        if !relays.is_empty() && idle.len() < POOLED {
            idle.push((version, relays));
        }
    }
}

/// A connection of the node to itself.
pub struct Internal {
    node: Arc<Node>,
    client: ClientState,
    /// The protocol its replies come in (a transaction's coordinator asks in its
    /// client's, whose replies it hands on).
    version: RespVersion,
}

impl Internal {
    pub fn new(node: &Arc<Node>) -> Internal {
        Internal::with_version(node, RespVersion::Resp2)
    }

    /// A connection whose replies come in `version`.
    pub fn with_version(node: &Arc<Node>, version: RespVersion) -> Internal {
        // Nothing subscribes on this connection: its push queue is never read.
        let (push_tx, _) = mpsc::channel(1);
        let addr = node.local_addr;
        let info = Arc::new(ClientInfo::new(0, addr, addr));
        let mut client = ClientState::new(info, push_tx, true, false);
        client.relays = node.relay_pool.take(version);
        Internal {
            node: node.clone(),
            client,
            version,
        }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs `argv` and returns its reply (RESP2 unless made [`Internal::with_version`]).
    pub async fn call(&mut self, argv: Vec<Bytes>) -> Vec<u8> {
        let mut out = ReplyWriter::new(self.version);
        drive(&self.node, &mut self.client, &mut out, vec![argv]).await;
        out.buf
    }

    /// Runs `argv` on group `group`, wherever its leader is (`KELVIN.ON`).
    pub async fn call_on_group(&mut self, group: u64, argv: Vec<Bytes>) -> Vec<u8> {
        self.call(route::pin(group, argv)).await
    }

    /// Sends `argv` to member `member`'s client port as is (a command that must run on
    /// that node, such as a topology change on the meta group's leader).
    pub async fn call_member(&mut self, member: u64, argv: Vec<Bytes>) -> std::io::Result<Vec<u8>> {
        let addr = self
            .node
            .peer_client_addr(member)
            .ok_or_else(|| std::io::Error::other("no such member"))?;
        let password = self.node.settings.read().requirepass.clone();
        let epoch = self.node.membership.read().epoch;
        let mut relay = crate::relay::Relay::connect(
            member,
            addr,
            password.as_deref(),
            RespVersion::Resp2,
            1,
            epoch,
        )
        .await?;
        let mut reply = Vec::new();
        tokio::time::timeout(
            CALL_TIMEOUT,
            relay.forward(0, RespVersion::Resp2, &[argv], &mut reply),
        )
        .await
        .map_err(|_| std::io::Error::other("the member did not answer in time"))??;
        Ok(reply)
    }
}

impl crate::migrate::driver::Cluster for Internal {
    fn fork(&self) -> Internal {
        Internal::new(&self.node)
    }

    fn topology(&self) -> Option<crate::cluster::Membership> {
        let meta = self.node.meta()?;
        crate::cluster::stored_topology(&mut meta.store.lock())?.ok()
    }

    fn leads(&self, group: u64) -> bool {
        self.node
            .hosted(group)
            .is_some_and(|g| g.status.is_leader())
    }

    fn meta_leader(&self) -> Option<u64> {
        self.node.meta()?.status.leader()
    }

    fn record(&self, figures: &crate::migrate::figures::Figures) {
        self.node.migrations.record(figures);
    }

    fn absent_keys(
        &self,
        migration: u64,
        slots: &[u16],
        filter: crate::migrate::absent::KeyFilter,
    ) {
        self.node.absent.add(migration, slots, filter);
    }

    fn forget_absent(&self, migration: u64) {
        self.node.absent.forget(migration);
    }

    fn drain_rate(&self) -> u64 {
        self.node.settings.read().migration_drain_rate
    }

    fn room(&self, group: u64) -> Option<u64> {
        let limit = self.node.memory.get().maxmemory;
        if limit == 0 {
            return None;
        }
        let used = self.node.hosted(group)?.store.lock().used_memory() as u64;
        Some(limit.saturating_sub(used))
    }

    fn rules(&self) -> crate::migrate::plan::Rules {
        self.node.settings.read().migration_rules.clone()
    }

    async fn on_group(&mut self, group: u64, argv: Vec<Bytes>) -> Vec<u8> {
        self.call_on_group(group, argv).await
    }

    async fn on_member(&mut self, member: u64, argv: Vec<Bytes>) -> std::io::Result<Vec<u8>> {
        self.call_member(member, argv).await
    }
}

impl Drop for Internal {
    fn drop(&mut self) {
        let relays = std::mem::take(&mut self.client.relays);
        self.node.relay_pool.give(self.version, relays);
    }
}

impl crate::txn::coord::Groups for Internal {
    fn fork(&self) -> Internal {
        Internal::with_version(&self.node, self.version)
    }

    fn on_group(
        &mut self,
        group: u64,
        argv: Vec<Bytes>,
    ) -> impl std::future::Future<Output = Vec<u8>> + Send {
        // Boxed: a transaction's coordinator runs inside a connection's drive loop, and
        // this runs a drive loop again (a future cannot contain itself).
        let call: std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + '_>> =
            Box::pin(self.call_on_group(group, argv));
        call
    }

    fn call(
        &mut self,
        db: u8,
        argv: Vec<Bytes>,
    ) -> impl std::future::Future<Output = Vec<u8>> + Send {
        let call: std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + '_>> =
            Box::pin(self.call_in(db, argv));
        call
    }
}

impl Internal {
    /// Runs `argv` in database `db` (selected first when it is not 0).
    async fn call_in(&mut self, db: u8, argv: Vec<Bytes>) -> Vec<u8> {
        self.client.db = db as usize;
        let reply = self.call(argv).await;
        self.client.db = 0;
        reply
    }
}

impl crate::txn::resolve::Stale for Internal {
    fn stale(&self) -> Vec<(u64, crate::txn::TxId, u64)> {
        let Some(groups) = self.node.groups() else {
            return Vec::new();
        };
        let now = crate::cmd::unix_ms();
        let mut stale = Vec::new();
        for g in groups.hosted.values().filter(|g| g.status.is_leader()) {
            let store = g.store.lock();
            // The later of this clock and the log's: an idle group's log time stands still.
            let at = now.max(store.last_apply_ms);
            stale.extend(
                store
                    .tx
                    .stale(at)
                    .into_iter()
                    .map(|(tx, record)| (g.group_id, tx, record)),
            );
        }
        stale
    }
}
