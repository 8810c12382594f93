package keystore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/keys"
)

// Verification is the outcome of Verify.
type Verification struct {
	// Status is valid, not_found, revoked, expired or disabled, as the SQL
	// function verify_api_key says.
	Status keys.Status
	// UserID and KeyID are set when the secret is right (valid, revoked,
	// expired, disabled); empty for not_found.
	UserID, KeyID string
	// ParseErr is the *keys.ParseError when token is not a well-formed key
	// (Status is then StatusNotFound and nothing was looked up). Its message
	// never quotes the token.
	ParseErr error
}

// Verify checks a presented key in Go, with the rules of the SQL function
// verify_api_key: keys.Parse first (a malformed token is not_found with
// ParseErr set, without a lookup), then the row by id and keys.Verify, in
// constant time, with an unknown id doing the same hashing work as a wrong
// secret. A revocation takes effect at revoked_at (a scheduled one leaves the
// key valid until then), an expiry at expires_at; a key neither revoked nor
// expired but disabled is StatusDisabled (the order of Info.Status). A valid
// key's last_used_at is updated at most once a minute, as the SQL function
// does; a disabled key's is not. The error is only for a failed query.
func (s *Store) Verify(ctx context.Context, db Querier, token string) (Verification, error) {
	p, err := keys.Parse(token)
	if err != nil {
		return Verification{Status: keys.StatusNotFound, ParseErr: err}, nil
	}
	now := s.Now()
	var (
		userID     string
		stored     keys.Stored
		revokedAt  *time.Time
		disabledAt *time.Time
		lastUsedAt *time.Time
	)
	err = db.QueryRow(ctx, s.q.verifyLookup, p.ID()).Scan(&userID, &stored.Prefix, &stored.Hash, &stored.Salt,
		&stored.HashVersion, &stored.ExpiresAt, &revokedAt, &disabledAt, &lastUsedAt)
	found := true
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		found = false
	case err != nil:
		return Verification{}, fmt.Errorf("verifying key %s: %w", p.ID(), err)
	}
	if revokedAt != nil && !revokedAt.After(now) {
		stored.RevokedAt = revokedAt
	}
	var status keys.Status
	if found {
		status = keys.Verify(p, &stored, now)
	} else {
		status = keys.Verify(p, nil, now)
	}
	if status == keys.StatusNotFound {
		return Verification{Status: status}, nil
	}
	if status == keys.StatusValid && disabledAt != nil {
		status = keys.StatusDisabled
	}
	if status == keys.StatusValid && (lastUsedAt == nil || lastUsedAt.Before(now.Add(-time.Minute))) {
		if _, err := db.Exec(ctx, s.q.touch, p.ID(), now); err != nil {
			return Verification{}, fmt.Errorf("verifying key %s: recording its use: %w", p.ID(), err)
		}
	}
	return Verification{Status: status, UserID: userID, KeyID: p.ID()}, nil
}
