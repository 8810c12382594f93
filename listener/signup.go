package listener

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/users"
)

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
	EnqueueSignupsTx(ctx context.Context, tx pgx.Tx, signups []users.Signup) (inserted int, err error)
	// EnqueueReconcileTx asks for a full reconcile (find eligible users with
	// no signup key) because the source may have missed signups: a slot was
	// lost or recreated, or listen mode reconnected. reason is recorded.
	EnqueueReconcileTx(ctx context.Context, tx pgx.Tx, reason string) error
}
