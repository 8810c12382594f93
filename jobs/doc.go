// Package jobs is keyworker's River side: the job args, the workers that make
// keys and send notices, the periodic reconcile and purge, and the Client
// that runs them.
//
// # Jobs
//
//   - CreateKeysArgs{UserIDs, Source} (kind "keyworker.create_keys", queue
//     keyworker_keys): one job per listener hand-off chunk or reconcile page
//     (up to MaxBatchUsers). In one transaction, keystore.Store's
//     CreateSignupKeysTx makes the keys of every eligible user without one
//     with one statement (sealed secrets and one audit event per user,
//     naming the job), and the DeliverNotices job of exactly the keys made
//     is inserted, without River's insert notification (the notice queue's
//     poll finds it). The transaction commits asynchronously: WAL order
//     keeps its notices and pick-ups behind a durable flush, and a database
//     crash that loses it leaves the job to run again. A missing, soft-deleted or anonymous user, a user who has
//     a key, and an id that is not a uuid are 'skipped' events with the
//     reason. For the stream's batches, users not yet visible are looked for
//     again (missingRechecks) before they are recorded missing. River's
//     batched completer completes the job, with its output (user to key
//     id, user to skip reason); a rerun after the commit makes nothing.
//   - DeliverNoticesArgs{KeyIDs} ("keyworker.deliver_notices",
//     keyworker_notices): send each signup key's created notice to every
//     sender, unless the key's state rules it out,
//     Config.NoticeConcurrency at a time, reading the users' emails at send
//     time; each delivery is recorded within flushInterval of happening, so
//     a retry (or a rerun after a crash) sends only what was not recorded.
//   - DeliverLifecycleNoticesArgs{Type, KeyIDs, Occurrence}
//     ("keyworker.deliver_lifecycle_notices", keyworker_notices): the same
//     for every other notice, of event Type (and, for a disable, its
//     Occurrence). A kind of its own, so that replicas of earlier versions
//     (which know only deliver_notices, and would take any notice for a
//     created one) never run it: River retries it until an upgraded
//     replica does.
//   - CreateKeyArgs and DeliverNoticeArgs: the per-user and per-key kinds
//     of older versions, run as batches of one.
//   - ReconcileArgs ("keyworker.reconcile", keyworker_maintenance): page
//     through eligible users without a signup key who are in no pending
//     CreateKeys job, one CreateKeys job per page; periodic on the leader
//     (the first one interval after it becomes leader), requested by the
//     listener when it may have missed signups. Reconcile runs the same
//     page loop outside a job: `worker replay` calls it.
//   - PurgeRevealsArgs ("keyworker.purge_reveals", keyworker_maintenance):
//     delete sealed secrets past their pick-up window; periodic.
//   - LifecycleNoticesArgs ("keyworker.lifecycle_notices",
//     keyworker_maintenance): every Config.LifecycleInterval on the leader,
//     enqueue the api_key.expiring notices (keys expiring within
//     Config.ExpiringNoticeBefore) and api_key.expired notices (keys that
//     expired after migration 007 and within ExpiredNoticeWindow) that are
//     due, LifecycleBatchSize keys per transaction.
//
// # Lifecycle notices
//
// Client.EnqueueNoticeTx records an event (rotated, revoked, a key created
// through the API) for some keys in key_notices, in the caller's
// transaction, and inserts the DeliverLifecycleNotices job of the keys it
// had not been recorded for: one notice per key and event type, whatever
// is retried. A key can be disabled again after an enable, so
// Client.EnqueueNoticeOnceTx records each disable with its disabled_at (the
// occurrence): one notice per disable. The lifecycle scan records its
// events the same way. Created
// notices of signup keys link Config.PickupURL (the application's pick-up
// page) when it is set; without it they tell the user to sign in to the
// application, and never link the POST-only reveal endpoint.
//
// Job args hold ids only: never a key, a secret or an email address (River
// stores args as JSON and its UI shows them).
//
// # Duplicates
//
// Batch jobs are not unique. The unique index on api_keys (one signup key
// per user) is the guard: a batch inserts ON CONFLICT DO NOTHING and
// records key_exists for a user who has a key, and makes no notice for it.
// Per-sink 'notified' and 'notify_discarded' events, per notice type, keep
// a notice from being sent again to a sink that took it; key_notices keeps
// a lifecycle event from being enqueued twice.
//
// # Locks
//
// No job locks a users row itself: FOR KEY SHARE or FOR UPDATE on the
// users table would need UPDATE on it, which the worker's role should not
// have, so the batch reads users without a row lock. Two things order
// concurrent batches instead. The unique index: a batch inserting a key for
// a user whose key another open transaction is inserting waits for that
// transaction, then records key_exists; batches insert in user id order
// (every enqueue sorts), so two that share users wait for each other
// instead of deadlocking, and a deadlock that happens anyway is retried.
// The foreign key from api_keys to the users table: the insert takes
// PostgreSQL's key-share lock on the user's row for its check, so a user
// deleted between the lookup and the insert fails the statement, which runs
// again (keystore.CreateSignupKeysTx, in a savepoint) and records
// user_missing. A reconcile reads its pages outside any transaction and
// locks nothing: a user it finds who gets a key meanwhile is a key_exists
// in the CreateKeys job.
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
