package sluicetest

import (
	"runtime"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// FuzzOptions adjust the server StartFuzz runs.
type FuzzOptions struct {
	// Build holds the build options, such as test authorizers.
	Build pipeline.BuildOptions
	// Runtime, when set, adjusts the runtime before the build: a target
	// that watches what reaches the stages wraps the router here.
	Runtime func(*pipeline.Runtime)
}

// StartFuzz is Start for a fuzz target, called before f.Fuzz: one server
// serves every input of the fuzzing process (each fuzzing worker starts its
// own), since starting one per input would cost far more than the input.
// The server logs into the Server's Logs and never into the test log: a
// fuzz target may not log through its *testing.F while inputs run, and a
// long run would fill any log. Input clears Logs before each input, so that
// a failing input shows only its own lines.
func StartFuzz(f *testing.F, kinds *pipeline.Kinds, src string, o FuzzOptions) *Server {
	f.Helper()
	logs := &LogBuffer{}
	s := startGraph(f, kinds, src, o.Build, logs, logs, o.Runtime)
	// The stages start their goroutines (accept loops, say) after Run has
	// begun; the first input's baseline must not be taken before they are
	// all there.
	deadline := time.Now().Add(5 * time.Second)
	for n, since := runtime.NumGoroutine(), time.Now(); time.Since(since) < 100*time.Millisecond && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if m := runtime.NumGoroutine(); m != n {
			n, since = m, time.Now()
		}
	}
	return s
}

// Reset forgets what was logged so far.
func (l *LogBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

// Input runs one input of a fuzz target against s, and checks what every
// input must leave behind: run returns within limit and without an error,
// and the goroutines it caused end within a few seconds of it (a
// connection's goroutines may finish just after its client saw the close).
// A failure shows the server's log of that input. Inputs of one fuzzing
// process run one at a time, so the goroutine count before an input is the
// baseline.
func (s *Server) Input(t *testing.T, limit time.Duration, run func() error) {
	t.Helper()
	s.Logs.Reset()
	before := runtime.NumGoroutine()
	done := make(chan error, 1)
	go func() { done <- run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v\nserver log:\n%s", err, s.Logs.String())
		}
	case <-time.After(limit):
		t.Fatalf("input not done within %v\nserver log:\n%s", limit, s.Logs.String())
	}
	// Poll briefly at first: most inputs settle within microseconds, and
	// a fuzzing run is measured in inputs per second.
	deadline := time.Now().Add(5 * time.Second)
	for wait := 20 * time.Microsecond; runtime.NumGoroutine() > before; wait = min(2*wait, 10*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v\nserver log:\n%s", leakcheck.Check(before, 0), s.Logs.String())
		}
		time.Sleep(wait)
	}
}
