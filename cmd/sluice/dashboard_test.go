package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// dashboard is the part of a Grafana dashboard export the test reads.
type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	SchemaVersion int                    `json:"schemaVersion"`
	UID           string                 `json:"uid"`
	Title         string                 `json:"title"`
	Panels        []panel                `json:"panels"`
	Annotations   struct{ List []query } `json:"annotations"`
	Templating    struct{ List []query } `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []query                  `json:"targets"`
	Panels  []panel                  `json:"panels"` // a collapsed row's
}

// query is anything that carries PromQL: a target, an annotation, a
// template variable (whose query is a string or an object).
type query struct {
	Name       string          `json:"name"`
	Expr       string          `json:"expr"`
	Definition string          `json:"definition"`
	Query      json.RawMessage `json:"query"`
}

func (q query) promQL() []string {
	out := []string{q.Expr, q.Definition}
	var s string
	var obj struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(q.Query, &s) == nil {
		out = append(out, s)
	} else if json.Unmarshal(q.Query, &obj) == nil {
		out = append(out, obj.Query)
	}
	return slices.DeleteFunc(out, func(e string) bool { return e == "" })
}

// TestGrafanaDashboard: examples/grafana/sluice-dashboard.json is an
// importable dashboard (a Prometheus datasource input, unique panel ids,
// every panel on the 24-column grid with a query), and every metric its
// queries name is one Sluice registers. The registered names come from
// the metrics registry of each deployment the repository ships
// (pipeline.hcl, examples/*.hcl, examples/cluster/*.hcl), built as
// `sluice run` builds it, so a family with no series yet (one a scrape
// would leave out) counts, plus the families the command registers when
// it runs (the reload counter), read from its source.
func TestGrafanaDashboard(t *testing.T) {
	root := sluicetest.Root()
	b, err := os.ReadFile(filepath.Join(root, "examples", "grafana", "sluice-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("sluice-dashboard.json: %v", err)
	}

	// Importable: Grafana asks for the datasource named by the input and
	// substitutes it for ${DS_PROMETHEUS}.
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one Prometheus datasource input DS_PROMETHEUS", d.Inputs)
	}
	if d.SchemaVersion < 36 || d.UID == "" || d.Title == "" {
		t.Errorf("schemaVersion %d, uid %q, title %q: want a schema of Grafana 9 or later, a uid and a title", d.SchemaVersion, d.UID, d.Title)
	}
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]string{}
	var exprs []string
	for _, p := range all {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is off the 24-column grid", p.Title, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource %+v, want uid ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if q.Expr == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			exprs = append(exprs, q.promQL()...)
		}
	}
	for _, q := range append(d.Annotations.List, d.Templating.List...) {
		exprs = append(exprs, q.promQL()...)
	}

	// The metric names of Sluice and of its Go runtime and process
	// collectors; functions, keywords and label names have none of these
	// prefixes.
	metricName := regexp.MustCompile(`\b(?:sluice|go|process)_[a-zA-Z0-9_:]+`)
	used := map[string]bool{}
	for _, e := range exprs {
		if !balanced(e) {
			t.Errorf("unbalanced brackets or quotes in %q", e)
		}
		names := metricName.FindAllString(e, -1)
		if len(names) == 0 {
			t.Errorf("no Sluice metric in %q", e)
		}
		for _, n := range names {
			used[n] = true
		}
	}
	registered := registeredMetrics(t, root, used)
	var missing []string
	for n := range used {
		if !registered[n] && !registered[histogramBase(n)] {
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard uses metrics Sluice does not register: %s", strings.Join(missing, ", "))
	}
	var unused []string
	for n := range registered {
		if strings.HasPrefix(n, "sluice_") && !used[n] {
			unused = append(unused, n)
		}
	}
	slices.Sort(unused)
	t.Logf("the dashboard uses %d metrics in %d queries; Sluice families not on it: %s", len(used), len(exprs), strings.Join(unused, ", "))
}

// registeredMetrics returns the name of every metric family Sluice
// registers: those the shipped deployments register when built (a family
// with no series yet counts, though a scrape would leave it out), those a
// running node registers as its stages start (a forward, a static
// directory: runningDeployment runs one until wanted are all there, or
// for at most ten seconds), and those cmd/sluice registers itself at run
// time (read from its source: only `sluice run` makes them).
func registeredMetrics(t *testing.T, root string, wanted map[string]bool) map[string]bool {
	t.Helper()
	files := []string{filepath.Join(root, "pipeline.hcl")}
	for _, pat := range []string{"examples/*.hcl", "examples/cluster/*.hcl"} {
		m, _ := filepath.Glob(filepath.Join(root, pat))
		files = append(files, m...)
	}
	inExampleDir(t) // auth.hcl names a plugin binary, which must exist
	names := map[string]bool{}
	for _, f := range files {
		rt := pipeline.NewRuntime(slog.New(slog.DiscardHandler), nil)
		var diags strings.Builder
		if _, _, _, ok := load(f, nil, &diags, rt); !ok {
			// TestValidate holds the examples to building; here one
			// that does not (it needs files made for it) only adds no
			// names, and a metric only it registers shows as missing.
			t.Logf("%s does not build here; its metrics are not counted:\n%s", f, diags.String())
			continue
		}
		for _, n := range rt.Metrics.Names() {
			names[n] = true
		}
	}

	srcs, _ := filepath.Glob(filepath.Join(root, "cmd", "sluice", "*.go"))
	registration := regexp.MustCompile(`\.(?:Counter|Gauge|Histogram|GaugeFunc)\("(sluice_[a-z0-9_]+)"`)
	for _, src := range srcs {
		if strings.HasSuffix(src, "_test.go") {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range registration.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
	}

	srv := sluicetest.Start(t, builtinKinds(), runningDeployment)
	missing := func() []string {
		have := srv.Graph.Metrics.Names()
		var out []string
		for n := range wanted {
			if !names[n] && !slices.Contains(have, n) && !slices.Contains(have, histogramBase(n)) {
				out = append(out, n)
			}
		}
		return out
	}
	start := time.Now()
	for len(missing()) > 0 && time.Since(start) < 10*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("looked %v at a running node for the names builds do not register", time.Since(start).Round(time.Millisecond))
	for _, n := range srv.Graph.Metrics.Names() {
		names[n] = true
	}
	_ = srv.Stop()
	return names
}

// runningDeployment is a node with the kinds whose families appear only
// once their stage runs: a forward to a target that is not there, and a
// static directory with a peer that is not there.
const runningDeployment = `
server {
  http = "127.0.0.1:0"
  api  = "127.0.0.1:0"
}
ingest "rtmp" { listen = "127.0.0.1:0" }
directory "static" {
  listen = "127.0.0.1:0"
  peers  = ["http://127.0.0.1:1"]
}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
  forward "rtmp" { to = ["rtmp://127.0.0.1:1/live"] }
}
`

// histogramBase returns the family a histogram's or summary's series
// belongs to (NAME_bucket, NAME_sum and NAME_count are NAME's), or name.
func histogramBase(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(name, suffix); ok {
			return b
		}
	}
	return name
}

// balanced reports whether the brackets of a PromQL expression pair up
// outside its string literals, and its quotes close.
func balanced(e string) bool {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	var quote rune
	for _, r := range e {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'' || r == '`':
			quote = r
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return quote == 0 && len(stack) == 0
}
