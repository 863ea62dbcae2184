package main

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: every
// player, publisher and in-test server must be gone once its run returns.
func TestMain(m *testing.M) { leakcheck.Main(m) }
