package jobs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/keyworker/keyworker/notify"
)

// EnqueueNoticeTx records, in tx, that event eventType (one of notify's
// Event constants, but not notify.EventDisabled) happened to the keys
// keyIDs, and inserts the DeliverLifecycleNotices job of the keys for
// which it had not been recorded yet (key_notices, ON CONFLICT DO
// NOTHING): each key gets exactly one notice per event type, however often
// the caller's transaction is retried or the same event reported again.
// Call it in the transaction that makes the change (rotation, revocation,
// a key made through the API), so that the notice is enqueued if and only
// if the change commits. A disable can happen to a key again after an
// enable: report it with EnqueueNoticeOnceTx.
//
// Keys that do not exist (deleted with their user) are left out. With no
// Config.Senders nothing is enqueued, but the events are still recorded,
// so senders added later do not send notices of old events. Jobs are
// inserted without River's insert notification (the notice queue's poll
// finds them, as it does the signup batches'). Created notices of signup
// keys do not go through here: the signup batch enqueues them itself.
//
// An unknown eventType, notify.EventDisabled or a malformed key id is an
// error, and inserts nothing.
func (c *Client) EnqueueNoticeTx(ctx context.Context, tx pgx.Tx, eventType string, keyIDs ...string) error {
	if eventType == notify.EventDisabled {
		return fmt.Errorf("enqueuing %s notices: a key can be disabled again after an enable, so each disable needs its own notice: call EnqueueNoticeOnceTx with the key's disabled_at", eventType)
	}
	_, err := c.d.enqueueNoticesTx(ctx, tx, eventType, "", keyIDs)
	return err
}

// EnqueueNoticeOnceTx is EnqueueNoticeTx for one occurrence of an event
// that can happen to a key again: notify.EventDisabled, the only one, with
// at the key's disabled_at as that disable set it (keystore.Info's
// DisabledAt). Each occurrence, told apart by at to the microsecond (the
// database's precision), gets exactly one notice, however often it is
// reported: its own key_notices row, its own job, and the webhook-id
// notify.OccurrenceEventID(eventType, keyID, OccurrenceOf(at)). The notice
// says the key was disabled at at, even if it is enabled again before the
// notice goes out.
//
// An eventType other than notify.EventDisabled, a zero at or a malformed
// key id is an error, and inserts nothing.
func (c *Client) EnqueueNoticeOnceTx(ctx context.Context, tx pgx.Tx, eventType, keyID string, at time.Time) error {
	if !repeatable(eventType) {
		if !notify.KnownEventType(eventType) {
			return fmt.Errorf("enqueuing notices: event type %q is unknown (want %s)", truncate(eventType, 40), notify.EventDisabled)
		}
		return fmt.Errorf("enqueuing %s notices: it happens once per key: call EnqueueNoticeTx (EnqueueNoticeOnceTx is for %s)", eventType, notify.EventDisabled)
	}
	if at.IsZero() {
		return fmt.Errorf("enqueuing the %s notice of key %s: its time is zero (pass the key's disabled_at)", eventType, truncate(keyID, 40))
	}
	_, err := c.d.enqueueNoticesTx(ctx, tx, eventType, OccurrenceOf(at), []string{keyID})
	return err
}

// OccurrenceOf returns the occurrence that EnqueueNoticeOnceTx records for
// an event at at: at in unix microseconds, in decimal. It is the last part
// of the notice's webhook-id and the occurrence of its key_events.
func OccurrenceOf(at time.Time) string { return strconv.FormatInt(at.UnixMicro(), 10) }

// occurrenceTime parses an occurrence made by OccurrenceOf.
func occurrenceTime(occurrence string) (time.Time, error) {
	us, err := strconv.ParseInt(occurrence, 10, 64)
	if err != nil || us <= 0 || strconv.FormatInt(us, 10) != occurrence {
		return time.Time{}, fmt.Errorf("occurrence %q is not a time in unix microseconds", truncate(occurrence, 40))
	}
	return time.UnixMicro(us).UTC(), nil
}

// repeatable says whether event type typ can happen to a key more than
// once, each occurrence with its own notice. Migration 007's check on
// key_notices.occurrence says the same.
func repeatable(typ string) bool { return typ == notify.EventDisabled }

// enqueueNoticesTx is EnqueueNoticeTx with an occurrence ("" for the
// events that happen once per key); it returns the keys recorded.
func (d *deps) enqueueNoticesTx(ctx context.Context, tx pgx.Tx, typ, occurrence string, keyIDs []string) ([]string, error) {
	if !notify.KnownEventType(typ) {
		return nil, fmt.Errorf("enqueuing notices: event type %q is unknown (want one of %s)", truncate(typ, 40), strings.Join(notify.EventTypes(), ", "))
	}
	for _, id := range keyIDs {
		if !keyIDRe.MatchString(id) {
			return nil, fmt.Errorf("enqueuing %s notices: key id %q is malformed (want 27 base62 characters)", typ, truncate(id, 40))
		}
	}
	if len(keyIDs) == 0 {
		return nil, nil
	}
	ids := slices.Clone(keyIDs)
	slices.Sort(ids) // one lock order for concurrent callers
	ids = slices.Compact(ids)
	rows, err := tx.Query(ctx, d.qEnqueueNotices, ids, typ, d.cfg.Store.Now(), occurrence)
	if err != nil {
		return nil, fmt.Errorf("enqueuing %s notices of %d keys: %w", typ, len(ids), err)
	}
	recorded, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("enqueuing %s notices of %d keys: %w", typ, len(ids), err)
	}
	if err := d.insertNoticeJobsTx(ctx, tx, typ, occurrence, recorded); err != nil {
		return nil, err
	}
	return recorded, nil
}

// insertNoticeJobsTx inserts the DeliverLifecycleNotices jobs of type typ
// and occurrence for ids, at most MaxBatchUsers keys per job, through the
// quiet inserter; nothing when there are no senders.
func (d *deps) insertNoticeJobsTx(ctx context.Context, tx pgx.Tx, typ, occurrence string, ids []string) error {
	if len(ids) == 0 || len(d.cfg.Senders) == 0 {
		return nil
	}
	slices.Sort(ids)
	params := make([]river.InsertManyParams, 0, (len(ids)+MaxBatchUsers-1)/MaxBatchUsers)
	for chunk := range slices.Chunk(ids, MaxBatchUsers) {
		params = append(params, river.InsertManyParams{
			Args:       DeliverLifecycleNoticesArgs{Type: typ, KeyIDs: chunk, Occurrence: occurrence},
			InsertOpts: &d.noticeOpts,
		})
	}
	if _, err := d.noticeInserter.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueuing the %s notices of %d keys: %w", typ, len(ids), err)
	}
	return nil
}

// lifecycleNoticesWorker enqueues the expiring and expired notices that
// are due, LifecycleBatchSize keys per transaction (the keys recorded in
// key_notices and their DeliverLifecycleNotices job together), until none is left:
//
//   - api_key.expiring (unless Config.ExpiringNoticeBefore is negative):
//     keys that expire within ExpiringNoticeBefore, are not disabled, will
//     not be revoked before they expire, and existed before their expiry
//     came that close;
//   - api_key.expired: keys whose expiry has passed, that are not revoked,
//     and that expired after migration 007 (installation's
//     lifecycle_notices_since) and within ExpiredNoticeWindow.
//
// The keys are found through the partial index on api_keys.expires_at. The
// delivery checks the key again when it sends (a key disabled since is not
// told it expires soon).
type lifecycleNoticesWorker struct {
	river.WorkerDefaults[LifecycleNoticesArgs]
	d *deps
}

// lifecycleOutput is a LifecycleNotices job's recorded output.
type lifecycleOutput struct {
	// Expiring and Expired count the keys whose notice this run enqueued.
	Expiring int `json:"expiring"`
	Expired  int `json:"expired"`
	// Jobs counts the DeliverLifecycleNotices jobs inserted (zero without senders).
	Jobs int `json:"jobs"`
}

func (w *lifecycleNoticesWorker) Work(ctx context.Context, job *river.Job[LifecycleNoticesArgs]) error {
	d := w.d
	start := time.Now()
	now := d.cfg.Store.Now()
	var out lifecycleOutput
	var err error
	if d.cfg.ExpiringNoticeBefore > 0 {
		if out.Expiring, err = d.scanLifecycle(ctx, notify.EventExpiring, d.qExpiring, &out.Jobs, now, now.Add(d.cfg.ExpiringNoticeBefore)); err != nil {
			return err
		}
	}
	if out.Expired, err = d.scanLifecycle(ctx, notify.EventExpired, d.qExpired, &out.Jobs, now, now.Add(-ExpiredNoticeWindow)); err != nil {
		return err
	}
	if err := river.RecordOutput(ctx, out); err != nil {
		return fmt.Errorf("recording the lifecycle scan's output: %w", err)
	}
	if out.Expiring+out.Expired > 0 {
		d.logger.InfoContext(ctx, "lifecycle notices enqueued", "job_id", job.ID, "expiring", out.Expiring,
			"expired", out.Expired, "jobs", out.Jobs, "duration", time.Since(start).Round(time.Millisecond).String())
	}
	return nil
}

// scanLifecycle runs q (expiring or expired) until it records fewer than
// LifecycleBatchSize keys, one transaction per batch with its notice job,
// and returns how many keys it recorded.
func (d *deps) scanLifecycle(ctx context.Context, typ, q string, jobs *int, now, bound time.Time) (int, error) {
	total := 0
	for {
		var ids []string
		err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, q, now, bound, LifecycleBatchSize)
			if err != nil {
				return err
			}
			if ids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			return d.insertNoticeJobsTx(ctx, tx, typ, "", ids)
		})
		if err != nil {
			return total, fmt.Errorf("looking for %s notices to send: %w", typ, err)
		}
		total += len(ids)
		if len(ids) > 0 && len(d.cfg.Senders) > 0 {
			*jobs += (len(ids) + MaxBatchUsers - 1) / MaxBatchUsers
		}
		if len(ids) < LifecycleBatchSize {
			return total, nil
		}
	}
}
