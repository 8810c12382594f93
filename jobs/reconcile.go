package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/keyworker/keyworker/users"
)

// ReconcileOptions configures Reconcile, the reconcile run from outside a
// job (`worker replay`). The Reconcile job takes the same options from
// Config and its ReconcileArgs.
type ReconcileOptions struct {
	// Schema holds keyworker's and River's tables. Defaults to DefaultSchema.
	Schema string
	// Table is the users table. Empty fields take users.Table's defaults.
	Table users.Table
	// IncludeAnonymous admits anonymous users.
	IncludeAnonymous bool
	// Since admits users created at or after it. Nil means the installation
	// time (users.InstalledAt); a pointer to the zero time means every user.
	Since *time.Time
	// Until, when set, admits only users created before it.
	Until *time.Time
	// DryRun counts the users without enqueuing anything.
	DryRun bool
	// PageSize is how many users are read and enqueued per transaction.
	// Defaults to ReconcilePageSize (1000).
	PageSize int
	// CreateKeyMaxAttempts is the jobs' max attempts. Defaults to
	// DefaultCreateKeyMaxAttempts.
	CreateKeyMaxAttempts int
	// Progress, when set, is called after each page with the running
	// totals, and total: how many users there were to find when the run
	// began (counted first, with one extra read of the users table, only
	// when Progress is set). Signups during the run can make found exceed
	// total.
	Progress func(found, enqueued, total int)
	// Logger receives one line per run. Defaults to discarding.
	Logger *slog.Logger
}

// ReconcileResult counts what a reconcile did, run by Reconcile or as a
// Reconcile job (whose recorded output holds the same JSON fields).
type ReconcileResult struct {
	// Found is how many eligible users without a signup key there were.
	Found int `json:"found"`
	// Enqueued is how many users were handed to new CreateKeys jobs.
	Enqueued int `json:"enqueued"`
	// Jobs is how many CreateKeys jobs were inserted (one per page).
	Jobs int `json:"jobs"`
	// Duplicates is how many users were already in a CreateKeys job
	// waiting, running or retrying.
	Duplicates int `json:"duplicates"`
	// Since is the lower bound used (zero: none).
	Since time.Time `json:"since"`
}

// Reconcile finds every eligible user without a signup key (created in
// [Since, Until), not deleted, not anonymous unless IncludeAnonymous) and
// hands them to CreateKeys jobs, one job per page of PageSize users (one
// transaction per page), through the same code as the Reconcile job
// (periodic, or asked for by a listener source). Users already in a
// CreateKeys job yet to finish count as Duplicates; running it twice
// enqueues nothing new. It needs no running Client: jobs wait for a worker.
// `worker replay` runs it.
func Reconcile(ctx context.Context, pool *pgxpool.Pool, opts ReconcileOptions) (ReconcileResult, error) {
	opts.Schema = orDefault(opts.Schema, DefaultSchema)
	opts.Table = opts.Table.WithDefaults()
	opts.CreateKeyMaxAttempts = orDefault(opts.CreateKeyMaxAttempts, DefaultCreateKeyMaxAttempts)
	if err := checkEnqueuerConfig(opts.Schema, opts.CreateKeyMaxAttempts); err != nil {
		return ReconcileResult{}, fmt.Errorf("reconciling: %w", err)
	}
	if err := opts.Table.Validate(); err != nil {
		return ReconcileResult{}, fmt.Errorf("reconciling: %w", err)
	}
	rc, err := insertOnlyClient(pool, opts.Schema)
	if err != nil {
		return ReconcileResult{}, err
	}
	start := time.Now()
	res, err := reconcilePages(ctx, pool, newEnqueuer(rc, opts.CreateKeyMaxAttempts, opts.Schema), opts, "replay")
	if opts.Logger != nil {
		attrs := []any{"component", "jobs", "dry_run", opts.DryRun, "found", res.Found, "enqueued", res.Enqueued,
			"duplicates", res.Duplicates, "since", res.Since, "duration", time.Since(start).Round(time.Millisecond).String()}
		// The messages name the command that runs this, `worker replay`.
		if err != nil {
			opts.Logger.ErrorContext(ctx, "replay failed", append(attrs, "error", err.Error())...)
		} else {
			opts.Logger.InfoContext(ctx, "replayed", attrs...)
		}
	}
	return res, err
}

// reconcilePages is the reconcile itself, the one page loop that both
// Reconcile and the Reconcile job run: it pages through
// users.Table.WithoutKey and hands each page, less the users already in a
// pending CreateKeys job, to e in one transaction. source is recorded in
// the jobs it makes.
func reconcilePages(ctx context.Context, pool *pgxpool.Pool, e *Enqueuer, opts ReconcileOptions, source string) (ReconcileResult, error) {
	if opts.PageSize <= 0 || opts.PageSize > MaxBatchUsers {
		opts.PageSize = ReconcilePageSize
	}
	var res ReconcileResult
	if opts.Since == nil {
		at, err := users.InstalledAt(ctx, pool, opts.Schema)
		if err != nil {
			return res, err
		}
		res.Since = at
	} else {
		res.Since = *opts.Since
	}
	elig := users.Eligibility{Since: res.Since, IncludeAnonymous: opts.IncludeAnonymous}
	if opts.Until != nil {
		elig.Until = *opts.Until
	}
	total := 0
	if opts.Progress != nil {
		n, err := opts.Table.CountWithoutKey(ctx, pool, opts.Schema, elig)
		if err != nil {
			return res, err
		}
		total = n
		opts.Progress(0, 0, total)
	}
	after := ""
	for {
		page, err := opts.Table.WithoutKey(ctx, pool, opts.Schema, elig, after, opts.PageSize)
		if err != nil {
			return res, err
		}
		res.Found += len(page)
		if len(page) > 0 && !opts.DryRun {
			ids := make([]string, len(page))
			for i, m := range page {
				ids[i] = m.UserID
			}
			var inserted, dups int
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				fresh, queued, err := e.withoutPending(ctx, tx, ids)
				if err != nil {
					return err
				}
				inserted, dups, err = e.enqueueUsersTx(ctx, tx, fresh, source)
				dups += queued
				return err
			})
			if err != nil {
				return res, err
			}
			res.Enqueued += inserted
			res.Duplicates += dups
			if inserted > 0 {
				res.Jobs += (inserted + MaxBatchUsers - 1) / MaxBatchUsers
			}
		}
		if opts.Progress != nil {
			opts.Progress(res.Found, res.Enqueued, total)
		}
		if len(page) < opts.PageSize {
			return res, nil
		}
		after = page[len(page)-1].UserID
	}
}

// reconcileWorker runs ReconcileArgs: reconcilePages inside a job, with the
// counts recorded as the job's output (River UI shows them) and logged.
type reconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	d *deps
}

func (w *reconcileWorker) Timeout(*river.Job[ReconcileArgs]) time.Duration { return ReconcileTimeout }

// reconcileOutput is the recorded output of a Reconcile job.
type reconcileOutput struct {
	Reason string     `json:"reason"`
	DryRun bool       `json:"dry_run,omitempty"`
	Until  *time.Time `json:"until,omitempty"`
	ReconcileResult
}

func (w *reconcileWorker) Work(ctx context.Context, job *river.Job[ReconcileArgs]) error {
	d := w.d
	start := time.Now()
	e := newEnqueuer(river.ClientFromContext[pgx.Tx](ctx), d.cfg.CreateKeyMaxAttempts, d.cfg.Schema)
	res, err := reconcilePages(ctx, d.pool, e, ReconcileOptions{
		Schema:           d.cfg.Schema,
		Table:            d.cfg.Table,
		IncludeAnonymous: d.cfg.IncludeAnonymous,
		Since:            job.Args.Since,
		Until:            job.Args.Until,
		DryRun:           job.Args.DryRun,
	}, job.Args.Reason)
	if err != nil {
		return fmt.Errorf("reconciling (%s): %w", job.Args.Reason, err)
	}
	if err := river.RecordOutput(ctx, reconcileOutput{Reason: job.Args.Reason, DryRun: job.Args.DryRun, Until: job.Args.Until, ReconcileResult: res}); err != nil {
		return fmt.Errorf("recording the reconcile's output: %w", err)
	}
	d.emit(Event{Kind: EventReconcileFound, Count: res.Found, Enqueued: res.Enqueued})
	level := slog.LevelDebug
	if res.Found > 0 {
		level = slog.LevelInfo
	}
	d.logger.Log(ctx, level, "reconciled", "job_id", job.ID, "reason", job.Args.Reason, "dry_run", job.Args.DryRun,
		"found", res.Found, "enqueued", res.Enqueued, "duplicates", res.Duplicates,
		"since", res.Since, "duration", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// purgeRevealsWorker deletes sealed secrets past their pick-up window.
type purgeRevealsWorker struct {
	river.WorkerDefaults[PurgeRevealsArgs]
	d *deps
}

func (w *purgeRevealsWorker) Work(ctx context.Context, job *river.Job[PurgeRevealsArgs]) error {
	n, err := w.d.cfg.Store.PurgeExpiredReveals(ctx, w.d.pool)
	if err != nil {
		return err
	}
	if err := river.RecordOutput(ctx, map[string]int{"purged": n}); err != nil {
		return fmt.Errorf("recording the purge's output: %w", err)
	}
	if n > 0 {
		w.d.logger.InfoContext(ctx, "expired reveals purged", "job_id", job.ID, "purged", n)
	}
	return nil
}
