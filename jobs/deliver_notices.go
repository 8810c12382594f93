package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/notify"
)

// eventTimeout bounds the writing of a notice job's audit events after its
// sends, which runs even when the job's context has ended, so that no
// outcome is lost.
const eventTimeout = 10 * time.Second

// sinkTripAfter is how many retryable failures in a row a sink may have in
// one attempt of a notice job before the job stops calling it for the rest
// of that attempt: a webhook that is down gets a handful of calls per
// attempt, not one per key. The keys not sent to it are retried with the
// others.
const sinkTripAfter = 8

// deliverNoticesWorker sends the created notices of a batch of signup
// keys, and deliverLifecycleNoticesWorker the notices of one event (the
// args' Type and Occurrence) for a batch of keys, both through
// deliverNotices: each key to every sender, at most
// Config.NoticeConcurrency sends at a time. The keys, their users (email,
// deleted) and the sinks already done with each key for that type and
// occurrence are read in one query; the outcomes are written in one
// statement: 'notified' or 'notify_discarded' with the sink and type,
// 'notify_failed' with the sink, type, error, try and retry delay,
// 'skipped' with the type and the reason for a key that is gone, or whose
// user is, or whose state rules the notice out (noticeSkipReason: created
// and expiring need the key valid, expiring also enabled; expired needs it
// not revoked; rotated, revoked and disabled go out whatever the state);
// each with the occurrence too when there is one. A sink with a 'notified'
// or 'notify_discarded' event of the type and occurrence for a key (an
// event without a type is a created notice's, as earlier versions wrote
// them; one without an occurrence is of occurrence "") is never sent that
// notice again, so a retry sends only what has not been delivered. The
// webhook-id of a key's notice is notify.OccurrenceEventID(type, key id,
// occurrence) on every try: "notice_<key id>" for created,
// "disabled_<key id>_<occurrence>" for a disable.
//
// Retries: when some sends failed with a *notify.RetryableError carrying a
// RetryAfter, the job snoozes for the longest one; other temporary failures
// return an error and River's retry policy backs off. A snooze does not use
// up one of River's attempts (River counts snoozes in metadata["snoozes"]),
// so the worker caps tries itself: attempt + snoozes may not exceed the
// job's MaxAttempts (Config.NoticeMaxAttempts). At the cap the failing sends
// get 'notify_discarded' with the last error. A *notify.PermanentError
// discards that key's sink at once. A job whose every send failed for good
// is cancelled; one with any delivery completes, its output listing what
// was discarded. River's batched completer completes notice jobs (their
// sends cannot share a transaction anyway).
type deliverNoticesWorker struct {
	river.WorkerDefaults[DeliverNoticesArgs]
	d *deps
}

func (w *deliverNoticesWorker) Work(ctx context.Context, job *river.Job[DeliverNoticesArgs]) error {
	return w.d.runNotices(ctx, job.JobRow, notify.EventCreated, "", job.Args.KeyIDs)
}

// deliverLifecycleNoticesWorker runs DeliverLifecycleNotices jobs: see
// deliverNoticesWorker.
type deliverLifecycleNoticesWorker struct {
	river.WorkerDefaults[DeliverLifecycleNoticesArgs]
	d *deps
}

func (w *deliverLifecycleNoticesWorker) Work(ctx context.Context, job *river.Job[DeliverLifecycleNoticesArgs]) error {
	return w.d.runNotices(ctx, job.JobRow, job.Args.Type, job.Args.Occurrence, job.Args.KeyIDs)
}

// runNotices is a notice job: deliverNotices, then its output recorded.
func (d *deps) runNotices(ctx context.Context, job *rivertype.JobRow, typ, occurrence string, keyIDs []string) error {
	out, err := d.deliverNotices(ctx, job, typ, occurrence, keyIDs)
	if err != nil {
		return err
	}
	if err := river.RecordOutput(ctx, out); err != nil {
		return fmt.Errorf("recording the output of job %d: %w", job.ID, err)
	}
	return nil
}

// deliverNoticeWorker runs the per-key jobs of older versions as a batch of
// one.
type deliverNoticeWorker struct {
	river.WorkerDefaults[DeliverNoticeArgs]
	d *deps
}

func (w *deliverNoticeWorker) Work(ctx context.Context, job *river.Job[DeliverNoticeArgs]) error {
	_, err := w.d.deliverNotices(ctx, job.JobRow, notify.EventCreated, "", []string{job.Args.KeyID})
	return err
}

// noticesOutput is a DeliverNotices or DeliverLifecycleNotices job's
// recorded output.
type noticesOutput struct {
	Type       string `json:"type"`
	Occurrence string `json:"occurrence,omitempty"`
	Keys       int    `json:"keys"`
	// Sent counts deliveries by sink in this attempt.
	Sent map[string]int `json:"sent,omitempty"`
	// AlreadyDone counts (key, sink) pairs done by an earlier attempt.
	AlreadyDone int `json:"already_done,omitempty"`
	// Discarded maps "<key id> <sink>" to why the notice was given up.
	Discarded map[string]string `json:"discarded,omitempty"`
	// Skipped maps key id to why no notice was sent.
	Skipped map[string]string `json:"skipped,omitempty"`
}

// noticeKey is one key of a notice batch as the database has it.
type noticeKey struct {
	id, userID, prefix, last4, source string
	exists, userExists                bool
	createdAt                         time.Time
	expiresAt, revokedAt, disabledAt  *time.Time
	revealExpiresAt                   *time.Time
	rotatedTo                         *string    // the replacing key, for rotated notices
	queuedAt                          *time.Time // key_notices' time, for notices other than created
	email                             *string
	deleted                           bool
	done                              []string
}

// sendResult is one (key, sink) send.
type sendResult struct {
	key  *noticeKey
	sink string
	err  error // nil: delivered
}

// noticeEvent is one key_events row a notice job writes.
type noticeEvent struct {
	name, keyID, userID string
	detail              map[string]any
}

// deliverNotices sends the notices of type typ and occurrence (see
// DeliverLifecycleNoticesArgs) of keyIDs.
func (d *deps) deliverNotices(ctx context.Context, job *rivertype.JobRow, typ, occurrence string, keyIDs []string) (noticesOutput, error) {
	out := noticesOutput{Type: typ, Occurrence: occurrence, Keys: len(keyIDs)}
	if !notify.KnownEventType(typ) {
		return out, river.JobCancel(fmt.Errorf("notice type %q is unknown (want one of %s)", truncate(typ, 40), strings.Join(notify.EventTypes(), ", ")))
	}
	var occurredAt *time.Time // the occurrence's time
	if occurrence != "" {
		if !repeatable(typ) {
			return out, river.JobCancel(fmt.Errorf("%s notices have no occurrence (it happens once per key), got %q", typ, truncate(occurrence, 40)))
		}
		at, err := occurrenceTime(occurrence)
		if err != nil {
			return out, river.JobCancel(fmt.Errorf("%s notices: %w", typ, err))
		}
		occurredAt = &at
	}
	audit := keystore.Audit{JobID: job.ID, Attempt: job.Attempt, Actor: keystore.ActorWorker}
	log := d.logger.With("job_id", job.ID, "attempt", job.Attempt, "type", typ)
	if occurrence != "" {
		log = log.With("occurrence", occurrence)
	}
	var events []noticeEvent
	// detail adds the type and the occurrence to an event's detail m.
	detail := func(m map[string]any) map[string]any {
		m["type"] = typ
		if occurrence != "" {
			m["occurrence"] = occurrence
		}
		return m
	}
	skip := func(keyID, userID, reason string) {
		if out.Skipped == nil {
			out.Skipped = map[string]string{}
		}
		out.Skipped[keyID] = reason
		ev := noticeEvent{"skipped", keyID, userID, detail(map[string]any{"reason": reason, "job": job.Kind})}
		if reason == "malformed_key_id" {
			ev.keyID, ev.detail["key_id_given"] = "", keyID
		}
		events = append(events, ev)
		log.InfoContext(ctx, "notice not sent", "key_id", keyID, "user_id", userID, "reason", reason)
	}

	var ids []string
	for _, id := range keyIDs {
		if !keyIDRe.MatchString(id) {
			skip(truncate(id, 40), "", "malformed_key_id")
			continue
		}
		ids = append(ids, id)
	}
	if len(d.cfg.Senders) == 0 {
		for _, id := range ids {
			skip(id, "", ReasonNoSenders)
		}
		return out, d.writeNoticeEvents(ctx, audit, events)
	}
	batch, err := d.loadNoticeKeys(ctx, typ, occurrence, ids)
	if err != nil {
		return out, err
	}

	now := d.cfg.Store.Now()
	type task struct {
		key    *noticeKey
		sender notify.Sender
	}
	var tasks []task
	for _, k := range batch {
		switch {
		case !k.exists:
			// Deleted with its user (ON DELETE CASCADE), or never made.
			skip(k.id, "", ReasonKeyMissing)
			continue
		case !k.userExists:
			skip(k.id, k.userID, ReasonUserMissing)
			continue
		case k.deleted:
			skip(k.id, k.userID, ReasonUserDeleted)
			continue
		}
		if reason := noticeSkipReason(typ, k, now); reason != "" {
			skip(k.id, k.userID, reason)
			continue
		}
		for _, s := range d.cfg.Senders {
			if slices.Contains(k.done, s.Name()) {
				out.AlreadyDone++
				continue
			}
			tasks = append(tasks, task{k, s})
		}
	}

	snoozes := snoozeCount(job.Metadata)
	try := job.Attempt + snoozes
	final := job.Attempt >= job.MaxAttempts || try >= job.MaxAttempts

	// Deliveries and permanent refusals are final: they are recorded as
	// they happen, every flushInterval, so that a crash in the middle of a
	// batch re-sends only what was sent in its last moments.
	rec := &outcomeRecorder{d: d, audit: audit}
	stopFlush := rec.flushEvery(ctx, flushInterval)

	// Send, at most NoticeConcurrency at once. A sink that keeps failing
	// trips: the rest of its sends in this attempt are not made.
	results := make([]sendResult, len(tasks))
	streak := make(map[string]*atomic.Int32, len(d.cfg.Senders))
	for _, s := range d.cfg.Senders {
		streak[s.Name()] = new(atomic.Int32)
	}
	sem := make(chan struct{}, d.cfg.NoticeConcurrency)
	var wg sync.WaitGroup
	for i, t := range tasks {
		results[i] = sendResult{key: t.key, sink: t.sender.Name()}
		run := streak[t.sender.Name()]
		if n := run.Load(); n >= sinkTripAfter {
			results[i].err = &notify.RetryableError{Err: fmt.Errorf("%s: not called: it failed %d times in a row in this attempt", t.sender.Name(), n)}
			continue
		}
		if ctx.Err() != nil {
			results[i].err = &notify.RetryableError{Err: fmt.Errorf("%s: not called: %w", t.sender.Name(), ctx.Err())}
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(r *sendResult, n notify.Notice, s notify.Sender) {
			defer func() { <-sem; wg.Done() }()
			r.err = s.Send(ctx, n)
			var perm *notify.PermanentError
			switch {
			case r.err == nil:
				run.Store(0)
				rec.add(noticeEvent{"notified", r.key.id, r.key.userID, detail(map[string]any{"sink": r.sink, "try": try})})
			case errors.As(r.err, &perm):
				rec.add(noticeEvent{"notify_discarded", r.key.id, r.key.userID, detail(map[string]any{"sink": r.sink, "reason": r.err.Error(), "try": try})})
			default:
				run.Add(1)
			}
		}(&results[i], d.notice(typ, occurrence, occurredAt, t.key), t.sender)
	}
	wg.Wait()
	stopFlush()

	var retryErrs []error
	var snooze time.Duration
	var delivered, permanent int
	for _, r := range results {
		var perm *notify.PermanentError
		var temp *notify.RetryableError
		switch {
		case r.err == nil:
			delivered++
			if out.Sent == nil {
				out.Sent = map[string]int{}
			}
			out.Sent[r.sink]++
		case errors.As(r.err, &perm):
			permanent++
			noteDiscard(&out, r, r.err.Error())
		default:
			if errors.As(r.err, &temp) {
				snooze = max(snooze, temp.RetryAfter)
			}
			if final {
				noteDiscard(&out, r, r.err.Error())
				events = append(events, noticeEvent{"notify_discarded", r.key.id, r.key.userID, detail(map[string]any{
					"sink": r.sink, "reason": fmt.Sprintf("gave up after %d tries", try), "error": r.err.Error(), "try": try,
				})})
				continue
			}
			retryErrs = append(retryErrs, r.err)
		}
	}
	retryIn := snooze
	if retryIn == 0 && len(retryErrs) > 0 {
		// An estimate: River asks the same policy once Work returns.
		retryIn = max(time.Until(d.cfg.RetryPolicy.NextRetry(job)), 0).Round(time.Millisecond)
	}
	for _, r := range results {
		var perm *notify.PermanentError
		if r.err == nil || errors.As(r.err, &perm) || final {
			continue
		}
		events = append(events, noticeEvent{"notify_failed", r.key.id, r.key.userID, detail(map[string]any{
			"sink": r.sink, "error": r.err.Error(), "attempt": try, "retry_in": retryIn.String(),
		})})
	}
	rec.add(events...)
	if err := rec.flushFinal(ctx); err != nil {
		return out, err
	}
	// Outcomes for metrics, as the events were written: deliveries and
	// discards, then failures to retry.
	for _, r := range results {
		var perm *notify.PermanentError
		switch {
		case r.err == nil:
			d.emit(Event{Kind: EventNoticeSent, KeyID: r.key.id, UserID: r.key.userID, Sink: r.sink, Type: typ})
		case errors.As(r.err, &perm) || final:
			d.emit(Event{Kind: EventNoticeDiscarded, KeyID: r.key.id, UserID: r.key.userID, Sink: r.sink, Type: typ, Reason: r.err.Error()})
		}
	}
	for _, r := range results {
		var perm *notify.PermanentError
		if r.err != nil && !errors.As(r.err, &perm) && !final {
			d.emit(Event{Kind: EventNoticeFailed, KeyID: r.key.id, UserID: r.key.userID, Sink: r.sink, Type: typ, Reason: r.err.Error()})
		}
	}

	attrs := []any{"keys", len(keyIDs), "delivered", delivered, "already_done", out.AlreadyDone,
		"discarded", len(out.Discarded), "to_retry", len(retryErrs), "skipped", len(out.Skipped), "try", try}
	if len(keyIDs) == 1 {
		attrs = append(attrs, "key_id", keyIDs[0])
	}
	if len(retryErrs) == 0 {
		log.InfoContext(ctx, "notices delivered", attrs...)
		if len(out.Discarded) == 0 || delivered > 0 || out.AlreadyDone > 0 {
			return out, nil
		}
		// Nothing of the job was delivered, now or before, and nothing is
		// left to try: the job failed.
		err := fmt.Errorf("giving up after %d tries (%d snoozed): %w", try, snoozes, firstErrors(results, 3))
		if job.Attempt >= job.MaxAttempts {
			return out, err // River discards the job
		}
		return out, river.JobCancel(err)
	}
	lastErr := fmt.Errorf("%d of %d notices failed; will retry in %s: %w", len(retryErrs), len(results), retryIn, errors.Join(firstN(retryErrs, 3)...))
	log.WarnContext(ctx, "notice delivery failed; will retry", append(attrs, "retry_in", retryIn.String(), "error", lastErr.Error())...)
	if snooze > 0 {
		return out, river.JobSnooze(snooze)
	}
	return out, lastErr
}

// noteDiscard puts a (key, sink) notice given up into the job's output.
func noteDiscard(out *noticesOutput, r sendResult, reason string) {
	if out.Discarded == nil {
		out.Discarded = map[string]string{}
	}
	out.Discarded[r.key.id+" "+r.sink] = reason
}

// flushInterval is how often a notice job records the outcomes it has.
const flushInterval = 50 * time.Millisecond

// outcomeRecorder collects a notice job's audit events from its senders
// and writes them in batches. It is safe for concurrent use.
type outcomeRecorder struct {
	d     *deps
	audit keystore.Audit
	mu    sync.Mutex
	queue []noticeEvent
	wmu   sync.Mutex // one write at a time, in order
}

func (r *outcomeRecorder) add(events ...noticeEvent) {
	r.mu.Lock()
	r.queue = append(r.queue, events...)
	r.mu.Unlock()
}

// flush writes what is queued; on failure the events stay queued.
func (r *outcomeRecorder) flush(ctx context.Context) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	batch := r.queue
	r.queue = nil
	r.mu.Unlock()
	if err := r.d.writeNoticeEvents(ctx, r.audit, batch); err != nil {
		r.mu.Lock()
		r.queue = append(batch, r.queue...)
		r.mu.Unlock()
		return err
	}
	return nil
}

// flushEvery flushes every interval until the returned stop is called.
// Failures are retried at the next tick (and by flushFinal).
func (r *outcomeRecorder) flushEvery(ctx context.Context, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = r.flush(ctx)
			}
		}
	}()
	return func() { close(done); <-finished }
}

// flushFinal writes what is left, trying three times: a delivery that is
// not recorded is sent again by the retry.
func (r *outcomeRecorder) flushFinal(ctx context.Context) error {
	var err error
	for i, pause := range []time.Duration{0, 200 * time.Millisecond, time.Second} {
		if i > 0 {
			time.Sleep(pause)
		}
		if err = r.flush(ctx); err == nil {
			return nil
		}
	}
	return err
}

// Reasons a notice is not sent, besides the user's and the key's absence.
const (
	reasonKeyRevoked    = "key_revoked"
	reasonKeyExpired    = "key_expired"
	reasonKeyDisabled   = "key_disabled"
	reasonKeyNotExpired = "key_not_expired"
)

// noticeSkipReason says why key k gets no notice of type typ at now, or ""
// when it gets one: created and expiring notices need the key valid
// (expiring also enabled), expired needs it not revoked (and expired);
// rotated, revoked and disabled notices go out whatever the key's state.
func noticeSkipReason(typ string, k *noticeKey, now time.Time) string {
	revoked := k.revokedAt != nil && !now.Before(*k.revokedAt)
	expired := k.expiresAt != nil && !now.Before(*k.expiresAt)
	switch typ {
	case notify.EventCreated, notify.EventExpiring:
		switch {
		case revoked:
			return reasonKeyRevoked
		case expired:
			return reasonKeyExpired
		case typ == notify.EventExpiring && k.disabledAt != nil:
			return reasonKeyDisabled
		}
	case notify.EventExpired:
		switch {
		case revoked:
			return reasonKeyRevoked
		case !expired:
			return reasonKeyNotExpired
		}
	}
	return ""
}

// notice builds the Notice of type typ and occurrence of one key; at is
// the occurrence's time (nil without one).
func (d *deps) notice(typ, occurrence string, at *time.Time, k *noticeKey) notify.Notice {
	n := notify.Notice{
		Type:       typ,
		EventID:    notify.OccurrenceEventID(typ, k.id, occurrence),
		KeyID:      k.id,
		UserID:     k.userID,
		Prefix:     k.prefix,
		Last4:      k.last4,
		CreatedAt:  k.createdAt.UTC(),
		ExpiresAt:  utcPtr(k.expiresAt),
		RevokedAt:  utcPtr(k.revokedAt),
		DisabledAt: utcPtr(k.disabledAt),
		RevealURL:  d.cfg.RevealURL,
	}
	if k.email != nil {
		n.Email = *k.email
	}
	// OccurredAt is the payload's timestamp: it must not change between
	// retries, so it comes from the database, never from the clock.
	switch typ {
	case notify.EventCreated:
		n.OccurredAt = n.CreatedAt
		// A signup key waits to be picked up; picked up already, or purged,
		// the notice still says so, with the window it had. A key made
		// another way had its plaintext shown when it was made.
		switch {
		case k.revealExpiresAt != nil:
			n.RevealExpiresAt = k.revealExpiresAt.UTC()
		case k.source == keystore.SourceSignup:
			n.RevealExpiresAt = k.createdAt.Add(d.cfg.Store.RevealTTL()).UTC()
		}
		if !n.RevealExpiresAt.IsZero() && d.cfg.PickupURL != "" {
			n.PickupURL = pickupURL(d.cfg.PickupURL, k.id)
		}
	case notify.EventExpired:
		if k.expiresAt != nil {
			n.OccurredAt = k.expiresAt.UTC()
		}
	case notify.EventDisabled:
		// This disable's time, not the key's current disabled_at: the key
		// may have been enabled (NULL) or disabled again since.
		if at != nil {
			n.DisabledAt = utcPtr(at)
			n.OccurredAt = at.UTC()
		}
	}
	if n.OccurredAt.IsZero() {
		// The time of the event's key_notices row; a job inserted without
		// one falls back on the key's own times.
		switch {
		case k.queuedAt != nil:
			n.OccurredAt = k.queuedAt.UTC()
		case typ == notify.EventRevoked && k.revokedAt != nil:
			n.OccurredAt = k.revokedAt.UTC()
		case typ == notify.EventDisabled && k.disabledAt != nil:
			n.OccurredAt = k.disabledAt.UTC()
		default:
			n.OccurredAt = n.CreatedAt
		}
	}
	if typ == notify.EventRotated && k.rotatedTo != nil {
		n.RotatedTo = *k.rotatedTo
	}
	return n
}

// loadNoticeKeys reads the keys of a batch, their users and the sinks done
// with each for notices of type typ and occurrence, in the order given.
func (d *deps) loadNoticeKeys(ctx context.Context, typ, occurrence string, ids []string) ([]*noticeKey, error) {
	rows, err := d.pool.Query(ctx, d.qNoticeKeys, ids, typ, occurrence)
	if err != nil {
		return nil, fmt.Errorf("reading the keys of %d notices: %w", len(ids), err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*noticeKey, error) {
		var k noticeKey
		var createdAt *time.Time
		err := r.Scan(&k.id, &k.exists, &k.userID, &k.prefix, &k.last4, &k.source, &createdAt, &k.expiresAt, &k.revokedAt,
			&k.disabledAt, &k.revealExpiresAt, &k.rotatedTo, &k.queuedAt, &k.userExists, &k.email, &k.deleted, &k.done)
		if createdAt != nil {
			k.createdAt = createdAt.UTC()
		}
		return &k, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the keys of %d notices: %w", len(ids), err)
	}
	return out, nil
}

// writeNoticeEvents writes a notice job's audit events in one statement,
// even when ctx has ended (an outcome must not be lost to a job timeout).
func (d *deps) writeNoticeEvents(ctx context.Context, a keystore.Audit, events []noticeEvent) error {
	if len(events) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eventTimeout)
	defer cancel()
	names := make([]string, len(events))
	keyIDs := make([]*string, len(events))
	userIDs := make([]*string, len(events))
	details := make([]string, len(events))
	for i, e := range events {
		names[i] = e.name
		if e.keyID != "" {
			keyIDs[i] = &e.keyID
		}
		if e.userID != "" {
			userIDs[i] = &e.userID
		}
		b, err := json.Marshal(e.detail)
		if err != nil {
			return fmt.Errorf("encoding the detail of audit event %s: %w", e.name, err)
		}
		details[i] = string(b)
	}
	var attempt any
	if a.Attempt != 0 {
		attempt = a.Attempt
	}
	if _, err := d.pool.Exec(ctx, d.qInsertEvents, d.cfg.Store.Now(), names, keyIDs, userIDs, details, a.JobID, attempt); err != nil {
		return fmt.Errorf("recording %d notice events: %w", len(events), err)
	}
	return nil
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

var keyIDRe = regexp.MustCompile(`^[0-9A-Za-z]{27}$`)

func firstN(errs []error, n int) []error {
	if len(errs) > n {
		return append(errs[:n:n], fmt.Errorf("and %d more", len(errs)-n))
	}
	return errs
}

func firstErrors(results []sendResult, n int) error {
	var errs []error
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	return errors.Join(firstN(errs, n)...)
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
