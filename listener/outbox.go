package listener

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/users"
)

// OutboxTable is listen mode's outbox in keyworker's schema (migration 005):
// the trigger inserts each new user's id in the signup's transaction; the
// listener deletes rows in the transaction that enqueues their jobs.
const OutboxTable = "signup_outbox"

// outboxLockKey is the advisory lock a signup transaction tries before it
// notifies: one notifier in flight at a time per installation, so signups
// do not queue on PostgreSQL's notify lock (taken just before the commit
// and held to its end, one for the whole server). It is derived from the
// schema so two installations on one database do not share it; the
// function's replacement locks on the function's name.
func outboxLockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("keyworker outbox wake-up " + name))
	return int64(h.Sum64())
}

// outboxDrain takes rows from the outbox and enqueues their signups in
// the same transaction, batch rows at a time, until the outbox has fewer
// left. It returns how many signups it handed off.
type outboxDrain struct {
	pool     *pgxpool.Pool
	enqueuer Enqueuer
	take     string
	batch    int
	timeout  time.Duration
	// onBatch is called after each committed hand-off.
	onBatch func(signups []users.Signup, enqueued int, took time.Duration)
}

func newOutboxDrain(pool *pgxpool.Pool, cfg Config, onBatch func([]users.Signup, int, time.Duration)) *outboxDrain {
	return &outboxDrain{pool: pool, enqueuer: cfg.Enqueuer, take: outboxTakeSQL(cfg.Schema),
		batch: cfg.BatchMaxRows, timeout: cfg.HandOffTimeout, onBatch: onBatch}
}

func (d *outboxDrain) run(ctx context.Context) (int, error) {
	total := 0
	for {
		// One batch finishes after ctx ends (it is one transaction); a long
		// outbox does not hold up a stop.
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := d.once(ctx)
		total += n
		if err != nil || n < d.batch {
			return total, err
		}
	}
}

// once moves one batch from the outbox into jobs.
func (d *outboxDrain) once(ctx context.Context) (int, error) {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.timeout)
	defer cancel()
	started := time.Now()
	var signups []users.Signup
	var enqueued int
	err := pgx.BeginFunc(hctx, d.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(hctx, d.take, d.batch)
		if err != nil {
			return fmt.Errorf("taking signups from the outbox: %w", err)
		}
		signups, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (users.Signup, error) {
			var s users.Signup
			err := r.Scan(&s.UserID, &s.CreatedAt)
			return s, err
		})
		if err != nil {
			return fmt.Errorf("taking signups from the outbox: %w", err)
		}
		if len(signups) == 0 {
			return nil
		}
		enqueued, err = d.enqueuer.EnqueueSignupsTx(hctx, tx, signups)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("handing off signups from the outbox: %w", err)
	}
	if len(signups) > 0 && d.onBatch != nil {
		d.onBatch(signups, enqueued, time.Since(started))
	}
	return len(signups), nil
}

// replaceFunction creates or replaces keyworker's trigger function fn (a
// quoted, schema-qualified name) with body, unless it already has exactly
// that body. It is SECURITY DEFINER: it runs as its owner, keyworker's
// role, whoever inserts the user (Supabase Auth's supabase_auth_admin), so
// only that role needs to reach the outbox. The empty search_path makes
// every name in it schema-qualified. Replicas starting together take turns
// (a transaction-scoped advisory lock): two concurrent CREATE OR REPLACE
// of one function fail one of them with "tuple concurrently updated".
func replaceFunction(ctx context.Context, pool *pgxpool.Pool, fn, body string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, advisoryXactLockSQL, outboxLockKey(fn)); err != nil {
			return fmt.Errorf("waiting to replace %s: %w", fn, err)
		}
		var current *string
		var definer bool
		err := tx.QueryRow(ctx, functionSQL, fn+"()").Scan(&current, &definer)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("looking up %s: %w", fn, err)
		}
		if current != nil && *current == body && definer {
			return nil
		}
		if _, err := tx.Exec(ctx, replaceFunctionSQL(fn, body)); err != nil {
			return fmt.Errorf("creating %s: %w", fn, err)
		}
		// Trigger functions cannot be called directly, but nobody else needs
		// EXECUTE on it: the trigger's creator only needs it when creating.
		if _, err := tx.Exec(ctx, revokeFunctionSQL(fn)); err != nil {
			return fmt.Errorf("revoking PUBLIC's EXECUTE on %s: %w", fn, err)
		}
		return nil
	})
}

// retireOutbox, in logical mode, makes listen mode's trigger function (if
// it exists) a no-op and hands off what its outbox holds, so a switch from
// listen to logical mode neither loses signups nor lets the outbox grow.
func retireOutbox(ctx context.Context, pool *pgxpool.Pool, cfg Config, log *slog.Logger) error {
	fn := pgx.Identifier{cfg.Schema, TriggerFunction}.Sanitize()
	outbox := pgx.Identifier{cfg.Schema, OutboxTable}.Sanitize()
	// Only the roles that own them may change them; a worker that does not
	// (not the role that ran `worker migrate`) leaves them to one that does.
	var fnOwned, outboxUsable *bool
	if err := pool.QueryRow(ctx, outboxAccessSQL, fn+"()", outbox).Scan(&fnOwned, &outboxUsable); err != nil {
		return fmt.Errorf("looking up listen mode's trigger function and outbox: %w", err)
	}
	if fnOwned != nil && *fnOwned {
		if err := replaceFunction(ctx, pool, fn, retiredBody); err != nil {
			return err
		}
	} else if fnOwned != nil {
		log.Warn("listen mode's trigger function belongs to another role, so it keeps filling the outbox; run the worker as the role that ran `worker migrate`", "function", fn)
	}
	if outboxUsable == nil || !*outboxUsable {
		return nil
	}
	n, err := newOutboxDrain(pool, cfg, nil).run(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		log.Info("handed off the signups listen mode's outbox held", "signups", n)
	}
	return nil
}

// dropIdleSlot, in listen mode, drops logical mode's slot when no one
// streams from it: an abandoned slot keeps every WAL segment from then on
// and fills the disk. A slot in use means a replica runs logical mode;
// both capture every signup, which is safe but twice the work.
func dropIdleSlot(ctx context.Context, pool *pgxpool.Pool, slot string, log *slog.Logger) {
	var active bool
	err := pool.QueryRow(ctx, slotActiveSQL, slot).Scan(&active)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return
	case err != nil:
		log.Warn("looking for logical mode's replication slot", "slot", slot, "error", err)
	case active:
		log.Warn("a worker in logical mode streams from the slot while this one runs listen mode: both hand off every signup (safe, twice the work); run all replicas in one mode",
			"slot", slot)
	default:
		if _, err := pool.Exec(ctx, dropSlotSQL, slot); err != nil {
			log.Warn("logical mode's replication slot is unused and keeps WAL from being removed; drop it (SELECT pg_drop_replication_slot(...)) or start logical mode again",
				"slot", slot, "error", err)
			return
		}
		log.Info("dropped logical mode's unused replication slot, which kept WAL from being removed", "slot", slot)
	}
}
