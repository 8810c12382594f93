package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/users"
)

// Reasons recorded in 'skipped' events.
const (
	ReasonUserMissing   = users.ReasonMissing
	ReasonUserDeleted   = users.ReasonDeleted
	ReasonUserAnonymous = users.ReasonAnonymous
	ReasonKeyExists     = keystore.OutcomeKeyExists
	ReasonMalformedUser = keystore.OutcomeMalformed
	ReasonKeyMissing    = "key_missing"
	ReasonNoSenders     = "no_senders"
)

// createKeysWorker makes the signup keys of a batch of users. In one
// transaction: keystore.CreateSignupKeysTx (one statement: the users looked
// up, keys inserted for the eligible ones without a key, their sealed
// secrets, one audit event per user naming this job) and the DeliverNotices
// job for exactly the keys inserted. River's batched completer completes the
// job after the commit; a crash in between runs the job again, which finds
// every key made (key_exists) and makes nothing, not even a second notice.
type createKeysWorker struct {
	river.WorkerDefaults[CreateKeysArgs]
	d *deps
}

func (w *createKeysWorker) Work(ctx context.Context, job *river.Job[CreateKeysArgs]) error {
	// Users found by a reconcile (any source but "signup": periodic,
	// requested, `worker replay`) were visible when found: one that is
	// missing now was deleted. Only the stream's can be early.
	recheck := job.Args.Source == "" || job.Args.Source == "signup"
	out, err := w.d.createKeys(ctx, job.ID, job.Attempt, KindCreateKeys, job.Args.UserIDs, recheck)
	if err != nil {
		return err
	}
	if err := river.RecordOutput(ctx, out); err != nil {
		return fmt.Errorf("recording the output of job %d: %w", job.ID, err)
	}
	return nil
}

// createKeyWorker runs the per-user jobs of older versions as a batch of
// one.
type createKeyWorker struct {
	river.WorkerDefaults[CreateKeyArgs]
	d *deps
}

func (w *createKeyWorker) Work(ctx context.Context, job *river.Job[CreateKeyArgs]) error {
	_, err := w.d.createKeys(ctx, job.ID, job.Attempt, KindCreateKey, []string{job.Args.UserID}, true)
	return err
}

// createKeysOutput is a CreateKeys job's recorded output (River UI shows
// it): what became of each user.
type createKeysOutput struct {
	Users int `json:"users"`
	// Created maps user id to the new key's id.
	Created map[string]string `json:"created,omitempty"`
	// Skipped maps user id to why no key was made (key_exists,
	// user_missing, user_deleted, user_anonymous, malformed_user_id).
	Skipped map[string]string `json:"skipped,omitempty"`
	// NoticeJobIDs are the DeliverNotices jobs of the new keys (one per
	// round; a second round looks again for users not yet visible).
	NoticeJobIDs []int64 `json:"notice_job_ids,omitempty"`
}

// missingRechecks are the pauses before a batch looks again for users it
// could not see. Logical decoding streams a commit as soon as its WAL record
// is flushed, a moment before other transactions see the row (measured here:
// a batch 14 ms behind a signup on a loaded 2-core machine found no such
// user); a user still missing after the last pause was deleted, and is
// recorded as user_missing. Read only.
var missingRechecks = [...]time.Duration{50 * time.Millisecond, 250 * time.Millisecond, time.Second, 3 * time.Second}

// recheckMargin is the time a pause must leave before the job's deadline
// for the final round.
const recheckMargin = time.Second

// createKeys is the batch: keys, sealed secrets, events and the notice job
// in one transaction per round, then metrics and one log line. With
// recheck, users the batch cannot see are looked for again, in a round of
// their own, after each of missingRechecks (fewer when the job's deadline
// is near).
func (d *deps) createKeys(ctx context.Context, jobID int64, attempt int, kind string, userIDs []string, recheck bool) (createKeysOutput, error) {
	started := time.Now()
	out := createKeysOutput{Users: len(userIDs)}
	var nCreated, nSkipped int
	pending := userIDs
	for round := 0; ; round++ {
		final := !recheck || round == len(missingRechecks)
		if !final {
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < missingRechecks[round]+recheckMargin {
				final = true
			}
		}
		got, noticeJob, err := d.createKeysTx(ctx, jobID, attempt, kind, pending, !final)
		if err != nil {
			return out, err
		}
		if noticeJob != 0 {
			out.NoticeJobIDs = append(out.NoticeJobIDs, noticeJob)
		}
		var unseen []string
		for _, o := range got {
			switch o.Outcome {
			case keystore.OutcomeNotVisible:
				unseen = append(unseen, o.UserID)
			case keystore.OutcomeCreated:
				nCreated++
				if out.Created == nil {
					out.Created = make(map[string]string, len(got))
				}
				out.Created[o.UserID] = o.KeyID
				d.logger.DebugContext(ctx, "api key created", "job_id", jobID, "user_id", o.UserID, "key_id", o.KeyID, "last4", o.Last4)
				d.emit(Event{Kind: EventKeyCreated, KeyID: o.KeyID, UserID: o.UserID})
			default:
				nSkipped++
				if out.Skipped == nil {
					out.Skipped = map[string]string{}
				}
				out.Skipped[o.UserID] = o.Outcome
				d.logger.DebugContext(ctx, "no api key for this user", "job_id", jobID, "user_id", o.UserID, "reason", o.Outcome, "key_id", o.KeyID)
				d.emit(Event{Kind: EventKeySkipped, KeyID: o.KeyID, UserID: o.UserID, Reason: o.Outcome})
			}
		}
		if len(unseen) == 0 {
			break
		}
		d.logger.DebugContext(ctx, "users not visible yet; looking again", "job_id", jobID, "users", len(unseen), "in", missingRechecks[round].String())
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("waiting to look again for %d users: %w", len(unseen), ctx.Err())
		case <-time.After(missingRechecks[round]):
		}
		pending = unseen
	}

	attrs := []any{"job_id", jobID, "attempt", attempt, "users", len(userIDs), "created", nCreated, "skipped", nSkipped,
		"duration", time.Since(started).Round(time.Microsecond).String()}
	if len(out.NoticeJobIDs) > 0 {
		attrs = append(attrs, "notice_job_ids", out.NoticeJobIDs)
	}
	if len(userIDs) == 1 {
		for u, k := range out.Created {
			attrs = append(attrs, "user_id", u, "key_id", k, "outcome", keystore.OutcomeCreated)
		}
		for u, r := range out.Skipped {
			attrs = append(attrs, "user_id", u, "outcome", r)
		}
	}
	d.logger.InfoContext(ctx, "api keys made", attrs...)
	return out, nil
}

// keysTxOptions begin a batch's transaction with an asynchronous commit
// (synchronous_commit off, for this transaction only): COMMIT returns
// without waiting for the WAL flush. The database flushes for every signup
// too; a batch that does not wait for its own flush neither adds one to the
// queue signups wait in nor holds its connection and worker while it waits.
// No user or sink hears of the batch before a later durable commit has
// flushed it, because WAL is flushed in order: its notice job runs only
// after River's fetch of it commits, a user picks a key up with a commit of
// its own, and River completes the job after this commit, all durably. A
// database crash before the WAL writer flushes the batch (within 3 ×
// wal_writer_delay, 600 ms by default) loses its keys, events and notice job
// together and leaves the job running or available in River's table, so it
// runs again (a running one once the rescuer takes it, JobTimeout plus
// rescueGrace later); only this process's log lines and metrics will have
// counted the lost keys. A crash of the worker loses nothing.
var keysTxOptions = pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL synchronous_commit = off"}

// createKeysTx makes one round of a batch in its own transaction
// (keysTxOptions): the keys and the DeliverNotices job of the keys made.
// With deferMissing, users it cannot see come back as
// keystore.OutcomeNotVisible, unrecorded.
func (d *deps) createKeysTx(ctx context.Context, jobID int64, attempt int, kind string, userIDs []string, deferMissing bool) ([]keystore.SignupOutcome, int64, error) {
	var exp *time.Time
	if d.cfg.KeyTTL > 0 {
		t := d.cfg.Store.Now().Add(d.cfg.KeyTTL)
		exp = &t
	}
	var outcomes []keystore.SignupOutcome
	var noticeJob int64
	err := pgx.BeginTxFunc(ctx, d.pool, keysTxOptions, func(tx pgx.Tx) error {
		var err error
		outcomes, err = d.cfg.Store.CreateSignupKeysTx(ctx, tx, keystore.SignupBatch{
			UserIDs:          userIDs,
			Table:            d.cfg.Table,
			IncludeAnonymous: d.cfg.IncludeAnonymous,
			ExpiresAt:        exp,
			DeferMissing:     deferMissing,
			Audit: keystore.Audit{JobID: jobID, Attempt: attempt, Actor: keystore.ActorWorker,
				Detail: map[string]any{"job": kind}},
		})
		if err != nil {
			return err
		}
		noticeJob = 0
		var created []string
		for _, o := range outcomes {
			if o.Outcome == keystore.OutcomeCreated {
				created = append(created, o.KeyID)
			}
		}
		if len(created) == 0 || len(d.cfg.Senders) == 0 {
			return nil
		}
		res, err := d.noticeInserter.InsertTx(ctx, tx, DeliverNoticesArgs{KeyIDs: created}, &d.noticeOpts)
		if err != nil {
			return fmt.Errorf("enqueuing the notices of %d keys: %w", len(created), err)
		}
		noticeJob = res.Job.ID
		return nil
	})
	return outcomes, noticeJob, err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
