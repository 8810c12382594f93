package listener

import (
	"context"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Signup is one new row in the users table, as a source saw it.
type Signup struct {
	// UserID is the user's uuid, as text.
	UserID string
	// CreatedAt is the user's created_at (logical mode, and the reconcile),
	// when its outbox row was written, which is the signup transaction's
	// start (listen mode), or zero when the source does not carry it.
	CreatedAt time.Time
	// Anonymous reports the is_anonymous column (false when absent).
	Anonymous bool
	// EndLSN is the end LSN of the replication transaction that carried the
	// signup; zero in listen mode.
	EndLSN pglogrepl.LSN
}

// Enqueuer turns signups into work inside the caller's transaction. The
// listener commits that transaction together with its checkpoint, so the work
// exists if and only if the checkpoint moved. Implementations must be safe
// for concurrent use and must tolerate duplicates (the same user twice, or a
// user already handled): they are expected, and must not fail the batch.
type Enqueuer interface {
	// EnqueueSignupsTx enqueues one unit of work per signup and returns how
	// many were new (duplicates are skipped, not errors). The listener may
	// call it several times in one transaction, with the signups in user id
	// order across the calls.
	EnqueueSignupsTx(ctx context.Context, tx pgx.Tx, signups []Signup) (inserted int, err error)
	// EnqueueReconcileTx asks for a full reconcile (find eligible users with
	// no signup key) because the source may have missed signups: a slot was
	// lost or recreated, or listen mode reconnected. reason is recorded.
	EnqueueReconcileTx(ctx context.Context, tx pgx.Tx, reason string) error
}
