package notify

import (
	"context"
	"fmt"
	"log/slog"
)

// Log "delivers" notices by logging them, one line each, at level Info with
// component=notify, sink=log and the key's id, user id, prefix, last 4 and
// pick-up link. It suits development and deployments where another system
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
	l.logger.LogAttrs(ctx, slog.LevelInfo, "api key notice",
		slog.String("event_id", n.EventID),
		slog.String("key_id", n.KeyID),
		slog.String("user_id", n.UserID),
		slog.String("prefix", n.Prefix),
		slog.String("last4", n.Last4),
		slog.String("reveal_url", n.RevealURL),
		slog.Time("reveal_expires_at", n.RevealExpiresAt),
	)
	return nil
}
