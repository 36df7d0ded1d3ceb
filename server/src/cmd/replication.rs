//! WAIT: how many replicas have the writes a client made.
//!
//! In Redis a write is acknowledged before any replica has it, and WAIT blocks until
//! enough replicas acknowledge the client's last write offset. In Kelvin a write is
//! acknowledged once a majority of its Raft group has it in its log, so WAIT has nothing
//! to wait for: it answers at once with the number of the group's other voters whose log
//! holds everything this node has applied (for a node that leads several groups, the
//! smallest such number over them; a follower, which does not see the others' progress,
//! answers 0). NUMREPLICAS and TIMEOUT are checked as Redis checks them.

use bytes::Bytes;

use crate::cmd::{conn, flags::*, int_arg, CmdError, CmdResult, CommandSpec};
use crate::conn::ConnCtx;

pub const COMMANDS: &[CommandSpec] = &[conn(
    "wait",
    3,
    NOSCRIPT,
    "generic",
    "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.",
    wait,
)];

fn wait(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let _numreplicas = int_arg(&argv[1])?;
    let timeout = int_arg(&argv[2])
        .map_err(|_| CmdError::err("timeout is not an integer or out of range"))?;
    if timeout < 0 {
        return Err(CmdError::err("timeout is negative"));
    }
    let groups = ctx.node.groups();
    let led = groups
        .iter()
        .flat_map(|gs| gs.hosted.values())
        .filter(|g| g.status.is_leader());
    let mut acked: Option<usize> = None;
    for g in led {
        let applied = g.status.applied.load(std::sync::atomic::Ordering::Acquire);
        let conf = g.status.conf.lock();
        let others = conf
            .matched
            .iter()
            .filter(|(id, matched)| {
                *id != g.status.node_id && *matched >= applied && conf.voters.contains(id)
            })
            .count();
        acked = Some(acked.map_or(others, |n| n.min(others)));
    }
    ctx.out.int(acked.unwrap_or(0) as i64);
    Ok(())
}
