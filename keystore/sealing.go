package keystore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/keys"
)

// ErrSealingKeyMismatch means the Store's Sealer holds no key whose
// fingerprint is the one the database recorded: what it sealed no other
// worker could open, and what waits it could not open. The error is a
// *SealingKeyMismatchError.
var ErrSealingKeyMismatch = errors.New("the sealing key is not the one this database's keys are sealed under")

// SealingKeyMismatchError is CheckSealingKey's refusal. It names
// fingerprints only, never a key. It wraps ErrSealingKeyMismatch.
type SealingKeyMismatchError struct {
	// Recorded is the database's fingerprint and RecordedAt when it was
	// recorded (or rotated to).
	Recorded   string
	RecordedAt time.Time
	// Have are the Sealer's fingerprints, the current key's first.
	Have []string
}

func (e *SealingKeyMismatchError) Error() string {
	have := "has fingerprint " + e.Have[0]
	if len(e.Have) > 1 {
		have = "has fingerprint " + e.Have[0] + " (previous: " + strings.Join(e.Have[1:], ", ") + ")"
	}
	return fmt.Sprintf("the keys waiting in this database are sealed under the sealing key of fingerprint %s (recorded %s), and this worker's sealing key %s: "+
		"start every worker with the same sealing key; to rotate, give the new key as the sealing key and the key of fingerprint %s as the previous key",
		e.Recorded, e.RecordedAt.UTC().Format(time.RFC3339), have, e.Recorded)
}

// Unwrap makes errors.Is match ErrSealingKeyMismatch.
func (e *SealingKeyMismatchError) Unwrap() error { return ErrSealingKeyMismatch }

// SealingKeyCheck says what CheckSealingKey found and did.
type SealingKeyCheck struct {
	// Fingerprint is the recorded fingerprint after the check: the current
	// sealing key's.
	Fingerprint string
	// Recorded reports that none was recorded before: this call recorded it.
	Recorded bool
	// RotatedFrom is the fingerprint the record moved from (one of the
	// Sealer's previous keys), when it moved.
	RotatedFrom string
}

// CheckSealingKey makes sure every worker seals under one key: in one
// transaction on db it records the Sealer's current fingerprint when the
// database has none, accepts it when it is the recorded one, moves the
// record to it when the recorded one is a previous key of the Sealer
// (rotation; boxes sealed before still open with the previous key until
// Reseal), and otherwise refuses with a *SealingKeyMismatchError, changing
// nothing. Recording and rotating write an audit event
// (sealing_key_recorded, sealing_key_rotated). Concurrent callers are
// serialized: of two workers with different keys starting on a new
// database, one records its key and the other is refused.
func (s *Store) CheckSealingKey(ctx context.Context, db Beginner) (SealingKeyCheck, error) {
	have := s.sealer.Fingerprints()
	cur := have[0]
	var out SealingKeyCheck
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		now := s.Now()
		tag, err := tx.Exec(ctx, s.q.recordSealingKey, cur, now)
		if err != nil {
			return fmt.Errorf("recording the sealing key's fingerprint: %w", err)
		}
		if tag.RowsAffected() == 1 {
			out = SealingKeyCheck{Fingerprint: cur, Recorded: true}
			return s.writeEvent(ctx, tx, now, eventOf("sealing_key_recorded", "", "", map[string]any{"fingerprint": cur}), Audit{})
		}
		var recorded string
		var at time.Time
		if err := tx.QueryRow(ctx, s.q.lockSealingKey).Scan(&recorded, &at); err != nil {
			return fmt.Errorf("reading the recorded sealing key fingerprint: %w", err)
		}
		switch {
		case recorded == cur:
			out = SealingKeyCheck{Fingerprint: cur}
			return nil
		case contains(have[1:], recorded):
			if _, err := tx.Exec(ctx, s.q.rotateSealingKey, cur, recorded, now); err != nil {
				return fmt.Errorf("recording the sealing key's rotation: %w", err)
			}
			out = SealingKeyCheck{Fingerprint: cur, RotatedFrom: recorded}
			return s.writeEvent(ctx, tx, now, eventOf("sealing_key_rotated", "", "", map[string]any{"fingerprint": cur, "previous_fingerprint": recorded}), Audit{})
		}
		return &SealingKeyMismatchError{Recorded: recorded, RecordedAt: at, Have: have}
	})
	if err != nil {
		return SealingKeyCheck{}, fmt.Errorf("checking the sealing key: %w", err)
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// DefaultResealBatch is ResealOptions.BatchSize's default.
const DefaultResealBatch = 500

// ResealOptions configures Reseal.
type ResealOptions struct {
	// BatchSize is how many waiting secrets one transaction re-seals, 1 to
	// 10000. Defaults to DefaultResealBatch.
	BatchSize int
	// Audit says who re-seals, for the 'resealed' events. Defaults to the
	// worker.
	Audit Audit
	// Progress, when set, is called after each committed batch with the
	// counts so far.
	Progress func(ResealResult)
}

// ResealResult counts what Reseal did.
type ResealResult struct {
	// Resealed secrets were opened and sealed again under the current key.
	Resealed int
	// Current secrets were sealed under the current key already and were
	// left as they were.
	Current int
	// Failed secrets open under none of the Sealer's keys (or are damaged)
	// and were left as they were; FailedBy counts them by the fingerprint
	// their box records ("" for boxes that predate fingerprints).
	Failed   int
	FailedBy map[string]int
}

// Reseal seals every secret waiting for pick-up again under the Sealer's
// current key, so that the previous key can be retired, and binds each to
// its user. It works in batches of opts.BatchSize rows, each in its own
// transaction with the rows locked (a concurrent reveal waits for the batch,
// or the batch for it), and writes one 'resealed' audit event per batch
// that changed something. Secrets it cannot open are left untouched and
// counted. It is safe to run again: what is under the current key already
// is skipped. Run CheckSealingKey first.
func (s *Store) Reseal(ctx context.Context, db Beginner, opts ResealOptions) (ResealResult, error) {
	opts.BatchSize = cmp.Or(opts.BatchSize, DefaultResealBatch)
	if opts.BatchSize < 1 || opts.BatchSize > 10000 {
		return ResealResult{}, invalid("reseal batch size must be between 1 and 10000, got %d", opts.BatchSize)
	}
	if _, err := opts.Audit.actor(); err != nil {
		return ResealResult{}, err
	}
	res := ResealResult{FailedBy: map[string]int{}}
	after := ""
	for {
		n := 0
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, s.q.resealBatch, after, opts.BatchSize)
			if err != nil {
				return err
			}
			type row struct {
				keyID, userID string
				sealed        []byte
			}
			batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
				var x row
				return x, r.Scan(&x.keyID, &x.userID, &x.sealed)
			})
			if err != nil {
				return err
			}
			n = len(batch)
			var ids []string
			var boxes [][]byte
			from := map[string]int{}
			failed := map[string]int{}
			current := 0
			for _, r := range batch {
				after = r.keyID
				if s.sealer.SealedByCurrent(r.sealed) {
					current++
					continue
				}
				plain, err := s.sealer.Open(r.keyID, r.userID, r.sealed)
				if err != nil {
					fp, _ := keys.BoxFingerprint(r.sealed)
					failed[fp]++
					continue
				}
				box, err := s.sealer.Seal(r.keyID, r.userID, plain)
				clear(plain)
				if err != nil {
					return fmt.Errorf("sealing key %s again: %w", r.keyID, err)
				}
				fp, ok := keys.BoxFingerprint(r.sealed)
				if !ok {
					fp = "unrecorded"
				}
				from[fp]++
				ids = append(ids, r.keyID)
				boxes = append(boxes, box)
			}
			if len(ids) > 0 {
				if _, err := tx.Exec(ctx, s.q.resealUpdate, ids, boxes); err != nil {
					return err
				}
				if err := s.writeEvent(ctx, tx, s.Now(), eventOf("resealed", "", "", map[string]any{
					"count": len(ids), "fingerprint": s.sealer.Fingerprint(), "from": from,
				}), opts.Audit); err != nil {
					return err
				}
			}
			// Counted only once the batch commits.
			res.Resealed += len(ids)
			res.Current += current
			for fp, c := range failed {
				res.Failed += c
				res.FailedBy[fp] += c
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("re-sealing waiting keys (after %d re-sealed): %w", res.Resealed, err)
		}
		if opts.Progress != nil && n > 0 {
			opts.Progress(res)
		}
		if n < opts.BatchSize {
			return res, nil
		}
	}
}
