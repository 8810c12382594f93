package users

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Signup is one new row in the users table, as a source saw it: the
// listener's sources produce them and hand them to an enqueuer.
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
