package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/users"
)

// Trace is one user's whole history in keyworker: the user row as the
// table has it now, every job that handled the user or the user's keys
// (with attempts, errors and what it did for this user), the keys, and
// every audit event, oldest first. It holds ids and times only.
type Trace struct {
	UserID string `json:"user_id"`
	// UserExists is false when the users table has no such row (deleted,
	// or never there).
	UserExists bool       `json:"user_exists"`
	CreatedAt  *time.Time `json:"user_created_at,omitempty"`
	Deleted    bool       `json:"user_deleted,omitempty"`
	Anonymous  bool       `json:"user_anonymous,omitempty"`
	// SeenAt is when keyworker first enqueued work for the user: the
	// commit of the hand-off (or reconcile page) that made its first job
	// still kept (River prunes jobs after the retention period).
	SeenAt *time.Time   `json:"seen_at,omitempty"`
	Jobs   []TraceJob   `json:"jobs"`
	Keys   []TraceKey   `json:"keys"`
	Events []TraceEvent `json:"events"`
}

// TraceJob is a River job that handled the user or one of its keys.
type TraceJob struct {
	ID          int64      `json:"id"`
	Kind        string     `json:"kind"`
	State       string     `json:"state"`
	Attempt     int        `json:"attempt"`
	MaxAttempts int        `json:"max_attempts"`
	CreatedAt   time.Time  `json:"created_at"`
	AttemptedAt *time.Time `json:"attempted_at,omitempty"`
	FinalizedAt *time.Time `json:"finalized_at,omitempty"`
	// BatchSize is how many users or keys the job held.
	BatchSize int `json:"batch_size"`
	// Source is a create-keys job's source (signup, or a reconcile's
	// reason).
	Source string `json:"source,omitempty"`
	// Outcome is what the job recorded for this user or key ("created
	// <key id>", "skipped key_exists", "sent webhook", ...), when it
	// recorded an output.
	Outcome string `json:"outcome,omitempty"`
	// Errors are the job's attempt errors, oldest first.
	Errors []string `json:"errors,omitempty"`
}

// TraceKey is one of the user's keys.
type TraceKey struct {
	ID        string     `json:"id"`
	Source    string     `json:"source"`
	Name      string     `json:"name"`
	Last4     string     `json:"last4"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// PickupWaiting is true while the sealed secret waits for its pick-up.
	PickupWaiting bool `json:"pickup_waiting"`
}

// TraceEvent is one key_events row of the user or its keys.
type TraceEvent struct {
	At      time.Time       `json:"at"`
	Event   string          `json:"event"`
	KeyID   string          `json:"key_id,omitempty"`
	JobID   *int64          `json:"job_id,omitempty"`
	Attempt *int            `json:"attempt,omitempty"`
	Actor   string          `json:"actor"`
	Detail  json.RawMessage `json:"detail"`
}

// TraceUser reads one user's history. The user id must be a uuid; a user
// keyworker never saw comes back with empty lists.
func TraceUser(ctx context.Context, db users.Querier, schema string, table users.Table, userID string) (*Trace, error) {
	if err := CheckUserID(userID); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	userID = strings.ToLower(userID)
	if !identRe.MatchString(schema) {
		return nil, fmt.Errorf("tracing: schema %q is invalid", schema)
	}
	table = table.WithDefaults()
	if err := table.Validate(); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	q := newTraceQueries(schema, table)
	tr := &Trace{UserID: userID, Jobs: []TraceJob{}, Keys: []TraceKey{}, Events: []TraceEvent{}}

	err := db.QueryRow(ctx, q.user, userID).Scan(&tr.CreatedAt, &tr.Deleted, &tr.Anonymous)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("tracing user %s: reading the user: %w", userID, err)
	default:
		tr.UserExists = true
	}

	rows, err := db.Query(ctx, q.keys, userID)
	if err != nil {
		return nil, fmt.Errorf("tracing user %s: reading keys: %w", userID, err)
	}
	tr.Keys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (TraceKey, error) {
		var k TraceKey
		err := r.Scan(&k.ID, &k.Source, &k.Name, &k.Last4, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt, &k.PickupWaiting)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("tracing user %s: reading keys: %w", userID, err)
	}

	// Events of the user, and of its keys (a notice event of a key whose
	// user row is gone still names the key).
	rows, err = db.Query(ctx, q.events, userID)
	if err != nil {
		return nil, fmt.Errorf("tracing user %s: reading events: %w", userID, err)
	}
	tr.Events, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (TraceEvent, error) {
		var e TraceEvent
		err := r.Scan(&e.At, &e.Event, &e.KeyID, &e.JobID, &e.Attempt, &e.Actor, &e.Detail)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("tracing user %s: reading events: %w", userID, err)
	}

	// Jobs: those whose args name the user or one of its keys (River's GIN
	// index on args answers the containment tests), and those the events
	// name (River may have pruned some; they are then missing).
	keyIDs := make([]string, 0, len(tr.Keys))
	for _, k := range tr.Keys {
		keyIDs = append(keyIDs, k.ID)
	}
	for _, e := range tr.Events {
		if e.KeyID != "" && !slices.Contains(keyIDs, e.KeyID) {
			keyIDs = append(keyIDs, e.KeyID)
		}
	}
	rows, err = db.Query(ctx, q.jobs, userID, keyIDs)
	if err != nil {
		return nil, fmt.Errorf("tracing user %s: reading jobs: %w", userID, err)
	}
	tr.Jobs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (TraceJob, error) {
		var j TraceJob
		var output []byte
		err := r.Scan(&j.ID, &j.Kind, &j.State, &j.Attempt, &j.MaxAttempts, &j.CreatedAt, &j.AttemptedAt, &j.FinalizedAt,
			&j.BatchSize, &j.Source, &output, &j.Errors)
		if err == nil {
			j.Outcome = outcomeFor(j.Kind, output, userID, keyIDs)
		}
		return j, err
	})
	if err != nil {
		return nil, fmt.Errorf("tracing user %s: reading jobs: %w", userID, err)
	}
	for _, j := range tr.Jobs {
		if j.Kind == KindCreateKeys || j.Kind == KindCreateKey {
			at := j.CreatedAt
			tr.SeenAt = &at
			break
		}
	}
	return tr, nil
}

// outcomeFor reads what a job's recorded output says of the user or its
// keys.
func outcomeFor(kind string, output []byte, userID string, keyIDs []string) string {
	if len(output) == 0 {
		return ""
	}
	switch kind {
	case KindCreateKeys:
		var o createKeysOutput
		if json.Unmarshal(output, &o) != nil {
			return ""
		}
		if k, ok := o.Created[userID]; ok {
			return "created " + k
		}
		if r, ok := o.Skipped[userID]; ok {
			return "skipped " + r
		}
	case KindDeliverNotices, KindDeliverLifecycleNotices:
		var o noticesOutput
		if json.Unmarshal(output, &o) != nil {
			return ""
		}
		var parts []string
		for _, k := range keyIDs {
			if r, ok := o.Skipped[k]; ok {
				parts = append(parts, "key "+k+" skipped "+r)
			}
			for ks, r := range o.Discarded {
				if strings.HasPrefix(ks, k+" ") {
					parts = append(parts, "key "+k+" "+strings.TrimPrefix(ks, k+" ")+" discarded: "+r)
				}
			}
		}
		return strings.Join(parts, "; ")
	}
	return ""
}

var uuidRe = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// CheckUserID reports whether id can be a user id (a uuid), with an error
// that shows the id (cut to 40 characters) and an example.
func CheckUserID(id string) error {
	if !uuidRe.MatchString(id) {
		return fmt.Errorf("%q is not a user id (a uuid, e.g. 3f8a2c1e-5b7d-4e9f-a0c2-1d6e8b4f7a90)", truncate(id, 40))
	}
	return nil
}
