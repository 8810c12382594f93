package main

import (
	"testing"
	"time"
)

func TestProgressBar(t *testing.T) {
	for _, c := range []struct {
		found, enqueued, total int
		want                   string
	}{
		{0, 0, 50000, "[------------------------------]   0%  0 of 50000 users, 0 enqueued  1.2s"},
		{25000, 24000, 50000, "[###############---------------]  50%  25000 of 50000 users, 24000 enqueued  1.2s"},
		// Signups during the run can find more than the count at its start.
		{50010, 50010, 50000, "[##############################] 100%  50010 of 50000 users, 50010 enqueued  1.2s"},
		{0, 0, 0, "[##############################] 100%  0 of 0 users, 0 enqueued  1.2s"},
	} {
		if got := progressBar(c.found, c.enqueued, c.total, 1234*time.Millisecond); got != c.want {
			t.Errorf("progressBar(%d, %d, %d) =\n%q, want\n%q", c.found, c.enqueued, c.total, got, c.want)
		}
	}
}
