package main

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/keyworker/keyworker/daemon"
)

// names turns the Config field names libraries put in errors and logs
// ("JWTSecret must be at least 32 bytes") into the environment variables a
// CLI user sets, from the field column
// of the settings table: it is the one place that knows both.
//
// A parent that wraps a component's error prefixes it with the component's
// field ("Tokens: ...", "HTTP: ...", "Table: ..."); such a prefix is dropped
// and sets the scope in which the names after it are looked up, so that a
// name several components have (URL, Addr) resolves to the right setting.
// Outside a scope a name resolves when it is a top-level field of
// daemon.Config, another component's field listed in the table's also
// column, or the last part of exactly one field path (IDColumn,
// JWTSecret). A dotted path (Tokens.JWTSecret) resolves as itself.
type names struct {
	path   map[string]string // "Tokens.JWTSecret", "KeyTTL", "ConnString" -> env
	leaf   map[string]string // unique last part of a path -> env
	scopes map[string]bool   // "Tokens", "HTTP", ...: first parts of dotted paths
	// known holds every field path the translation must leave alone when
	// it has no setting of its own ("Tokens.JWKSRefresh"), so that a scoped
	// name never falls through to a top-level setting of the same name.
	known map[string]bool
}

// plainWords are field names that are also English words, which a
// sentence may begin with ("From the ..."): they translate only in their
// scope ("SMTP: From is required").
var plainWords = map[string]bool{"From": true, "Secret": true, "Issuer": true, "Audience": true}

// fieldNames is built from the settings table once.
var fieldNames = newNames(settings)

func newNames(table []setting) *names {
	n := &names{path: map[string]string{}, leaf: map[string]string{}, scopes: map[string]bool{}, known: map[string]bool{}}
	leaves := map[string][]string{}
	for _, s := range table {
		if s.field == "" {
			continue
		}
		n.path[s.field] = s.env
		if scope, last, ok := strings.Cut(s.field, "."); ok {
			n.scopes[scope] = true
			leaves[last] = append(leaves[last], s.env)
		}
		for _, a := range s.also {
			// "sql.UsersTable": the component's field, unscoped.
			_, field, _ := strings.Cut(a, ".")
			n.path[field] = s.env
		}
	}
	for last, envs := range leaves {
		// A plain word is left to its scope: outside one it is more
		// likely English than a field.
		if len(envs) == 1 && !plainWords[last] {
			n.leaf[last] = envs[0]
		}
	}
	for _, p := range daemonConfigPaths() {
		n.known[p] = true
	}
	return n
}

var (
	// identifier matches a field name or a dotted field path.
	identifier = regexp.MustCompile(`[A-Z][A-Za-z0-9]*(?:\.[A-Z][A-Za-z0-9]*)*`)
)

// translate rewrites the field names in msg into environment variable names.
func (n *names) translate(msg string) string {
	if msg == "" {
		return msg
	}
	var b strings.Builder
	scope, last := "", 0
	for _, m := range identifier.FindAllStringIndex(msg, -1) {
		start, end := m[0], m[1]
		if start > 0 {
			if r, _ := utf8.DecodeLastRuneInString(msg[:start]); !boundary(r) {
				continue
			}
		}
		if end < len(msg) {
			if r, _ := utf8.DecodeRuneInString(msg[end:]); isWordRune(r) {
				continue
			}
		}
		word := msg[start:end]
		if n.scopes[word] && strings.HasPrefix(msg[end:], ": ") {
			// "Tokens: " scopes what follows and is dropped.
			b.WriteString(msg[last:start])
			scope, last = word, end+2
			continue
		}
		env, ok := n.lookup(scope, word)
		if !ok {
			continue
		}
		b.WriteString(msg[last:start])
		b.WriteString(env)
		last = end
	}
	b.WriteString(msg[last:])
	return b.String()
}

func (n *names) lookup(scope, word string) (string, bool) {
	if strings.Contains(word, ".") {
		env, ok := n.path[word]
		return env, ok
	}
	if scope != "" {
		if env, ok := n.path[scope+"."+word]; ok {
			return env, true
		}
		if n.known[scope+"."+word] {
			return "", false // a field of the scope without a setting
		}
	}
	if env, ok := n.path[word]; ok {
		return env, true
	}
	env, ok := n.leaf[word]
	return env, ok
}

// boundary reports whether r may come just before a field name: not part
// of a word, a path, a URL or a variable ($KEYWORKER_..., {key_id}).
func boundary(r rune) bool {
	return !isWordRune(r) && !strings.ContainsRune("./-$<{", r)
}

func isWordRune(r rune) bool {
	return r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}

// translatedError is err with its message's field names translated; it
// unwraps to err, so errors.Is and As (usageError's exit code) still see it.
type translatedError struct {
	err error
	msg string
}

func (e *translatedError) Error() string { return e.msg }
func (e *translatedError) Unwrap() error { return e.err }

// translateError returns err with environment variable names for field
// names, or err itself when it names none.
func translateError(err error) error {
	if err == nil {
		return nil
	}
	var t *translatedError
	if errors.As(err, &t) {
		return err
	}
	msg := fieldNames.translate(err.Error())
	if msg == err.Error() {
		return err
	}
	return &translatedError{err: err, msg: msg}
}

// translatedAttrs are the attribute keys whose text may name a field: the
// message, errors and the sentences the daemon logs ("detail", ...).
// Other values (a Host header, a user id) are logged as they came.
var translatedAttrs = map[string]bool{"error": true, "err": true, "detail": true, "reason": true, "fix": true, "hint": true}

// namesHandler translates field names in the records it passes on: the
// message, error values and the attributes of translatedAttrs.
type namesHandler struct{ next slog.Handler }

func newNamesHandler(next slog.Handler) slog.Handler { return namesHandler{next} }

func (h namesHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h namesHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, fieldNames.translate(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(translateAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h namesHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = translateAttr(a)
	}
	return namesHandler{h.next.WithAttrs(out)}
}

func (h namesHandler) WithGroup(name string) slog.Handler {
	return namesHandler{h.next.WithGroup(name)}
}

func translateAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		group := v.Group()
		out := make([]slog.Attr, len(group))
		for i, g := range group {
			out[i] = translateAttr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindString:
		if translatedAttrs[a.Key] {
			return slog.String(a.Key, fieldNames.translate(v.String()))
		}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok && err != nil {
			if msg := fieldNames.translate(err.Error()); msg != err.Error() {
				return slog.Any(a.Key, &translatedError{err: err, msg: msg})
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// daemonConfigPaths lists daemon.Config's field paths: its fields, and one
// level into the struct-typed ones ("Tokens.JWTSecret").
func daemonConfigPaths() []string {
	return fieldPaths(reflect.TypeFor[daemon.Config](), 2)
}

// fieldPaths lists t's exported field paths, depth levels deep.
func fieldPaths(t reflect.Type, depth int) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		out = append(out, f.Name)
		if depth > 1 && f.Type.Kind() == reflect.Struct {
			for _, sub := range fieldPaths(f.Type, depth-1) {
				out = append(out, f.Name+"."+sub)
			}
		}
	}
	return out
}
