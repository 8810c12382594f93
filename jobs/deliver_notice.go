package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/notify"
)

// eventTimeout bounds the writing of one audit event after a send, which
// runs even when the job's context has ended, so an outcome is not lost.
const eventTimeout = 10 * time.Second

// deliverNoticeWorker sends the notice of a new key to every sender, once
// per sender. Each outcome is recorded in key_events as it happens
// ('notified' or 'notify_discarded' with the sink, 'notify_failed' with the
// sink, error, try and retry delay); a sink with a 'notified' or
// 'notify_discarded' event for the key is never sent to again, so a retry
// re-sends only to the sinks that failed.
//
// Retries: a sink's *notify.RetryableError with a RetryAfter snoozes the job
// for the longest RetryAfter; without one the job fails and River's retry
// policy backs off. A snooze does not consume one of River's attempts
// (River decrements attempt and counts snoozes in metadata["snoozes"]), so
// the worker caps tries itself: attempt + snoozes may not exceed the job's
// MaxAttempts (Config.NoticeMaxAttempts). At the cap the failing sinks get
// 'notify_discarded' with the last error and the job ends: discarded by
// River when its attempts are used up, cancelled when snoozes made up the
// difference. A *notify.PermanentError discards that sink at once; when no
// sink is left to retry, the job is cancelled.
type deliverNoticeWorker struct {
	river.WorkerDefaults[DeliverNoticeArgs]
	d *deps
}

// sinkFailure is one sender's retryable failure.
type sinkFailure struct {
	sink       string
	err        error
	retryAfter time.Duration
}

func (w *deliverNoticeWorker) Work(ctx context.Context, job *river.Job[DeliverNoticeArgs]) error {
	d := w.d
	keyID := job.Args.KeyID
	log := d.logger.With("job_id", job.ID, "attempt", job.Attempt, "key_id", keyID)
	audit := keystore.Audit{JobID: job.ID, Attempt: job.Attempt, Actor: keystore.ActorWorker}
	skip := func(userID, reason string) error {
		log.InfoContext(ctx, "notice not sent", "user_id", userID, "reason", reason)
		return d.event(ctx, "skipped", keyID, userID, audit, map[string]any{"reason": reason, "job": KindDeliverNotice})
	}
	if len(d.cfg.Senders) == 0 {
		return skip("", ReasonNoSenders)
	}

	info, err := d.cfg.Store.Get(ctx, d.pool, keyID)
	if errors.Is(err, keystore.ErrNotFound) {
		// Deleted with its user (ON DELETE CASCADE), or never made.
		return skip("", ReasonKeyMissing)
	}
	if err != nil {
		return err
	}
	now := d.cfg.Store.Now()
	if st := info.Status(now); st != keys.StatusValid {
		return skip(info.UserID, "key_"+st.String())
	}
	var email *string
	var deleted bool
	err = d.pool.QueryRow(ctx, d.qUser, info.UserID).Scan(&email, &deleted)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return skip(info.UserID, ReasonUserMissing)
	case err != nil:
		return fmt.Errorf("reading the user of key %s: %w", keyID, err)
	case deleted:
		return skip(info.UserID, ReasonUserDeleted)
	}
	done, err := d.doneSinks(ctx, d.pool, keyID)
	if err != nil {
		return err
	}
	revealExpiresAt, pending, err := d.cfg.Store.PendingReveal(ctx, d.pool, keyID)
	if err != nil {
		return err
	}
	if !pending {
		// Picked up already, or purged: the notice still says a key was
		// made, with the window it had.
		revealExpiresAt = info.CreatedAt.Add(d.cfg.Store.RevealTTL())
	}
	n := notify.Notice{
		EventID:         "notice_" + keyID,
		KeyID:           keyID,
		UserID:          info.UserID,
		Prefix:          info.Prefix,
		Last4:           info.Last4,
		CreatedAt:       info.CreatedAt,
		ExpiresAt:       info.ExpiresAt,
		RevealURL:       d.cfg.RevealURL,
		RevealExpiresAt: revealExpiresAt,
	}
	if email != nil {
		n.Email = *email
	}

	snoozes := snoozeCount(job.Metadata)
	try := job.Attempt + snoozes
	var retry []sinkFailure
	var permanent []error
	for _, s := range d.cfg.Senders {
		sink := s.Name()
		if done[sink] {
			continue
		}
		err := s.Send(ctx, n)
		var perm *notify.PermanentError
		var temp *notify.RetryableError
		switch {
		case err == nil:
			log.InfoContext(ctx, "notice delivered", "sink", sink, "user_id", info.UserID)
			if err := d.event(ctx, "notified", keyID, info.UserID, audit, map[string]any{"sink": sink, "try": try}); err != nil {
				return err
			}
			d.emit(Event{Kind: EventNoticeSent, KeyID: keyID, UserID: info.UserID, Sink: sink})
		case errors.As(err, &perm):
			log.WarnContext(ctx, "notice discarded", "sink", sink, "user_id", info.UserID, "error", err.Error())
			permanent = append(permanent, err)
			if err := d.event(ctx, "notify_discarded", keyID, info.UserID, audit, map[string]any{
				"sink": sink, "reason": err.Error(), "try": try,
			}); err != nil {
				return err
			}
			d.emit(Event{Kind: EventNoticeDiscarded, KeyID: keyID, UserID: info.UserID, Sink: sink, Reason: err.Error()})
		default:
			f := sinkFailure{sink: sink, err: err}
			if errors.As(err, &temp) {
				f.retryAfter = temp.RetryAfter
			}
			retry = append(retry, f)
		}
	}

	if len(retry) == 0 {
		if len(permanent) > 0 {
			return river.JobCancel(errors.Join(permanent...))
		}
		return nil
	}
	errs := make([]error, len(retry))
	var snooze time.Duration
	for i, f := range retry {
		errs[i] = f.err
		snooze = max(snooze, f.retryAfter)
	}
	lastErr := errors.Join(errs...)

	if job.Attempt >= job.MaxAttempts || try >= job.MaxAttempts {
		for _, f := range retry {
			log.WarnContext(ctx, "notice discarded after the last try", "sink", f.sink, "user_id", info.UserID, "tries", try, "error", f.err.Error())
			if err := d.event(ctx, "notify_discarded", keyID, info.UserID, audit, map[string]any{
				"sink": f.sink, "reason": fmt.Sprintf("gave up after %d tries", try), "error": f.err.Error(), "try": try,
			}); err != nil {
				return err
			}
			d.emit(Event{Kind: EventNoticeDiscarded, KeyID: keyID, UserID: info.UserID, Sink: f.sink, Reason: f.err.Error()})
		}
		if job.Attempt >= job.MaxAttempts {
			return lastErr // River discards the job
		}
		return river.JobCancel(fmt.Errorf("giving up after %d tries (%d snoozed): %w", try, snoozes, lastErr))
	}

	retryIn := snooze
	if retryIn == 0 {
		// An estimate: River asks the same policy once Work returns.
		retryIn = max(time.Until(d.cfg.RetryPolicy.NextRetry(job.JobRow)), 0).Round(time.Millisecond)
	}
	for _, f := range retry {
		log.WarnContext(ctx, "notice delivery failed; will retry", "sink", f.sink, "user_id", info.UserID,
			"try", try, "retry_in", retryIn.String(), "error", f.err.Error())
		if err := d.event(ctx, "notify_failed", keyID, info.UserID, audit, map[string]any{
			"sink": f.sink, "error": f.err.Error(), "attempt": try, "retry_in": retryIn.String(),
		}); err != nil {
			return err
		}
		d.emit(Event{Kind: EventNoticeFailed, KeyID: keyID, UserID: info.UserID, Sink: f.sink, Reason: f.err.Error()})
	}
	if snooze > 0 {
		return river.JobSnooze(snooze)
	}
	return lastErr
}

// event records an audit event even when ctx has ended (the outcome of a
// send must not be lost to a job timeout).
func (d *deps) event(ctx context.Context, name, keyID, userID string, a keystore.Audit, detail map[string]any) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eventTimeout)
	defer cancel()
	if err := d.cfg.Store.EventTx(ctx, d.pool, name, keyID, userID, withDetail(a, detail)); err != nil {
		return fmt.Errorf("recording %s for key %s: %w", name, keyID, err)
	}
	return nil
}

// doneSinks returns the sinks that delivered or gave up on keyID.
func (d *deps) doneSinks(ctx context.Context, db keystore.Querier, keyID string) (map[string]bool, error) {
	rows, err := db.Query(ctx, d.qNotified, keyID)
	if err != nil {
		return nil, fmt.Errorf("reading the notices of key %s: %w", keyID, err)
	}
	sinks, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading the notices of key %s: %w", keyID, err)
	}
	done := make(map[string]bool, len(sinks))
	for _, s := range sinks {
		done[s] = true
	}
	return done, nil
}

// snoozeCount reads how many times River snoozed a job from its metadata
// ("snoozes"); 0 when absent or unreadable.
func snoozeCount(metadata []byte) int {
	var m struct {
		Snoozes int `json:"snoozes"`
	}
	_ = json.Unmarshal(metadata, &m)
	return m.Snoozes
}
