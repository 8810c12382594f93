package jobs

import (
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Job kinds. They are stored in River's table and shown in River UI: never
// rename one.
const (
	KindCreateKey     = "keyworker.create_key"
	KindDeliverNotice = "keyworker.deliver_notice"
	KindReconcile     = "keyworker.reconcile"
	KindPurgeReveals  = "keyworker.purge_reveals"
)

// Queues.
const (
	// QueueKeys runs CreateKey jobs.
	QueueKeys = "keyworker_keys"
	// QueueNotices runs DeliverNotice jobs.
	QueueNotices = "keyworker_notices"
	// QueueMaintenance runs Reconcile and PurgeReveals jobs.
	QueueMaintenance = "keyworker_maintenance"
)

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

// CreateKeyArgs asks for a user's signup key. Its JSON holds only the user
// id. Jobs are unique by args while one is waiting, running or retrying.
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

// DeliverNoticeArgs asks for the notice of a new key to be sent to every
// sender. Its JSON holds only the key id (public). Jobs are unique by key
// id in River's default states (completed included).
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

// ReconcileArgs asks for every eligible user without a signup key to be
// given a CreateKey job.
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

// PurgeRevealsArgs asks for sealed secrets past their pick-up window to be
// deleted.
type PurgeRevealsArgs struct{}

// Kind returns KindPurgeReveals.
func (PurgeRevealsArgs) Kind() string { return KindPurgeReveals }

// InsertOpts puts the job in QueueMaintenance.
func (PurgeRevealsArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 5}
}
