package httpflv_test

import (
	"os"
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: every session
// and writer goroutine has an owner that stops it. Started with
// pullerEnv set, the binary is instead the edge process of
// BenchmarkOriginPerStream.
func TestMain(m *testing.M) {
	if spec := os.Getenv(pullerEnv); spec != "" {
		os.Exit(runPuller(spec))
	}
	leakcheck.Main(m)
}
