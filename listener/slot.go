package listener

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/internal/pgerr"
)

// slotInfo is the slot's row in pg_replication_slots.
type slotInfo struct {
	database, plugin, slotType, walStatus string
	active                                bool
	activePID                             int32
	confirmed                             pglogrepl.LSN
}

func (l *Logical) querySlot(ctx context.Context) (*slotInfo, error) {
	var s slotInfo
	var confirmed string
	err := l.pool.QueryRow(ctx, slotSQL, l.cfg.SlotName).Scan(
		&s.database, &s.plugin, &s.slotType, &s.walStatus, &s.active, &s.activePID, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up replication slot %s: %w", l.cfg.SlotName, err)
	}
	if s.confirmed, err = pglogrepl.ParseLSN(confirmed); err != nil {
		return nil, fmt.Errorf("parsing the confirmed position of slot %s: %w", l.cfg.SlotName, err)
	}
	return &s, nil
}

func (l *Logical) checkSlotOwnership(s *slotInfo) error {
	if s.slotType == "logical" && s.plugin == "pgoutput" && s.database == l.facts.database {
		return nil
	}
	return &PreflightError{Kind: ErrSlotConflict,
		Detail: fmt.Sprintf("slot %s is a %s slot with plugin %q on database %q; keyworker needs a logical pgoutput slot on %q",
			l.cfg.SlotName, s.slotType, s.plugin, s.database, l.facts.database),
		Fix: "slot names are cluster-wide: give this installation another slot name (SlotName), or drop that slot if nothing uses it"}
}

// readCheckpoint returns the checkpoint row's LSN and whether the row
// exists.
func (l *Logical) readCheckpoint(ctx context.Context, db queryer) (pglogrepl.LSN, bool, error) {
	var text string
	err := db.QueryRow(ctx, l.ckSQL.read, l.cfg.SlotName).Scan(&text)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the replication checkpoint: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return 0, false, fmt.Errorf("parsing the replication checkpoint %q: %w", text, err)
	}
	return lsn, true, nil
}

// slotStart is where a session starts: our checkpoint (replays at or below
// it are skipped) and the position the server already has confirmed.
type slotStart struct {
	checkpoint, confirmed pglogrepl.LSN
}

// ensureSlot makes sure the slot exists and is usable, recreating it (and
// enqueuing a reconcile) when it is missing or invalidated.
//
// A checkpoint row that is absent or at 0/0 means a reconcile is owed: the
// slot is new, or is being recreated. The row is set to 0/0 before a lost
// slot is replaced, and set to the new slot's position in the same
// transaction that enqueues the reconcile, so a crash anywhere in between
// still ends in exactly that transaction on the next start.
func (l *Logical) ensureSlot(ctx context.Context) (slotStart, error) {
	ck, hasRow, err := l.readCheckpoint(ctx, l.pool)
	if err != nil {
		return slotStart{}, err
	}
	slot, err := l.querySlot(ctx)
	if err != nil {
		return slotStart{}, err
	}
	if slot != nil {
		if err := l.checkSlotOwnership(slot); err != nil {
			return slotStart{}, err
		}
	}
	var reason string
	switch {
	case slot != nil && slot.walStatus == "lost":
		reason = fmt.Sprintf("replication slot %s was invalidated (wal_status lost: the server removed WAL it still needed, see max_slot_wal_keep_size); it was dropped and recreated", l.cfg.SlotName)
		l.log.Error("REPLICATION SLOT INVALIDATED: dropping and recreating it; signups committed since the checkpoint reach keys through a reconcile",
			"checkpoint", ck.String())
		if err := l.owe(ctx); err != nil {
			return slotStart{}, err
		}
		// Only while it is still the lost one: another replica may have
		// replaced it a moment ago.
		if _, err := l.pool.Exec(ctx, dropLostSlotSQL, l.cfg.SlotName); err != nil && pgerr.Code(err) != pgerrcode.UndefinedObject {
			return slotStart{}, fmt.Errorf("dropping invalidated replication slot %s: %w", l.cfg.SlotName, err)
		}
		slot = nil
	case slot != nil:
		if hasRow && ck != 0 {
			return slotStart{checkpoint: ck, confirmed: slot.confirmed}, nil
		}
		reason = fmt.Sprintf("replication slot %s had no checkpoint (first start, or a restart while the slot was being created)", l.cfg.SlotName)
	case hasRow && ck != 0:
		reason = fmt.Sprintf("replication slot %s was missing (dropped while keyworker was not streaming) and was recreated", l.cfg.SlotName)
		l.log.Error("REPLICATION SLOT MISSING: recreating it; signups committed while it was missing reach keys through a reconcile",
			"checkpoint", ck.String())
		if err := l.owe(ctx); err != nil {
			return slotStart{}, err
		}
	default:
		reason = fmt.Sprintf("replication slot %s created (first start, or after an interrupted recreation): catch signups made before it existed", l.cfg.SlotName)
	}
	if slot == nil {
		created, err := l.createSlot(ctx)
		if err != nil {
			return slotStart{}, err
		}
		if !created {
			// Another replica created it a moment ago; it owes the
			// reconcile, but whoever gets there first pays it.
			if slot, err = l.querySlot(ctx); err != nil {
				return slotStart{}, err
			}
			if slot == nil {
				return slotStart{}, fmt.Errorf("replication slot %s vanished while it was being created", l.cfg.SlotName)
			}
		} else {
			l.st.update(func(s *Status) { s.SlotsCreated++ })
			if slot, err = l.querySlot(ctx); err != nil {
				return slotStart{}, err
			}
			if slot == nil {
				return slotStart{}, fmt.Errorf("replication slot %s vanished right after it was created", l.cfg.SlotName)
			}
		}
	}
	ck, hasRow, err = l.readCheckpoint(ctx, l.pool)
	if err != nil {
		return slotStart{}, err
	}
	if hasRow && ck != 0 {
		return slotStart{checkpoint: ck, confirmed: slot.confirmed}, nil
	}
	if err := l.reconcile(ctx, reason, slot.confirmed); err != nil {
		return slotStart{}, err
	}
	return slotStart{checkpoint: slot.confirmed, confirmed: slot.confirmed}, nil
}

// owe records that a reconcile is owed by setting the checkpoint to 0/0.
func (l *Logical) owe(ctx context.Context) error {
	_, err := l.pool.Exec(ctx, l.ckSQL.owe, l.cfg.SlotName)
	if err != nil {
		return fmt.Errorf("marking the checkpoint of slot %s for a reconcile: %w", l.cfg.SlotName, err)
	}
	return nil
}

// reconcile pays an owed reconcile: in one transaction it enqueues it and
// moves the checkpoint to the slot's position. When another replica paid
// it first, it does nothing.
func (l *Logical) reconcile(ctx context.Context, reason string, at pglogrepl.LSN) error {
	paid := false
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, l.ckSQL.pay, l.cfg.SlotName, at.String())
		if err != nil {
			return fmt.Errorf("moving the checkpoint to the new slot: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		if err := l.cfg.Enqueuer.EnqueueReconcileTx(ctx, tx, reason); err != nil {
			return fmt.Errorf("enqueuing a reconcile: %w", err)
		}
		paid = true
		return nil
	})
	if err != nil {
		return err
	}
	if paid {
		l.st.update(func(s *Status) { s.Reconciles++; s.Checkpoint = at })
		l.log.Info("reconcile enqueued", "lsn", at.String(), "reason", reason)
	}
	return nil
}

// createSlot creates the permanent slot. It reports false when the slot
// already exists (another replica made it).
func (l *Logical) createSlot(ctx context.Context) (bool, error) {
	var lsn string
	err := l.pool.QueryRow(ctx, createSlotSQL, l.cfg.SlotName).Scan(&lsn)
	switch pgerr.Code(err) {
	case "":
		if err != nil {
			return false, fmt.Errorf("creating replication slot %s: %w", l.cfg.SlotName, err)
		}
		l.log.Info("replication slot created", "lsn", lsn)
		return true, nil
	case pgerrcode.DuplicateObject:
		return false, nil
	case pgerrcode.ConfigurationLimitExceeded:
		return false, &PreflightError{Kind: ErrNoFreeSlot, Detail: fmt.Sprintf("could not create slot %s: all replication slots are taken", l.cfg.SlotName),
			Fix: "drop an unused slot (SELECT pg_drop_replication_slot(name)) or raise max_replication_slots and restart PostgreSQL", Cause: err}
	case pgerrcode.InsufficientPrivilege:
		return false, &PreflightError{Kind: ErrNoReplication, Detail: fmt.Sprintf("could not create slot %s", l.cfg.SlotName),
			Fix: "give the role REPLICATION (ALTER ROLE ... WITH REPLICATION, as a superuser)", Cause: err}
	}
	return false, fmt.Errorf("creating replication slot %s: %w", l.cfg.SlotName, err)
}

// waitSlotFree returns once the slot is no longer active (or gone), polling
// every StandbyPollInterval.
func (l *Logical) waitSlotFree(ctx context.Context) error {
	for {
		if err := sleep(ctx, l.cfg.StandbyPollInterval); err != nil {
			return err
		}
		s, err := l.querySlot(ctx)
		if err != nil {
			return err
		}
		if s == nil || !s.active {
			return nil
		}
	}
}
