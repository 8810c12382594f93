package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

const keysUsage = `usage: worker keys <action> [flags]

actions:
  create --user UUID [--name NAME] [--expires-in 720h]
        make a manual key for a user and print it once on stdout
  list [--user UUID] [--limit N] [--json]
        list keys (metadata only: id, prefix, last 4, times)
  revoke KEY_ID [--at RFC3339]
        revoke a key now (or at a later time)
  rotate KEY_ID [--overlap 24h]
        make a new key for the same user; the old one keeps working for the
        overlap (never past its own expiry), then is revoked
  verify [KEY]
        check a key (read from stdin when not given, which keeps it out of
        your shell history) and print its status, user and id
  reseal [--batch 500]
        after a sealing key rotation, seal every key waiting for pick-up
        again under KEYWORKER_SEALING_KEY (opening each with it or with
        KEYWORKER_SEALING_KEY_PREVIOUS), in transactions of --batch keys

Every action also takes the database settings (--database-url, --schema, ...).
`

func cmdKeys(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	args := v.args
	if len(args) == 0 {
		fmt.Fprint(e.stderr, keysUsage)
		return &usageError{"worker keys needs an action: create, list, revoke, rotate, verify or reseal"}
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(e.stdout, keysUsage)
		return nil
	}
	action, rest := args[0], args[1:]
	sub := flag.NewFlagSet("worker keys "+action, flag.ContinueOnError)
	sub.SetOutput(io.Discard)
	var (
		user      = sub.String("user", "", "the user's uuid")
		name      = sub.String("name", "", "a label for the key")
		expiresIn = sub.Duration("expires-in", 0, "the key's lifetime (0: never expires)")
		limit     = sub.Int("limit", 100, "how many keys to list")
		asJSON    = sub.Bool("json", false, "print JSON")
		at        = sub.String("at", "", "when the revocation takes effect (RFC 3339; default now)")
		overlap   = sub.Duration("overlap", 24*time.Hour, "how long the old key keeps working after a rotation")
		batch     = sub.Int("batch", keystore.DefaultResealBatch, "how many waiting keys one reseal transaction handles")
	)
	sub.Usage = func() { fmt.Fprint(sub.Output(), keysUsage) }
	// The sub-command takes the settings again, so flags may follow the action.
	sv, err := parseSettings(sub, "keys", false, rest, e.getenv, e.readFile)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stdout, keysUsage)
		return nil
	}
	if err != nil {
		return &usageError{fmt.Sprintf("%v (see `worker keys help`)", strings.Replace(err.Error(), " -", " --", 1))}
	}
	for k, src := range sv.source {
		if src == "default" && v.source[k] != "default" {
			sv.v[k], sv.source[k] = v.v[k], v.source[k]
		}
	}
	v = sv
	pos := sv.args

	sealingKey, err := v.require("KEYWORKER_SEALING_KEY", "")
	var sealer *keys.Sealer
	if err == nil {
		raw, err := keys.ParseSealingKey(sealingKey)
		if err != nil {
			return &usageError{"KEYWORKER_SEALING_KEY: " + err.Error()}
		}
		var previous [][]byte
		if p := v.str("KEYWORKER_SEALING_KEY_PREVIOUS"); p != "" {
			prev, err := keys.ParseSealingKey(p)
			if err != nil {
				return &usageError{"KEYWORKER_SEALING_KEY_PREVIOUS: " + err.Error()}
			}
			previous = append(previous, prev)
		}
		if sealer, err = keys.NewSealer(raw, previous...); err != nil {
			return &usageError{"KEYWORKER_SEALING_KEY_PREVIOUS: " + err.Error()}
		}
	} else if action == "reseal" {
		return &usageError{"worker keys reseal needs KEYWORKER_SEALING_KEY (the new key) and, after a rotation, KEYWORKER_SEALING_KEY_PREVIOUS (the old one)"}
	} else {
		// Manual keys are printed, not sealed: any sealer will do.
		gen, _ := keys.GenerateSealingKey()
		raw, _ := keys.ParseSealingKey(gen)
		sealer, _ = keys.NewSealer(raw)
	}
	prefix := v.str("KEYWORKER_KEY_PREFIX")
	if err := keys.ValidatePrefix(prefix); err != nil {
		return &usageError{"KEYWORKER_KEY_PREFIX: " + err.Error()}
	}
	store, err := keystore.New(keystore.Config{Schema: v.str("KEYWORKER_SCHEMA"), Prefix: prefix, Sealer: sealer})
	if err != nil {
		return &usageError{err.Error()}
	}
	audit := keystore.Audit{Actor: keystore.ActorOperator, Detail: map[string]any{"via": "worker keys " + action}}

	switch action {
	case "create", "list", "revoke", "rotate", "verify", "reseal":
	default:
		fmt.Fprint(e.stderr, keysUsage)
		return &usageError{fmt.Sprintf("unknown keys action %q", action)}
	}
	if action == "verify" && len(pos) == 0 && e.stdin == nil {
		return &usageError{"worker keys verify needs a key on stdin or as an argument"}
	}
	pool, err := connect(ctx, e, v)
	if err != nil {
		return err
	}
	defer pool.Close()

	switch action {
	case "reseal":
		return reseal(ctx, e, store, pool, *batch, audit)
	case "create":
		if *user == "" {
			return &usageError{"worker keys create needs --user <uuid>"}
		}
		nk := keystore.NewKey{UserID: *user, Name: *name, Source: keystore.SourceManual}
		if *expiresIn > 0 {
			t := time.Now().Add(*expiresIn)
			nk.ExpiresAt = &t
		}
		c, plaintext, err := store.CreateWithPlaintext(ctx, pool, nk, audit)
		if err != nil {
			return fmt.Errorf("creating key: %w", err)
		}
		fmt.Fprintf(e.stderr, "created key %s for user %s; it is shown once, below:\n", c.ID, c.UserID)
		fmt.Fprintln(e.stdout, plaintext)
		return nil

	case "list":
		list, err := store.List(ctx, pool, *user, *limit)
		if err != nil {
			return fmt.Errorf("listing keys: %w", err)
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(list)
		}
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSER\tKEY\tSOURCE\tSTATUS\tCREATED\tEXPIRES\tLAST USED")
		now := time.Now()
		for _, k := range list {
			status := k.Status(now).String()
			if k.RevokedAt != nil && k.RevokedAt.After(now) {
				status += " until " + k.RevokedAt.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.UserID, k.String(), k.Source, status,
				k.CreatedAt.Local().Format(time.DateTime), fmtTime(k.ExpiresAt), fmtTime(k.LastUsedAt))
		}
		return tw.Flush()

	case "revoke":
		if len(pos) != 1 {
			return &usageError{"worker keys revoke needs exactly one key id"}
		}
		when := time.Now()
		if *at != "" {
			t, err := parseTime("at", *at)
			if err != nil {
				return err
			}
			when = t
		}
		ok, err := store.Revoke(ctx, pool, pos[0], when, audit)
		if err != nil {
			return fmt.Errorf("revoking %s: %w", pos[0], err)
		}
		if !ok {
			return fmt.Errorf("key %s was already revoked (at or before %s)", pos[0], when.Format(time.RFC3339))
		}
		fmt.Fprintf(e.stdout, "key %s revoked at %s\n", pos[0], when.Format(time.RFC3339))
		return nil

	case "rotate":
		if len(pos) != 1 {
			return &usageError{"worker keys rotate needs exactly one key id"}
		}
		c, plaintext, err := store.Rotate(ctx, pool, pos[0], *overlap, audit)
		if err != nil {
			return fmt.Errorf("rotating %s: %w", pos[0], err)
		}
		fmt.Fprintf(e.stderr, "rotated %s into %s; the old key works for %s more (never past its own expiry). The new key, shown once:\n", pos[0], c.ID, *overlap)
		fmt.Fprintln(e.stdout, plaintext)
		return nil

	case "verify":
		token := ""
		if len(pos) > 0 {
			token = pos[0]
		} else {
			line, err := bufio.NewReader(e.stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("reading the key from stdin: %w", err)
			}
			token = strings.TrimSpace(line)
		}
		res, err := store.Verify(ctx, pool, token)
		if err != nil {
			return fmt.Errorf("verifying: %w", err)
		}
		if *asJSON {
			out := map[string]any{"status": res.Status.String(), "user_id": res.UserID, "key_id": res.KeyID}
			if res.ParseErr != nil {
				out["problem"] = res.ParseErr.Error()
			}
			return json.NewEncoder(e.stdout).Encode(out)
		}
		fmt.Fprintf(e.stdout, "status\t%s\n", res.Status)
		if res.UserID != "" {
			fmt.Fprintf(e.stdout, "user_id\t%s\nkey_id\t%s\n", res.UserID, res.KeyID)
		}
		if res.ParseErr != nil {
			fmt.Fprintf(e.stdout, "problem\t%v\n", res.ParseErr)
		}
		if res.Status != keys.StatusValid {
			return errVerifyFailed
		}
		return nil
	}
	return nil
}

// errVerifyFailed makes `worker keys verify` exit 1 for anything but a
// valid key, so scripts can test it.
var errVerifyFailed = errors.New("the key is not valid")

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// reseal checks the sealing key against the database's record (moving it on
// a rotation), re-seals every waiting key under the current key, and
// reports the counts. Keys it cannot open make it fail, naming the
// fingerprints that sealed them.
func reseal(ctx context.Context, e env, store *keystore.Store, pool *pgxpool.Pool, batch int, audit keystore.Audit) error {
	chk, err := store.CheckSealingKey(ctx, pool)
	if errors.Is(err, keystore.ErrSealingKeyMismatch) {
		return fmt.Errorf("KEYWORKER_SEALING_KEY: %w (KEYWORKER_SEALING_KEY_PREVIOUS)", err)
	}
	if err != nil {
		return err
	}
	if chk.RotatedFrom != "" {
		fmt.Fprintf(e.stderr, "sealing key rotated: the database now records fingerprint %s (was %s)\n", chk.Fingerprint, chk.RotatedFrom)
	}
	res, err := store.Reseal(ctx, pool, keystore.ResealOptions{
		BatchSize: batch,
		Audit:     audit,
		Progress: func(r keystore.ResealResult) {
			fmt.Fprintf(e.stderr, "  %d re-sealed, %d already under the current key, %d that no key opens\n", r.Resealed, r.Current, r.Failed)
		},
	})
	if errors.Is(err, keystore.ErrInvalid) {
		return &usageError{fmt.Sprintf("--batch: %v", err)}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "re-sealed %d waiting keys under the sealing key of fingerprint %s; %d were under it already\n", res.Resealed, chk.Fingerprint, res.Current)
	if res.Failed == 0 {
		fmt.Fprintln(e.stdout, "every waiting key opens with KEYWORKER_SEALING_KEY alone: once every replica runs with it, KEYWORKER_SEALING_KEY_PREVIOUS can go")
		return nil
	}
	var by []string
	for fp, n := range res.FailedBy {
		if fp == "" {
			fp = "unrecorded (sealed before fingerprints)"
		}
		by = append(by, fmt.Sprintf("%d under %s", n, fp))
	}
	slices.Sort(by)
	return fmt.Errorf("%d waiting keys open under none of the sealing keys given (%s), and were left as they were: run again with the key that sealed them as KEYWORKER_SEALING_KEY_PREVIOUS, or they expire unrevealed", res.Failed, strings.Join(by, "; "))
}
