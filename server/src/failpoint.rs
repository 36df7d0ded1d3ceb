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

/// The configured skew of the wall clock in milliseconds (0 when none).
pub fn clock_skew_ms() -> i64 {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("clock-skew", |v| v
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0));
    0
}

/// Names a fail point may have (a typo is an error, not a fail point nobody reads).
pub const NAMES: [&str; 1] = ["clock-skew"];

/// Sets `name`'s actions (the `fail` crate's syntax, e.g. `return(5000)`), or removes
/// them with `off`.
pub fn configure(name: &str, actions: &str) -> Result<(), String> {
    if !NAMES.contains(&name) {
        return Err(format!(
            "unknown fail point '{name}' (known: {})",
            NAMES.join(", ")
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
    Err("fail points are not compiled in (build kelvin-server with --features failpoints)".into())
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
}
