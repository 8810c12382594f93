package server

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// guard wraps a listener's routes in what every request passes first: on a
// loopback address, the Host check (DNS rebinding); a bound on the request
// body; and, for the main listener, the refusal of cross-origin writes
// (the API's paths are checked by apiPath, with CORSOrigins trusted there
// and only there).
func (s *Server) guard(addr string, h http.Handler, crossOrigin bool) (http.Handler, error) {
	if crossOrigin {
		cop, err := s.crossOrigin(nil)
		if err != nil {
			return nil, err
		}
		// The API's paths have a check of their own (apiPath), which also
		// trusts CORSOrigins.
		for _, path := range apiPaths(s.apiRoutes()) {
			cop.AddInsecureBypassPattern(path)
		}
		cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.cfg.Logger.Warn("cross-origin request refused", "component", "http", "method", r.Method, "path", r.URL.Path,
				"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
			writeError(w, http.StatusForbidden, "cross_origin", "cross-origin requests that change state are refused: use the dashboard from its own address")
		}))
		h = cop.Handler(h)
	}
	h = limitBody(h)
	host, _, _ := net.SplitHostPort(addr) // validated
	if IsLoopback(host) {
		h = s.checkHost(host, h)
	}
	return h, nil
}

// limitBody refuses a body larger than the route takes: MaxDashboardBody
// for River UI, MaxRequestBody for everything else. A declared length is
// refused at once; a streamed body fails when read past the bound.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(MaxRequestBody)
		if strings.HasPrefix(r.URL.Path, "/riverui/") {
			limit = MaxDashboardBody
		}
		if r.ContentLength > limit {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body is %d bytes; this endpoint takes at most %d", r.ContentLength, limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// checkHost answers 421 to a request whose Host names anything but this
// machine (or PublicURL's host). A server on loopback is reachable from a
// browser's web pages by DNS rebinding: evil.example resolves to 127.0.0.1
// and the page's requests then carry Host: evil.example.
func (s *Server) checkHost(listenHost string, next http.Handler) http.Handler {
	allowed := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true, normHost(listenHost): true}
	if s.cfg.PublicURL != "" {
		if u, err := publicOrigin(s.cfg.PublicURL); err == nil {
			allowed[normHost(u.Hostname())] = true
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Host
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		if h != "" && !allowed[normHost(h)] {
			shown := r.Host
			if len(shown) > 100 {
				shown = shown[:100] + "…"
			}
			s.cfg.Logger.Warn("request for another host refused: if clients reach this server by that name, set PublicURL to the URL they use", "component", "http", "host", shown, "path", r.URL.Path)
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusMisdirectedRequest, "misdirected_request",
				fmt.Sprintf("this server listens on loopback and answers only requests for localhost, 127.0.0.1 or [::1], not Host %q (a defence against DNS rebinding); if you reach it through a proxy or a name of your own, this server's public URL must be configured to that URL", shown))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func normHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
}
