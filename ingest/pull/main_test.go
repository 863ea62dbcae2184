package pull_test

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: every pull
// loop, client connection and watchdog has an owner that stops it.
func TestMain(m *testing.M) { leakcheck.Main(m) }
