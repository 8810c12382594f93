package keyauth

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/keys"
)

// DefaultSchema is the schema used when given "": the schema keyworker
// installs itself in unless told another (sql.DefaultSchema).
const DefaultSchema = "keyworker"

// Result is what a Checker found out about a key.
type Result struct {
	// Status is keys.StatusValid, or why the key is refused:
	// keys.StatusNotFound (unknown id, wrong secret, or not a key at all),
	// keys.StatusRevoked, keys.StatusExpired or keys.StatusDisabled.
	Status keys.Status
	// UserID (the owner's uuid) and KeyID are set whenever the secret was
	// right (every status but not_found), and empty for not_found.
	UserID, KeyID string
}

// Valid reports whether the key may be used: Status is keys.StatusValid.
func (r Result) Valid() bool { return r.Status == keys.StatusValid }

// Checker checks a presented API key. The error is only for a check that
// could not be made (the database or keyworker unreachable, a timeout, a
// refused service token): a key that is wrong, unknown, revoked, expired or
// disabled is a Result, not an error. Implementations must be safe for
// concurrent use, and their errors must never contain the key.
type Checker interface {
	Check(ctx context.Context, key string) (Result, error)
}

// Querier runs one query: *pgxpool.Pool, *pgx.Conn, pgx.Tx and every
// keystore.Querier satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Postgres returns a Checker that calls keyworker's SQL function
// <schema>.verify_api_key on db (schema "" is DefaultSchema). The role db
// connects as needs EXECUTE on it (keyworker's migrations grant it to
// Supabase's service_role) and nothing else: the function is SECURITY
// DEFINER and never shows a hash. A string that is not a well-formed key
// (keys.Parse: shape and checksum) is not_found without a query. A valid
// key's last_used_at is updated at most once a minute, by the function.
//
// Errors (a failed query, an answer this version does not know) wrap the
// database's error and name the key by its id only.
func Postgres(db Querier, schema string) Checker {
	if schema == "" {
		schema = DefaultSchema
	}
	return &pgChecker{
		db: db,
		query: `SELECT user_id::text, status, key_id FROM ` + pgx.Identifier{schema}.Sanitize() +
			`.verify_api_key($1)`,
	}
}

type pgChecker struct {
	db    Querier
	query string
}

func (c *pgChecker) Check(ctx context.Context, key string) (Result, error) {
	p, err := keys.Parse(key)
	if err != nil {
		return Result{Status: keys.StatusNotFound}, nil
	}
	var status string
	var userID, keyID *string
	if err := c.db.QueryRow(ctx, c.query, key).Scan(&userID, &status, &keyID); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			err = errors.New("verify_api_key returned no row")
		}
		return Result{}, fmt.Errorf("checking key %s: %w", p.ID(), err)
	}
	r, err := result(p, status, deref(userID), deref(keyID))
	if err != nil {
		return Result{}, fmt.Errorf("checking key %s: verify_api_key: %w", p.ID(), err)
	}
	return r, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// result turns a verify answer (SQL or HTTP) into a Result, refusing one
// that does not fit the contract: an unknown status, or ids missing or not
// the presented key's.
func result(p keys.Parsed, status, userID, keyID string) (Result, error) {
	var s keys.Status
	if err := s.UnmarshalText([]byte(status)); err != nil {
		return Result{}, fmt.Errorf("unknown status %s (is keyauth older than keyworker? update it)", quoteCode(status))
	}
	if s == keys.StatusNotFound {
		return Result{Status: s}, nil
	}
	if userID == "" || keyID != p.ID() {
		return Result{}, fmt.Errorf("status %s came without the key's user id and key id", s)
	}
	return Result{Status: s, UserID: userID, KeyID: keyID}, nil
}

// quoteCode quotes s when it looks like a status or error code (short,
// lower case letters and underscores): an answer that does not is not
// repeated in an error, where it could carry anything, even the key.
func quoteCode(s string) string {
	if len(s) == 0 || len(s) > 40 {
		return "(not a code)"
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && c != '_' {
			return "(not a code)"
		}
	}
	return `"` + s + `"`
}
