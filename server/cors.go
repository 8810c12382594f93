package server

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// corsMaxAge is how long a browser may reuse a preflight's answer, in
// seconds (Chromium caps it at 7200).
const corsMaxAge = "7200"

// corsExposed are the answers' headers a browser app may read beyond the
// CORS-safelisted ones.
const corsExposed = "Retry-After, WWW-Authenticate"

// parseCORSOrigins reads CORSOrigins into the set of origins, each as a
// browser writes it: lowercase, without the scheme's default port.
func parseCORSOrigins(list []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, raw := range list {
		o := strings.TrimSpace(raw)
		if o == "" {
			continue
		}
		if o == "*" {
			return nil, fmt.Errorf(`CORSOrigins: "*" is refused: it would let any web page that holds a user's access token manage that user's keys; list your apps' origins, e.g. https://app.example.com,http://localhost:3000`)
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Opaque != "" {
			return nil, fmt.Errorf("CORSOrigins: %q is not an origin: want scheme://host[:port], e.g. https://app.example.com", raw)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
			return nil, fmt.Errorf("CORSOrigins: %q has a path, query or fragment, which origins do not: use %s://%s", raw, u.Scheme, u.Host)
		}
		host := strings.ToLower(u.Host)
		if port := u.Port(); (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
			host = strings.ToLower(u.Hostname())
			if strings.Contains(host, ":") {
				host = "[" + host + "]"
			}
		}
		set[strings.ToLower(u.Scheme)+"://"+host] = true
	}
	return set, nil
}

// crossOrigin is a cross-origin check (http.CrossOriginProtection) that
// trusts PublicURL's origin and the origins given. The API's paths have one
// that trusts CORSOrigins too; the rest of the listener (the dashboard) one
// that does not.
func (s *Server) crossOrigin(origins map[string]bool) (*http.CrossOriginProtection, error) {
	cop := http.NewCrossOriginProtection()
	if s.cfg.PublicURL != "" {
		origin, err := publicOrigin(s.cfg.PublicURL)
		if err != nil {
			return nil, err
		}
		if err := cop.AddTrustedOrigin(origin.String()); err != nil {
			return nil, fmt.Errorf("PublicURL: %w", err)
		}
	}
	for o := range origins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("CORSOrigins: %w", err)
		}
	}
	return cop, nil
}

// preflight answers a CORS preflight (OPTIONS with
// Access-Control-Request-Method) and reports whether r was one: 204 with
// the path's methods for an origin in CORSOrigins, 403 cors_origin_refused
// without any CORS header for any other.
func (s *Server) preflight(w http.ResponseWriter, r *http.Request, allow string) bool {
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	origin := r.Header.Get("Origin")
	h := w.Header()
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	if !s.corsOrigins[origin] {
		s.refuseOrigin(w, r)
		return true
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", allow)
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}

// allowOrigin lets a browser app on CORSOrigins read the answer.
func (s *Server) allowOrigin(w http.ResponseWriter, r *http.Request) {
	if origin := r.Header.Get("Origin"); s.corsOrigins[origin] {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Access-Control-Expose-Headers", corsExposed)
	}
}

// refuseOrigin answers a browser request from an origin the API does not
// trust.
func (s *Server) refuseOrigin(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	shown := origin
	if len(shown) > 100 {
		shown = shown[:100] + "…"
	}
	s.cfg.Logger.Info("cross-origin request refused: list the app's origin in CORSOrigins if it may call the API", "component", "http", "method", r.Method, "path", r.URL.Path,
		"origin", shown, "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
	if origin == "" {
		writeError(w, http.StatusForbidden, "cors_origin_refused", "requests from another site's pages are refused: the app's origin must be one of the origins this server allows")
		return
	}
	writeError(w, http.StatusForbidden, "cors_origin_refused", fmt.Sprintf("requests from pages on %q are refused: that origin must be one of the origins this server allows for the app to call this endpoint from the browser", shown))
}
