package pgtemp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// MinVersion is the oldest PostgreSQL major version Start accepts: logical
// mode needs publication column lists (PostgreSQL 15).
const MinVersion = 15

// DefaultStartTimeout bounds how long Start waits for the server to accept
// connections.
const DefaultStartTimeout = 60 * time.Second

// Superuser is the superuser name of every cluster Start creates.
const Superuser = "postgres"

// ErrNoBinaries is returned by Start (wrapped) when no usable PostgreSQL server
// binaries are found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries found")

// Config configures a throwaway server. The zero value is usable.
type Config struct {
	// BinDir is the directory holding initdb and postgres. Defaults to the
	// newest version (>= MinVersion) found on PATH, through `pg_config
	// --bindir`, under /usr/lib/postgresql/*/bin, or in Homebrew's keg-only
	// postgresql@N formulae (FindBinaries lists every place).
	BinDir string

	// OSUser runs the server when the calling process is root (PostgreSQL
	// refuses to run as root). Defaults to "postgres", or "nobody" when there
	// is no such user. Ignored when not running as root.
	OSUser string

	// Settings are extra server settings passed as `-c name=value`. They
	// override the defaults (wal_level=logical, fsync=off, ...).
	Settings map[string]string

	// Logger receives a line when the server starts and stops. Defaults to a
	// logger that discards everything.
	Logger *slog.Logger

	// StartTimeout bounds how long Start waits for the server to accept
	// connections. Defaults to DefaultStartTimeout.
	StartTimeout time.Duration
}

// Server is a running throwaway PostgreSQL cluster. Its methods are safe for
// concurrent use.
type Server struct {
	cfg     Config
	binDir  string
	version int
	dir     string
	dataDir string
	sockDir string
	port    int
	cred    *syscall.Credential
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

// Start creates a cluster in a new temporary directory and starts it. The
// caller must call Stop, which also removes the directory.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	binDir, version, err := FindBinaries(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, binDir: binDir, version: version}

	if os.Geteuid() == 0 {
		s.cred, err = unprivilegedUser(cfg.OSUser)
		if err != nil {
			return nil, err
		}
	}

	s.dir, err = os.MkdirTemp("", "keyworker-pg-")
	if err != nil {
		return nil, fmt.Errorf("creating temporary directory: %w", err)
	}
	s.dataDir = filepath.Join(s.dir, "data")
	s.sockDir = filepath.Join(s.dir, "sock")
	s.logPath = filepath.Join(s.dir, "postgres.log")
	if err := s.prepareDir(); err != nil {
		s.removeDir()
		return nil, err
	}
	if err := s.initdb(ctx); err != nil {
		s.removeDir()
		return nil, err
	}
	// A free port can be taken between our probe and the server's bind;
	// try a few times.
	for attempt := 1; ; attempt++ {
		s.port, err = freePort()
		if err == nil {
			err = s.start(ctx)
		}
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			s.removeDir()
			return nil, err
		}
	}
	cfg.Logger.Info("throwaway postgres started", "component", "pgtemp", "version", version, "port", s.port, "dir", s.dir)
	return s, nil
}

// Port is the loopback TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// Version is the server's major version.
func (s *Server) Version() int { return s.version }

// Dir is the temporary directory holding the cluster and its log.
func (s *Server) Dir() string { return s.dir }

// URL returns a connection string for the superuser and the given database.
func (s *Server) URL(database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, s.port, database)
}

// Stop shuts the server down (fast mode) and removes its directory. It is
// idempotent and safe to call on a server that failed to start.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	err := s.Shutdown(ShutdownFast)
	s.removeDir()
	s.cfg.Logger.Info("throwaway postgres stopped", "component", "pgtemp", "port", s.port)
	return err
}

// ShutdownMode is how Shutdown stops the server; it mirrors pg_ctl's modes.
type ShutdownMode string

// Shutdown modes.
const (
	// ShutdownFast disconnects clients and shuts down cleanly (SIGINT).
	ShutdownFast ShutdownMode = "fast"
	// ShutdownImmediate aborts without a checkpoint, like a crash; the next
	// start runs recovery (SIGQUIT).
	ShutdownImmediate ShutdownMode = "immediate"
)

// Shutdown stops the server process but keeps the cluster, so Resume can
// start it again on the same port. Fault tests use it to restart Postgres
// under a running worker.
func (s *Server) Shutdown(mode ShutdownMode) error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	sig := syscall.SIGINT
	if mode == ShutdownImmediate {
		sig = syscall.SIGQUIT
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("stopping postgres (%s) timed out after 30s; killed it", mode)
	}
}

// Resume starts a server stopped by Shutdown again on the same port.
func (s *Server) Resume(ctx context.Context) error {
	s.mu.Lock()
	running := s.cmd != nil
	s.mu.Unlock()
	if running {
		return errors.New("resuming postgres: it is already running")
	}
	return s.start(ctx)
}

// Restart is Shutdown followed by Resume.
func (s *Server) Restart(ctx context.Context, mode ShutdownMode) error {
	if err := s.Shutdown(mode); err != nil {
		return err
	}
	return s.Resume(ctx)
}

// Log returns the tail of the server's log, for error messages.
func (s *Server) Log(maxBytes int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	return string(b)
}

func (s *Server) prepareDir() error {
	if err := os.Mkdir(s.sockDir, 0o700); err != nil {
		return fmt.Errorf("creating socket directory: %w", err)
	}
	if s.cred == nil {
		return nil
	}
	for _, p := range []string{s.dir, s.sockDir} {
		if err := os.Chown(p, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("handing %s to the postgres OS user: %w", p, err)
		}
	}
	return nil
}

func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if ctx != nil {
		cmd = exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	} else {
		cmd = exec.Command(filepath.Join(s.binDir, name), args...)
	}
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		// Our own process group: a terminal's Ctrl-C reaches us, and we shut
		// the server down in order, instead of it dying under the worker.
		Setpgid: true,
		// If we die without stopping it, the server goes too.
		Pdeathsig: syscall.SIGQUIT,
	}
	return cmd
}

func (s *Server) initdb(ctx context.Context) error {
	cmd := s.command(ctx, "initdb", "-D", s.dataDir, "-U", Superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("running initdb in %s: %w\n%s", s.dataDir, err, bytes.TrimSpace(out))
	}
	return nil
}

func (s *Server) settings() []string {
	set := map[string]string{
		"wal_level":               "logical",
		"max_replication_slots":   "32",
		"max_wal_senders":         "32",
		"max_connections":         "300",
		"fsync":                   "off",
		"full_page_writes":        "off",
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(s.port),
		"unix_socket_directories": s.sockDir,
		"logging_collector":       "off",
		"log_min_messages":        "warning",
		"wal_sender_timeout":      "60s",
	}
	for k, v := range s.cfg.Settings {
		set[k] = v
	}
	names := make([]string, 0, len(set))
	for k := range set {
		names = append(names, k)
	}
	sort.Strings(names)
	args := []string{"-D", s.dataDir}
	for _, k := range names {
		args = append(args, "-c", k+"="+set[k])
	}
	return args
}

func (s *Server) start(ctx context.Context) error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("opening postgres log: %w", err)
	}
	// Not CommandContext: the server outlives the start context.
	cmd := s.command(nil, "postgres", s.settings()...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	deadline := time.Now().Add(s.cfg.StartTimeout)
	for {
		connCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(connCtx, s.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("postgres exited during start-up on port %d; its log ends:\n%s", s.port, s.Log(2000))
		case <-ctx.Done():
			_ = s.Shutdown(ShutdownImmediate)
			return fmt.Errorf("waiting for postgres to start: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.Shutdown(ShutdownImmediate)
			return fmt.Errorf("waiting for postgres to accept connections timed out after %s; its log ends:\n%s", s.cfg.StartTimeout, s.Log(2000))
		}
	}
}

func (s *Server) removeDir() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func unprivilegedUser(name string) (*syscall.Credential, error) {
	names := []string{"postgres", "nobody"}
	if name != "" {
		names = []string{name}
	}
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root, but no unprivileged OS user %q exists to run it as: create one (useradd --system postgres) or run as a normal user", strings.Join(names, `" or "`))
}

var versionRe = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// FindBinaries returns the directory holding initdb and postgres and the
// server's major version: the newest at least MinVersion on PATH, through
// `pg_config --bindir`, under /usr/lib/postgresql/*/bin (Debian, Ubuntu,
// PGDG), /usr/pgsql-*/bin (PGDG's RPMs), /usr/local/pgsql/bin, Homebrew's
// keg-only postgresql@N formulae (/opt/homebrew/opt, /usr/local/opt,
// /home/linuxbrew/.linuxbrew/opt) or Postgres.app. With dir set, only that
// directory is considered. The error wraps ErrNoBinaries and says how to
// install a recent enough server.
func FindBinaries(dir string) (string, int, error) {
	var candidates []string
	if dir != "" {
		candidates = []string{dir}
	} else {
		if p, err := exec.LookPath("postgres"); err == nil {
			candidates = append(candidates, filepath.Dir(p))
		}
		if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
			candidates = append(candidates, strings.TrimSpace(string(out)))
		}
		candidates = append(candidates, globbedDirs("")...)
	}
	bestDir, bestVersion, tooOld := pickBinaries(candidates)
	if bestDir != "" {
		return bestDir, bestVersion, nil
	}
	return "", 0, findBinariesError(dir, tooOld)
}

// pickBinaries returns the candidate directory with initdb and postgres of
// the newest version at least MinVersion, and those found too old.
func pickBinaries(candidates []string) (bestDir string, bestVersion int, tooOld []string) {
	for _, c := range candidates {
		if !isExecutable(filepath.Join(c, "initdb")) || !isExecutable(filepath.Join(c, "postgres")) {
			continue
		}
		out, err := exec.Command(filepath.Join(c, "postgres"), "--version").Output()
		if err != nil {
			continue
		}
		m := versionRe.FindSubmatch(out)
		if m == nil {
			continue
		}
		v, _ := strconv.Atoi(string(m[1]))
		if v < MinVersion {
			tooOld = append(tooOld, fmt.Sprintf("%s (version %d)", c, v))
			continue
		}
		if v > bestVersion {
			bestDir, bestVersion = c, v
		}
	}
	return bestDir, bestVersion, tooOld
}

// globbedDirs expands binaryGlobs under root ("" for the real places).
func globbedDirs(root string) []string {
	var out []string
	for _, pattern := range binaryGlobs {
		globbed, _ := filepath.Glob(root + pattern)
		out = append(out, globbed...)
	}
	return out
}

func findBinariesError(dir string, tooOld []string) error {
	where := "on PATH, through `pg_config --bindir`, or in " + strings.Join(binaryGlobs, ", ")
	if dir != "" {
		where = "in " + dir
	}
	old := ""
	if len(tooOld) > 0 {
		old = " (too old: " + strings.Join(tooOld, ", ") + ")"
	}
	return fmt.Errorf("%w (initdb and postgres, version %d or newer) %s%s: %s", ErrNoBinaries, MinVersion, where, old, InstallHint)
}

// binaryGlobs are where FindBinaries looks besides PATH and pg_config:
// Debian's and Ubuntu's packages (PGDG's too), PGDG's RPMs, a source
// build's default prefix, Homebrew's keg-only formulae (postgresql@16 is
// not linked into the PATH) on Apple silicon, Intel and Linux, and
// Postgres.app.
var binaryGlobs = []string{
	"/usr/lib/postgresql/*/bin",
	"/usr/pgsql-*/bin",
	"/usr/local/pgsql/bin",
	"/opt/homebrew/opt/postgresql@*/bin",
	"/usr/local/opt/postgresql@*/bin",
	"/home/linuxbrew/.linuxbrew/opt/postgresql@*/bin",
	"/Applications/Postgres.app/Contents/Versions/*/bin",
}

// InstallHint says how to install PostgreSQL MinVersion or newer where a
// distribution's default is older.
const InstallHint = "install PostgreSQL 15 or newer: Debian 12+ and Ubuntu 24.04+: apt-get install -y postgresql; " +
	"Ubuntu 22.04 (its postgresql is 14) and other older releases: add the PostgreSQL project's repository (PGDG) with " +
	"apt-get install -y postgresql-common && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y, then apt-get install -y postgresql-16; " +
	"macOS: brew install postgresql@16 (keg-only: found in $(brew --prefix)/opt/postgresql@16/bin without brew link)"

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}
