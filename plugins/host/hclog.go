package host

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends go-plugin's hclog lines, and through them the plugin's
// stderr, to slog. go-plugin asks for a Named logger only to relay a
// plugin's stderr; there, plain lines (which go-plugin logs at debug) are
// raised to info, because whatever a plugin prints is meant to be read.
type hclogAdapter struct {
	log     *slog.Logger
	name    string
	stderr  bool
	implied []any
}

func newHCLog(l *slog.Logger) hclog.Logger { return &hclogAdapter{log: l} }

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
	if a.stderr && level == hclog.Debug {
		l = slog.LevelInfo
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

func (a *hclogAdapter) enabled(l slog.Level) bool { return a.log.Enabled(context.Background(), l) }

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

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	c.name, c.stderr = name, true
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger { return a.Named(name) }

// SetLevel is ignored: the slog handler decides.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

// GetLevel tells go-plugin the lowest level worth parsing out of a plugin's
// JSON stderr lines.
func (a *hclogAdapter) GetLevel() hclog.Level {
	switch {
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

// stdioWriter logs what a plugin writes to its stdout or stderr once it
// serves: go-plugin then carries both over gRPC instead of the pipes. Lines
// are logged whole; a line longer than 64 KiB is logged in pieces.
type stdioWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

const maxLine = 64 << 10

func (w *stdioWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxLine {
		w.emit(string(w.buf))
		w.buf = w.buf[:0]
	}
	if len(w.buf) == 0 {
		w.buf = nil // let a large buffer go
	}
	return len(p), nil
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
