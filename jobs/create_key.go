package jobs

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/users"
)

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Reasons recorded in 'skipped' events.
const (
	ReasonUserMissing   = "user_missing"
	ReasonUserDeleted   = "user_deleted"
	ReasonUserAnonymous = "user_anonymous"
	ReasonKeyExists     = "key_exists"
	ReasonKeyMissing    = "key_missing"
	ReasonNoSenders     = "no_senders"
)

// createKeyWorker makes a user's signup key. Everything happens in one
// transaction: the user is looked up (no row lock: the api_keys foreign key
// locks the user's row on insert, so a user deleted meanwhile fails the insert
// and the retry finds user_missing), the key and its sealed secret and audit
// event are inserted, the DeliverNotice job is
// inserted, and the job itself is marked completed. A crash anywhere before
// the commit leaves nothing behind; a job that runs again after the commit
// (a duplicate) finds the key and makes no second one.
type createKeyWorker struct {
	river.WorkerDefaults[CreateKeyArgs]
	d *deps
}

func (w *createKeyWorker) Work(ctx context.Context, job *river.Job[CreateKeyArgs]) error {
	d := w.d
	userID := strings.ToLower(job.Args.UserID)
	log := d.logger.With("job_id", job.ID, "attempt", job.Attempt, "user_id", userID)
	if !uuidRe.MatchString(userID) {
		log.WarnContext(ctx, "create-key job cancelled: user id is not a uuid")
		return river.JobCancel(fmt.Errorf("user id %q is not a uuid", truncate(job.Args.UserID, 40)))
	}
	audit := keystore.Audit{JobID: job.ID, Attempt: job.Attempt, Actor: keystore.ActorWorker}

	var (
		outcome string
		created keystore.Created
		notice  bool
	)
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		state, err := d.cfg.Table.Lookup(ctx, tx, userID, d.cfg.IncludeAnonymous)
		if err != nil {
			return err
		}
		if state != users.UserEligible {
			outcome = state.String()
			if err := d.cfg.Store.EventTx(ctx, tx, "skipped", "", userID, withDetail(audit, map[string]any{
				"reason": state.String(), "job": KindCreateKey,
			})); err != nil {
				return err
			}
			return completeTx(ctx, tx, job)
		}

		nk := keystore.NewKey{UserID: userID, Source: keystore.SourceSignup}
		if d.cfg.KeyTTL > 0 {
			exp := d.cfg.Store.Now().Add(d.cfg.KeyTTL)
			nk.ExpiresAt = &exp
		}
		created, err = d.cfg.Store.CreateTx(ctx, tx, nk, audit)
		if err != nil {
			return err
		}
		if created.Existing {
			outcome = ReasonKeyExists
			if err := d.cfg.Store.EventTx(ctx, tx, "skipped", created.ID, userID, withDetail(audit, map[string]any{
				"reason": ReasonKeyExists, "job": KindCreateKey,
			})); err != nil {
				return err
			}
			// The key may have been made without its notice (by hand, or
			// by an older version): ask for one unless a sink already
			// dealt with it. The notice job is unique by key and skips
			// sinks that are done, so this never notifies twice.
			if notice, err = w.needsNotice(ctx, tx, created.ID); err != nil {
				return err
			}
		} else {
			outcome = "created"
			notice = len(d.cfg.Senders) > 0
		}
		if notice {
			if _, err := river.ClientFromContext[pgx.Tx](ctx).InsertTx(ctx, tx, DeliverNoticeArgs{KeyID: created.ID}, &d.noticeOpts); err != nil {
				return fmt.Errorf("enqueuing the notice of key %s: %w", created.ID, err)
			}
		}
		return completeTx(ctx, tx, job)
	})
	if err != nil {
		return fmt.Errorf("creating the signup key of user %s: %w", userID, err)
	}

	switch outcome {
	case "created":
		log.InfoContext(ctx, "api key created", "key_id", created.ID, "last4", created.Last4, "notice", notice)
		d.emit(Event{Kind: EventKeyCreated, KeyID: created.ID, UserID: userID})
	case ReasonKeyExists:
		log.InfoContext(ctx, "api key exists; nothing to do", "key_id", created.ID, "notice", notice)
		d.emit(Event{Kind: EventKeySkipped, KeyID: created.ID, UserID: userID, Reason: outcome})
	default:
		log.InfoContext(ctx, "no api key for this user", "reason", outcome)
		d.emit(Event{Kind: EventKeySkipped, UserID: userID, Reason: outcome})
	}
	return nil
}

// needsNotice reports whether an existing key should get a notice job: there
// are senders and none has delivered or given up on the key yet.
func (w *createKeyWorker) needsNotice(ctx context.Context, tx pgx.Tx, keyID string) (bool, error) {
	if len(w.d.cfg.Senders) == 0 {
		return false, nil
	}
	done, err := w.d.doneSinks(ctx, tx, keyID)
	if err != nil {
		return false, err
	}
	return len(done) == 0, nil
}

// completeTx marks the running job completed in tx, so that the job's
// effects and its completion commit together.
func completeTx[T river.JobArgs](ctx context.Context, tx pgx.Tx, job *river.Job[T]) error {
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return fmt.Errorf("completing job %d: %w", job.ID, err)
	}
	return nil
}

func withDetail(a keystore.Audit, detail map[string]any) keystore.Audit {
	a.Detail = detail
	return a
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
