package pipeline

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Metrics is the set of counters, gauges and histograms a running graph
// exposes on the API listener's /metrics. Stages get it through Env and
// register what they count at Build time.
//
// It is a thin layer over a private prometheus.Registry (never the global
// default one, so two graphs in one process, as tests build them, do not
// share series). The layer exists for three things the registry alone does
// not give: a repeated registration of the same family (a stage rebuilt on
// reload) returns the family it already has instead of failing; a
// conflicting one panics with a message naming both label sets; and
// ForgetStream can drop a finished stream's series from every family at once.
// The registry also carries the Go runtime (go_*) and process (process_*)
// collectors.
//
// It is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	mu       sync.Mutex
	families map[string]*family
}

// family is what Metrics remembers of one registered name, to tell a repeated
// registration (a reload) from a conflicting one.
type family struct {
	kind    string
	labels  []string
	buckets []float64 // histograms only
	metric  any       // *CounterVec, *GaugeVec, *HistogramVec or *gaugeFunc
	// forget deletes every series whose labels contain the given ones; nil
	// for a GaugeFunc, which has no series of its own.
	forget func(prometheus.Labels) int
}

// The kinds a family can have, as they appear in panic messages.
const (
	kindCounter   = "counter"
	kindGauge     = "gauge"
	kindHistogram = "histogram"
	kindGaugeFunc = "gauge func"
)

// streamLabel is the label ForgetStream matches on.
const streamLabel = "stream"

// NewMetrics returns an empty set, with only the Go runtime and process
// collectors registered.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), families: map[string]*family{}}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// CounterVec is a family of counters sharing a name and label names.
type CounterVec struct {
	name   string
	labels []string
	vec    *prometheus.CounterVec
}

// Counter is one series of a CounterVec: a monotonically increasing count.
//
// A Counter stays usable after its series is deleted (by Delete or
// ForgetStream): it keeps counting into a detached series that is no longer
// exported, and a later With for the same label values starts a new series
// at zero, which Prometheus reads as a counter reset.
type Counter struct {
	// c is client_golang's own counter rather than an atomic.Uint64 of ours
	// behind a custom collector: its Inc is a single atomic.AddUint64, and
	// its Add of an integral value is one float-to-integer check and the same
	// atomic add (prometheus/counter.go, valInt), so the hot path costs what
	// it did before, and Delete/DeletePartialMatch and the exposition come
	// from the library instead of being rewritten here.
	c prometheus.Counter
}

// Inc adds one. It is one atomic add and does not allocate.
func (c *Counter) Inc() { c.c.Inc() }

// Add adds n. It is one atomic add and does not allocate; values above 2^53
// are rounded to the nearest float64, which no real count reaches.
func (c *Counter) Add(n uint64) { c.c.Add(float64(n)) }

// Value returns the current count. It builds a snapshot of the series, so it
// is for tests and the API, not for hot paths.
func (c *Counter) Value() uint64 {
	var m dto.Metric
	if err := c.c.Write(&m); err != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}

// GaugeVec is a family of gauges sharing a name and label names.
type GaugeVec struct {
	name   string
	labels []string
	vec    *prometheus.GaugeVec
}

// Gauge is one series of a GaugeVec: a value that goes up and down. Like a
// Counter, it stays usable after its series is deleted.
type Gauge struct {
	g prometheus.Gauge
}

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { g.g.Set(v) }

// Add adds v, which may be negative.
func (g *Gauge) Add(v float64) { g.g.Add(v) }

// Value returns the current value. Like Counter.Value it builds a snapshot,
// so it is for tests and the API.
func (g *Gauge) Value() float64 {
	var m dto.Metric
	if err := g.g.Write(&m); err != nil {
		return math.NaN()
	}
	return m.GetGauge().GetValue()
}

// HistogramVec is a family of histograms sharing a name, buckets and label
// names.
type HistogramVec struct {
	name   string
	labels []string
	vec    *prometheus.HistogramVec
}

// Histogram is one series of a HistogramVec. Like a Counter, it stays usable
// after its series is deleted.
type Histogram struct {
	o prometheus.Observer
}

// Observe adds one observation: it counts it into its bucket and adds v to
// the sum.
func (h *Histogram) Observe(v float64) { h.o.Observe(v) }

// Counter returns the counter family name, creating it on first use. Calling
// it again with the same name and the same label names returns the same
// family, so stages built twice (a reload) keep counting where they were; the
// help text of the first call stays. The same name with other label names, or
// already registered as another kind, is a programming error and panics.
func (m *Metrics) Counter(name, help string, labels ...string) *CounterVec {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.lookup(name, kindCounter, labels, nil); f != nil {
		return f.metric.(*CounterVec)
	}
	labels = slices.Clone(labels)
	v := &CounterVec{name: name, labels: labels, vec: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)}
	m.add(name, v.vec, &family{kind: kindCounter, labels: labels, metric: v, forget: v.vec.DeletePartialMatch})
	return v
}

// CounterValue returns the count of counter family name for the given label
// values, in the family's label order; 0 when the family or the series does
// not exist. It is for tests and the API, which know a metric by its name.
func (m *Metrics) CounterValue(name string, values ...string) uint64 {
	m.mu.Lock()
	f := m.families[name]
	m.mu.Unlock()
	if f == nil || f.kind != kindCounter || len(values) != len(f.labels) {
		return 0
	}
	return f.metric.(*CounterVec).With(values...).Value()
}

// Gauge returns the gauge family name, creating it on first use, with the
// same rules as Counter for a repeated or conflicting registration.
func (m *Metrics) Gauge(name, help string, labels ...string) *GaugeVec {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.lookup(name, kindGauge, labels, nil); f != nil {
		return f.metric.(*GaugeVec)
	}
	labels = slices.Clone(labels)
	v := &GaugeVec{name: name, labels: labels, vec: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)}
	m.add(name, v.vec, &family{kind: kindGauge, labels: labels, metric: v, forget: v.vec.DeletePartialMatch})
	return v
}

// Histogram returns the histogram family name with the given bucket upper
// bounds (nil means prometheus.DefBuckets), creating it on first use, with the
// same rules as Counter for a repeated or conflicting registration; other
// buckets for the same name are a conflict too.
func (m *Metrics) Histogram(name, help string, buckets []float64, labels ...string) *HistogramVec {
	if buckets == nil {
		buckets = prometheus.DefBuckets
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.lookup(name, kindHistogram, labels, buckets); f != nil {
		return f.metric.(*HistogramVec)
	}
	labels, buckets = slices.Clone(labels), slices.Clone(buckets)
	v := &HistogramVec{name: name, labels: labels, vec: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)}
	m.add(name, v.vec, &family{kind: kindHistogram, labels: labels, buckets: buckets, metric: v, forget: v.vec.DeletePartialMatch})
	return v
}

// GaugeFunc registers a gauge whose value f reports at scrape time. f must be
// cheap and safe to call from any goroutine. Registering a name twice
// replaces the function (a reload) and keeps the first help text. A scrape
// leaves the gauge out while f returns NaN, so "no value yet" is not
// exported as a number.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if fam := m.lookup(name, kindGaugeFunc, nil, nil); fam != nil {
		fam.metric.(*gaugeFunc).f.Store(&f)
		return
	}
	g := &gaugeFunc{desc: prometheus.NewDesc(name, help, nil, nil)}
	g.f.Store(&f)
	m.add(name, g, &family{kind: kindGaugeFunc, metric: g})
}

// ForgetStream deletes, from every family registered through m that has a
// label named "stream", every series whose stream label is path. The hub
// calls it when a stream ends so per-stream series do not pile up for every
// path ever published. A *Counter (or *Gauge, *Histogram) obtained before
// keeps working but counts into a detached series; a stage that outlives the
// stream and keeps counting for it should call With again when the stream
// comes back.
func (m *Metrics) ForgetStream(path string) {
	match := prometheus.Labels{streamLabel: validLabelValue(path)}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.families {
		if f.forget != nil && slices.Contains(f.labels, streamLabel) {
			f.forget(match)
		}
	}
}

// WriteText writes every metric in the Prometheus text exposition format
// (version 0.0.4), as a scrape of Handler without an Accept header gets it.
// A collector that fails does not hide the others: what was gathered is
// written, and the error is returned after.
func (m *Metrics) WriteText(w io.Writer) error {
	mfs, gatherErr := m.reg.Gather()
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	if gatherErr != nil {
		return fmt.Errorf("gather metrics: %w", gatherErr)
	}
	return nil
}

// Names returns the name of every metric family m exposes, sorted: each
// family registered through m, whether or not it has a series yet (a
// scrape leaves out a family until it has one, so a scrape cannot answer
// this), and each family the runtime and process collectors report. It is
// for tests that check what dashboards and alerts refer to.
func (m *Metrics) Names() []string {
	m.mu.Lock()
	names := make([]string, 0, len(m.families))
	for name := range m.families {
		names = append(names, name)
	}
	m.mu.Unlock()
	mfs, _ := m.reg.Gather() // a failing collector still leaves the others' names
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Handler returns the HTTP handler for /metrics: it serves m's registry in
// whichever format the scraper negotiates. A failing collector does not fail
// the scrape; its errors are counted in promhttp_metric_handler_errors_total.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg,
	})
}

// With returns the counter for the given label values, in the order the
// labels were declared; the wrong number of values panics. Hot paths should
// call it once and keep the *Counter.
func (v *CounterVec) With(values ...string) *Counter {
	c, err := v.vec.GetMetricWithLabelValues(validLabelValues(values)...)
	if err != nil {
		panic(withError(v.name, v.labels, values, err))
	}
	return &Counter{c: c}
}

// Delete removes the series with the given label values, in declaration
// order, and reports whether there was one. See Counter for what happens to
// a *Counter already held.
func (v *CounterVec) Delete(values ...string) bool {
	return v.vec.DeleteLabelValues(validLabelValues(values)...)
}

// With returns the gauge for the given label values, in the order the labels
// were declared; the wrong number of values panics.
func (v *GaugeVec) With(values ...string) *Gauge {
	g, err := v.vec.GetMetricWithLabelValues(validLabelValues(values)...)
	if err != nil {
		panic(withError(v.name, v.labels, values, err))
	}
	return &Gauge{g: g}
}

// Delete removes the series with the given label values and reports whether
// there was one.
func (v *GaugeVec) Delete(values ...string) bool {
	return v.vec.DeleteLabelValues(validLabelValues(values)...)
}

// With returns the histogram for the given label values, in the order the
// labels were declared; the wrong number of values panics.
func (v *HistogramVec) With(values ...string) *Histogram {
	o, err := v.vec.GetMetricWithLabelValues(validLabelValues(values)...)
	if err != nil {
		panic(withError(v.name, v.labels, values, err))
	}
	return &Histogram{o: o}
}

// Delete removes the series with the given label values and reports whether
// there was one.
func (v *HistogramVec) Delete(values ...string) bool {
	return v.vec.DeleteLabelValues(validLabelValues(values)...)
}

// lookup returns the family registered under name, or nil if there is none.
// It panics if that family is not of the given kind, labels and buckets: a
// name means one thing for the life of the process. m.mu must be held.
func (m *Metrics) lookup(name, kind string, labels []string, buckets []float64) *family {
	f, ok := m.families[name]
	if !ok {
		return nil
	}
	if f.kind != kind || !slices.Equal(f.labels, labels) || !slices.Equal(f.buckets, buckets) {
		panic(fmt.Sprintf("pipeline: metric %s is already registered as %s, cannot register it again as %s",
			name, describe(f.kind, f.labels, f.buckets), describe(kind, labels, buckets)))
	}
	return f
}

// add registers c under name and remembers f. A name the registry refuses
// (invalid, or taken by the go_/process_ collectors) is a programming error
// found at Build time, so it panics. m.mu must be held.
func (m *Metrics) add(name string, c prometheus.Collector, f *family) {
	if err := m.reg.Register(c); err != nil {
		panic(fmt.Sprintf("pipeline: metric %s: %v", name, err))
	}
	m.families[name] = f
}

// describe renders a family's shape for a panic message.
func describe(kind string, labels []string, buckets []float64) string {
	s := fmt.Sprintf("a %s with labels %q", kind, labels)
	if buckets != nil {
		s += fmt.Sprintf(" and buckets %v", buckets)
	}
	return s
}

// withError is the panic message for a With that client_golang refused: in
// practice the wrong number of label values.
func withError(name string, labels, values []string, err error) string {
	return fmt.Sprintf("pipeline: metric %s with labels %q given values %q: %v", name, labels, values, err)
}

// validLabelValues returns values with any invalid UTF-8 replaced by U+FFFD.
// client_golang refuses (With panics on) label values that are not UTF-8,
// and stream paths come from the network; a bad byte in a path must cost one
// odd-looking label, not the server. Valid values, the normal case, are
// returned as they are, without allocating.
func validLabelValues(values []string) []string {
	for i, v := range values {
		if !utf8.ValidString(v) {
			out := slices.Clone(values)
			for j := i; j < len(out); j++ {
				out[j] = validLabelValue(out[j])
			}
			return out
		}
	}
	return values
}

// validLabelValue is validLabelValues for one value.
func validLabelValue(v string) string {
	if utf8.ValidString(v) {
		return v
	}
	return strings.ToValidUTF8(v, "\uFFFD")
}

// gaugeFunc is a collector for one GaugeFunc. It is ours rather than
// prometheus.NewGaugeFunc so that the function can be swapped on reload
// without unregistering (a scrape in between would miss the gauge), and so
// that a NaN leaves the gauge out as it always has.
type gaugeFunc struct {
	desc *prometheus.Desc
	f    atomic.Pointer[func() float64]
}

// Describe implements prometheus.Collector.
func (g *gaugeFunc) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector.
func (g *gaugeFunc) Collect(ch chan<- prometheus.Metric) {
	v := (*g.f.Load())()
	if math.IsNaN(v) {
		return
	}
	ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
}

var _ prometheus.Collector = (*gaugeFunc)(nil)
