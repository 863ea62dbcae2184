package pipeline

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Metrics is the set of counters and gauges a running graph exposes on the
// API listener's /metrics, in the Prometheus text format. Stages get it through
// Env and register what they count at Build time. It is safe for concurrent
// use; incrementing a counter is one atomic add.
type Metrics struct {
	mu       sync.Mutex
	counters map[string]*CounterVec
	gauges   map[string]*gaugeFunc
}

// NewMetrics returns an empty set.
func NewMetrics() *Metrics {
	return &Metrics{counters: map[string]*CounterVec{}, gauges: map[string]*gaugeFunc{}}
}

// CounterVec is a family of counters sharing a name and label names.
type CounterVec struct {
	name, help string
	labels     []string
	mu         sync.Mutex
	byKey      map[string]*Counter
}

// Counter is a monotonically increasing count.
type Counter struct {
	values []string
	v      atomic.Uint64
}

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

type gaugeFunc struct {
	name, help string
	f          func() float64
}

// Counter returns the counter family name, creating it on first use. Calling
// it again with the same name returns the same family, so stages built twice
// (a reload) keep counting where they were.
func (m *Metrics) Counter(name, help string, labels ...string) *CounterVec {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.counters[name]; ok {
		return v
	}
	v := &CounterVec{name: name, help: help, labels: labels, byKey: map[string]*Counter{}}
	m.counters[name] = v
	return v
}

// GaugeFunc registers a gauge whose value f reports at scrape time. f must be
// cheap and safe to call from any goroutine. Registering a name twice replaces
// the function.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gauges[name] = &gaugeFunc{name: name, help: help, f: f}
}

// With returns the counter for the given label values, in the order the
// labels were declared. Hot paths should call it once and keep the *Counter.
func (v *CounterVec) With(values ...string) *Counter {
	key := strings.Join(values, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.byKey[key]
	if !ok {
		c = &Counter{values: append([]string(nil), values...)}
		v.byKey[key] = c
	}
	return c
}

// WriteText writes every metric in the Prometheus text exposition format.
func (m *Metrics) WriteText(w io.Writer) error {
	m.mu.Lock()
	names := make([]string, 0, len(m.counters)+len(m.gauges))
	for n := range m.counters {
		names = append(names, n)
	}
	for n := range m.gauges {
		names = append(names, n)
	}
	counters := make(map[string]*CounterVec, len(m.counters))
	for k, v := range m.counters {
		counters[k] = v
	}
	gauges := make(map[string]*gaugeFunc, len(m.gauges))
	for k, v := range m.gauges {
		gauges[k] = v
	}
	m.mu.Unlock()
	sort.Strings(names)

	var b strings.Builder
	for _, n := range names {
		if v, ok := counters[n]; ok {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", n, v.help, n)
			v.mu.Lock()
			keys := make([]string, 0, len(v.byKey))
			for k := range v.byKey {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				c := v.byKey[k]
				fmt.Fprintf(&b, "%s%s %d\n", n, labelText(v.labels, c.values), c.Value())
			}
			v.mu.Unlock()
			continue
		}
		g := gauges[n]
		val := g.f()
		if math.IsNaN(val) {
			continue
		}
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", n, g.help, n, n, val)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func labelText(names, values []string) string {
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		v := ""
		if i < len(values) {
			v = values[i]
		}
		fmt.Fprintf(&b, "%s=%q", n, v)
	}
	b.WriteByte('}')
	return b.String()
}
