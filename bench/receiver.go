package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// receiver is a local webhook endpoint that answers every notice 204 and
// remembers when it first saw each webhook-id, so the bench can time notice
// delivery. It checks no signature: the notify package's tests do.
type receiver struct {
	srv   *http.Server
	url   string
	mu    sync.Mutex
	seen  map[string]time.Time
	first time.Time
	last  time.Time
	calls int
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{seen: map[string]time.Time{}, url: "http://" + ln.Addr().String() + "/hook"}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the bench notices missing notices
		}
	}()
	return r, nil
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	id := req.Header.Get("webhook-id")
	now := time.Now()
	r.mu.Lock()
	r.calls++
	if _, ok := r.seen[id]; !ok && id != "" {
		r.seen[id] = now
		if r.first.IsZero() {
			r.first = now
		}
		r.last = now
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// distinct returns how many notices arrived, and when the first and the
// last (new) one did.
func (r *receiver) distinct() (n int, first, last time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen), r.first, r.last
}

func (r *receiver) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen, r.first, r.last, r.calls = map[string]time.Time{}, time.Time{}, time.Time{}, 0
}

func (r *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// waitNotices waits until n distinct notices arrived, or none has for
// drainStall, and returns when the last arrived.
func (r *receiver) waitNotices(ctx context.Context, n int) (got int, last time.Time, err error) {
	prev, progress := -1, time.Now()
	for {
		got, _, last = r.distinct()
		if got >= n {
			return got, last, nil
		}
		if got != prev {
			prev, progress = got, time.Now()
		} else if time.Since(progress) > drainStall {
			return got, last, nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return got, last, err
		}
	}
}

// webhookSecret makes a Standard Webhooks secret (whsec_ and 32 random
// bytes, base64) for the catch-up worker.
func webhookSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}
