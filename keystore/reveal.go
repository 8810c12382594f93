package keystore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Revealed is a key picked up by its owner: its metadata and, through
// Plaintext only, the key itself. fmt (every verb), slog and encoding/json
// never see the plaintext.
type Revealed struct {
	KeyID, UserID, Name, Prefix, Last4 string
	CreatedAt                          time.Time
	ExpiresAt                          *time.Time

	plaintext string
}

// Plaintext returns the whole key, for its owner, once. Never log or store it.
func (r Revealed) Plaintext() string { return r.plaintext }

// String returns the redacted form "<prefix>_<id>_…<last4>".
func (r Revealed) String() string { return r.Prefix + "_" + r.KeyID + "_…" + r.Last4 }

// GoString returns a Go-syntax representation without the plaintext.
func (r Revealed) GoString() string {
	return fmt.Sprintf("keystore.Revealed{KeyID:%q, UserID:%q, Prefix:%q, Last4:%q}", r.KeyID, r.UserID, r.Prefix, r.Last4)
}

// Format prints the redacted form under every verb (GoString for %#v).
func (r Revealed) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, r.GoString())
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), r.String())
}

// LogValue logs the key's id, user id, prefix and last 4.
func (r Revealed) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("key_id", r.KeyID),
		slog.String("user_id", r.UserID),
		slog.String("prefix", r.Prefix),
		slog.String("last4", r.Last4),
	)
}

// Reveal hands userID the oldest key waiting to be picked up: in one
// transaction on db it deletes the sealed secret (a pending one, whose
// pick-up window has not passed, of a key neither revoked nor expired),
// opens it, and records a 'revealed' event. Only a secret whose row names
// the key's own user is handed out, and the box must open for that key and
// user. A key is therefore revealed at most once, even to concurrent
// callers; if opening fails nothing is deleted and the error wraps
// keys.ErrOpen, and also keys.ErrSealedUnderAnotherKey when the box was
// sealed under a sealing key the Store's Sealer does not hold (its message
// names the fingerprints; no retry can open it).
//
// When nothing waits it returns an error wrapping ErrNothingToReveal, which
// is ErrRevealExpired when a pick-up window has passed but the secret is not
// purged yet. A malformed userID is ErrInvalid.
func (s *Store) Reveal(ctx context.Context, db Beginner, userID string, a Audit) (*Revealed, error) {
	if err := checkUserID(userID); err != nil {
		return nil, err
	}
	userID = strings.ToLower(userID)
	if _, err := a.actor(); err != nil {
		return nil, err
	}
	var out *Revealed
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		now := s.Now()
		var sealed []byte
		info, err := scanInfo(tx.QueryRow(ctx, s.q.reveal, userID, now), &sealed)
		if errors.Is(err, pgx.ErrNoRows) {
			var expired bool
			if err := tx.QueryRow(ctx, s.q.revealExpired, userID, now).Scan(&expired); err != nil {
				return fmt.Errorf("revealing key of user %s: %w", userID, err)
			}
			if expired {
				return fmt.Errorf("revealing key of user %s: %w", userID, ErrRevealExpired)
			}
			return fmt.Errorf("revealing key of user %s: %w", userID, ErrNothingToReveal)
		}
		if err != nil {
			return fmt.Errorf("revealing key of user %s: %w", userID, err)
		}
		plain, err := s.sealer.Open(info.ID, info.UserID, sealed)
		if err != nil {
			return fmt.Errorf("revealing key %s: %w", info.ID, err)
		}
		if err := s.writeEvent(ctx, tx, now, eventOf("revealed", info.ID, info.UserID, nil), a); err != nil {
			return fmt.Errorf("revealing key %s: %w", info.ID, err)
		}
		out = &Revealed{
			KeyID: info.ID, UserID: info.UserID, Name: info.Name, Prefix: info.Prefix, Last4: info.Last4,
			CreatedAt: info.CreatedAt, ExpiresAt: info.ExpiresAt, plaintext: string(plain),
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
