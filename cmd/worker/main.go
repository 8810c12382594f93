// Command worker is keyworker's daemon and operator tool: it gives every new
// user of a Postgres application an API key, from logical replication or
// LISTEN/NOTIFY through River jobs, and exposes the one-time pick-up, the
// dashboard and metrics. `worker help` lists the commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// A reader that goes away (worker demo | head) must not kill the process
	// before it cleans up: writes then fail with EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, the default action returns: a second
		// Ctrl-C or SIGTERM ends the process at once.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, readFile: os.ReadFile})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(exitCode(err))
	}
}
