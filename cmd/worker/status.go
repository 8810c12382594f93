package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/pgerr"
)

// statusReport is what `worker status` prints; `--json` prints it as is.
type statusReport struct {
	// Mode is what the last worker to start chose (KEYWORKER_MODE=auto
	// chooses), or the configured mode when no worker has started yet.
	Mode          string     `json:"mode"`
	ModeReason    string     `json:"mode_reason,omitempty"`
	ModeChosenAt  *time.Time `json:"mode_chosen_at,omitempty"`
	Schema        string     `json:"schema"`
	OutboxSignups *int64     `json:"outbox_signups,omitempty"`
	OutboxOldestS *float64   `json:"outbox_oldest_age_seconds,omitempty"`

	Slot             string     `json:"slot,omitempty"`
	SlotExists       bool       `json:"slot_exists"`
	SlotActive       bool       `json:"slot_active"`
	SlotActivePID    *int32     `json:"slot_active_pid,omitempty"`
	SlotWALStatus    string     `json:"slot_wal_status,omitempty"`
	SlotConfirmedLSN string     `json:"slot_confirmed_flush_lsn,omitempty"`
	SlotLagBytes     *int64     `json:"slot_lag_bytes,omitempty"`
	Checkpoint       string     `json:"checkpoint_lsn,omitempty"`
	CheckpointAt     *time.Time `json:"checkpoint_updated_at,omitempty"`
	CheckpointAgeS   *float64   `json:"checkpoint_age_seconds,omitempty"`
	LastSignupAt     *time.Time `json:"last_signup_at,omitempty"`

	Queue           map[string]int64 `json:"queue"`
	OldestWaitingAt *time.Time       `json:"oldest_waiting_job_at,omitempty"`
	OldestWaitingS  *float64         `json:"oldest_waiting_job_age_seconds,omitempty"`

	SignupKeys    int64      `json:"signup_keys"`
	LastKeyAt     *time.Time `json:"last_key_at,omitempty"`
	PendingReveal int64      `json:"pending_reveals"`
	LastEvent     string     `json:"last_event,omitempty"`
	LastEventAt   *time.Time `json:"last_event_at,omitempty"`
}

func cmdStatus(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	if len(v.args) > 0 {
		return &usageError{fmt.Sprintf("worker status takes flags only, got %q", v.args)}
	}
	mode, err := v.oneOf("KEYWORKER_MODE", "auto", "logical", "listen")
	if err != nil {
		return &usageError{err.Error()}
	}
	pool, err := connect(ctx, e, v)
	if err != nil {
		return err
	}
	defer pool.Close()
	r, err := readStatus(ctx, pool, mode, v.str("KEYWORKER_SCHEMA"), v.str("KEYWORKER_SLOT"))
	if err != nil {
		return err
	}
	if fs.Lookup("json") != nil && fs.Lookup("json").Value.String() == "true" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printStatus(e, r)
	return nil
}

func statusFlags(fs *flag.FlagSet) {
	fs.Bool("json", false, "print the status as JSON")
}

func readStatus(ctx context.Context, pool *pgxpool.Pool, mode, schema, slot string) (*statusReport, error) {
	r := &statusReport{Mode: mode, Schema: schema, Queue: map[string]int64{}}
	sq := newStatusQueries(schema)
	var exists bool
	if err := pool.QueryRow(ctx, migratedQuery, pgx.Identifier{schema, "api_keys"}.Sanitize()).Scan(&exists); err != nil {
		return nil, fmt.Errorf("reading status: %w", err)
	}
	if !exists {
		return nil, fmt.Errorf("schema %s has no keyworker tables: run `worker migrate` (or check KEYWORKER_SCHEMA)", schema)
	}
	var chosen, reason *string
	if err := pool.QueryRow(ctx, sq.capture).Scan(&chosen, &reason, &r.ModeChosenAt); err != nil {
		if pgerr.Code(err) != pgerrcode.UndefinedColumn { // not migrated to 005 yet
			return nil, fmt.Errorf("reading the capture path: %w", err)
		}
	}
	if chosen != nil {
		r.Mode, r.ModeReason = *chosen, fieldNames.translate(*reason) // the daemon records Config field names
		mode = *chosen
	}
	if mode == "listen" {
		var n int64
		var age *float64
		err := pool.QueryRow(ctx, sq.outbox).Scan(&n, &age)
		if err != nil && pgerr.Code(err) != pgerrcode.UndefinedTable { // not migrated to 005 yet
			return nil, fmt.Errorf("reading the outbox: %w", err)
		}
		if err == nil {
			r.OutboxSignups, r.OutboxOldestS = &n, age
		}
	}
	if mode == "logical" {
		r.Slot = slot
		var pid *int32
		var walStatus *string
		err := pool.QueryRow(ctx, slotQuery, slot).Scan(&r.SlotActive, &pid, &walStatus, &r.SlotConfirmedLSN, &r.SlotLagBytes)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, fmt.Errorf("reading slot %s: %w", slot, err)
		default:
			r.SlotExists, r.SlotActivePID = true, pid
			if walStatus != nil {
				r.SlotWALStatus = *walStatus
			}
		}
		var at time.Time
		var age float64
		err = pool.QueryRow(ctx, sq.checkpoint, slot).Scan(&r.Checkpoint, &at, &age, &r.LastSignupAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, fmt.Errorf("reading checkpoint: %w", err)
		default:
			r.CheckpointAt, r.CheckpointAgeS = &at, &age
		}
	}
	rows, err := pool.Query(ctx, sq.queue)
	if err != nil {
		return nil, fmt.Errorf("reading queue depth: %w", err)
	}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		r.Queue[s] = n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var oldestAge *float64
	if err := pool.QueryRow(ctx, sq.oldestJob).Scan(&r.OldestWaitingAt, &oldestAge); err != nil {
		return nil, fmt.Errorf("reading oldest job: %w", err)
	}
	r.OldestWaitingS = oldestAge
	if err := pool.QueryRow(ctx, sq.signupKeys).Scan(&r.SignupKeys, &r.LastKeyAt); err != nil {
		return nil, fmt.Errorf("counting keys: %w", err)
	}
	if err := pool.QueryRow(ctx, sq.pendingReveals).Scan(&r.PendingReveal); err != nil {
		return nil, fmt.Errorf("counting pending reveals: %w", err)
	}
	var ev *string
	err = pool.QueryRow(ctx, sq.lastEvent).Scan(&ev, &r.LastEventAt)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("reading last event: %w", err)
	}
	if ev != nil {
		r.LastEvent = *ev
	}
	return r, nil
}

func printStatus(e env, r *statusReport) {
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	ts := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), time.Since(*t).Round(time.Second))
	}
	switch {
	case r.ModeReason != "":
		row("mode", "%s, chosen %s: %s", r.Mode, ts(r.ModeChosenAt), r.ModeReason)
	case r.Mode == "auto":
		row("mode", "auto: no worker has started yet (it chooses logical or listen mode at start)")
	default:
		row("mode", "%s (configured; no worker has started yet)", r.Mode)
	}
	row("schema", "%s", r.Schema)
	if r.OutboxSignups != nil {
		if r.OutboxOldestS != nil {
			row("outbox", "%d signups waiting for a worker, oldest %s old", *r.OutboxSignups, (time.Duration(*r.OutboxOldestS * float64(time.Second))).Round(time.Millisecond))
		} else {
			row("outbox", "empty: every signup is in a job")
		}
	}
	if r.Mode == "logical" {
		switch {
		case !r.SlotExists:
			row("slot", "%s: does not exist yet (worker run creates it)", r.Slot)
		default:
			holder := "inactive: no worker is streaming"
			if r.SlotActive && r.SlotActivePID != nil {
				holder = fmt.Sprintf("active (wal sender pid %d)", *r.SlotActivePID)
			}
			row("slot", "%s: %s, wal_status %s", r.Slot, holder, r.SlotWALStatus)
			if r.SlotLagBytes != nil {
				row("slot lag", "%d bytes behind the server's WAL (confirmed %s)", *r.SlotLagBytes, r.SlotConfirmedLSN)
			}
		}
		if r.CheckpointAt != nil {
			row("checkpoint", "%s, moved %s", r.Checkpoint, ts(r.CheckpointAt))
		}
		row("last signup seen", "%s", ts(r.LastSignupAt))
	}
	row("queue", "available %d, scheduled %d, running %d, retryable %d, completed %d, cancelled %d, discarded %d",
		r.Queue["available"], r.Queue["scheduled"], r.Queue["running"], r.Queue["retryable"], r.Queue["completed"], r.Queue["cancelled"], r.Queue["discarded"])
	if r.OldestWaitingAt != nil {
		row("oldest waiting job", "%s", ts(r.OldestWaitingAt))
	} else {
		row("oldest waiting job", "none waiting")
	}
	row("signup keys", "%d, last %s", r.SignupKeys, ts(r.LastKeyAt))
	row("waiting for pick-up", "%d", r.PendingReveal)
	if r.LastEvent != "" {
		row("last event", "%s %s", r.LastEvent, ts(r.LastEventAt))
	}
}
