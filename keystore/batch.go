package keystore

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/internal/pgerr"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/users"
)

// Outcomes of one user in a signup batch (SignupOutcome.Outcome). The skip
// reasons are recorded in the 'skipped' audit event of the user.
const (
	// OutcomeCreated: a signup key was made.
	OutcomeCreated = "created"
	// OutcomeKeyExists: the user had a signup key already (made by an
	// earlier run of the same batch, another batch, or a concurrent
	// transaction); nothing was made.
	OutcomeKeyExists = "key_exists"
	// OutcomeMalformed: the id given is not a uuid; nothing was looked up.
	OutcomeMalformed = "malformed_user_id"
	// OutcomeNotVisible: with SignupBatch.DeferMissing, a user this
	// transaction cannot see; no event was written, so the caller may ask
	// again. (Logical decoding streams a commit as soon as its WAL record is
	// flushed, a moment before other transactions can see it: a batch that
	// follows the stream closely can miss a user who is there.)
	OutcomeNotVisible = "not_visible"
	// users.ReasonMissing, users.ReasonDeleted and users.ReasonAnonymous are
	// the other outcomes.
)

// maxBatchAttempts is how many times CreateSignupKeysTx runs its statement
// when a user is deleted between the lookup and the insert (the foreign key
// then fails the statement) or two batches deadlock: each run sees the
// other's commit, so the second one almost always passes.
const maxBatchAttempts = 3

// SignupBatch asks CreateSignupKeysTx for the signup keys of many users.
type SignupBatch struct {
	// UserIDs are the users, in any order, repeats allowed. Ids that are not
	// uuids get OutcomeMalformed and do not stop the others.
	UserIDs []string
	// Table is the users table the ids refer to (api_keys references it).
	Table users.Table
	// IncludeAnonymous gives anonymous users keys too.
	IncludeAnonymous bool
	// ExpiresAt, when set, is when the new keys stop working.
	ExpiresAt *time.Time
	// Audit names the job that asks; its Detail goes into every event.
	Audit Audit
	// DeferMissing reports a user the users table does not show as
	// OutcomeNotVisible, with no event, instead of recording
	// users.ReasonMissing: for a caller that will look again.
	DeferMissing bool
}

// SignupOutcome is what CreateSignupKeysTx did for one user.
type SignupOutcome struct {
	// UserID is the id as given, lowercased.
	UserID string
	// Outcome is OutcomeCreated, OutcomeKeyExists, OutcomeMalformed or one
	// of users.ReasonMissing, ReasonDeleted, ReasonAnonymous.
	Outcome string
	// KeyID is the new key (OutcomeCreated) or the existing one
	// (OutcomeKeyExists, when this transaction can see it); else empty.
	KeyID string
	// Last4 is the new key's last 4 (OutcomeCreated only).
	Last4 string
}

// CreateSignupKeysTx makes the signup keys of a batch of users in the
// caller's transaction with one statement: it looks the users up (a LEFT
// JOIN, so a missing, deleted or anonymous user is a recorded skip, not an
// error), inserts a key for every eligible user without one (ON CONFLICT DO
// NOTHING on the one-signup-key-per-user index: a key made meanwhile is
// kept, no second), seals the secrets of exactly the keys inserted into
// key_reveals, and writes one audit event per user ('created' with the key,
// or 'skipped' with the reason), each naming a.JobID and a.Attempt.
//
// Keys are inserted in user id order, as every enqueue sorts them, so two
// batches that share users wait for each other rather than deadlock. A user
// deleted while the statement runs fails its foreign key; the statement then
// runs again (in a savepoint) and finds the user missing.
//
// The outcomes come back sorted by user id, one per distinct id. The
// plaintexts never leave this function except sealed.
func (s *Store) CreateSignupKeysTx(ctx context.Context, tx pgx.Tx, b SignupBatch) ([]SignupOutcome, error) {
	actor, err := b.Audit.actor()
	if err != nil {
		return nil, err
	}
	b.Table = b.Table.WithDefaults()
	if err := b.Table.Validate(); err != nil {
		return nil, invalid("%s", err.Error())
	}
	if len(b.UserIDs) > MaxSignupBatch {
		return nil, invalid("a signup batch holds at most %d users, got %d", MaxSignupBatch, len(b.UserIDs))
	}
	now := s.Now()
	if b.ExpiresAt != nil {
		exp := b.ExpiresAt.UTC().Truncate(time.Microsecond)
		if !exp.After(now) {
			return nil, invalid("key expiry %s is not in the future", exp.Format(time.RFC3339))
		}
		b.ExpiresAt = &exp
	}

	var out, malformed []SignupOutcome
	ids := make([]string, 0, len(b.UserIDs))
	seen := make(map[string]bool, len(b.UserIDs))
	for _, raw := range b.UserIDs {
		id := strings.ToLower(raw)
		if seen[id] {
			continue
		}
		seen[id] = true
		if !uuidRe.MatchString(id) {
			malformed = append(malformed, SignupOutcome{UserID: truncate(raw, 40), Outcome: OutcomeMalformed})
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)

	if len(ids) > 0 {
		n := len(ids)
		keyIDs := make([]string, n)
		hashes := make([][]byte, n)
		salts := make([][]byte, n)
		last4s := make([]string, n)
		boxes := make([][]byte, n)
		gen := keys.Generator{Now: s.now}
		for i := range ids {
			k, err := gen.Generate(s.prefix)
			if err != nil {
				return nil, fmt.Errorf("creating signup keys: %w", err)
			}
			box, err := s.sealer.Seal(k.ID, ids[i], []byte(k.Plaintext()))
			if err != nil {
				return nil, fmt.Errorf("creating signup keys: sealing key %s: %w", k.ID, err)
			}
			keyIDs[i], hashes[i], salts[i], last4s[i], boxes[i] = k.ID, k.Hash, k.Salt, k.Last4, box
		}
		detail, err := json.Marshal(b.Audit.Detail)
		if err != nil {
			return nil, fmt.Errorf("encoding the detail of signup key events: %w", err)
		}
		if b.Audit.Detail == nil {
			detail = []byte("{}")
		}
		var expText *string
		if b.ExpiresAt != nil {
			t := jsonTime(*b.ExpiresAt)
			expText = &t
		}
		revealAt := now.Add(s.ttl)
		args := []any{ids, keyIDs, hashes, salts, last4s, boxes, s.prefix, now, b.ExpiresAt, revealAt,
			nullableInt64(b.Audit.JobID), nullableInt64(int64(b.Audit.Attempt)), actor, string(detail),
			keys.HashVersion, expText, jsonTime(revealAt), b.DeferMissing}
		q := s.signupBatchQuery(b.Table, b.IncludeAnonymous)
		for attempt := 1; ; attempt++ {
			out, err = s.runSignupBatch(ctx, tx, q, args)
			if err == nil {
				break
			}
			if attempt < maxBatchAttempts && (pgerr.Code(err) == pgerrcode.ForeignKeyViolation || pgerr.Code(err) == pgerrcode.DeadlockDetected) {
				continue
			}
			return nil, fmt.Errorf("creating the signup keys of %d users: %w", n, err)
		}
	}

	if len(malformed) > 0 {
		for _, m := range malformed {
			a := b.Audit
			a.Detail = maps.Clone(a.Detail)
			if a.Detail == nil {
				a.Detail = map[string]any{}
			}
			a.Detail["reason"] = OutcomeMalformed
			a.Detail["user_id_given"] = m.UserID
			if err := s.writeEvent(ctx, tx, now, eventOf("skipped", "", "", nil), a); err != nil {
				return nil, fmt.Errorf("recording a malformed user id: %w", err)
			}
		}
		out = append(out, malformed...)
	}
	return out, nil
}

// runSignupBatch runs the batch statement in a savepoint, so that a failure
// (a user deleted meanwhile) leaves the caller's transaction usable for
// another run. SAVEPOINT, the statement and RELEASE go in one round trip (a
// pipeline); only a failure costs another.
func (s *Store) runSignupBatch(ctx context.Context, tx pgx.Tx, q string, args []any) ([]SignupOutcome, error) {
	b := &pgx.Batch{}
	b.Queue(savepointSignupBatch)
	b.Queue(q, args...)
	b.Queue(releaseSignupBatch)
	br := tx.SendBatch(ctx, b)
	out, err := func() ([]SignupOutcome, error) {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
		rows, err := br.Query()
		if err != nil {
			return nil, err
		}
		out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SignupOutcome, error) {
			var o SignupOutcome
			err := r.Scan(&o.UserID, &o.Outcome, &o.KeyID, &o.Last4)
			return o, err
		})
		if err != nil {
			return nil, err
		}
		_, err = br.Exec()
		return out, err
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if _, rerr := tx.Exec(ctx, rollbackSignupBatch); rerr != nil {
			return nil, fmt.Errorf("%w (and rolling back to the savepoint: %v)", err, rerr)
		}
		return nil, err
	}
	return out, nil
}

// jsonTime formats t as encoding/json does, for details written in SQL.
func jsonTime(t time.Time) string {
	b, _ := t.UTC().MarshalJSON()
	return strings.Trim(string(b), `"`)
}

// MaxSignupBatch is the most users one CreateSignupKeysTx call takes.
const MaxSignupBatch = 10_000
