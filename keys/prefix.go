package keys

import "fmt"

// DefaultPrefix is the prefix of a key when none is configured.
const DefaultPrefix = "sk"

// MaxPrefixLen is the length, in bytes, of the longest prefix ValidatePrefix
// accepts.
const MaxPrefixLen = 32

// prefixRule says what a prefix may look like; every prefix error ends with it.
const prefixRule = `use 1 to 32 lowercase letters, digits and "_", starting with a letter, ` +
	`with no "__" and no trailing "_" (e.g. "sk" or "acme_live")`

// ValidatePrefix reports whether p can be the prefix of a key: 1 to 32 bytes
// of lowercase ASCII letters, digits and "_", starting with a letter, not
// ending with "_" and without "__". The rules keep a prefix readable, keep it
// apart from the "_" separators, and make it a single "word" for secret
// scanners.
//
// The error wraps ErrPrefix, names the prefix and what is wrong with it, and
// says what is allowed. A prefix is configuration, not a secret, so the
// error quotes it (shortened when it is long).
func ValidatePrefix(p string) error {
	if problem := prefixProblem(p); problem != "" {
		return &prefixError{prefix: p, problem: problem}
	}
	return nil
}

// prefixProblem describes what is wrong with p, without quoting p, or returns
// "" when p is a valid prefix.
func prefixProblem(p string) string {
	if p == "" {
		return "it is empty"
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case isLower(c) || isDigit(c) || c == '_':
		case c >= 'A' && c <= 'Z':
			return "it contains an uppercase letter"
		case c >= 0x80:
			return "it contains a non-ASCII character"
		default:
			return `it contains a character other than a-z, 0-9 and "_"`
		}
	}
	switch {
	case len(p) > MaxPrefixLen:
		return fmt.Sprintf("it is %d characters long, the limit is %d", len(p), MaxPrefixLen)
	case isDigit(p[0]):
		return "it starts with a digit"
	case p[0] == '_':
		return `it starts with "_"`
	case p[len(p)-1] == '_':
		return `it ends with "_"`
	}
	for i := 1; i < len(p); i++ {
		if p[i] == '_' && p[i-1] == '_' {
			return `it contains "__"`
		}
	}
	return ""
}

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// prefixError is the error of ValidatePrefix. It unwraps to ErrPrefix.
type prefixError struct {
	prefix  string
	problem string
}

func (e *prefixError) Error() string {
	p := e.prefix
	if len(p) > 40 {
		p = p[:40] + "..."
	}
	return fmt.Sprintf("key prefix %q is invalid: %s; %s", p, e.problem, prefixRule)
}

func (e *prefixError) Unwrap() error { return ErrPrefix }
