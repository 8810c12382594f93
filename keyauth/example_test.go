package keyauth_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/keyauth"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/pgtemp"
	kwsql "github.com/keyworker/keyworker/sql"
)

// The middleware in front of an API, with the key checked in the database.
func ExampleMiddleware() {
	pool, apiKey, done := exampleSetup() // in an app: pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	defer done()

	requireKey := keyauth.Middleware(keyauth.Postgres(pool, "keyworker"), keyauth.Options{CacheTTL: 30 * time.Second})
	api := requireKey(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userID, _ := keyauth.UserID(r.Context())
		fmt.Fprintf(w, "hello %s\n", userID)
	}))

	srv := httptest.NewServer(api)
	defer srv.Close()
	for _, key := range []string{apiKey, "sk_wrong"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/things", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Print(resp.StatusCode, " ", string(body))
	}
	// Output:
	// 200 hello 00000000-0000-4000-8000-00000000e4a1
	// 401 {"error":"a valid API key is required","code":"invalid_api_key"}
}

var exampleSeq atomic.Int64

// exampleSetup makes a migrated database with one user and one key, for
// an Example (which has no *testing.T for harness.Database).
func exampleSetup() (*pgxpool.Pool, string, func()) {
	ctx := context.Background()
	name := fmt.Sprintf("kwex_%d_%d", os.Getpid(), exampleSeq.Add(1))
	fail := func(err error) { panic(fmt.Sprintf("example setup: %v", err)) }
	admin, err := pgx.Connect(ctx, harness.AdminURL())
	if err != nil {
		fail(err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		fail(err)
	}
	admin.Close(ctx)
	url := harness.URL(name)
	if err := pgtemp.SetupSupabase(ctx, url); err != nil {
		fail(err)
	}
	if _, err := kwsql.MigrateURL(ctx, url, kwsql.Config{}); err != nil {
		fail(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		fail(err)
	}
	const user = "00000000-0000-4000-8000-00000000e4a1"
	if _, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, created_at) VALUES ($1, 'ex@example.com', now())`, user); err != nil {
		fail(err)
	}
	sealing := strings.Repeat("k", keys.SealingKeySize)
	sealer, err := keys.NewSealer([]byte(sealing))
	if err != nil {
		fail(err)
	}
	store, err := keystore.New(keystore.Config{Sealer: sealer})
	if err != nil {
		fail(err)
	}
	_, plain, err := store.CreateWithPlaintext(ctx, pool, keystore.NewKey{UserID: user}, keystore.Audit{Actor: keystore.ActorOperator})
	if err != nil {
		fail(err)
	}
	return pool, plain, func() {
		pool.Close()
		_ = harness.DropDatabase(name)
	}
}

// An app that does not reach keyworker's database asks keyworker over HTTP,
// with a service token from keyworker's verify tokens.
func ExampleRemote() {
	checker, err := keyauth.Remote("https://keys.example.com", os.Getenv("KEYS_SERVICE_TOKEN"),
		keyauth.WithTimeout(2*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	api := http.NotFoundHandler() // the app's handlers
	http.Handle("/api/", keyauth.Middleware(checker, keyauth.Options{CacheTTL: 30 * time.Second})(api))
}
