package status

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: the browser
// test runs a whole server, which must stop everything it started.
func TestMain(m *testing.M) { leakcheck.Main(m) }
