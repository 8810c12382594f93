package bench

import (
	"bufio"
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
	"sync"
	"syscall"
	"time"

	"github.com/keyworker/keyworker/keys"
)

// workerReadyTimeout bounds how long a worker may take to answer /readyz.
const workerReadyTimeout = 60 * time.Second

// workerStopTimeout bounds how long a worker may take to exit after
// SIGTERM before it is killed.
const workerStopTimeout = time.Minute

// worker is one `worker run` process.
type worker struct {
	cmd     *exec.Cmd
	addr    string
	started time.Time
	ready   time.Time
	exited  chan struct{}
	waitErr error

	logMu sync.Mutex
	tail  []string // its last log lines
	lines int      // how many it wrote

	sampler *rssSampler

	// Filled in by stop.
	cpu    time.Duration
	maxRSS int64
}

// startWorker runs the worker against db in mode and waits until it answers
// /readyz. Its stderr goes to progress, each line prefixed; extraEnv adds
// settings (a webhook for the catch-up).
func startWorker(ctx context.Context, command []string, db *database, mode string, progress io.Writer, extraEnv ...string) (*worker, error) {
	if db.sealingKey == "" {
		k, err := keys.GenerateSealingKey()
		if err != nil {
			return nil, err
		}
		db.sealingKey = k
	}
	sealing := db.sealingKey
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	w := &worker{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited: make(chan struct{})}
	w.cmd = exec.Command(command[0], command[1:]...)
	w.cmd.Env = append(workerEnviron(),
		"DATABASE_URL="+db.url,
		"KEYWORKER_MODE="+mode,
		"KEYWORKER_SLOT="+db.slot,
		"KEYWORKER_SEALING_KEY="+sealing,
		// Pick-up enabled, as in production (the bench never calls it).
		"KEYWORKER_JWT_SECRET="+randomHex(32),
		"KEYWORKER_HTTP_ADDR="+w.addr,
		// Warnings and errors only: the notice log sink (the only sink, as no
		// webhook or SMTP server is set) still runs for every key, but its
		// Info lines are not written.
		"KEYWORKER_LOG_LEVEL=warn",
	)
	w.cmd.Env = append(w.cmd.Env, extraEnv...)
	w.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a terminal's Ctrl-C reaches the bench, which
		// stops the worker before the server.
		Setpgid: true,
		// If the bench dies, so does the worker.
		Pdeathsig: syscall.SIGKILL,
	}
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	w.started = time.Now()
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the worker (%s): %w", command[0], err)
	}
	w.sampler = newRSSSampler(w.cmd.Process.Pid)
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			w.logMu.Lock()
			w.lines++
			w.tail = append(w.tail, line)
			if len(w.tail) > 20 {
				w.tail = w.tail[1:]
			}
			w.logMu.Unlock()
			fmt.Fprintf(progress, "    [worker %s] %s\n", mode, line)
		}
	}()
	go func() {
		<-logsDone // Wait closes the pipe: read it all first
		w.waitErr = w.cmd.Wait()
		w.sampler.stop()
		close(w.exited)
	}()

	if err := w.waitReady(ctx); err != nil {
		_ = w.stop()
		return nil, err
	}
	w.ready = time.Now()
	return w, nil
}

// workerEnviron is the bench's environment without any keyworker setting,
// so a DATABASE_URL or webhook of the user's does not reach the worker.
func workerEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "KEYWORKER_") || strings.HasPrefix(name, "DATABASE_URL") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (w *worker) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(workerReadyTimeout)
	last := ""
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.addr+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		}
		select {
		case <-w.exited:
			return fmt.Errorf("the worker exited before it was ready (%v); its log ends:\n%s", w.waitErr, w.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for the worker's /readyz timed out after %s (last answer: %s); its log ends:\n%s", workerReadyTimeout, last, w.logTail())
		}
	}
}

func (w *worker) logTail() string {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	if len(w.tail) == 0 {
		return "(nothing)"
	}
	return strings.Join(w.tail, "\n")
}

func (w *worker) logLines() int {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	return w.lines
}

// stop sends SIGTERM, waits for the exit (killing it after
// workerStopTimeout) and reads its CPU time and peak RSS from the kernel's
// account of the process (and the samples). A non-zero exit after SIGTERM is an error.
func (w *worker) stop() error {
	select {
	case <-w.exited:
	default:
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.exited:
		case <-time.After(workerStopTimeout):
			_ = w.cmd.Process.Kill()
			<-w.exited
			return fmt.Errorf("the worker did not exit within %s of SIGTERM; killed it", workerStopTimeout)
		}
	}
	if ru, ok := w.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		w.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		w.maxRSS = ru.Maxrss * 1024 // kilobytes on Linux
	}
	// The kernel updates its high-water mark lazily; a sample can be higher.
	w.maxRSS = max(w.maxRSS, w.sampler.peak())
	if w.waitErr != nil {
		return fmt.Errorf("the worker exited with %v; its log ends:\n%s", w.waitErr, w.logTail())
	}
	return nil
}

// cpuTime is the worker's user+system CPU time so far, from
// /proc/<pid>/stat, or -1 when unreadable.
func (w *worker) cpuTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", w.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after it start at the state (field 3).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return -1
	}
	// Clock ticks of USER_HZ, which Linux fixes at 100 for /proc.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// metrics reads the unlabelled series from the worker's /metrics.
func (w *worker) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the worker's metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// rssSampler reads the process's resident set size every rssInterval, so
// the steady-state size can be told from the peak.
type rssSampler struct {
	pid  int
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	samples []rssSample
	hwm     int64 // the largest VmHWM or VmRSS read
}

type rssSample struct {
	at  time.Time
	rss int64
}

const rssInterval = 100 * time.Millisecond

func newRSSSampler(pid int) *rssSampler {
	s := &rssSampler{pid: pid, done: make(chan struct{})}
	go func() {
		t := time.NewTicker(rssInterval)
		defer t.Stop()
		for {
			rss, hwm, ok := readStatus(pid)
			if ok {
				s.mu.Lock()
				s.samples = append(s.samples, rssSample{time.Now(), rss})
				s.hwm = max(s.hwm, hwm, rss)
				s.mu.Unlock()
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() { s.once.Do(func() { close(s.done) }) }

// maxBetween is the largest RSS sampled in [from, to], or -1 when none was.
func (s *rssSampler) maxBetween(from, to time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := int64(-1)
	for _, x := range s.samples {
		if !x.at.Before(from) && !x.at.After(to) && x.rss > m {
			m = x.rss
		}
	}
	return m
}

// peak is the largest resident size seen: VmHWM and VmRSS as sampled.
func (s *rssSampler) peak() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hwm
}

// readStatus reads VmRSS and VmHWM, in bytes, from /proc/<pid>/status.
func readStatus(pid int) (rss, hwm int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	var haveRSS bool
	for _, line := range strings.Split(string(b), "\n") {
		key, rest, found := strings.Cut(line, ":")
		if !found || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 1 {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if key == "VmRSS" {
			rss, haveRSS = kb*1024, true
		} else {
			hwm = kb * 1024
		}
	}
	return rss, hwm, haveRSS
}

// machineCPU reads the machine's busy and total CPU time from /proc/stat.
type machineCPU struct{ busy, total uint64 }

func readMachineCPU() (machineCPU, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return machineCPU{}, false
	}
	var m machineCPU
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return machineCPU{}, false
		}
		if i >= 8 { // guest time is already counted in user time
			break
		}
		m.total += v
		if i != 3 && i != 4 { // idle, iowait
			m.busy += v
		}
	}
	return m, true
}

// busyPercent is the share of all cores' time spent busy between a and b.
func busyPercent(a, b machineCPU) float64 {
	if b.total <= a.total {
		return 0
	}
	return round(100*float64(b.busy-a.busy)/float64(b.total-a.total), 1)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port for the worker: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// exitedEarly reports, as an error, a worker that exited on its own.
func (w *worker) exitedEarly() error {
	select {
	case <-w.exited:
		return fmt.Errorf("%w (%v); its log ends:\n%s", errWorkerExited, w.waitErr, w.logTail())
	default:
		return nil
	}
}

var errWorkerExited = errors.New("the worker exited during the run")
