package host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// What a plugin prints may cost the host this much and no more: a plugin
// that floods its stderr, or writes one endless line, must not fill the log
// or the host's memory.
const (
	// maxLogLine is the longest line of plugin output that is logged; the
	// rest of a longer line is dropped as it arrives, and the logged part
	// says how many bytes were cut.
	maxLogLine = 8 << 10
	// logLinesPerSecond is the sustained rate of a plugin's lines that
	// reach the log, stdout and stderr together, across restarts.
	logLinesPerSecond = 100
	// logBurst is how many lines may come at once above that rate, enough
	// for a Go panic's stack trace to arrive whole.
	logBurst = 1000
	// dropReportEvery is how often, at most, the lines dropped are
	// reported in the log (they are counted at once).
	dropReportEvery = time.Second
)

// outputLimiter is one plugin's budget of log lines: a token bucket of
// logBurst lines refilled at logLinesPerSecond, shared by everything the
// plugin prints. Lines over the budget are dropped and counted in
// sluice_plugin_log_lines_dropped_total{plugin}, and reported in one log
// line at most every dropReportEvery. It is safe for concurrent use.
type outputLimiter struct {
	log     *slog.Logger
	dropped *pipeline.Counter

	mu       sync.Mutex
	tokens   float64
	last     time.Time // when tokens was last refilled
	drops    uint64    // dropped since the last report
	reported time.Time
}

func newOutputLimiter(log *slog.Logger, dropped *pipeline.Counter) *outputLimiter {
	return &outputLimiter{log: log, dropped: dropped, tokens: logBurst}
}

// allow takes a token for one line, or counts the line as dropped.
func (l *outputLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(logBurst, l.tokens+now.Sub(l.last).Seconds()*logLinesPerSecond)
	}
	l.last = now
	ok := l.tokens >= 1
	if ok {
		l.tokens--
	} else {
		l.drops++
		l.dropped.Inc()
	}
	if l.drops > 0 && now.Sub(l.reported) >= dropReportEvery {
		l.reportLocked(now)
	}
	return ok
}

// flush reports the lines dropped and not yet reported; the supervisor
// calls it when a process is gone, so that the last of a flood is told.
func (l *outputLimiter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drops > 0 {
		l.reportLocked(time.Now())
	}
}

func (l *outputLimiter) reportLocked(now time.Time) {
	l.log.Warn("plugin output over the log limit; lines dropped", "dropped", l.drops,
		"limit_per_second", logLinesPerSecond, "burst", logBurst)
	l.drops, l.reported = 0, now
}

// outputWriter logs one stream of a plugin's output (its stderr as
// go-plugin relays it, or the stdout or stderr it carries over gRPC once
// the plugin serves) line by line, within the plugin's budget. It holds at
// most maxLogLine bytes, whatever is written to it. A line's level is its
// own when it says one: hclog's JSON ("@level"), a "[WARN]"-style prefix,
// or a Go panic, whose lines are errors; other lines are logged at info,
// because whatever a plugin prints is meant to be read. Writes never fail
// and never block on the log's budget, so the plugin is never held up by
// the host's logging of it (only by the pipe or gRPC flow control).
type outputWriter struct {
	from string
	log  *slog.Logger
	lim  *outputLimiter

	mu      sync.Mutex
	buf     []byte // the line so far, at most maxLogLine bytes
	cut     int    // bytes of the line past maxLogLine, dropped
	panic   bool   // a panic or fatal error began: the lines after it are errors
	stopped bool
}

func newOutputWriter(from string, log *slog.Logger, lim *outputLimiter) *outputWriter {
	return &outputWriter{from: from, log: log, lim: lim}
}

// Write takes any amount of output; it always reports all of p written.
func (w *outputWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	if w.stopped {
		return n, nil
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		part := p
		if i >= 0 {
			part = p[:i]
		}
		if room := maxLogLine - len(w.buf); len(part) > room {
			w.cut += len(part) - room
			part = part[:room]
		}
		if w.buf == nil && len(part) > 0 {
			w.buf = make([]byte, 0, min(maxLogLine, max(len(part), 256)))
		}
		w.buf = append(w.buf, part...)
		if i < 0 {
			break
		}
		w.line()
		p = p[i+1:]
	}
	return n, nil
}

// close logs a last line without its newline and ignores any later write:
// after the process is gone, a late delivery from go-plugin's own
// goroutines must not log for a plugin the host has stopped.
func (w *outputWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 || w.cut > 0 {
		w.line()
	}
	w.stopped, w.buf = true, nil
}

// line logs the line in buf, if the budget allows, and resets buf.
func (w *outputWriter) line() {
	defer func() { w.buf, w.cut = w.buf[:0], 0 }()
	raw := bytes.TrimRight(w.buf, "\r")
	if len(raw) == 0 && w.cut == 0 {
		return
	}
	if !w.lim.allow(time.Now()) {
		return
	}
	level, msg, attrs := w.parse(raw)
	ctx := context.Background()
	if !w.log.Enabled(ctx, level) {
		return
	}
	attrs = append(attrs, "from", w.from)
	if w.cut > 0 {
		attrs = append(attrs, "cut_bytes", w.cut)
	}
	w.log.Log(ctx, level, msg, attrs...)
}

// hclogLevels are hclog's level names, as its JSON output writes them.
var hclogLevels = map[string]slog.Level{
	"trace": slog.LevelDebug - 4,
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// prefixLevels are the "[LEVEL]" prefixes Go's log package users (and
// go-plugin) put on plain lines.
var prefixLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[TRACE]", slog.LevelDebug - 4},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERROR]", slog.LevelError},
}

// parse finds a line's level, message and attributes.
func (w *outputWriter) parse(raw []byte) (slog.Level, string, []any) {
	if len(raw) > 0 && raw[0] == '{' {
		if level, msg, attrs, ok := parseJSONLine(raw); ok {
			return level, msg, attrs
		}
	}
	line := strings.ToValidUTF8(string(raw), "\uFFFD")
	if w.panic {
		return slog.LevelError, line, nil
	}
	// The Go runtime's own words for a crash: what follows is its trace.
	if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
		w.panic = true
		return slog.LevelError, line, nil
	}
	for _, p := range prefixLevels {
		if strings.HasPrefix(line, p.prefix) {
			return p.level, line, nil
		}
	}
	return slog.LevelInfo, line, nil
}

// parseJSONLine reads a line of hclog's JSON format: "@message" and
// "@level", the other keys as attributes (sorted, "@" dropped, and the
// ones that would clash with the host's renamed). Anything else is not
// such a line and is logged as it is.
func parseJSONLine(raw []byte) (slog.Level, string, []any, bool) {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return 0, "", nil, false
	}
	msg, ok := m["@message"].(string)
	if !ok {
		return 0, "", nil, false
	}
	level, ok := hclogLevels[fmt.Sprint(m["@level"])]
	if !ok {
		level = slog.LevelInfo
	}
	type kv struct {
		k string
		v any
	}
	kvs := make([]kv, 0, len(m))
	for k, v := range m {
		switch k {
		case "@message", "@level", "@timestamp", "timestamp":
			continue
		}
		kvs = append(kvs, kv{attrKey(strings.TrimPrefix(k, "@")), v})
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].k < kvs[j].k })
	attrs := make([]any, 0, 2*len(kvs))
	for _, e := range kvs {
		attrs = append(attrs, e.k, e.v)
	}
	return level, msg, attrs, true
}

// attrKey renames the keys a plugin's line shares with the host's own
// (go-plugin logs the binary as "plugin", hclog the error as "error").
func attrKey(k string) string {
	switch k {
	case "plugin":
		return "binary"
	case "error":
		return "err"
	case "from", "stage":
		return "plugin_" + k
	}
	return k
}
