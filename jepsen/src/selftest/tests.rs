use super::*;

/// One test per case, so a failure names it.
macro_rules! case_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let case = cases()
                    .into_iter()
                    .find(|c| c.name == $name)
                    .expect("case exists");
                let result = run(&case);
                assert!(
                    result.passed(),
                    "{}: expected valid={} for {:?}, got {:#?}",
                    case.name,
                    case.expect_valid,
                    case.reasons,
                    result.report
                );
            }
        )*
    };
}

case_tests! {
    register_stale_read_rejected => "register-stale-read",
    register_lost_write_rejected => "register-lost-write",
    register_resurrected_key_rejected => "register-resurrected-key",
    register_value_never_written_rejected => "register-value-never-written",
    register_failed_write_visible_rejected => "register-failed-write-visible",
    register_read_from_the_future_rejected => "register-read-from-the-future",
    register_wrong_incr_rejected => "register-wrong-incr",
    register_wrong_delete_count_rejected => "register-wrong-delete-count",
    register_long_stale_final_read_rejected => "register-long-stale-final-read",
    list_lost_append_final_read_rejected => "list-lost-append-final-read",
    list_lost_append_later_read_rejected => "list-lost-append-later-read",
    list_duplicate_element_rejected => "list-duplicate-element",
    list_value_never_appended_rejected => "list-value-never-appended",
    list_failed_append_visible_rejected => "list-failed-append-visible",
    list_non_prefix_reads_rejected => "list-non-prefix-reads",
    list_stale_read_rejected => "list-stale-read",
    list_reordered_appends_rejected => "list-reordered-appends",
    list_long_lost_append_rejected => "list-long-lost-append",
    sessions_resurrected_key_rejected => "sessions-resurrected-key",
    sessions_lost_hset_rejected => "sessions-lost-hset",
    sessions_value_never_written_rejected => "sessions-value-never-written",
    history_malformed_rejected => "history-completion-without-invocation",
    register_delete_count_of_missing_key_rejected => "register-delete-count-of-missing-key",
    list_skipped_append_no_final_read_rejected => "list-skipped-append-no-final-read",
    list_read_from_the_future_rejected => "list-read-from-the-future",
    list_order_disagreement_no_longer_read_rejected => "list-order-disagreement-no-longer-read",
    list_no_successful_read_rejected => "list-no-successful-read",
    sessions_expire_outlives_del_rejected => "sessions-expire-outlives-del",
    sessions_expire_outlives_new_hset_rejected => "sessions-expire-outlives-new-hset",
    sessions_hset_keeps_ttl_accepted => "sessions-hset-keeps-the-ttl-of-an-existing-key",
    run_too_few_ok_rejected => "run-too-few-ok",
    run_final_read_failed_rejected => "run-final-read-failed",
    run_worker_panicked_rejected => "run-worker-panicked",
    run_fault_no_op_rejected => "run-fault-no-op",
    run_fault_without_load_rejected => "run-fault-without-load",
    run_replicas_differ_rejected => "run-replicas-differ",
    run_replica_unreachable_rejected => "run-replica-unreachable",
    run_valid_accepted => "run-valid",
    register_cas_over_a_changed_value_rejected => "register-cas-over-a-changed-value",
    string_lost_append_rejected => "string-lost-append",
    sessions_lost_hincrby_rejected => "sessions-lost-hincrby",
    register_cas_accepted => "register-cas-and-aborted-cas",
    string_appends_accepted => "string-appends-read-back",
    sessions_hincrby_accepted => "sessions-hincrby-and-hset",
    register_concurrent_one_order_accepted => "register-concurrent-writes-one-order",
    register_concurrent_other_order_accepted => "register-concurrent-writes-other-order",
    register_info_took_effect_accepted => "register-info-write-took-effect",
    register_info_never_took_effect_accepted => "register-info-write-never-took-effect",
    register_info_took_effect_late_accepted => "register-info-write-took-effect-late",
    register_failed_write_invisible_accepted => "register-failed-write-invisible",
    register_incr_delete_accepted => "register-incr-delete-concurrent",
    list_read_sees_append_accepted => "list-concurrent-read-sees-append",
    list_read_misses_append_accepted => "list-concurrent-read-misses-append",
    list_info_append_took_effect_accepted => "list-info-append-took-effect",
    list_info_append_never_accepted => "list-info-append-never-took-effect",
    list_failed_append_invisible_accepted => "list-failed-append-invisible",
    sessions_basic_accepted => "sessions-basic",
    sessions_expire_then_gone_accepted => "sessions-expire-then-gone",
    sessions_concurrent_accepted => "sessions-concurrent-hset-and-read",
    register_long_random_accepted => "register-long-random",
    register_long_random_keys_accepted => "register-long-random-5-keys",
    list_long_random_accepted => "list-long-random",
    sessions_long_random_accepted => "sessions-long-random",
    mixed_long_random_accepted => "mixed-long-random",
    empty_history_accepted => "empty-history",
    bank_torn_read_rejected => "bank-torn-read",
    bank_balance_out_of_step_rejected => "bank-balance-out-of-step-with-log",
    bank_lost_transfer_final_read_rejected => "bank-lost-transfer-final-read",
    bank_failed_transfer_visible_rejected => "bank-failed-transfer-visible",
    bank_transfer_never_made_rejected => "bank-transfer-never-made",
    bank_stale_read_rejected => "bank-stale-read",
    bank_cycle_rejected => "bank-cycle",
    bank_order_against_real_time_rejected => "bank-order-against-real-time",
    bank_concurrent_accepted => "bank-concurrent-and-unknown-transfers",
    bank_long_random_accepted => "bank-long-random",
}

#[test]
fn every_case_has_a_test_and_a_unique_name() {
    let names: Vec<&str> = cases().iter().map(|c| c.name).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    assert_eq!(names.len(), 75);
}

#[test]
fn mutations_applied_to_the_long_cases() {
    // The long bad cases must really be mutated, or they would test nothing.
    let mut reg = long(vec![Workload::Register], 1, 2000, 7);
    assert!(make_final_read_stale(&mut reg));
    let mut list = long(vec![Workload::ListAppend], 1, 2000, 11);
    assert!(drop_acked_from_final_read(&mut list));
}

#[test]
fn explanations_name_the_key_and_the_culprit() {
    let report = check(&register_stale_read());
    let p = &report.register.problems;
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].text.contains("\"x\""), "{}", p[0]);
    assert!(p[0].text.contains("p3 read -> 1 ok"), "{}", p[0]);
    assert!(p[0].text.contains("leaving 2"), "{}", p[0]);
    let report = check(&list_lost_append_final_read());
    let p = &report.list_append.problems;
    assert!(p
        .iter()
        .any(|p| p.text.contains("final read") && p.text.contains("missing from it: 2")));
    let report = check(&sessions_resurrected_key());
    assert!(report.sessions.problems[0].text.contains("p2 hgetall"));
    let report = check(&bank_torn_read());
    assert!(
        report.bank.problems.iter().any(|p| p.text.contains("torn")
            && p.text.contains("transfer {")
            && p.text.contains("on a only")),
        "{:#?}",
        report.bank.problems
    );
}
