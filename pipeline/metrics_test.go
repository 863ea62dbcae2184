package pipeline

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sample is one line of the exposition, read back: a histogram family yields
// its _bucket, _sum and _count samples, as the text format writes them.
type sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// scrape serves one GET /metrics through m.Handler and parses the body back
// with the reference text parser, so the test checks what a Prometheus server
// would read, not the bytes we happen to write.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, body:\n%s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	return parseText(t, rec.Body)
}

func parseText(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return mfs
}

// samples flattens the families whose name starts with prefix, sorted so
// tests compare them with cmp.Diff regardless of exposition order.
func samples(mfs map[string]*dto.MetricFamily, prefix string) []sample {
	var out []sample
	for name, mf := range mfs {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out = append(out, sample{name, labels, m.GetCounter().GetValue()})
			case dto.MetricType_GAUGE:
				out = append(out, sample{name, labels, m.GetGauge().GetValue()})
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					bl := map[string]string{"le": strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)}
					for k, v := range labels {
						bl[k] = v
					}
					out = append(out, sample{name + "_bucket", bl, float64(b.GetCumulativeCount())})
				}
				out = append(out, sample{name + "_sum", labels, h.GetSampleSum()}, sample{name + "_count", labels, float64(h.GetSampleCount())})
			default:
				out = append(out, sample{name, labels, math.NaN()})
			}
		}
	}
	slices.SortFunc(out, func(a, b sample) int {
		return strings.Compare(a.Name+fmt.Sprint(a.Labels), b.Name+fmt.Sprint(b.Labels))
	})
	return out
}

// panicMessage runs f and returns what it panicked with, "" if it did not.
func panicMessage(f func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	f()
	return ""
}

// TestMetricsExposition registers each kind with label values that the old
// hand-written %q escaping got wrong (a tab became \t, which the text format
// does not have) or that client_golang would refuse (invalid UTF-8), scrapes
// them and checks the values a Prometheus server would read back.
func TestMetricsExposition(t *testing.T) {
	cases := []struct {
		name  string
		setup func(m *Metrics)
		want  []sample
	}{
		{
			name: "counter without labels",
			setup: func(m *Metrics) {
				c := m.Counter("test_plain_total", "A counter.").With()
				c.Inc()
				c.Add(41)
			},
			want: []sample{{"test_plain_total", map[string]string{}, 42}},
		},
		{
			name: "counter label values that need escaping",
			setup: func(m *Metrics) {
				v := m.Counter("test_escape_total", "Help with a \\ and a\nnewline.", "path", "reason")
				v.With(`say "hi"`, "quote").Inc()
				v.With(`C:\media\`, "backslash").Add(2)
				v.With("line1\nline2", "newline").Add(3)
				v.With("col1\tcol2", "tab").Add(4)
				v.With("live/ünïcødé-🎥", "utf8").Add(5)
			},
			want: []sample{
				{"test_escape_total", map[string]string{"path": `C:\media\`, "reason": "backslash"}, 2},
				{"test_escape_total", map[string]string{"path": "col1\tcol2", "reason": "tab"}, 4},
				{"test_escape_total", map[string]string{"path": "line1\nline2", "reason": "newline"}, 3},
				{"test_escape_total", map[string]string{"path": "live/ünïcødé-🎥", "reason": "utf8"}, 5},
				{"test_escape_total", map[string]string{"path": `say "hi"`, "reason": "quote"}, 1},
			},
		},
		{
			name: "invalid UTF-8 is replaced, not a panic",
			setup: func(m *Metrics) {
				m.Counter("test_bytes_total", "", "stream").With("live/\xff\xfe").Inc()
			},
			want: []sample{{"test_bytes_total", map[string]string{"stream": "live/\uFFFD"}, 1}},
		},
		{
			name: "large counter",
			setup: func(m *Metrics) {
				m.Counter("test_big_total", "").With().Add(1 << 40)
			},
			want: []sample{{"test_big_total", map[string]string{}, 1 << 40}},
		},
		{
			name: "gauge",
			setup: func(m *Metrics) {
				v := m.Gauge("test_level", "A gauge.", "stream")
				v.With(`a"b\c`).Set(2.5)
				g := v.With("x\ny")
				g.Set(10)
				g.Add(-12.25)
			},
			want: []sample{
				{"test_level", map[string]string{"stream": `a"b\c`}, 2.5},
				{"test_level", map[string]string{"stream": "x\ny"}, -2.25},
			},
		},
		{
			name: "histogram",
			setup: func(m *Metrics) {
				h := m.Histogram("test_latency_seconds", "A histogram.", []float64{0.1, 1}, "stream").With("live/\"q\"")
				h.Observe(0.05)
				h.Observe(0.5)
				h.Observe(4)
			},
			want: []sample{
				{"test_latency_seconds_bucket", map[string]string{"stream": `live/"q"`, "le": "+Inf"}, 3},
				{"test_latency_seconds_bucket", map[string]string{"stream": `live/"q"`, "le": "0.1"}, 1},
				{"test_latency_seconds_bucket", map[string]string{"stream": `live/"q"`, "le": "1"}, 2},
				{"test_latency_seconds_count", map[string]string{"stream": `live/"q"`}, 3},
				{"test_latency_seconds_sum", map[string]string{"stream": `live/"q"`}, 4.55},
			},
		},
		{
			name: "gauge func",
			setup: func(m *Metrics) {
				m.GaugeFunc("test_streams", "Streams.", func() float64 { return 7 })
			},
			want: []sample{{"test_streams", map[string]string{}, 7}},
		},
		{
			name: "gauge func reporting NaN is left out",
			setup: func(m *Metrics) {
				m.GaugeFunc("test_unknown", "Not known yet.", math.NaN)
			},
			want: nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics()
			tc.setup(m)
			got := samples(scrape(t, m), "test_")
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("scraped samples (-want +got):\n%s", d)
			}
			// WriteText is the same exposition, for callers without HTTP.
			var b strings.Builder
			if err := m.WriteText(&b); err != nil {
				t.Fatalf("WriteText: %v", err)
			}
			if d := cmp.Diff(tc.want, samples(parseText(t, strings.NewReader(b.String())), "test_")); d != "" {
				t.Errorf("WriteText samples (-want +got):\n%s", d)
			}
		})
	}
}

// TestMetricsRuntimeCollectors checks that each Metrics carries the Go and
// process collectors on its own registry.
func TestMetricsRuntimeCollectors(t *testing.T) {
	mfs := scrape(t, NewMetrics())
	cases := []struct {
		name string
		typ  dto.MetricType
	}{
		{"go_goroutines", dto.MetricType_GAUGE},
		{"go_memstats_heap_alloc_bytes", dto.MetricType_GAUGE},
		{"process_cpu_seconds_total", dto.MetricType_COUNTER},
		{"process_resident_memory_bytes", dto.MetricType_GAUGE},
		{"process_start_time_seconds", dto.MetricType_GAUGE},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mf, ok := mfs[tc.name]
			if !ok {
				t.Fatalf("%s missing from the scrape", tc.name)
			}
			if mf.GetType() != tc.typ {
				t.Errorf("%s is a %v, want %v", tc.name, mf.GetType(), tc.typ)
			}
			if len(mf.GetMetric()) == 0 {
				t.Errorf("%s has no series", tc.name)
			}
		})
	}
}

// TestMetricsRegistersAgain covers reload: the same name and labels return
// the same family, which keeps its counts; anything else under that name is
// a programming error that panics and says what clashed.
func TestMetricsRegistersAgain(t *testing.T) {
	t.Run("same name and labels", func(t *testing.T) {
		cases := []struct {
			name     string
			register func(m *Metrics) any
		}{
			{"counter", func(m *Metrics) any { return m.Counter("test_total", "first", "stream", "reason") }},
			{"gauge", func(m *Metrics) any { return m.Gauge("test_gauge", "first", "stream") }},
			{"histogram", func(m *Metrics) any { return m.Histogram("test_seconds", "first", []float64{1, 2}, "stream") }},
			{"histogram with default buckets", func(m *Metrics) any { return m.Histogram("test_seconds", "first", nil) }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				m := NewMetrics()
				first, second := tc.register(m), tc.register(m)
				if first != second {
					t.Errorf("second registration returned a new family %p, want the first %p", second, first)
				}
			})
		}
	})

	t.Run("counter keeps counting", func(t *testing.T) {
		m := NewMetrics()
		m.Counter("test_units_total", "Before reload.", "pipeline").With("live").Add(5)
		// A rebuilt stage registers again, help text and all, and continues.
		c := m.Counter("test_units_total", "After reload.", "pipeline").With("live")
		c.Inc()
		if got := c.Value(); got != 6 {
			t.Errorf("count after reload = %d, want 6", got)
		}
	})

	cases := []struct {
		name  string
		first func(m *Metrics)
		again func(m *Metrics)
		want  []string // substrings of the panic message
	}{
		{
			name:  "counter with other labels",
			first: func(m *Metrics) { m.Counter("test_total", "", "stream") },
			again: func(m *Metrics) { m.Counter("test_total", "", "stream", "reason") },
			want:  []string{"test_total", `["stream"]`, `["stream" "reason"]`},
		},
		{
			name:  "counter with no labels after labels",
			first: func(m *Metrics) { m.Counter("test_total", "", "stream", "reason") },
			again: func(m *Metrics) { m.Counter("test_total", "") },
			want:  []string{"test_total", `["stream" "reason"]`, "[]"},
		},
		{
			name:  "labels in another order",
			first: func(m *Metrics) { m.Counter("test_total", "", "a", "b") },
			again: func(m *Metrics) { m.Counter("test_total", "", "b", "a") },
			want:  []string{"test_total", `["a" "b"]`, `["b" "a"]`},
		},
		{
			name:  "gauge under a counter's name",
			first: func(m *Metrics) { m.Counter("test_total", "", "stream") },
			again: func(m *Metrics) { m.Gauge("test_total", "", "stream") },
			want:  []string{"test_total", "counter", "gauge"},
		},
		{
			name:  "gauge func under a gauge's name",
			first: func(m *Metrics) { m.Gauge("test_level", "") },
			again: func(m *Metrics) { m.GaugeFunc("test_level", "", func() float64 { return 0 }) },
			want:  []string{"test_level", "gauge func"},
		},
		{
			name:  "histogram with other buckets",
			first: func(m *Metrics) { m.Histogram("test_seconds", "", []float64{1, 2}) },
			again: func(m *Metrics) { m.Histogram("test_seconds", "", []float64{1, 5}) },
			want:  []string{"test_seconds", "[1 2]", "[1 5]"},
		},
		{
			name:  "a name the Go collector owns",
			first: func(m *Metrics) {},
			again: func(m *Metrics) { m.Gauge("go_goroutines", "") },
			want:  []string{"go_goroutines"},
		},
		{
			name:  "With given the wrong number of values",
			first: func(m *Metrics) { m.Counter("test_total", "", "stream", "reason") },
			again: func(m *Metrics) { m.Counter("test_total", "", "stream", "reason").With("live/a") },
			want:  []string{"test_total", `["stream" "reason"]`, `["live/a"]`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics()
			tc.first(m)
			msg := panicMessage(func() { tc.again(m) })
			if msg == "" {
				t.Fatal("no panic")
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("panic message %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// TestForgetStream checks that a finished stream's series leave every family
// with a stream label, and nothing else does.
func TestForgetStream(t *testing.T) {
	populate := func(m *Metrics) {
		bad := m.Counter("test_bad_total", "", "stream", "reason")
		bad.With("live/a", "size").Inc()
		bad.With("live/a", "sync").Inc()
		bad.With("live/b", "size").Inc()
		lvl := m.Gauge("test_level", "", "stream")
		lvl.With("live/a").Set(1)
		lvl.With("live/b").Set(2)
		lat := m.Histogram("test_seconds", "", []float64{1}, "stream")
		lat.With("live/a").Observe(0.5)
		lat.With("live/b").Observe(0.5)
		// No stream label, though a value equals the path: left alone.
		m.Counter("test_refused_total", "", "reason").With("live/a").Inc()
		// A label that merely contains "stream" is not the stream label.
		m.Counter("test_upstream_total", "", "upstream").With("live/a").Inc()
		m.Counter("test_bytes_total", "", "stream").With("live/\xff").Inc()
	}
	all := []sample{
		{"test_bad_total", map[string]string{"reason": "size", "stream": "live/a"}, 1},
		{"test_bad_total", map[string]string{"reason": "size", "stream": "live/b"}, 1},
		{"test_bad_total", map[string]string{"reason": "sync", "stream": "live/a"}, 1},
		{"test_bytes_total", map[string]string{"stream": "live/\uFFFD"}, 1},
		{"test_level", map[string]string{"stream": "live/a"}, 1},
		{"test_level", map[string]string{"stream": "live/b"}, 2},
		{"test_refused_total", map[string]string{"reason": "live/a"}, 1},
		{"test_seconds_bucket", map[string]string{"le": "+Inf", "stream": "live/a"}, 1},
		{"test_seconds_bucket", map[string]string{"le": "+Inf", "stream": "live/b"}, 1},
		{"test_seconds_bucket", map[string]string{"le": "1", "stream": "live/a"}, 1},
		{"test_seconds_bucket", map[string]string{"le": "1", "stream": "live/b"}, 1},
		{"test_seconds_count", map[string]string{"stream": "live/a"}, 1},
		{"test_seconds_count", map[string]string{"stream": "live/b"}, 1},
		{"test_seconds_sum", map[string]string{"stream": "live/a"}, 0.5},
		{"test_seconds_sum", map[string]string{"stream": "live/b"}, 0.5},
		{"test_upstream_total", map[string]string{"upstream": "live/a"}, 1},
	}
	without := func(stream string) []sample {
		return slices.DeleteFunc(slices.Clone(all), func(s sample) bool { return s.Labels["stream"] == stream })
	}
	cases := []struct {
		name   string
		forget string
		want   []sample
	}{
		{"one stream", "live/a", without("live/a")},
		{"the other stream", "live/b", without("live/b")},
		{"an unknown stream", "live/zzz", all},
		{"a path that was not UTF-8", "live/\xff", without("live/\uFFFD")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics()
			populate(m)
			m.ForgetStream(tc.forget)
			if d := cmp.Diff(tc.want, samples(scrape(t, m), "test_")); d != "" {
				t.Errorf("after ForgetStream(%q) (-want +got):\n%s", tc.forget, d)
			}
		})
	}

	t.Run("a counter held across the delete", func(t *testing.T) {
		m := NewMetrics()
		v := m.Counter("test_units_total", "", "stream")
		held := v.With("live/a")
		held.Add(3)
		m.ForgetStream("live/a")
		held.Inc() // Counts into the detached series; must not panic.
		if got := held.Value(); got != 4 {
			t.Errorf("held counter = %d, want 4", got)
		}
		if got := samples(scrape(t, m), "test_"); len(got) != 0 {
			t.Errorf("detached series still exported: %v", got)
		}
		// The stream comes back: a new series, from zero.
		v.With("live/a").Inc()
		want := []sample{{"test_units_total", map[string]string{"stream": "live/a"}, 1}}
		if d := cmp.Diff(want, samples(scrape(t, m), "test_")); d != "" {
			t.Errorf("after the stream came back (-want +got):\n%s", d)
		}
	})
}

// TestMetricsDelete checks Delete on each kind of family.
func TestMetricsDelete(t *testing.T) {
	cases := []struct {
		name   string
		create func(m *Metrics)
		delete func(m *Metrics, values ...string) bool
	}{
		{
			name:   "counter",
			create: func(m *Metrics) { m.Counter("test_total", "", "stream").With("live/a").Inc() },
			delete: func(m *Metrics, values ...string) bool {
				return m.Counter("test_total", "", "stream").Delete(values...)
			},
		},
		{
			name:   "gauge",
			create: func(m *Metrics) { m.Gauge("test_level", "", "stream").With("live/a").Set(1) },
			delete: func(m *Metrics, values ...string) bool { return m.Gauge("test_level", "", "stream").Delete(values...) },
		},
		{
			name:   "histogram",
			create: func(m *Metrics) { m.Histogram("test_seconds", "", nil, "stream").With("live/a").Observe(1) },
			delete: func(m *Metrics, values ...string) bool {
				return m.Histogram("test_seconds", "", nil, "stream").Delete(values...)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics()
			tc.create(m)
			if tc.delete(m, "live/other") {
				t.Error("Delete of a series that does not exist returned true")
			}
			if !tc.delete(m, "live/a") {
				t.Error("Delete of an existing series returned false")
			}
			if tc.delete(m, "live/a") {
				t.Error("second Delete returned true")
			}
			if got := samples(scrape(t, m), "test_"); len(got) != 0 {
				t.Errorf("deleted series still exported: %v", got)
			}
		})
	}
}

// TestGaugeFuncReplace covers reload of a GaugeFunc: the last function
// registered under a name is the one a scrape calls.
func TestGaugeFuncReplace(t *testing.T) {
	cases := []struct {
		name  string
		funcs []func() float64
		want  []sample
	}{
		{"one", []func() float64{func() float64 { return 1 }}, []sample{{"test_streams", map[string]string{}, 1}}},
		{"replaced", []func() float64{func() float64 { return 1 }, func() float64 { return 2 }}, []sample{{"test_streams", map[string]string{}, 2}}},
		{"replaced by NaN", []func() float64{func() float64 { return 1 }, math.NaN}, nil},
		{"NaN replaced", []func() float64{math.NaN, func() float64 { return 3 }}, []sample{{"test_streams", map[string]string{}, 3}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics()
			for _, f := range tc.funcs {
				m.GaugeFunc("test_streams", "Streams.", f)
			}
			if d := cmp.Diff(tc.want, samples(scrape(t, m), "test_")); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestCounterAndGaugeValue checks the Value accessors tests and the API use.
func TestCounterAndGaugeValue(t *testing.T) {
	m := NewMetrics()
	c := m.Counter("test_total", "").With()
	for range 3 {
		c.Inc()
	}
	c.Add(1 << 33)
	if got, want := c.Value(), uint64(1<<33+3); got != want {
		t.Errorf("Counter.Value = %d, want %d", got, want)
	}
	g := m.Gauge("test_level", "").With()
	g.Set(1.5)
	g.Add(-4)
	if got := g.Value(); got != -2.5 {
		t.Errorf("Gauge.Value = %g, want -2.5", got)
	}
}

// TestCounterIncDoesNotAllocate pins the hot-path cost that
// BenchmarkCounterInc shows: counting an access unit allocates nothing.
func TestCounterIncDoesNotAllocate(t *testing.T) {
	c := NewMetrics().Counter("test_total", "", "pipeline", "kind").With("live", "video")
	cases := []struct {
		name string
		f    func()
	}{
		{"Inc", c.Inc},
		{"Add", func() { c.Add(1316) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tc.f); n != 0 {
				t.Errorf("%s allocates %v times per call, want 0", tc.name, n)
			}
		})
	}
}

func BenchmarkCounterInc(b *testing.B) {
	c := NewMetrics().Counter("bench_units_total", "", "pipeline", "kind").With("live", "video")
	b.ReportAllocs()
	for b.Loop() {
		c.Inc()
	}
}

// TestMetricsNames: Names lists a family from its registration, before it
// has a series (when a scrape does not show it yet), with the runtime and
// process collectors' families, sorted and once each.
func TestMetricsNames(t *testing.T) {
	m := NewMetrics()
	m.Counter("sluice_test_events_total", "Events.", "kind")
	m.Counter("sluice_test_events_total", "Events.", "kind") // a rebuild registers again
	m.Gauge("sluice_test_level", "Level.").With().Set(1)
	var b strings.Builder
	if err := m.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "sluice_test_events_total") {
		t.Fatal("a family without series is in the exposition; Names would not be needed")
	}
	names := m.Names()
	for _, want := range []string{"sluice_test_events_total", "sluice_test_level", "go_goroutines", "process_cpu_seconds_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("Names lacks %s: %q", want, names)
		}
	}
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("Names is not sorted and unique: %q", names)
	}
}
