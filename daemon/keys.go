package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/notify"
	"github.com/keyworker/keyworker/server"
)

// keyService is the end users' keys API (server.KeyService) over the key
// store. Each change and the notice it owes commit in one transaction:
// the notice is enqueued exactly once, whether the change commits or not.
type keyService struct{ d *Daemon }

var _ server.KeyService = keyService{}

// inTx runs fn in a READ COMMITTED transaction whatever the database's
// default_transaction_isolation: the live-key limit's count needs it (and
// keystore refuses any other).
func (s keyService) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.d.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, fn)
}

func userAudit(remoteAddr string) keystore.Audit {
	return keystore.Audit{Actor: keystore.ActorUser, Detail: map[string]any{"remote_addr": remoteAddr}}
}

func (s keyService) List(ctx context.Context, userID string) ([]keystore.Info, error) {
	return s.d.store.User(userID).List(ctx, s.d.pool)
}

func (s keyService) Create(ctx context.Context, userID string, r server.CreateKey, remoteAddr string) (server.NewKey, error) {
	var out server.NewKey
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		c, plaintext, err := s.d.store.User(userID).CreateTx(ctx, tx, keystore.NewKey{Name: r.Name, ExpiresAt: r.ExpiresAt}, s.d.maxLive(), userAudit(remoteAddr))
		if err != nil {
			return err
		}
		if err := s.d.jobs.EnqueueNoticeTx(ctx, tx, notify.EventCreated, c.ID); err != nil {
			return err
		}
		out = newKey(c, plaintext)
		return nil
	})
	if err != nil {
		return server.NewKey{}, err
	}
	return out, nil
}

func (s keyService) Rotate(ctx context.Context, userID, keyID string, overlap time.Duration, remoteAddr string) (server.NewKey, error) {
	var out server.NewKey
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		u := s.d.store.User(userID)
		c, plaintext, err := u.RotateTx(ctx, tx, keyID, overlap, s.d.maxLive(), userAudit(remoteAddr))
		if err != nil {
			return err
		}
		old, err := u.Get(ctx, tx, keyID)
		if err != nil {
			return fmt.Errorf("reading the rotated key %s: %w", keyID, err)
		}
		if err := s.d.jobs.EnqueueNoticeTx(ctx, tx, notify.EventRotated, keyID); err != nil {
			return err
		}
		out = newKey(c, plaintext)
		out.OldKeyRevokedAt = old.RevokedAt
		return nil
	})
	if err != nil {
		return server.NewKey{}, err
	}
	return out, nil
}

func (s keyService) SetDisabled(ctx context.Context, userID, keyID string, disabled bool, remoteAddr string) (keystore.Info, error) {
	var info keystore.Info
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var changed bool
		var err error
		info, changed, err = s.d.store.User(userID).SetDisabled(ctx, tx, keyID, disabled, userAudit(remoteAddr))
		if err != nil || !changed || !disabled {
			return err
		}
		if info.DisabledAt == nil {
			return fmt.Errorf("disabling key %s: the store returned no disabled_at", keyID)
		}
		// A key can be disabled again after an enable: each disable, told
		// apart by its disabled_at, gets its notice.
		return s.d.jobs.EnqueueNoticeOnceTx(ctx, tx, notify.EventDisabled, keyID, *info.DisabledAt)
	})
	return info, err
}

func (s keyService) Revoke(ctx context.Context, userID, keyID, remoteAddr string) (keystore.Info, error) {
	var info keystore.Info
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var changed bool
		var err error
		info, changed, err = s.d.store.User(userID).Revoke(ctx, tx, keyID, userAudit(remoteAddr))
		if err != nil || !changed {
			return err
		}
		return s.d.jobs.EnqueueNoticeTx(ctx, tx, notify.EventRevoked, keyID)
	})
	return info, err
}

func (s keyService) Verify(ctx context.Context, key string) (keystore.Verification, error) {
	return s.d.store.Verify(ctx, s.d.pool, key)
}

func newKey(c keystore.Created, plaintext string) server.NewKey {
	return server.NewKey{KeyInfo: server.KeyInfo{Info: c.Info()}, Key: plaintext}
}

// maxLive is the store's limit argument: 0 means none.
func (d *Daemon) maxLive() int { return max(d.cfg.MaxKeysPerUser, 0) }
