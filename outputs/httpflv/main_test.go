package httpflv_test

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: every session
// and writer goroutine has an owner that stops it.
func TestMain(m *testing.M) { leakcheck.Main(m) }
