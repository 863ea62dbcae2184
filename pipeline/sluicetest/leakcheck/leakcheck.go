// Package leakcheck fails a test binary whose goroutines outlive its
// tests: every goroutine Sluice starts has an owner that stops it, and a
// package's TestMain proves it with
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
package leakcheck

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests and, if they pass, waits up to five seconds for the
// goroutine count to fall back to where it started; if it does not, it
// prints every goroutine's stack and exits 1. A fuzzing run (-fuzz) is not
// checked: the fuzzing engine keeps goroutines of its own (a signal
// handler), and a fuzz target checks each of its inputs itself
// (sluicetest.Server.Input).
func Main(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 && !fuzzing() {
		// The tests' own HTTP clients keep idle connections; they are not
		// the code under test's.
		http.DefaultClient.CloseIdleConnections()
		if err := Check(before, 5*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// Check waits up to timeout for at most before goroutines to be running.
func Check(before int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return nil
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("goroutine leak: %d goroutines at start, %d after the tests:\n%s", before, n, strings.TrimSpace(string(buf)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fuzzing reports whether the test binary runs a fuzz target's fuzzing
// (go test -fuzz), rather than its seed corpus as a test.
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}
