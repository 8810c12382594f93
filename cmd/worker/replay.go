package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keyworker/keyworker/jobs"
)

func replayFlags(fs *flag.FlagSet) {
	fs.String("since", "", "replay users created at or after this time (RFC 3339 or YYYY-MM-DD), or \"all\"; default: since keyworker was installed")
	fs.String("until", "", "replay users created before this time (RFC 3339 or YYYY-MM-DD)")
	fs.Bool("dry-run", false, "count the users without enqueuing anything")
	fs.Bool("json", false, "print the result as JSON")
}

func parseTime(name, raw string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, raw); err == nil {
			return t, nil
		}
	}
	return time.Time{}, &usageError{fmt.Sprintf("--%s=%q is not a time: use RFC 3339 (2026-01-02T15:04:05Z) or a date (2026-01-02)", name, raw)}
}

// cmdReplay is `worker replay`: it runs a reconcile now, over a window,
// from the command line (jobs.Reconcile), and prints its counts.
func cmdReplay(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	if len(v.args) > 0 {
		return &usageError{fmt.Sprintf("worker replay takes flags only, got %q", v.args)}
	}
	logger, err := newLogger(e, v)
	if err != nil {
		return err
	}
	table, err := tableFrom(v)
	if err != nil {
		return &usageError{err.Error()}
	}
	anon, err := v.boolean("KEYWORKER_INCLUDE_ANONYMOUS")
	if err != nil {
		return &usageError{err.Error()}
	}
	opts := jobs.ReconcileOptions{Schema: v.str("KEYWORKER_SCHEMA"), Table: table, IncludeAnonymous: anon, Logger: logger}
	switch raw := fs.Lookup("since").Value.String(); raw {
	case "":
	case "all":
		zero := time.Time{}
		opts.Since = &zero
	default:
		t, err := parseTime("since", raw)
		if err != nil {
			return err
		}
		opts.Since = &t
	}
	if raw := fs.Lookup("until").Value.String(); raw != "" {
		t, err := parseTime("until", raw)
		if err != nil {
			return err
		}
		opts.Until = &t
	}
	opts.DryRun = fs.Lookup("dry-run").Value.String() == "true"
	asJSON := fs.Lookup("json").Value.String() == "true"

	pool, err := connect(ctx, e, v)
	if err != nil {
		return err
	}
	defer pool.Close()

	tty := isTerminal(e.stderr)
	start := time.Now()
	if tty && !asJSON {
		opts.Progress = func(found, enqueued, total int) {
			fmt.Fprintf(e.stderr, "\r\033[K%s", progressBar(found, enqueued, total, time.Since(start)))
		}
	}
	res, err := jobs.Reconcile(ctx, pool, opts)
	if tty && !asJSON {
		fmt.Fprint(e.stderr, "\r\033[K")
	}
	if err != nil {
		return fmt.Errorf("replaying: %w", err)
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(map[string]any{
			"found": res.Found, "enqueued": res.Enqueued, "jobs": res.Jobs, "duplicates": res.Duplicates,
			"dry_run": opts.DryRun, "since": res.Since, "seconds": time.Since(start).Seconds(),
		})
	}
	since := "the beginning"
	if !res.Since.IsZero() {
		since = res.Since.Format(time.RFC3339)
	}
	if opts.DryRun {
		fmt.Fprintf(e.stdout, "dry run: %d eligible users created since %s have no signup key; nothing enqueued\n", res.Found, since)
		return nil
	}
	fmt.Fprintf(e.stdout, "replay: %d eligible users without a signup key since %s; %d users handed to %d create-keys jobs, %d already queued (%.1fs)\n",
		res.Found, since, res.Enqueued, res.Jobs, res.Duplicates, time.Since(start).Seconds())
	return nil
}

// progressBar draws replay's progress on a terminal: a bar of found against
// the count taken when the run began, and the running totals.
func progressBar(found, enqueued, total int, elapsed time.Duration) string {
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = min(float64(found)/float64(total), 1)
	}
	filled := int(frac * width)
	return fmt.Sprintf("[%s%s] %3d%%  %d of %d users, %d enqueued  %s",
		strings.Repeat("#", filled), strings.Repeat("-", width-filled), int(frac*100),
		found, total, enqueued, elapsed.Round(100*time.Millisecond))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && !strings.EqualFold(os.Getenv("TERM"), "dumb")
}
