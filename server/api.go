package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// route is one operation of the HTTP API under /v1/. The table apiRoutes
// returns is the only list of them: it feeds the mux, the Allow headers, the
// CORS answers, and the test that holds openapi.json to the real routes.
type route struct {
	method string
	// path is a ServeMux path pattern, written as OpenAPI writes paths
	// ("/v1/keys/{id}").
	path string
	// cors: browser apps on CORSOrigins may call it. Every operation on a
	// path must agree.
	cors   bool
	handle http.HandlerFunc
}

func (s *Server) apiRoutes() []route {
	return []route{
		{http.MethodGet, "/v1/keys", true, s.listKeys},
		{http.MethodPost, "/v1/keys", true, s.createKey},
		{http.MethodDelete, "/v1/keys/{id}", true, s.revokeKey},
		{http.MethodPost, "/v1/keys/{id}/rotate", true, s.rotateKey},
		{http.MethodPost, "/v1/keys/{id}/disable", true, s.disableKey},
		{http.MethodPost, "/v1/keys/{id}/enable", true, s.enableKey},
		{http.MethodPost, "/v1/keys/reveal", true, s.reveal},
		{http.MethodPost, "/v1/keys/verify", false, s.verifyKey},
		{http.MethodGet, "/v1/openapi.json", false, s.openAPI},
	}
}

// apiPaths are the table's paths, in its order, each once.
func apiPaths(routes []route) []string {
	var paths []string
	for _, rt := range routes {
		if !slices.Contains(paths, rt.path) {
			paths = append(paths, rt.path)
		}
	}
	return paths
}

// handleAPI registers the table on mux, one handler per path that picks the
// operation by method itself: the mux would otherwise answer a method that
// fits no pattern in plain text, and with method patterns an id wildcard
// (DELETE /v1/keys/{id}) would catch DELETE /v1/keys/reveal.
func (s *Server) handleAPI(mux *http.ServeMux, routes []route) {
	for _, path := range apiPaths(routes) {
		ops := map[string]http.HandlerFunc{}
		cors := false
		var methods []string
		for _, rt := range routes {
			if rt.path == path {
				ops[rt.method] = rt.handle
				methods = append(methods, rt.method)
				cors = rt.cors
			}
		}
		if ops[http.MethodGet] != nil {
			ops[http.MethodHead] = ops[http.MethodGet]
			methods = append(methods, http.MethodHead)
		}
		mux.Handle(path, s.apiPath(path, ops, strings.Join(methods, ", "), cors))
	}
}

// apiPath serves one path of the API: no caching, CORS for browser apps
// (preflights answered here), the cross-origin check with CORSOrigins
// trusted, then the operation for the method, or 405 with Allow.
func (s *Server) apiPath(path string, ops map[string]http.HandlerFunc, allow string, cors bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		if cors {
			h.Add("Vary", "Origin")
			if s.preflight(w, r, allow) {
				return
			}
			s.allowOrigin(w, r)
		}
		op := ops[r.Method]
		if op == nil {
			h.Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", methodNotAllowed(path, r.Method, allow))
			return
		}
		if err := s.apiCOP.Check(r); err != nil {
			s.refuseOrigin(w, r)
			return
		}
		op(w, r)
	})
}

// revealReadme is the README section that says how an app picks a key up.
const revealReadme = `the README's "HTTP API" section`

func methodNotAllowed(path, method, allow string) string {
	if path == "/v1/keys/reveal" {
		return fmt.Sprintf("%s is not how a key is picked up: your app calls POST /v1/keys/reveal with the signed-in user's Supabase access token (Authorization: Bearer <token>) and shows the key it gets, once; opening the link in a browser cannot work. See %s", method, revealReadme)
	}
	return fmt.Sprintf("%s is not allowed on %s: use %s (GET /v1/openapi.json describes the API)", method, path, allow)
}

// readJSON decodes r's body, a JSON object, into v (a pointer to a struct
// with json tags). An empty body leaves v as it is when optional, and is
// refused otherwise. On failure it has answered: 413 past MaxRequestBody,
// 400 bad_request naming the field at fault.
func readJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	b, err := io.ReadAll(r.Body)
	if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body is larger than %d bytes", MaxRequestBody))
		return false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "reading the request body failed")
		return false
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if optional {
			return true
		}
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("the request body is empty: send a JSON object with %s", jsonFields(v)))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", jsonProblem(err, v))
		return false
	}
	return true
}

// jsonProblem says what is wrong with a body encoding/json refused.
func jsonProblem(err error, v any) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("the request body is not valid JSON (at byte %d): send a JSON object with %s", syntax.Offset, jsonFields(v))
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Sprintf("field %q must be a JSON %s, got a JSON %s", typ.Field, jsonKind(typ.Type), typ.Value)
	case errors.As(err, &typ):
		return fmt.Sprintf("the request body must be a JSON object with %s, got a JSON %s", jsonFields(v), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("the request body is cut short: send a whole JSON object with %s", jsonFields(v))
	}
	// encoding/json has no type for an unknown field: its message is
	// `json: unknown field "name"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Sprintf("unknown field %s: this endpoint takes %s", name, jsonFields(v))
	}
	return fmt.Sprintf("the request body is not one JSON object with %s: %v", jsonFields(v), err)
}

// jsonFields lists the JSON fields of the struct v points to, for messages.
func jsonFields(v any) string {
	t := reflect.TypeOf(v).Elem()
	var names []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, strconv.Quote(name))
		}
	}
	switch len(names) {
	case 0:
		return "no fields"
	case 1:
		return "the field " + names[0]
	}
	return "the fields " + strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return "number"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// userLimits are the buckets of one family of user endpoints (reveal; the
// keys API), and its name for the 429 messages.
type userLimits struct {
	what       string
	addr, user *limiter
}

// signIn checks the access token r carries, within lim's limits: the
// client address's bucket first (signed in or not), then the token, then
// the user's bucket. On failure it has answered, and failure is the outcome
// for metrics: "rate_limited", "unauthorized" or "error". The token is
// never logged, and why it was refused is logged, never sent.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request, lim userLimits) (userID, addr, failure string) {
	addr = s.clientAddr(r)
	if ok, retry := lim.addr.allow(rateKey(addr), s.now()); !ok {
		w.Header().Set("Retry-After", retryAfter(retry))
		writeError(w, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("too many %s requests from this address; try again later", lim.what))
		return "", addr, "rate_limited"
	}
	tok, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyworker"`)
		writeError(w, http.StatusUnauthorized, "missing_token", "send your Supabase access token as Authorization: Bearer <token>")
		return "", addr, "unauthorized"
	}
	userID, err := s.cfg.VerifyToken(r.Context(), tok)
	if errors.Is(err, ErrTokenUnverifiable) {
		s.cfg.Logger.Warn("access token could not be checked", "component", "http", "remote_addr", addr, "error", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(tokenRetryAfter.Seconds())))
		writeError(w, http.StatusServiceUnavailable, "token_unverifiable", "access tokens cannot be checked right now (the signing keys are unavailable): try again later")
		return "", addr, "error"
	}
	if err != nil {
		// Why stays in the log: a caller probing with forged tokens learns
		// nothing from the answer.
		expired := errors.Is(err, ErrTokenExpired)
		level := slog.LevelInfo
		if expired {
			level = slog.LevelDebug
		}
		s.cfg.Logger.Log(r.Context(), level, "access token rejected", "component", "http", "remote_addr", addr, "error", err)
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyworker", error="invalid_token"`)
		if expired {
			writeError(w, http.StatusUnauthorized, "token_expired", "the access token has expired: refresh the session and try again")
		} else {
			writeError(w, http.StatusUnauthorized, "invalid_token", "the access token was rejected: sign in again and send the session's access token")
		}
		return "", addr, "unauthorized"
	}
	if ok, retry := lim.user.allow(userID, s.now()); !ok {
		w.Header().Set("Retry-After", retryAfter(retry))
		writeError(w, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("too many %s requests for this user; try again later", lim.what))
		return "", addr, "rate_limited"
	}
	return userID, addr, ""
}
