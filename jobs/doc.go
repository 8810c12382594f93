// Package jobs is keyworker's River side: the job args, the workers that make
// keys and send notices, the periodic reconcile and purge, and the Client
// that runs them.
//
// # Jobs
//
//   - CreateKeyArgs{UserID} (kind "keyworker.create_key", queue
//     keyworker_keys): in one transaction, lock the user's row, make the
//     signup key (keystore.Store.CreateTx: hash, sealed secret, 'created'
//     event), insert the DeliverNotice job, and mark the job completed
//     (river.JobCompleteTx). A missing, soft-deleted or anonymous user gets
//     a 'skipped' event with the reason and no key. A user who already has
//     a signup key gets no second one ('skipped', reason key_exists).
//   - DeliverNoticeArgs{KeyID} ("keyworker.deliver_notice",
//     keyworker_notices): send the notice to every sender, reading the
//     user's email at send time, recording each sink's outcome in
//     key_events, never sending twice to a sink that succeeded.
//   - ReconcileArgs ("keyworker.reconcile", keyworker_maintenance): page
//     through eligible users without a signup key and enqueue CreateKey for
//     them; periodic on the leader (and once when it becomes leader),
//     requested by the listener when it may have missed signups, and run by
//     hand through Replay (`worker replay`).
//   - PurgeRevealsArgs ("keyworker.purge_reveals", keyworker_maintenance):
//     delete sealed secrets past their pick-up window; periodic.
//
// Job args hold ids only: never a key, a secret or an email address (River
// stores args as JSON and its UI shows them).
//
// # Uniqueness
//
// CreateKey jobs are unique by user while waiting, running or retrying;
// completed ones do not count, so a user skipped as anonymous gets a key
// once they become permanent and the reconciler finds them. The unique index
// on api_keys (one signup key per user) is the real guard; River's
// uniqueness only saves work. DeliverNotice jobs are unique by key in
// River's default states (completed included), and per-sink events in
// key_events keep even a second notice job from sending twice.
//
// # Retries and snoozes
//
// A notice sink that answers with a Retry-After (a 429 or 503) snoozes the
// job for that long; other temporary failures return an error and River's
// retry policy backs off. In River 0.51 a snooze does not use up an attempt
// (River decrements the attempt and counts snoozes in the job's metadata),
// so a sink that always asks to wait would be tried forever: the notice
// worker counts attempt + snoozes as tries and stops at MaxAttempts
// (Config.NoticeMaxAttempts, 12), recording 'notify_discarded' with the last
// error. A permanent failure (a 410, a 5xx SMTP reply, no email address)
// discards that sink at once.
//
// # Metrics
//
// Config.OnEvent receives every outcome (key created or skipped, notice
// sent, failed or discarded per sink, reconcile counts) for metrics;
// key_events holds the same outcomes durably.
//
// # Retention
//
// Completed and cancelled jobs stay for CompletedJobRetention (7 days by
// default), so River UI shows what happened to each signup; key_events is
// the permanent audit trail.
package jobs
