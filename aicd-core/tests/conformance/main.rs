//! The store conformance suite: every behaviour of the storage port, run against PostgreSQL and
//! SQLite alike.

#[path = "../support/mod.rs"]
mod support;

mod deliveries;
mod dispatch;
mod github;
mod isolation;
mod jobs;
mod tenancy;

mod tenancy_tests {
    crate::conformance!(tenancy:
        an_empty_database_takes_a_job_and_returns_it,
        orgs_are_created_read_updated_and_deleted,
        invalid_org_input_is_rejected,
        org_settings_are_stored_and_replaced,
        users_are_upserted_by_subject,
        members_are_added_changed_and_removed,
        the_last_org_admin_cannot_be_demoted_or_removed,
        a_user_lists_only_the_orgs_it_belongs_to,
        an_api_key_is_shown_once_and_authenticates,
        only_the_hash_of_an_api_key_is_stored,
        a_revoked_api_key_no_longer_authenticates,
        an_expired_api_key_does_not_authenticate,
        malformed_and_unknown_api_keys_do_not_authenticate,
        an_api_key_cannot_carry_a_role_above_its_creator,
        bootstrap_creates_an_org_with_an_admin_key,
    );
}

mod jobs_tests {
    crate::conformance!(jobs:
        repositories_are_registered_listed_changed_and_removed,
        local_repositories_need_to_be_allowed,
        local_repositories_stay_under_the_roots_and_in_one_org,
        a_new_job_is_queued_with_defaults_and_a_created_event,
        jobs_are_listed_newest_first_with_filters_and_cursor,
        an_issue_has_at_most_one_active_job,
        a_job_for_an_unknown_repository_is_not_found,
        invalid_job_input_is_rejected,
        a_queued_job_is_cancelled_at_once,
        a_finished_job_cannot_be_cancelled,
        only_finished_jobs_can_be_deleted,
        events_are_appended_in_order_and_resume_after_an_id,
        usage_is_recorded_against_the_org_and_the_job,
        the_same_usage_recorded_twice_is_stored_and_counted_once,
        deleting_an_org_removes_everything_it_owns,
        a_usage_report_adds_up_per_repository_and_per_day,
        creating_and_retrying_a_job_publish_its_created_events,
    );
}

mod deliveries_tests {
    crate::conformance!(deliveries:
        a_delivery_is_processed_once,
        a_failed_delivery_is_processed_again_on_redelivery,
        a_delivery_abandoned_mid_processing_is_taken_again_after_a_while,
        a_body_replayed_under_another_delivery_id_is_a_duplicate,
    );
}

mod isolation_tests {
    crate::conformance!(isolation:
        org_a_cannot_read_or_list_org_b_resources,
        org_a_cannot_update_cancel_or_delete_org_b_resources,
        the_store_scopes_every_query_by_org,
        every_role_gets_exactly_its_permissions,
    );
}

mod dispatch_tests {
    crate::conformance!(dispatch:
        claims_take_the_oldest_runnable_job_once_with_a_new_epoch,
        a_small_org_is_not_starved_by_another_orgs_backlog,
        a_batch_claim_is_shared_fairly_within_each_limit,
        the_concurrency_limit_holds_under_many_concurrent_claimers,
        the_per_org_concurrency_limit_holds_when_claiming,
        a_checkpoint_and_its_transition_are_written_together,
        writes_follow_the_transition_table,
        a_stale_worker_cannot_transition_or_checkpoint_after_lease_expiry,
        heartbeats_extend_the_lease_and_report_cancellation,
        a_released_job_waits_for_its_run_after,
    );
}

mod github_tests {
    crate::conformance!(github:
        installations_are_linked_listed_and_unlinked,
        an_install_state_is_used_once_by_an_admin_of_its_org,
        an_installation_linked_to_another_org_is_a_conflict,
        access_follows_the_link,
        webhooks_find_an_installation_from_the_system_scope,
        repositories_follow_the_installation,
        an_issue_trigger_creates_one_active_job,
        concurrent_triggers_for_an_issue_create_exactly_one_job,
        comment_commands_are_recorded_once_and_claimed,
        commands_are_carried_out_as_their_author,
        a_closed_pull_request_ends_its_job,
        org_b_cannot_see_org_a_github_data,
        trigger_settings_resolve_the_repository_over_the_organization,
        the_intake_records_webhook_deliveries,
    );
}
