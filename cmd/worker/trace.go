package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keystore"
)

func traceFlags(fs *flag.FlagSet) {
	fs.Bool("json", false, "print the history as JSON")
}

// cmdTrace prints one user's whole history: the user row, the jobs that
// handled it and its keys (with links into the dashboard), the keys, and
// every audit event.
func cmdTrace(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	if len(v.args) != 1 {
		return &usageError{"worker trace takes one user id (a uuid), e.g. worker trace 3f8a2c1e-5b7d-4e9f-a0c2-1d6e8b4f7a90"}
	}
	if err := jobs.CheckUserID(v.args[0]); err != nil {
		return &usageError{"worker trace: " + err.Error()}
	}
	table, err := tableFrom(v)
	if err != nil {
		return &usageError{err.Error()}
	}
	pool, err := connect(ctx, e, v)
	if err != nil {
		return err
	}
	defer pool.Close()
	schema := v.str("KEYWORKER_SCHEMA")
	var migrated bool
	if err := pool.QueryRow(ctx, migratedQuery, pgx.Identifier{schema, "api_keys"}.Sanitize()).Scan(&migrated); err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	if !migrated {
		return fmt.Errorf("schema %s has no keyworker tables: run `worker migrate` (with the same KEYWORKER_SCHEMA), or set KEYWORKER_SCHEMA to the installation's schema", schema)
	}
	tr, err := jobs.TraceUser(ctx, pool, schema, table, v.args[0])
	if err != nil {
		return err
	}
	if f := fs.Lookup("json"); f != nil && f.Value.String() == "true" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(tr)
	}
	printTrace(e, tr, dashboardBase(v))
	return nil
}

// dashboardBase is where River UI's job pages are: the public URL, or the
// HTTP address.
func dashboardBase(v *values) string {
	base := strings.TrimRight(v.str("KEYWORKER_PUBLIC_URL"), "/")
	if base == "" {
		base = "http://" + v.str("KEYWORKER_HTTP_ADDR")
	}
	return base + "/riverui/jobs/"
}

func printTrace(e env, tr *jobs.Trace, jobURL string) {
	ts := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000Z")
	}
	fmt.Fprintf(e.stdout, "user %s\n", tr.UserID)
	switch {
	case !tr.UserExists:
		fmt.Fprintln(e.stdout, "  not in the users table (deleted, or never there)")
	default:
		state := "eligible"
		if tr.Deleted {
			state = "soft-deleted"
		} else if tr.Anonymous {
			state = "anonymous"
		}
		fmt.Fprintf(e.stdout, "  created %s, %s\n", ts(tr.CreatedAt), state)
	}
	if tr.SeenAt != nil {
		fmt.Fprintf(e.stdout, "  seen by keyworker %s", ts(tr.SeenAt))
		if tr.CreatedAt != nil {
			fmt.Fprintf(e.stdout, " (%s after signup)", tr.SeenAt.Sub(*tr.CreatedAt).Round(time.Millisecond))
		}
		fmt.Fprintln(e.stdout)
	} else {
		fmt.Fprintln(e.stdout, "  no job for this user is kept (none made, or pruned after the retention period)")
	}

	fmt.Fprintf(e.stdout, "\nkeys (%d)\n", len(tr.Keys))
	w := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	if len(tr.Keys) > 0 {
		fmt.Fprintln(w, "  id\tsource\tlast4\tcreated\texpires\trevoked\tpick-up")
	}
	for _, k := range tr.Keys {
		pickup := "gone (picked up, expired or revoked)"
		switch {
		case k.PickupWaiting:
			pickup = "waiting"
		case k.Source != keystore.SourceSignup:
			pickup = "none (shown once when made)"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Source, k.Last4, ts(&k.CreatedAt), ts(k.ExpiresAt), ts(k.RevokedAt), pickup)
	}
	w.Flush()

	fmt.Fprintf(e.stdout, "\njobs (%d)\n", len(tr.Jobs))
	for _, j := range tr.Jobs {
		fmt.Fprintf(e.stdout, "  %d %s %s, attempt %d/%d, %d in batch", j.ID, j.Kind, j.State, j.Attempt, j.MaxAttempts, j.BatchSize)
		if j.Source != "" {
			fmt.Fprintf(e.stdout, ", source %s", j.Source)
		}
		fmt.Fprintf(e.stdout, "\n      enqueued %s, attempted %s, finalized %s\n", ts(&j.CreatedAt), ts(j.AttemptedAt), ts(j.FinalizedAt))
		if j.Outcome != "" {
			fmt.Fprintf(e.stdout, "      for this user: %s\n", j.Outcome)
		}
		for i, er := range j.Errors {
			fmt.Fprintf(e.stdout, "      error %d: %s\n", i+1, er)
		}
		fmt.Fprintf(e.stdout, "      %s%d\n", jobURL, j.ID)
	}

	fmt.Fprintf(e.stdout, "\nevents (%d)\n", len(tr.Events))
	w = tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	for _, ev := range tr.Events {
		job := ""
		if ev.JobID != nil {
			job = fmt.Sprintf("job %d", *ev.JobID)
			if ev.Attempt != nil {
				job += fmt.Sprintf(" #%d", *ev.Attempt)
			}
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\n", ts(&ev.At), ev.Event, ev.KeyID, ev.Actor, job, ev.Detail)
	}
	w.Flush()
}
