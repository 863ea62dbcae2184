package sluicetest

import (
	"io"
	"testing"

	"github.com/sluice-media/sluice/pipeline"
)

// StartRuntime is StartWith with adjust applied to the new runtime before
// the build: an Operator for the API's node and reload, say.
func StartRuntime(t testing.TB, kinds *pipeline.Kinds, src string, opts pipeline.BuildOptions, adjust func(*pipeline.Runtime)) *Server {
	t.Helper()
	logs := &LogBuffer{}
	return startGraph(t, kinds, src, opts, logs, io.MultiWriter(logs, testWriter{t}), adjust)
}
