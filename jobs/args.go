package jobs

import (
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Job kinds. They are stored in River's table and shown in River UI: never
// rename one.
const (
	// KindCreateKeys makes the signup keys of a batch of users.
	KindCreateKeys = "keyworker.create_keys"
	// KindDeliverNotices sends the created notices of a batch of signup
	// keys.
	KindDeliverNotices = "keyworker.deliver_notices"
	// KindDeliverLifecycleNotices sends the notices of one event (rotated,
	// revoked, disabled, expiring, expired, or created for a key made
	// outside the signup path) for a batch of keys.
	KindDeliverLifecycleNotices = "keyworker.deliver_lifecycle_notices"
	// KindReconcile finds eligible users without a signup key and hands
	// them to CreateKeys jobs (ReconcileArgs).
	KindReconcile = "keyworker.reconcile"
	// KindPurgeReveals deletes sealed secrets past their pick-up window.
	KindPurgeReveals = "keyworker.purge_reveals"
	// KindLifecycleNotices enqueues the api_key.expiring and
	// api_key.expired notices that are due.
	KindLifecycleNotices = "keyworker.lifecycle_notices"

	// KindCreateKey and KindDeliverNotice are the per-user and per-key jobs
	// of keyworker before batching. Nothing enqueues them any more; their
	// workers remain so that jobs left in a queue by an older version still
	// run (through the batched code, as a batch of one).
	KindCreateKey     = "keyworker.create_key"
	KindDeliverNotice = "keyworker.deliver_notice"
)

// Queues.
const (
	// QueueKeys runs CreateKeys jobs.
	QueueKeys = "keyworker_keys"
	// QueueNotices runs DeliverNotices and DeliverLifecycleNotices jobs.
	QueueNotices = "keyworker_notices"
	// QueueMaintenance runs Reconcile, PurgeReveals and LifecycleNotices
	// jobs.
	QueueMaintenance = "keyworker_maintenance"
)

// pendingStates are the states of a job that has yet to finish.
var pendingStates = []string{"available", "pending", "retryable", "running", "scheduled"}

// CreateKeysArgs asks for the signup keys of a batch of users: one job per
// listener hand-off chunk or reconcile page. Its JSON holds only user ids.
// It is not unique: a user in two jobs gets one key (the unique index on
// api_keys) and a 'skipped' event with reason key_exists from the second.
type CreateKeysArgs struct {
	// UserIDs are the users' uuids, sorted.
	UserIDs []string `json:"user_ids"`
	// Source says who asked: "signup" (the listener), or the reason of a
	// reconcile ("periodic", "slot_recreated", ..., or "replay" for
	// Reconcile, run by `worker replay`).
	Source string `json:"source,omitempty"`
}

// Kind returns KindCreateKeys.
func (CreateKeysArgs) Kind() string { return KindCreateKeys }

// InsertOpts puts the job in QueueKeys.
func (CreateKeysArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: QueueKeys} }

// DeliverNoticesArgs asks for the created notices of a batch of signup
// keys to be sent to every sender. Its JSON holds only key ids (public).
// The signup batch that makes the keys inserts it in its transaction, so
// each key is in one such job; per-sink events in key_events keep a retry
// from sending twice. Every other notice is a DeliverLifecycleNoticesArgs.
type DeliverNoticesArgs struct {
	// KeyIDs are the keys' KSUIDs.
	KeyIDs []string `json:"key_ids"`
}

// Kind returns KindDeliverNotices.
func (DeliverNoticesArgs) Kind() string { return KindDeliverNotices }

// InsertOpts puts the job in QueueNotices.
func (DeliverNoticesArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: QueueNotices} }

// DeliverLifecycleNoticesArgs asks for the notices of one event for a
// batch of keys to be sent to every sender, as DeliverNoticesArgs does for
// signup keys and through the same code. Its JSON holds only key ids
// (public), the type and the occurrence. The transaction that records the
// event in key_notices (EnqueueNoticeTx, EnqueueNoticeOnceTx, the
// lifecycle scan) inserts it, so each key is in one such job per event.
//
// It has a kind of its own so that a replica of an earlier version, which
// knows only KindDeliverNotices (and would read any notice of that kind as
// a created one, dropping the type), never runs it. During a rolling
// upgrade such a replica that fetches one fails the attempt with River's
// UnknownJobKindError, and River retries the job on its retry policy until
// an upgraded replica runs it. Those failed attempts count against
// Config.NoticeMaxAttempts: with River's default policy (attempt^4
// seconds) the 12 default attempts span about 11 hours, so an upgrade that
// finishes within that loses no notice.
type DeliverLifecycleNoticesArgs struct {
	// Type is the event, one of notify's Event constants.
	Type string `json:"type"`
	// KeyIDs are the keys' KSUIDs.
	KeyIDs []string `json:"key_ids"`
	// Occurrence tells apart the occurrences of an event that can happen
	// to a key again (api_key.disabled: the disable's disabled_at in unix
	// microseconds); empty for the others.
	Occurrence string `json:"occurrence,omitempty"`
}

// Kind returns KindDeliverLifecycleNotices.
func (DeliverLifecycleNoticesArgs) Kind() string { return KindDeliverLifecycleNotices }

// InsertOpts puts the job in QueueNotices.
func (DeliverLifecycleNoticesArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueNotices}
}

// createKeyUniqueStates are the states in which a CreateKey job for a user
// makes another one for the same user a duplicate. River's default set
// includes completed; this one does not, so that a user skipped while
// anonymous (or soft-deleted) gets a key as soon as the reconciler finds
// them eligible, not after River prunes the completed job
// (CompletedJobRetention, 7 days). The unique index on api_keys is what
// guarantees one signup key per user; this only saves work.
var createKeyUniqueStates = []rivertype.JobState{
	rivertype.JobStateAvailable,
	rivertype.JobStatePending,
	rivertype.JobStateRetryable,
	rivertype.JobStateRunning,
	rivertype.JobStateScheduled,
}

// CreateKeyArgs asks for one user's signup key: the job of versions before
// batching (see KindCreateKey). Jobs are unique by args while one is
// waiting, running or retrying.
type CreateKeyArgs struct {
	// UserID is the user's uuid.
	UserID string `json:"user_id"`
}

// Kind returns KindCreateKey.
func (CreateKeyArgs) Kind() string { return KindCreateKey }

// InsertOpts puts the job in QueueKeys, unique by user.
func (CreateKeyArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:      QueueKeys,
		UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: createKeyUniqueStates},
	}
}

// DeliverNoticeArgs asks for the notice of one new key: the job of versions
// before batching (see KindDeliverNotice).
type DeliverNoticeArgs struct {
	// KeyID is the key's KSUID.
	KeyID string `json:"key_id"`
}

// Kind returns KindDeliverNotice.
func (DeliverNoticeArgs) Kind() string { return KindDeliverNotice }

// InsertOpts puts the job in QueueNotices, unique by key.
func (DeliverNoticeArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueNotices, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// ReconcileArgs asks for a reconcile: every eligible user without a signup
// key, and in no pending CreateKeys job, is given to a CreateKeys job.
type ReconcileArgs struct {
	// Reason says why: "periodic", "slot_recreated", "replay", ...
	Reason string `json:"reason"`
	// Since admits users created at or after it. Nil means the installation
	// time (users.InstalledAt); a pointer to the zero time means everyone.
	Since *time.Time `json:"since,omitempty"`
	// Until, when set, admits users created before it.
	Until *time.Time `json:"until,omitempty"`
	// DryRun counts the users without enqueuing anything.
	DryRun bool `json:"dry_run,omitempty"`
}

// Kind returns KindReconcile.
func (ReconcileArgs) Kind() string { return KindReconcile }

// InsertOpts puts the job in QueueMaintenance. Reconciles are not unique: a
// second one finds only what the first has not enqueued yet.
func (ReconcileArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 5}
}

// LifecycleNoticesArgs asks for the api_key.expiring and api_key.expired
// notices that are due to be enqueued (see Config.ExpiringNoticeBefore).
type LifecycleNoticesArgs struct{}

// Kind returns KindLifecycleNotices.
func (LifecycleNoticesArgs) Kind() string { return KindLifecycleNotices }

// InsertOpts puts the job in QueueMaintenance, one at a time: a scan is not
// inserted while another waits or runs (two at once would still send each
// notice once: key_notices decides).
func (LifecycleNoticesArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 5,
		UniqueOpts: river.UniqueOpts{ByState: createKeyUniqueStates}}
}

// PurgeRevealsArgs asks for sealed secrets past their pick-up window to be
// deleted.
type PurgeRevealsArgs struct{}

// Kind returns KindPurgeReveals.
func (PurgeRevealsArgs) Kind() string { return KindPurgeReveals }

// InsertOpts puts the job in QueueMaintenance.
func (PurgeRevealsArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 5}
}
