package server

import (
	"fmt"
	"io"
	"log/slog"
)

// The redaction shared by the types that carry a plaintext key to a response
// body (Revealed, NewKey): every way of printing or logging them shows
// "<prefix>_<key_id>_…<last4>", as keys.Key does, and only encoding/json
// sees the key.

// redactedKey is the printable form of a key: its prefix, id and last 4.
func redactedKey(prefix, keyID, last4 string) string { return prefix + "_" + keyID + "_…" + last4 }

// formatRedacted makes every fmt verb print the redacted form s (goString
// for %#v), keeping the verb's flags, width and precision.
func formatRedacted(f fmt.State, verb rune, s string, goString func() string) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, goString())
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), s)
}

// redactedLogValue is what slog shows of a key: its id, prefix and last 4.
func redactedLogValue(prefix, keyID, last4 string) slog.Value {
	return slog.GroupValue(slog.String("key_id", keyID), slog.String("prefix", prefix), slog.String("last4", last4))
}
