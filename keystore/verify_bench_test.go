package keystore_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

// BenchmarkVerifyAPIKeySQL measures verify_api_key inside the server (a
// loop of b.N calls in one statement, so no round trips), for a valid key
// and for a key with a wrong checksum, and the checksum alone, which is what
// the check adds to every call; and one call per round trip from here:
//
//	go test -run '^$' -bench VerifyAPIKeySQL -benchtime 20000x ./keystore/
func BenchmarkVerifyAPIKeySQL(b *testing.B) {
	ctx := context.Background()
	db, err := pgxpool.New(ctx, harness.Database(b))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	sealer, err := keys.NewSealer(make([]byte, keys.SealingKeySize))
	if err != nil {
		b.Fatal(err)
	}
	store, err := keystore.New(keystore.Config{Sealer: sealer})
	if err != nil {
		b.Fatal(err)
	}
	const user = "00000000-0000-4000-8000-0000000b0001"
	if _, err := db.Exec(ctx, `INSERT INTO auth.users (id, created_at) VALUES ($1, now())`, user); err != nil {
		b.Fatal(err)
	}
	_, token, err := store.CreateWithPlaintext(ctx, db, keystore.NewKey{UserID: user}, keystore.Audit{Actor: keystore.ActorOperator})
	if err != nil {
		b.Fatal(err)
	}
	wrong := token[:len(token)-1] + "0"
	if wrong == token {
		wrong = token[:len(token)-1] + "1"
	}
	loop := func(b *testing.B, query, arg, want string) {
		b.Helper()
		var got string
		b.ResetTimer()
		// The CASE ties each call to its row: a call with constant arguments
		// would be made once and its result reused.
		if err := db.QueryRow(ctx, query, arg, b.N).Scan(&got); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if got != want {
			b.Fatalf("got %s, want %s", got, want)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	}
	const verify = `SELECT min(v.status) FROM generate_series(1, $2) g,
		LATERAL keyworker.verify_api_key(CASE WHEN g > 0 THEN $1::text END) v`
	b.Run("valid", func(b *testing.B) { loop(b, verify, token, "valid") })
	b.Run("wrong_checksum", func(b *testing.B) { loop(b, verify, wrong, "not_found") })
	// One call per round trip, as an application verifies: what a client
	// sees, the network and the protocol included.
	b.Run("valid_round_trip", func(b *testing.B) {
		var status string
		for b.Loop() {
			if err := db.QueryRow(ctx, `SELECT status FROM keyworker.verify_api_key($1)`, token).Scan(&status); err != nil {
				b.Fatal(err)
			}
		}
		if status != "valid" {
			b.Fatalf("got %s, want valid", status)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
	b.Run("checksum_only", func(b *testing.B) {
		loop(b, `SELECT min(keyworker.key_checksum(CASE WHEN g > 0 THEN left($1::text, -6) END)) FROM generate_series(1, $2) g`,
			token, token[len(token)-6:])
	})
}
