package host

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends go-plugin's own hclog lines to slog. go-plugin also
// relays a plugin's stderr through a logger it asks for with Named(the
// binary's base name); that one reports hclog.Off, so that go-plugin skips
// its own parsing and logging of the lines (which has no bound on their
// rate, and panics on a JSON line whose "@message" is not a string), and
// the host logs them from ClientConfig.Stderr instead (outputWriter).
type hclogAdapter struct {
	log *slog.Logger
	// stderrName is the name go-plugin gives the stderr relay's logger.
	stderrName string
	off        bool
	name       string
	implied    []any
}

func newHCLog(l *slog.Logger, stderrName string) hclog.Logger {
	return &hclogAdapter{log: l, stderrName: stderrName}
}

var levels = map[hclog.Level]slog.Level{
	hclog.Trace: slog.LevelDebug - 4,
	hclog.Debug: slog.LevelDebug,
	hclog.Info:  slog.LevelInfo,
	hclog.Warn:  slog.LevelWarn,
	hclog.Error: slog.LevelError,
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	l, ok := levels[level]
	if !ok {
		l = slog.LevelInfo
	}
	// The stderr relay still passes the pieces of a line longer than its
	// buffer at debug, whatever its level says: those are the plugin's
	// output, which the host logs from ClientConfig.Stderr. Only its own
	// error (the pipe failed) gets through.
	if a.off && level < hclog.Error {
		return
	}
	ctx := context.Background()
	if !a.log.Enabled(ctx, l) {
		return
	}
	a.log.Log(ctx, l, msg, a.attrs(args)...)
}

// attrs renames the keys that would clash with ours (go-plugin logs the
// binary as "plugin") and drops hclog's own timestamp.
func (a *hclogAdapter) attrs(args []any) []any {
	all := append(append([]any(nil), a.implied...), args...)
	out := make([]any, 0, len(all))
	for i := 0; i+1 < len(all); i += 2 {
		k, _ := all[i].(string)
		switch k {
		case "timestamp":
			continue
		case "plugin":
			k = "binary"
		case "error":
			k = "err"
		}
		out = append(out, k, all[i+1])
	}
	if len(all)%2 == 1 {
		out = append(out, "extra", all[len(all)-1])
	}
	return out
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(l slog.Level) bool {
	return !a.off && a.log.Enabled(context.Background(), l)
}

func (a *hclogAdapter) IsTrace() bool { return a.enabled(slog.LevelDebug - 4) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(slog.LevelError) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.implied = append(append([]any(nil), a.implied...), args...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

// Named returns a logger for a part of go-plugin; the stderr relay's is
// off (see hclogAdapter).
func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	c.name = name
	c.off = a.off || name == a.stderrName
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger { return a.Named(name) }

// SetLevel is ignored: the slog handler decides.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

// GetLevel tells go-plugin the lowest level worth logging: hclog.Off for
// the stderr relay, which then only copies the plugin's stderr to
// ClientConfig.Stderr.
func (a *hclogAdapter) GetLevel() hclog.Level {
	switch {
	case a.off:
		return hclog.Off
	case a.IsTrace():
		return hclog.Trace
	case a.IsDebug():
		return hclog.Debug
	case a.IsInfo():
		return hclog.Info
	case a.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return lineWriter(func(line string) { a.Info(line) })
}

// lineWriter logs each Write as one line per newline-separated part; the
// standard library's log.Logger writes whole lines.
type lineWriter func(string)

func (w lineWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w(line)
	}
	return len(p), nil
}

var _ hclog.Logger = (*hclogAdapter)(nil)
