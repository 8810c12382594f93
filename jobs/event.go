package jobs

// EventKind names what an Event reports.
type EventKind string

// Event kinds.
const (
	// EventKeyCreated: a CreateKey job made a signup key (KeyID, UserID).
	EventKeyCreated EventKind = "key_created"
	// EventKeySkipped: a CreateKey job made no key (UserID, Reason:
	// user_missing, user_deleted, user_anonymous or key_exists).
	EventKeySkipped EventKind = "key_skipped"
	// EventNoticeSent: a sink accepted a notice (KeyID, UserID, Sink).
	EventNoticeSent EventKind = "notice_sent"
	// EventNoticeFailed: a sink failed and will be tried again (KeyID,
	// UserID, Sink, Reason: the error).
	EventNoticeFailed EventKind = "notice_failed"
	// EventNoticeDiscarded: a sink failed for good, or its tries ran out
	// (KeyID, UserID, Sink, Reason).
	EventNoticeDiscarded EventKind = "notice_discarded"
	// EventReconcileFound: a Reconcile job finished (Count: eligible users
	// without a key it found; Enqueued: jobs it inserted).
	EventReconcileFound EventKind = "reconcile_found"
)

// Event reports one outcome of a job to Config.OnEvent, for metrics. It
// never holds a key, a secret or an email address.
type Event struct {
	Kind   EventKind
	KeyID  string
	UserID string
	// Sink is the sender's name, for notice events.
	Sink string
	// Type is the notice's event type (notify.EventCreated, ...), for
	// notice events.
	Type string
	// Reason is why a key was skipped, or a sink's error.
	Reason string
	// Count and Enqueued are a reconcile's counts.
	Count, Enqueued int
}

// emit calls Config.OnEvent, if set.
func (d *deps) emit(e Event) {
	if d.cfg.OnEvent != nil {
		d.cfg.OnEvent(e)
	}
}
