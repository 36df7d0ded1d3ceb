//! Pub/sub commands: SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::cmd::{conn, flags::*, is, CmdError, CmdResult, CommandSpec};
use crate::conn::ConnCtx;
use crate::pubsub::Subscriber;

pub const COMMANDS: &[CommandSpec] = &[
    conn(
        "subscribe",
        -2,
        PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK,
        "pubsub",
        "Listens for messages published to channels.",
        subscribe,
    ),
    conn(
        "psubscribe",
        -2,
        PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK,
        "pubsub",
        "Listens for messages published to channels that match one or more patterns.",
        psubscribe,
    ),
    conn(
        "unsubscribe",
        -1,
        PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK,
        "pubsub",
        "Stops listening to messages posted to channels.",
        unsubscribe,
    ),
    conn(
        "punsubscribe",
        -1,
        PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK,
        "pubsub",
        "Stops listening to messages published to channels that match one or more patterns.",
        punsubscribe,
    ),
    conn(
        "publish",
        3,
        PUBSUB | LOADING | STALE | FAST,
        "pubsub",
        "Posts a message to a channel.",
        publish,
    ),
    conn(
        "pubsub",
        -2,
        PUBSUB | LOADING | STALE,
        "pubsub",
        "A container for Pub/Sub commands.",
        pubsub,
    ),
];

fn subscriber(ctx: &ConnCtx<'_>) -> Subscriber {
    Subscriber {
        tx: ctx.client.push_tx.clone(),
        client: ctx.client.info.clone(),
    }
}

/// Writes one (un)subscribe confirmation: `[kind, name, count]`.
fn confirm(ctx: &mut ConnCtx<'_>, kind: &[u8], name: Option<&[u8]>) {
    let count = ctx.client.subscription_count() as i64;
    ctx.out.push(3);
    ctx.out.bulk(kind);
    match name {
        Some(n) => ctx.out.bulk(n),
        None => ctx.out.null(),
    }
    ctx.out.int(count);
}

fn update_counts(ctx: &ConnCtx<'_>) {
    ctx.client
        .info
        .subs
        .store(ctx.client.channels.len(), Ordering::Relaxed);
    ctx.client
        .info
        .psubs
        .store(ctx.client.patterns.len(), Ordering::Relaxed);
}

fn check_not_in_multi(ctx: &ConnCtx<'_>, name: &str) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CmdError::err(format!(
            "{name} isn't allowed for a DENY BLOCKING client"
        )));
    }
    Ok(())
}

fn subscribe(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    check_not_in_multi(ctx, "SUBSCRIBE")?;
    for channel in &argv[1..] {
        if ctx.client.channels.insert(channel.clone()) {
            let sub = subscriber(ctx);
            ctx.node
                .pubsub
                .subscribe(Bytes::copy_from_slice(channel), ctx.client.info.id, sub);
        }
        update_counts(ctx);
        confirm(ctx, b"subscribe", Some(channel));
    }
    Ok(())
}

fn psubscribe(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    check_not_in_multi(ctx, "PSUBSCRIBE")?;
    for pattern in &argv[1..] {
        if ctx.client.patterns.insert(pattern.clone()) {
            let sub = subscriber(ctx);
            ctx.node
                .pubsub
                .psubscribe(Bytes::copy_from_slice(pattern), ctx.client.info.id, sub);
        }
        update_counts(ctx);
        confirm(ctx, b"psubscribe", Some(pattern));
    }
    Ok(())
}

fn unsubscribe(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let targets: Vec<Bytes> = if argv.len() > 1 {
        argv[1..].to_vec()
    } else {
        ctx.client.channels.iter().cloned().collect()
    };
    if targets.is_empty() {
        confirm(ctx, b"unsubscribe", None);
        return Ok(());
    }
    for channel in targets {
        ctx.client.channels.remove(&channel);
        ctx.node.pubsub.unsubscribe(&channel, ctx.client.info.id);
        update_counts(ctx);
        confirm(ctx, b"unsubscribe", Some(&channel));
    }
    Ok(())
}

fn punsubscribe(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let targets: Vec<Bytes> = if argv.len() > 1 {
        argv[1..].to_vec()
    } else {
        ctx.client.patterns.iter().cloned().collect()
    };
    if targets.is_empty() {
        confirm(ctx, b"punsubscribe", None);
        return Ok(());
    }
    for pattern in targets {
        ctx.client.patterns.remove(&pattern);
        ctx.node.pubsub.punsubscribe(&pattern, ctx.client.info.id);
        update_counts(ctx);
        confirm(ctx, b"punsubscribe", Some(&pattern));
    }
    Ok(())
}

/// PUBLISH: to this node's subscribers, and (in a cluster) to every other node's, as
/// Redis Cluster does. The count is this node's receivers only, as in Redis Cluster.
fn publish(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let receivers = ctx.node.pubsub.publish(&argv[1], &argv[2]);
    if let Some(sender) = ctx.node.raft_sender.get() {
        sender.publish(&argv[1], &argv[2]);
    }
    ctx.out.int(receivers as i64);
    Ok(())
}

fn pubsub(ctx: &mut ConnCtx<'_>, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "channels") {
        if argv.len() > 3 {
            return Err(CmdError::arity("pubsub|channels"));
        }
        let channels = ctx.node.pubsub.channels(argv.get(2).map(|p| &p[..]));
        ctx.out.bulks(channels.iter());
    } else if is(sub, "numsub") {
        ctx.out.map(argv.len() - 2);
        for channel in &argv[2..] {
            ctx.out.bulk(channel);
            ctx.out.int(ctx.node.pubsub.numsub(channel) as i64);
        }
    } else if is(sub, "numpat") {
        if argv.len() != 2 {
            return Err(CmdError::arity("pubsub|numpat"));
        }
        ctx.out.int(ctx.node.pubsub.numpat() as i64);
    } else if is(sub, "shardchannels") {
        ctx.out.array(0);
    } else if is(sub, "shardnumsub") {
        ctx.out.map(argv.len() - 2);
        for channel in &argv[2..] {
            ctx.out.bulk(channel);
            ctx.out.int(0);
        }
    } else if is(sub, "help") {
        let lines = [
            "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "HELP",
            "    Print this help.",
        ];
        ctx.out.simples(&lines);
    } else {
        return Err(CmdError::unknown_subcommand(sub, "pubsub"));
    }
    Ok(())
}
