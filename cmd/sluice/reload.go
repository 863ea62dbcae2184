package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/plugins/host"
)

// operator is the running node's pipeline.Operator: it knows the file and
// its variables, and reloads them into the node.
type operator struct {
	file    string
	vars    varFlags
	kinds   *pipeline.Kinds
	rt      *pipeline.Runtime
	node    *pipeline.Node
	plugins *host.Host
	level   *slog.LevelVar
	started time.Time

	mu     sync.Mutex // one reload at a time
	hash   string     // of the configuration applied last
	format string     // server.log_format applied at start
	last   *pipeline.ReloadResult
	counts *pipeline.CounterVec
}

func newOperator(file string, vars varFlags, rt *pipeline.Runtime, node *pipeline.Node, plugins *host.Host, level *slog.LevelVar, f *config.File) *operator {
	op := &operator{file: file, vars: vars, kinds: builtinKinds(), rt: rt, node: node, plugins: plugins, level: level,
		started: time.Now(), format: f.Server.LogFormat,
		counts: rt.Metrics.Counter("sluice_reloads_total", "Configuration reloads, by result: applied, unchanged, invalid (the file was refused; nothing changed) or failed (a listener could not be bound; nothing changed).", "result")}
	op.hash = combineHash(node.Graph().Hash(), plugins.Hash(), f.Server)
	return op
}

// Node implements pipeline.Operator.
func (op *operator) Node() pipeline.NodeInfo {
	op.mu.Lock()
	defer op.mu.Unlock()
	info := pipeline.NodeInfo{Version: versionString(), Started: op.started, File: op.file, ConfigHash: op.hash, Listeners: map[string]string{}}
	if op.last != nil {
		r := *op.last
		info.LastReload = &r
	}
	g := op.node.Graph()
	for _, s := range g.Stages() {
		if a := g.Addr(s.Address); a != nil {
			name := s.Address
			switch name {
			case "server.http":
				name = "http"
			case "server.api":
				name = "api"
			}
			info.Listeners[name] = a.String()
		}
	}
	return info
}

// Reload implements pipeline.Operator.
func (op *operator) Reload(ctx context.Context, req pipeline.ReloadRequest) (*pipeline.Plan, error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	plan, err := op.reload(ctx, req)
	if req.DryRun {
		return plan, err
	}
	res := pipeline.ReloadResult{At: time.Now().UTC()}
	var re *pipeline.ReloadError
	switch {
	case errors.As(err, &re):
		res.Result, res.Error = re.Result, re.Diagnostics
	case err != nil:
		res.Result, res.Error = "failed", err.Error()
	case plan.Empty():
		res.Result = "unchanged"
	default:
		res.Result, res.Changes = "applied", len(plan.Changes)
	}
	op.last = &res
	op.counts.With(res.Result).Inc()
	return plan, err
}

func (op *operator) reload(ctx context.Context, req pipeline.ReloadRequest) (*pipeline.Plan, error) {
	log := op.rt.Log
	var f *config.File
	var diags hcl.Diagnostics
	name := op.file
	if req.Source != nil {
		if !req.DryRun {
			return nil, &pipeline.ReloadError{Result: "invalid", Diagnostics: "a reload applies the node's own file; a source text can only be planned (dry_run)"}
		}
		name = "(sent) " + op.file
		f, diags = config.Parse(name, req.Source, config.Options{Vars: op.vars, Kinds: op.kinds})
	} else {
		f, diags = config.Load(op.file, config.Options{Vars: op.vars, Kinds: op.kinds})
	}
	invalid := func(diags hcl.Diagnostics) error {
		var b bytes.Buffer
		_ = config.WriteDiagnostics(&b, filesOf(f), diags, 78, false)
		if !req.DryRun {
			log.Error("reload refused: the file is invalid; the running configuration stays", "file", name, "diagnostics", b.String())
		}
		return &pipeline.ReloadError{Result: "invalid", Diagnostics: b.String()}
	}
	if diags.HasErrors() {
		return nil, invalid(diags)
	}
	staged, hd := op.plugins.Stage(f)
	diags = append(diags, hd...)
	g, bd := pipeline.BuildWith(f, op.kinds, op.rt, pipeline.BuildOptions{Plugins: op.plugins, Prev: op.node.Graph()})
	diags = append(diags, bd...)
	if diags.HasErrors() {
		staged.Discard()
		return nil, invalid(diags)
	}
	plan := op.node.Plan(g)
	plan.Changes = append(staged.Changes(), plan.Changes...)
	plan.Hash = combineHash(plan.Hash, staged.Hash(), f.Server)
	plan.From = op.hash
	plan.Changes = append(plan.Changes, op.serverChanges(f)...)
	if req.DryRun {
		staged.Discard()
		return plan, nil
	}
	if req.Expect != "" && req.Expect != plan.Hash {
		staged.Discard()
		return plan, &pipeline.ReloadError{Result: "failed", Diagnostics: fmt.Sprintf("the file now plans configuration %s, not the %s that was expected: plan it again", plan.Hash, req.Expect)}
	}
	if plan.Empty() {
		staged.Discard()
		log.Info("reload: nothing changed", "file", name, "config_hash", plan.Hash)
		return plan, nil
	}
	// New and changed plugins start before anything uses them; the old
	// ones stop once nothing does.
	staged.Start(ctx)
	applied, err := op.node.Apply(g)
	if err != nil {
		staged.Finish()
		log.Error("reload failed; the running configuration stays", "file", name, "err", err)
		return plan, err
	}
	staged.Finish()
	op.level.Set(logLevel(f.Server.LogLevel))
	applied.Changes = plan.Changes
	applied.Hash, applied.From = plan.Hash, plan.From
	for _, c := range applied.Changes {
		args := []any{"stage", c.Address, "action", c.Action}
		if len(c.Fields) > 0 {
			names := make([]string, len(c.Fields))
			for i, fc := range c.Fields {
				names[i] = fc.Name
			}
			args = append(args, "fields", strings.Join(names, ","))
		}
		if c.Rebind != nil {
			args = append(args, "old_addr", c.Rebind.Old, "new_addr", c.Rebind.New)
		}
		args = append(args, "sessions", c.Sessions, "effect", c.Effect)
		log.Info("reload: "+c.Action+" "+c.Address, args...)
	}
	log.Info("reload applied", "file", name, "changes", len(applied.Changes), "config_hash", applied.Hash, "from_hash", applied.From)
	op.hash = applied.Hash
	return applied, nil
}

// serverChanges reports the server block's attributes that no stage
// carries (the listeners are stages of their own).
func (op *operator) serverChanges(f *config.File) []pipeline.Change {
	old := op.node.Graph().Server()
	nw := f.Server
	var fields []pipeline.FieldChange
	add := func(name string, o, n any) {
		if fmt.Sprint(o) != fmt.Sprint(n) {
			fields = append(fields, pipeline.FieldChange{Name: name, Old: fmt.Sprint(o), New: fmt.Sprint(n)})
		}
	}
	add("auth_timeout", old.AuthTimeout, nw.AuthTimeout)
	add("notify_timeout", old.NotifyTimeout, nw.NotifyTimeout)
	add("node", old.Node, nw.Node)
	add("log_level", old.LogLevel, nw.LogLevel)
	add("log_format", old.LogFormat, nw.LogFormat)
	add("stop_hold", old.StopHold, nw.StopHold)
	if old.APIToken != nw.APIToken {
		// Never printed: the plan is shown and logged.
		fields = append(fields, pipeline.FieldChange{Name: "api_token", Old: redacted(old.APIToken), New: redacted(nw.APIToken)})
	}
	if len(fields) == 0 {
		return nil
	}
	effect := "applies from the next decision and log line"
	if old.LogFormat != nw.LogFormat {
		effect += "; log_format takes effect at the next start"
	}
	return []pipeline.Change{{Address: "server", Action: "change", Fields: fields, Effect: effect}}
}

// redacted stands for a secret in a plan.
func redacted(s string) string {
	if s == "" {
		return ""
	}
	return "(set)"
}

// combineHash is a configuration's hash: its stages and pipelines (the
// graph's), its plugin blocks and its server block.
func combineHash(graph, plugins string, server config.Server) string {
	sb, _ := json.Marshal(server)
	h := sha256.Sum256([]byte(graph + " " + plugins + " " + string(sb)))
	return hex.EncodeToString(h[:])[:16]
}

// apiClient talks to a running node's API for `sluice reload` and
// `sluice validate --diff`.
type apiClient struct {
	base  string // http://127.0.0.1:9997
	token string
	http  *http.Client
}

// newAPIClient finds the API of the node that runs file (its server.api),
// unless api names it.
func newAPIClient(api, token, file string, vars varFlags, stderr io.Writer) (*apiClient, bool) {
	if api == "" {
		f, diags := config.Load(file, config.Options{Vars: vars})
		if diags.HasErrors() {
			_ = config.WriteDiagnostics(stderr, filesOf(f), diags, 78, isTerminal(stderr))
			return nil, false
		}
		api = f.Server.API
		if api == "" {
			fmt.Fprintf(stderr, "sluice: %s has no server.api, so the running node cannot be reached; pass -api HOST:PORT\n", file)
			return nil, false
		}
	}
	if token == "" {
		token = os.Getenv("SLUICE_API_TOKEN")
	}
	base := api
	if !strings.Contains(base, "://") {
		host, port, err := net.SplitHostPort(base)
		if err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
			base = net.JoinHostPort("127.0.0.1", port)
		}
		base = "http://" + base
	}
	return &apiClient{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{Timeout: 2 * time.Minute}}, true
}

// reload posts to /api/v1/reload and decodes the plan, or the refusal.
func (c *apiClient) reload(query string, body []byte) (*pipeline.Plan, error) {
	req, err := http.NewRequest(http.MethodPost, c.base+"/api/v1/reload"+query, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the node's API at %s: %w (is it running? is server.api right?)", c.base, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error       string `json:"error"`
			Diagnostics string `json:"diagnostics"`
		}
		if json.Unmarshal(data, &e) == nil && (e.Diagnostics != "" || e.Error != "") {
			if e.Diagnostics != "" {
				return nil, errors.New(strings.TrimRight(e.Diagnostics, "\n"))
			}
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	var p pipeline.Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("the API answered something that is not a plan: %w", err)
	}
	return &p, nil
}

// cmdReload is `sluice reload`: the running node re-reads its file.
func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	vars := varFlags{}
	fs.Var(vars, "var", "a variable of the file, to find server.api: -var name=value (repeatable)")
	api := fs.String("api", "", "the node's API address (default: server.api of FILE)")
	token := fs.String("token", "", "the API token (default: $SLUICE_API_TOKEN)")
	expect := fs.String("expect", "", "refuse unless the reload applies the plan with this hash (from sluice validate --diff)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	file := "pipeline.hcl"
	if fs.NArg() > 0 {
		file = fs.Arg(0)
	}
	c, ok := newAPIClient(*api, *token, file, vars, stderr)
	if !ok {
		return 1
	}
	q := ""
	if *expect != "" {
		q = "?expect=" + *expect
	}
	p, err := c.reload(q, nil)
	if err != nil {
		fmt.Fprintf(stderr, "sluice reload: refused; the running configuration stays:\n%v\n", err)
		return 1
	}
	writePlan(stdout, "Applied", p)
	return 0
}

// diffPlan is `sluice validate --diff`: what a reload of file would do.
func diffPlan(file string, vars varFlags, api, token string, stdout, stderr io.Writer) int {
	src, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "sluice validate: %v\n", err)
		return 1
	}
	c, ok := newAPIClient(api, token, file, vars, stderr)
	if !ok {
		return 1
	}
	p, err := c.reload("?dry_run=true", src)
	if err != nil {
		fmt.Fprintf(stderr, "sluice validate --diff: %v\n", err)
		return 1
	}
	writePlan(stdout, "Plan", p)
	return 0
}

// writePlan prints p the way an operator reads a change before making it.
func writePlan(w io.Writer, title string, p *pipeline.Plan) {
	if p.Empty() {
		fmt.Fprintf(w, "%s: no changes (configuration %s).\n", title, p.Hash)
		return
	}
	fmt.Fprintf(w, "%s: configuration %s -> %s\n\n", title, p.From, p.Hash)
	counts := map[string]int{}
	for _, c := range p.Changes {
		counts[c.Action]++
		mark := map[string]string{"add": "+", "remove": "-", "change": "~"}[c.Action]
		fmt.Fprintf(w, "  %s %s\n", mark, c.Address)
		for _, f := range c.Fields {
			fmt.Fprintf(w, "      %s: %s -> %s\n", f.Name, orNone(f.Old), orNone(f.New))
		}
		if c.Rebind != nil {
			fmt.Fprintf(w, "      listener moves: %s -> %s (the new one is bound before the old one closes)\n", c.Rebind.Old, c.Rebind.New)
		}
		if c.Effect != "" {
			fmt.Fprintf(w, "      %s\n", c.Effect)
		}
	}
	fmt.Fprintf(w, "\n%d to add, %d to change, %d to remove. Apply it with: sluice reload -expect %s\n",
		counts["add"], counts["change"], counts["remove"], p.Hash)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// logLevel parses server.log_level; an unknown one is info (the config
// decoder has refused it already).
func logLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}
