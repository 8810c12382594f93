package testenv

import (
	"time"

	"github.com/riverqueue/river/rivertype"
)

// FastRetry is a River retry policy (river.ClientRetryPolicy) that retries a
// failed job after 100ms, so tests of retries take milliseconds, not
// River's attempt^4 seconds.
type FastRetry struct{}

// NextRetry schedules the next attempt 100ms from now.
func (FastRetry) NextRetry(*rivertype.JobRow) time.Time {
	return time.Now().Add(100 * time.Millisecond)
}
