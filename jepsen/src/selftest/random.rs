//! Random histories of a simulated correct store must be accepted; known mutations
//! of them must be rejected.
use super::*;
use proptest::prelude::*;

fn config() -> impl Strategy<Value = SimConfig> {
    (
        any::<u64>(),
        1usize..8,
        20usize..400,
        1usize..4,
        prop::sample::subsequence(
            vec![
                Workload::Register,
                Workload::ListAppend,
                Workload::Sessions,
                Workload::Bank,
            ],
            1..=4,
        ),
        0.0f64..0.1,
        0.0f64..0.1,
    )
        .prop_map(
            |(seed, processes, ops, keys, workloads, info_rate, fail_rate)| SimConfig {
                processes,
                ops,
                keys,
                workloads,
                info_rate,
                fail_rate,
                seed,
            },
        )
}

/// The last `Ok` record of `f` with a value `pick` accepts.
fn last_ok(ops: &mut [Op], f: F, pick: impl Fn(&Value) -> bool) -> Option<&mut Op> {
    ops.iter_mut()
        .rev()
        .find(|o| o.f == f && o.kind == Kind::Ok && pick(&o.value))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn simulated_histories_are_accepted(cfg in config()) {
        let ops = simulate(&cfg);
        let report = check(&ops);
        prop_assert!(report.valid(), "{:?}: {:#?}", cfg, report.verdict().problems);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected(cfg in config()) {
        let mut ops = simulate(&cfg);
        if let Some(op) = last_ok(&mut ops, F::Read, |_| true) {
            op.value = Value::Str("never-written".into());
            prop_assert!(!check(&ops).register.valid);
        }
    }

    #[test]
    fn a_duplicated_list_element_is_rejected(cfg in config()) {
        let mut ops = simulate(&cfg);
        let non_empty = |v: &Value| matches!(v, Value::List(l) if !l.is_empty());
        if let Some(op) = last_ok(&mut ops, F::ReadList, non_empty) {
            if let Value::List(items) = &mut op.value {
                items.push(items[0].clone());
            }
            prop_assert!(!check(&ops).list_append.valid);
        }
    }

    #[test]
    fn an_element_never_appended_is_rejected(cfg in config()) {
        let mut ops = simulate(&cfg);
        if let Some(op) = last_ok(&mut ops, F::ReadList, |_| true) {
            if let Value::List(items) = &mut op.value {
                items.push(Value::Str("never-appended".into()));
            }
            prop_assert!(!check(&ops).list_append.valid);
        }
    }

    #[test]
    fn a_lost_acknowledged_append_is_rejected(cfg in config()) {
        let mut ops = simulate(&cfg);
        if drop_acked_from_final_read(&mut ops) {
            prop_assert!(!check(&ops).list_append.valid);
        }
    }

    #[test]
    fn a_stale_final_register_read_is_rejected(cfg in config()) {
        let mut ops = simulate(&cfg);
        // Only meaningful with one register key: the mutation picks writes of any key.
        let single = ops.iter().filter(|o| o.f.workload() == Workload::Register)
            .map(|o| o.key.as_str()).collect::<std::collections::HashSet<_>>().len() == 1;
        if single && make_final_read_stale(&mut ops) {
            prop_assert!(!check(&ops).register.valid);
        }
    }

    #[test]
    fn a_torn_bank_read_is_rejected(cfg in config()) {
        let mut ops = simulate(&cfg);
        // The last read showing a transfer: the last entry of one account's log taken
        // off (the other account still shows that transfer, the balance no longer adds
        // up: torn either way).
        let shows = |v: &Value| match v {
            Value::Map(m) => m.values().any(|a| matches!(a, Value::Map(a)
                if matches!(a.get("log"), Some(Value::List(l)) if !l.is_empty()))),
            _ => false,
        };
        if let Some(op) = last_ok(&mut ops, F::BankRead, shows) {
            if let Value::Map(m) = &mut op.value {
                if let Some(Value::Map(account)) = m.values_mut().find(|a| matches!(a, Value::Map(a)
                    if matches!(a.get("log"), Some(Value::List(l)) if !l.is_empty())))
                {
                    if let Some(Value::List(log)) = account.get_mut("log") {
                        log.pop();
                    }
                }
            }
            prop_assert!(check(&ops).bank.reasons().contains(&crate::checker::Reason::TornRead));
        }
    }

    #[test]
    fn a_session_field_never_written_is_rejected(cfg in config()) {
        let mut ops = simulate(&cfg);
        if let Some(op) = last_ok(&mut ops, F::HGetAll, |_| true) {
            let mut map = match &op.value {
                Value::Map(m) => m.clone(),
                _ => Default::default(),
            };
            map.insert("f0".into(), Value::Str("never-written".into()));
            op.value = Value::Map(map);
            prop_assert!(!check(&ops).sessions.valid);
        }
    }
}
