package daemon

import "context"

// StopRiver stops the daemon's River client behind its back, as if River
// had stopped on its own.
func StopRiver(ctx context.Context, d *Daemon) error { return d.jobs.River().Stop(ctx) }
