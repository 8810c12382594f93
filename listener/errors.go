package listener

import (
	"errors"
	"strings"

	"github.com/keyworker/keyworker/users"
)

// Sentinel errors of Start's preflight. Start returns a *PreflightError
// that wraps one of them (and, where there is one, the server's error), so
// callers branch with errors.Is and print Error() or Statements.
var (
	// ErrServerVersion: the server is older than logical mode supports.
	ErrServerVersion = errors.New("PostgreSQL is too old for logical mode")
	// ErrWALLevel: the server's wal_level is not logical.
	ErrWALLevel = errors.New("wal_level is not logical")
	// ErrNoReplication: the role lacks the REPLICATION attribute, or
	// pg_hba.conf admits no replication connection for it.
	ErrNoReplication = errors.New("role may not use logical replication")
	// ErrNoFreeSlot: every replication slot (max_replication_slots) is taken.
	ErrNoFreeSlot = errors.New("no free replication slot")
	// ErrNoWALSender: every WAL sender (max_wal_senders) is busy.
	ErrNoWALSender = errors.New("no free WAL sender")
	// ErrPooler: the connection goes through a pooler that cannot carry the
	// mode: a transaction pooler (Supavisor or PgBouncer on 6543) carries
	// neither replication nor LISTEN, a session pooler carries LISTEN only.
	ErrPooler = errors.New("connection goes through a pooler")
	// ErrNoTable: the users table does not exist. It is users.ErrNoTable.
	ErrNoTable = users.ErrNoTable
	// ErrNotPublishable: the publication does not exist and this role may
	// not create it (only the table's owner may publish a table).
	ErrNotPublishable = errors.New("role may not publish the users table")
	// ErrPublicationMismatch: the publication exists but publishes more, or
	// other, than keyworker needs.
	ErrPublicationMismatch = errors.New("publication is not as keyworker needs it")
	// ErrSlotConflict: a slot of that name exists for another database or
	// another output plugin.
	ErrSlotConflict = errors.New("replication slot belongs to something else")
	// ErrNoTrigger: listen mode's trigger is missing and this role may not
	// create it.
	ErrNoTrigger = errors.New("role may not create the signup trigger")
	// ErrNotMigrated: keyworker's schema is missing or not migrated.
	ErrNotMigrated = errors.New("keyworker's schema is not migrated")
	// ErrNoPrivilege: the role lacks a privilege the source needs at run
	// time (reading the users table or keyworker's tables).
	ErrNoPrivilege = errors.New("role lacks a privilege")
)

// PreflightError is a failed precondition, with the fix. It matches its
// sentinel (Kind) and its cause with errors.Is and errors.As.
type PreflightError struct {
	// Kind is one of the Err* sentinels.
	Kind error
	// Detail says what was found.
	Detail string
	// Fix says what to do.
	Fix string
	// Statements are SQL statements someone else (the table's owner, a
	// superuser) must run, exactly as they should be run; empty when none.
	Statements []string
	// Cause is the underlying error, if any.
	Cause error
}

func (e *PreflightError) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Fix != "" {
		b.WriteString("; ")
		b.WriteString(e.Fix)
	}
	if len(e.Statements) > 0 {
		b.WriteString(":\n\n")
		for _, s := range e.Statements {
			b.WriteString("    ")
			b.WriteString(s)
			b.WriteString("\n")
		}
	}
	if e.Cause != nil && e.Detail == "" {
		b.WriteString(" (")
		b.WriteString(e.Cause.Error())
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the sentinel and the cause.
func (e *PreflightError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Kind, e.Cause}
	}
	return []error{e.Kind}
}
