//! CLUSTER: what this node knows of its group, and how `kelvin-cli cluster create` forms
//! one. (The Redis Cluster subcommands clients use for routing come with the cluster
//! issue; KEYSLOT is here already because it needs nothing but the key.)

use bytes::Bytes;

use crate::cluster::{node_name, Membership};
use crate::cmd::{conn, is, CmdError, CmdResult, CommandSpec};
use crate::conn::ConnCtx;

pub static COMMANDS: &[CommandSpec] = &[conn(
    "cluster",
    -2,
    0,
    "cluster",
    "A container for Redis Cluster commands.",
    cluster,
)];

fn cluster(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "myid") && argv.len() == 2 {
        ctx.out.bulk(node_name(ctx.node.id()).as_bytes());
    } else if is(sub, "keyslot") && argv.len() == 3 {
        ctx.out.int(kelvin_protocol::key_slot(&argv[2]) as i64);
    } else if is(sub, "kelvin-bootstrap") && argv.len() > 2 {
        bootstrap(ctx, &argv[2..])?;
    } else if is(sub, "help") && argv.len() == 2 {
        ctx.out.simples(&[
            "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "MYID",
            "    Return the node id.",
            "KEYSLOT <key>",
            "    Return the hash slot for <key>.",
            "KELVIN-BOOTSTRAP <node-id> <host> <port> <cluster-port> [...]",
            "    Form the group with these members (kelvin-cli cluster create sends it).",
            "HELP",
            "    Print this help.",
        ]);
    } else if ["myid", "keyslot", "kelvin-bootstrap", "help"]
        .iter()
        .any(|s| is(sub, s))
    {
        return Err(CmdError::arity(&format!(
            "cluster|{}",
            String::from_utf8_lossy(sub).to_lowercase()
        )));
    } else {
        return Err(CmdError::unknown_subcommand(sub, "cluster"));
    }
    Ok(())
}

fn bootstrap(ctx: &mut ConnCtx<'_>, args: &[Bytes]) -> CmdResult {
    let node = ctx.node;
    let Some(_) = node.settings.read().cluster_port else {
        return Err(CmdError::err(
            "This instance has cluster support disabled: start it with --cluster-port",
        ));
    };
    let args: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
    let membership = Membership::from_args(&args).map_err(CmdError::err)?;
    if membership.member(node.id()).is_none() {
        return Err(CmdError::err(format!(
            "this node ({}) is not among the members",
            node_name(node.id())
        )));
    }
    if node.group().is_some() {
        return Err(CmdError::err(
            "Node is not empty. It already belongs to a cluster (see INFO raft); start it with an empty --data-dir to form a new one",
        ));
    }
    let dir = node.settings.read().data_dir.clone();
    membership
        .save(&dir)
        .map_err(|e| CmdError::err(format!("cannot write cluster.conf: {e}")))?;
    node.start_group(membership).map_err(CmdError::err)?;
    ctx.out.ok();
    Ok(())
}
