//! Fail points (the `fail` crate) for the fault tests: behaviour a test can switch on in a
//! running node, where the real fault cannot be made from outside (the nodes of the
//! compose cluster share the host's clock, so clock skew is injected here).
//!
//! Compiled in only with the `failpoints` feature (the `kelvin:jepsen` image of
//! `docker/build.sh`); without it every fail point is inert and
//! `CLUSTER KELVIN-FAILPOINT` answers an error. Fail points:
//!
//! - `clock-skew`: `return(<ms>)` shifts this node's wall clock ([`crate::cmd::unix_ms`])
//!   by `<ms>` milliseconds (negative: behind). The wall clock stamps log entries (the
//!   time TTLs are measured against), drives the expiry sweep and answers `TIME`; leases
//!   and timeouts use the monotonic clock, which skew does not touch.
//! - `migrate-<phase>` ([`MIGRATE_PHASES`]): the phase boundaries of a migration's driver
//!   ([`crate::migrate::driver`], on the target group's leader). `return(abort)` ends
//!   the process there at once (as a SIGKILL would: nothing flushed, no goodbye);
//!   `return(hold)` keeps the driver at the boundary until the point is set `off` (a
//!   test kills another node meanwhile). [`hits`] counts the times a point was reached
//!   with an action set, so a test knows its fault took effect.

/// The configured skew of the wall clock in milliseconds (0 when none).
pub fn clock_skew_ms() -> i64 {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("clock-skew", |v| v
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0));
    0
}

/// The phase boundaries of a migration's driver, in the order a migration meets them:
/// its plan read at the source; the target importing; the source sealed; the seal's
/// proof at the target (critical keys moved); the topology's handover; a drain page
/// written; the drain done; the target finished; both finished (the line not yet gone).
pub const MIGRATE_PHASES: [&str; 9] = [
    "migrate-after-plan",
    "migrate-after-import",
    "migrate-after-seal",
    "migrate-after-proof",
    "migrate-after-handover",
    "migrate-mid-drain",
    "migrate-after-drain",
    "migrate-after-finish-target",
    "migrate-after-finish",
];

/// The steps of a transaction across groups' coordinator ([`crate::txn::coord`]): every
/// participant prepared; the commit decided at the record group (no FINISH sent yet).
pub const TX_PHASES: [&str; 2] = ["tx-after-prepare", "tx-after-decide"];

/// Whether a fail point of this name may be set (a typo is an error, not a fail point
/// nobody reads).
fn known(name: &str) -> bool {
    name == "clock-skew" || MIGRATE_PHASES.contains(&name) || TX_PHASES.contains(&name)
}

/// A phase boundary ([`MIGRATE_PHASES`], [`TX_PHASES`]): where the fault tests stop or
/// end the node (nothing happens without the `failpoints` feature).
pub async fn boundary(name: &'static str) {
    loop {
        match phase(name) {
            PhaseAction::Go => return,
            PhaseAction::Hold => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            PhaseAction::Abort => {
                tracing::error!(phase = name, "fail point: the process ends here");
                std::process::abort();
            }
        }
    }
}

/// What a migration phase's fail point asks of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseAction {
    Go,
    Hold,
    Abort,
}

/// The action set on phase fail point `name` now ([`PhaseAction::Go`] when none, or
/// without the `failpoints` feature).
pub fn phase(name: &str) -> PhaseAction {
    #[cfg(feature = "failpoints")]
    {
        let action = fail::eval(name, |v| match v.as_deref().map(str::trim) {
            Some("abort") => PhaseAction::Abort,
            Some("hold") => PhaseAction::Hold,
            _ => PhaseAction::Go,
        });
        if let Some(action) = action {
            count_hit(name);
            return action;
        }
    }
    let _ = name;
    PhaseAction::Go
}

#[cfg(feature = "failpoints")]
static HITS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());

#[cfg(feature = "failpoints")]
fn count_hit(name: &str) {
    // A poisoned lock only means a panic elsewhere while counting: the counts stand.
    let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    match hits.iter_mut().find(|(n, _)| n == name) {
        Some((_, n)) => *n += 1,
        None => hits.push((name.to_string(), 1)),
    }
}

/// How many times fail point `name` was reached with an action set.
pub fn hits(name: &str) -> Result<u64, String> {
    if !known(name) {
        return Err(format!("unknown fail point '{name}'"));
    }
    #[cfg(feature = "failpoints")]
    {
        let hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
        Ok(hits.iter().find(|(n, _)| n == name).map_or(0, |h| h.1))
    }
    #[cfg(not(feature = "failpoints"))]
    Err(NOT_COMPILED.into())
}

#[cfg(not(feature = "failpoints"))]
const NOT_COMPILED: &str =
    "fail points are not compiled in (build kelvin-server with --features failpoints)";

/// Sets `name`'s actions (the `fail` crate's syntax, e.g. `return(5000)`), or removes
/// them with `off`.
pub fn configure(name: &str, actions: &str) -> Result<(), String> {
    if !known(name) {
        return Err(format!(
            "unknown fail point '{name}' (known: clock-skew, {}, {})",
            MIGRATE_PHASES.join(", "),
            TX_PHASES.join(", ")
        ));
    }
    configure_known(name, actions)
}

#[cfg(feature = "failpoints")]
fn configure_known(name: &str, actions: &str) -> Result<(), String> {
    if actions.eq_ignore_ascii_case("off") {
        fail::remove(name);
        return Ok(());
    }
    fail::cfg(name, actions).map_err(|e| format!("bad actions for '{name}': {e}"))
}

#[cfg(not(feature = "failpoints"))]
fn configure_known(_name: &str, _actions: &str) -> Result<(), String> {
    Err(NOT_COMPILED.into())
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_shifts_the_wall_clock_and_off_removes_it() {
        configure("clock-skew", "return(-60000)").unwrap();
        let skewed = crate::cmd::unix_ms();
        configure("clock-skew", "off").unwrap();
        let real = crate::cmd::unix_ms();
        assert!(real >= skewed + 59_000, "{real} vs {skewed}");
        assert!(configure("no-such-point", "off").is_err());
        assert!(configure("clock-skew", "bogus(((").is_err());
    }

    #[test]
    fn phase_points_hold_abort_and_count() {
        let name = MIGRATE_PHASES[2];
        assert_eq!(phase(name), PhaseAction::Go);
        let before = hits(name).unwrap();
        configure(name, "return(hold)").unwrap();
        assert_eq!(phase(name), PhaseAction::Hold);
        configure(name, "1*return(abort)").unwrap();
        assert_eq!(phase(name), PhaseAction::Abort);
        assert_eq!(phase(name), PhaseAction::Go);
        configure(name, "off").unwrap();
        assert_eq!(phase(name), PhaseAction::Go);
        assert_eq!(hits(name).unwrap(), before + 2);
        assert!(hits("migrate-nowhere").is_err());
    }
}
