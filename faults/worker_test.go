package faults

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// worker is the worker binary run as a subprocess (`worker run`). One
// worker is restarted many times; its output from every run is appended to
// one log file, each run after a "# faults: start N" line. Only the test
// goroutine uses it.
type worker struct {
	env     []string
	logPath string
	addr    string // host:port of its HTTP server, the same for every run

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's result, once exited is closed

	starts, kills, stops int
	client               *http.Client
}

func newWorker(logPath, addr string, env map[string]string) *worker {
	w := &worker{logPath: logPath, addr: addr, client: &http.Client{Timeout: 3 * time.Second}}
	// A clean environment: nothing from the test's own (a DATABASE_URL, a
	// KEYWORKER_* setting) leaks into the worker.
	w.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "TMPDIR=" + os.TempDir()}
	if workerRace {
		w.env = append(w.env, "GORACE=halt_on_error=0")
	}
	for k, v := range env {
		w.env = append(w.env, k+"="+v)
	}
	w.env = append(w.env, "KEYWORKER_HTTP_ADDR="+addr)
	return w
}

// start runs the worker; it does not wait for it to be ready.
func (w *worker) start(t *testing.T) {
	t.Helper()
	if w.running() {
		t.Fatal("starting the worker: it is already running")
	}
	w.starts++
	f, err := os.OpenFile(w.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "# faults: start %d at %s\n", w.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(workerBin, "run")
	cmd.Env = w.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // a terminal's Ctrl-C is ours to pass on
		Pdeathsig: syscall.SIGKILL, // and it dies with the test
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the worker: %v", err)
	}
	exited := make(chan struct{})
	w.cmd, w.exited = cmd, exited
	go func() {
		w.err = cmd.Wait()
		close(exited)
	}()
}

func (w *worker) running() bool {
	if w.cmd == nil {
		return false
	}
	select {
	case <-w.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (w *worker) kill(t *testing.T) {
	t.Helper()
	if !w.running() {
		t.Fatalf("killing the worker: it is not running (%v); its log ends:\n%s", w.err, w.logTail(4000))
	}
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.exited
	w.kills++
}

// stop sends SIGTERM and waits for a clean exit.
func (w *worker) stop(t *testing.T) {
	t.Helper()
	if !w.running() {
		return
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.exited:
	case <-time.After(60 * time.Second):
		_ = w.cmd.Process.Signal(syscall.SIGKILL)
		<-w.exited
		t.Fatalf("the worker did not stop within 60s of SIGTERM; its log ends:\n%s", w.logTail(4000))
	}
	w.stops++
	if w.err != nil {
		t.Fatalf("the worker exited with %v after SIGTERM; its log ends:\n%s", w.err, w.logTail(4000))
	}
}

// shutdown stops the worker at the end of a test, whatever its state.
func (w *worker) shutdown() {
	if w.running() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.exited:
		case <-time.After(30 * time.Second):
			_ = w.cmd.Process.Signal(syscall.SIGKILL)
			<-w.exited
		}
	}
}

// waitReady waits until /readyz answers 200. A worker that exits meanwhile
// fails the test with the end of its log.
func (w *worker) waitReady(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	last := "no answer yet"
	for {
		if !w.running() {
			t.Fatalf("the worker exited (%v) while we waited for it to be ready; its log ends:\n%s", w.err, w.logTail(6000))
		}
		code, body, err := w.get("/readyz")
		if err == nil && code == http.StatusOK {
			return time.Since(start)
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker was not ready within %s: /readyz says %s; its log ends:\n%s", timeout, last, w.logTail(6000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *worker) get(path string) (int, string, error) {
	resp, err := w.client.Get("http://" + w.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

// captured reads keyworker_signups_captured_total from /metrics: signups
// this process's listener handed to River (the reconciler's do not count).
func (w *worker) captured() (float64, error) {
	code, body, err := w.get("/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics answered %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "keyworker_signups_captured_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("/metrics has no keyworker_signups_captured_total")
}

// log returns the whole log file.
func (w *worker) log() []byte {
	b, _ := os.ReadFile(w.logPath)
	return b
}

// logSince returns the log of run n and later.
func (w *worker) logSince(n int) []byte {
	b := w.log()
	if i := bytes.Index(b, fmt.Appendf(nil, "# faults: start %d at", n)); i >= 0 {
		return b[i:]
	}
	return nil
}

func (w *worker) logTail(n int) string {
	b := w.log()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond every interval until it returns true, or fails the
// test after timeout with what cond last said.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, detail := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ctxT is a context for one database round trip of the test itself.
func ctxT() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
