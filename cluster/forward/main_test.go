package forward_test

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: every push,
// its RTMP connection and its drain goroutine have an owner that stops
// them.
func TestMain(m *testing.M) { leakcheck.Main(m) }
