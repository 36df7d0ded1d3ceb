//! `maxmemory` at the connection: which requests count as growing memory, and how they
//! are refused (Redis's `processCommand` and `rejectCommand`). The limit itself, the
//! pressure and the evictor are [`crate::evict`].

use kelvin_protocol::ReplyWriter;

use super::batch::refuse;
use super::ClientState;
use crate::cmd::{flags, CommandSpec};

/// Does `spec` grow memory, as Redis decides it before running or queueing a command:
/// a `denyoom` command; inside MULTI every command but EXEC, DISCARD, QUIT and RESET
/// (queueing takes memory too), and EXEC if it holds a denyoom command.
pub(super) fn grows(client: &ClientState, spec: &CommandSpec) -> bool {
    spec.flags & flags::DENYOOM != 0
        || client.multi.as_ref().is_some_and(|m| match spec.name {
            "exec" => m.queue.iter().any(|(s, _)| s.flags & flags::DENYOOM != 0),
            name => !matches!(name, "discard" | "quit" | "reset"),
        })
}

/// The OOM refusal: EXEC also discards its transaction and answers `EXECABORT`; any
/// other command in MULTI marks the transaction failed, as in Redis.
pub(super) fn refuse_oom(client: &mut ClientState, out: &mut ReplyWriter, spec: &CommandSpec) {
    refuse_or_abort(client, out, spec, crate::evict::OOM);
}

/// Redis's `rejectCommand`: an error reply to a request that did not run; EXEC also
/// discards its transaction and answers `EXECABORT Transaction discarded because of:`
/// the reason (OOM, BUSY).
pub(super) fn refuse_or_abort(
    client: &mut ClientState,
    out: &mut ReplyWriter,
    spec: &CommandSpec,
    err: &str,
) {
    if spec.name != "exec" || client.multi.is_none() {
        refuse(client, out, Some(spec), err);
        return;
    }
    *client.info.multi.lock() = -1;
    client.multi = None;
    if client.watch.is_some() {
        client.unwatch();
    }
    out.error(&format!(
        "EXECABORT Transaction discarded because of: {err}"
    ));
}
