package notify

import (
	"context"
	"fmt"
	"log/slog"
)

// Log "delivers" notices by logging them, one line each, at level Info with
// component=notify, sink=log, the event type and the key's id, user id,
// prefix and last 4 (and, for a created key waiting to be picked up, the
// reveal endpoint and pick-up page). It suits development and deployments where another system
// reads the logs. It never fails except for an invalid notice, and it is safe
// for concurrent use.
type Log struct {
	logger *slog.Logger
}

var _ Sender = (*Log)(nil)

// NewLog returns a Log writing to logger, or to slog.Default() when logger
// is nil.
func NewLog(logger *slog.Logger) *Log {
	if logger == nil {
		logger = slog.Default()
	}
	return &Log{logger: logger.With("component", "notify", "sink", "log")}
}

// Name returns "log".
func (l *Log) Name() string { return "log" }

// Send logs n. The notice's email address is left out of the line.
func (l *Log) Send(ctx context.Context, n Notice) error {
	if err := n.validate(); err != nil {
		return permanent(fmt.Errorf("log: %w", err))
	}
	n = n.normalized()
	attrs := []slog.Attr{
		slog.String("type", n.Type),
		slog.String("event_id", n.EventID),
		slog.String("key_id", n.KeyID),
		slog.String("user_id", n.UserID),
		slog.String("prefix", n.Prefix),
		slog.String("last4", n.Last4),
	}
	if n.PickUp() {
		attrs = append(attrs, slog.String("reveal_url", n.RevealURL), slog.Time("reveal_expires_at", n.RevealExpiresAt))
		if n.PickupURL != "" {
			attrs = append(attrs, slog.String("pickup_url", n.PickupURL))
		}
	}
	if n.RotatedTo != "" {
		attrs = append(attrs, slog.String("rotated_to", n.RotatedTo))
	}
	l.logger.LogAttrs(ctx, slog.LevelInfo, "api key notice", attrs...)
	return nil
}
