package tlsconf_test

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
