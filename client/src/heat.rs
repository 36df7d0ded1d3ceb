//! `kelvin-cli cluster heat SEED [--top N]`: the profiler's view of the cluster, per group
//! as its leader sees it (reads update heat on the leader only): keys, bytes, how the
//! keys spread over the heat buckets, the hottest slots and the hottest keys.
//!
//! ```text
//! >>> group 1 (leader 127.0.0.1:7002): 16667 keys, 17.1 MiB, heat 88034, 0 with a TTL
//!     heat   0: 0  1-4: 0  5-9: 16640  10-19: 27  20-49: 0  50-99: 0  100+: 0
//!     hottest slots:  SLOT  KEYS  BYTES  HEAT
//!     hottest keys:   DB KEY FREQ IDLE GAP WRITES BYTES
//! ```

use crate::admin::{field, field_int, field_text, fields, human_bytes, survey};
use crate::{format_frame, Frame};

/// Prints the heat of every group, from the seed's view of the cluster.
pub fn heat(seed: &str, pass: Option<&str>, top: usize) -> anyhow::Result<()> {
    let nodes = survey(seed, pass)?.nodes;
    let n = top.to_string();
    let mut seen = Vec::new();
    for node in &nodes {
        let reply = crate::admin::connect(&node.addr, pass)
            .and_then(|mut c| c.call(&["CLUSTER", "KELVIN-HEAT", "COUNT", &n]));
        let groups = match reply {
            Ok(Frame::Array(gs)) => gs,
            Ok(other) => anyhow::bail!(
                "[ERR] {}: CLUSTER KELVIN-HEAT: {}",
                node.addr,
                format_frame(&other)
            ),
            Err(e) => {
                println!("[WARN] {}: unreachable ({e})", node.addr);
                continue;
            }
        };
        for g in groups.iter().map(fields) {
            let gid = field_int(&g, "group");
            if field_text(&g, "role") != "leader" || seen.contains(&gid) {
                continue;
            }
            seen.push(gid);
            print_group(&node.addr, gid, &g);
        }
    }
    if seen.is_empty() {
        anyhow::bail!("[ERR] no group leader answered: see kelvin-cli cluster status {seed}");
    }
    Ok(())
}

fn ints(frame: Option<&Frame>) -> Vec<Frame> {
    match frame {
        Some(Frame::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn int(f: &Frame) -> i64 {
    match f {
        Frame::Integer(n) => *n,
        _ => 0,
    }
}

fn print_group(addr: &str, gid: i64, g: &[(String, Frame)]) {
    println!(
        ">>> group {gid} (leader {addr}): {} keys, {}, heat {}, {} with a TTL",
        field_int(g, "keys"),
        human_bytes(field_int(g, "bytes")),
        field_int(g, "heat"),
        field_int(g, "volatile"),
    );
    let hist: Vec<String> = ints(field(g, "histogram"))
        .chunks(2)
        .map(|p| match p {
            [name, n] => format!("{}: {}", format_frame(name).trim_matches('"'), int(n)),
            _ => String::new(),
        })
        .collect();
    println!("    heat  {}", hist.join("  "));
    println!(
        "    {:>6} {:>8} {:>10} {:>8}",
        "SLOT", "KEYS", "BYTES", "HEAT"
    );
    for s in ints(field(g, "slots")) {
        if let Frame::Array(v) = s {
            if let [slot, keys, bytes, heat] = &v[..] {
                println!(
                    "    {:>6} {:>8} {:>10} {:>8}",
                    int(slot),
                    int(keys),
                    human_bytes(int(bytes)),
                    int(heat)
                );
            }
        }
    }
    println!(
        "    {:>3} {:<32} {:>4} {:>6} {:>6} {:>6} {:>10}",
        "DB", "KEY", "FREQ", "IDLE", "GAP", "WRITES", "BYTES"
    );
    for k in ints(field(g, "hottest")) {
        if let Frame::Array(v) = k {
            if let [db, key, freq, idle, gap, writes, bytes] = &v[..] {
                let key = match key {
                    Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format_frame(other),
                };
                println!(
                    "    {:>3} {:<32} {:>4} {:>5}s {:>5}s {:>5}% {:>10}",
                    int(db),
                    key,
                    int(freq),
                    int(idle),
                    int(gap),
                    int(writes),
                    human_bytes(int(bytes))
                );
            }
        }
    }
}
