package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/keyworker/keyworker/listener"
)

// Capture is the signup source a daemon runs and why it was chosen.
type Capture struct {
	// Mode is ModeLogical or ModeListen: what runs, never ModeAuto.
	Mode string
	// Reason is a short code for why: "configured" (Config.Mode named
	// the mode), "publication" (auto: the publication exists or this role
	// made it), or, when auto fell back to listen mode, what logical mode
	// lacked: "session_pooler", "not_publishable", "no_replication",
	// "wal_level", "server_version", "pooler", "no_free_slot".
	Reason string
	// Detail says the reason in words, with what would make logical mode
	// work when auto fell back. It names Config fields (Mode, DatabaseURL)
	// and the listener's (ConnString, SlotName), as the preflight does.
	Detail string
}

// fallbacks are the logical-mode preflight failures auto mode answers
// with listen mode: what hosted Supabase's postgres role lacks (publishing
// a table it does not own), what a pooler or an older server cannot do,
// and every replication slot taken. Other failures (a mismatched
// publication, a slot of another plugin, an unmigrated schema, no free WAL
// sender or connection, which is often momentary) are mistakes to fix or
// moments to wait out, and stop the start in auto mode too.
var fallbacks = []struct {
	kind   error
	reason string
}{
	{listener.ErrNotPublishable, "not_publishable"},
	{listener.ErrNoReplication, "no_replication"},
	{listener.ErrWALLevel, "wal_level"},
	{listener.ErrServerVersion, "server_version"},
	{listener.ErrPooler, "pooler"},
	{listener.ErrNoFreeSlot, "no_free_slot"},
}

// startSource starts the source cfg.Mode names; in auto mode logical
// replication when its preflight passes, listen mode when it fails for a
// reason listen mode does not share.
func (d *Daemon) startSource(ctx context.Context, lcfg listener.Config) (source, Capture, error) {
	cfg := d.cfg
	switch cfg.Mode {
	case ModeListen, ModeLogical:
		src, err := newSource(cfg.Mode, lcfg)
		if err == nil {
			err = src.Start(ctx)
		}
		return src, Capture{Mode: cfg.Mode, Reason: "configured", Detail: "Mode=" + cfg.Mode}, err
	}
	if listener.IsSessionPooler(cfg.DatabaseURL) {
		src, err := d.startListen(ctx, lcfg)
		return src, Capture{Mode: ModeListen, Reason: "session_pooler",
			Detail: "DatabaseURL is Supabase's session pooler, which carries LISTEN but not replication; " +
				"for logical replication use the direct connection (db.<project-ref>.supabase.co:5432)"}, err
	}
	src, err := newSource(ModeLogical, lcfg)
	if err == nil {
		err = src.Start(ctx)
	}
	if err == nil {
		return src, Capture{Mode: ModeLogical, Reason: "publication",
			Detail: fmt.Sprintf("publication %s on %s is usable", cmp.Or(lcfg.PublicationName, listener.DefaultPublicationName), cfg.Table)}, nil
	}
	var pf *listener.PreflightError
	if !errors.As(err, &pf) {
		return nil, Capture{}, err
	}
	reason := ""
	for _, f := range fallbacks {
		if errors.Is(pf.Kind, f.kind) {
			reason = f.reason
		}
	}
	if reason == "" {
		return nil, Capture{}, err
	}
	c := Capture{Mode: ModeListen, Reason: reason, Detail: "listen mode needs nothing more, and runs; logical mode would need this: " + oneLine(pf)}
	lsrc, lerr := d.startListen(ctx, lcfg)
	if lerr != nil {
		// Both failed: say both, listen mode's first (it is what would run).
		return nil, c, fmt.Errorf("%w\n\n(Mode=auto tried logical mode first: %v)", lerr, err)
	}
	return lsrc, c, nil
}

func (d *Daemon) startListen(ctx context.Context, lcfg listener.Config) (source, error) {
	src, err := newSource(ModeListen, lcfg)
	if err != nil {
		return nil, err
	}
	return src, src.Start(ctx)
}

func newSource(mode string, lcfg listener.Config) (source, error) {
	if mode == ModeListen {
		return listener.NewListen(lcfg)
	}
	return listener.NewLogical(lcfg)
}

// oneLine is a preflight error as one log-friendly line: what was found,
// the fix, and the statements someone else must run, separated by "; ".
func oneLine(pf *listener.PreflightError) string {
	parts := []string{pf.Detail}
	if pf.Fix != "" {
		parts = append(parts, pf.Fix)
	}
	for _, s := range pf.Statements {
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// recordCapture writes the capture path into keyworker's installation
// row, for `worker status`.
func (d *Daemon) recordCapture(ctx context.Context, c Capture) error {
	_, err := d.pool.Exec(ctx, newQueries(d.cfg.Schema).recordCapture, c.Mode, c.Reason+": "+c.Detail)
	if err != nil {
		return fmt.Errorf("recording the capture path: %w", err)
	}
	return nil
}
