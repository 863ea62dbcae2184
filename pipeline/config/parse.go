package config

import (
	"fmt"
	"os"
	"path"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// Defaults of the server and pipeline blocks.
const (
	DefaultHTTP            = ":8080"
	DefaultAPI             = "127.0.0.1:9997"
	DefaultShutdownTimeout = 5 * time.Second
	DefaultAuthTimeout     = 5 * time.Second
	DefaultNotifyTimeout   = 2 * time.Second
	DefaultStopHold        = 30 * time.Second
	DefaultGOPCache        = 1
	DefaultBufferFrames    = 1024
	DefaultMaxBufferBytes  = 64 << 20
	DefaultMaxReaderLag    = 5 * time.Second
	DefaultWaitPublisher   = 10 * time.Second
	DefaultPublisherGrace  = 5 * time.Second
	DefaultMergeWindow     = 100 * time.Millisecond
)

// coreBlocks are the top-level blocks the decoder itself knows; every other
// block type comes from the registered kinds.
var coreBlocks = []string{"server", "variable", "plugin", "pipeline"}

// pipelineAttrs are the attributes of a pipeline block itself.
var pipelineAttrs = []string{"match", "auth", "gop_cache", "buffer_frames", "max_buffer_bytes", "max_reader_lag", "wait_publisher", "publisher_grace", "write_mode", "merge_window"}

// types returns the block types known in scope: the registered ones, or,
// without a KindSet (tests of the decoder alone), nil, meaning any.
func (d *decoder) types(scope string) []string {
	if d.opts.Kinds == nil {
		return nil
	}
	return d.opts.Kinds.Types(scope)
}

// isType reports whether typ is a block type of scope.
func (d *decoder) isType(scope, typ string) bool {
	if d.opts.Kinds == nil {
		return true
	}
	return contains(d.opts.Kinds.Types(scope), typ)
}

func (d *decoder) single(path string) string {
	if d.opts.Kinds == nil {
		if path == "pipeline.transcode" {
			return "plugin"
		}
		return ""
	}
	return d.opts.Kinds.Single(path)
}

// decoder carries the state of one Parse.
type decoder struct {
	f     *File
	opts  Options
	diags hcl.Diagnostics
}

func (d *decoder) errorf(rng *hcl.Range, summary, detail string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(detail, args...),
		Subject:  rng,
	})
}

// Parse decodes src, named name in diagnostics. The File is never nil, so
// its Files can always be used to print the diagnostics.
func Parse(name string, src []byte, opts Options) (*File, hcl.Diagnostics) {
	f := &File{Files: map[string]*hcl.File{}, Variables: map[string]cty.Value{}}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	hf, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if hf != nil {
		f.Files[name] = hf
	}
	if diags.HasErrors() {
		return f, diags
	}
	body := hf.Body.(*hclsyntax.Body)
	d := &decoder{f: f, opts: opts, diags: diags}

	for _, a := range body.Attributes {
		d.errorf(a.NameRange.Ptr(), "Unexpected attribute",
			"%q is not allowed at the top level; it belongs inside a block (%s).", a.Name, strings.Join(append(append([]string{}, coreBlocks...), d.types("")...), ", "))
	}
	// Variables first: every other block may refer to them.
	for _, b := range body.Blocks {
		if b.Type == "variable" {
			d.variable(b)
		}
	}
	for name := range opts.Vars {
		if _, ok := f.Variables[name]; !ok {
			d.errorf(nil, "Undeclared variable", "-var %s was given, but the file declares no variable %q. Add a `variable %q {}` block or drop the flag.", name, name, name)
		}
	}
	plugins := map[string]cty.Value{}
	for _, b := range body.Blocks {
		if b.Type == "plugin" && len(b.Labels) == 1 {
			plugins[b.Labels[0]] = cty.StringVal(b.Labels[0])
		}
	}
	f.EvalContext = &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":    cty.ObjectVal(f.Variables),
			"plugin": cty.ObjectVal(plugins),
		},
		Functions: d.functions(),
	}

	f.Server = Server{HTTP: DefaultHTTP, API: DefaultAPI, ShutdownTimeout: DefaultShutdownTimeout,
		AuthTimeout: DefaultAuthTimeout, NotifyTimeout: DefaultNotifyTimeout, LogLevel: "info", LogFormat: "text",
		StopHold: DefaultStopHold, Limits: DefaultLimits()}
	if h, err := os.Hostname(); err == nil {
		f.Server.Node = h
	}
	seen := map[string]*hcl.Range{}
	dup := func(kind, key string, rng hcl.Range) bool {
		if prev := seen[kind+" "+key]; prev != nil {
			d.errorf(rng.Ptr(), "Duplicate "+kind, "%s %q is already declared at %s.", kind, key, prev)
			return true
		}
		seen[kind+" "+key] = rng.Ptr()
		return false
	}
	for _, b := range body.Blocks {
		switch b.Type {
		case "variable":
		case "server":
			if d.labels(b, 0, 0, nil) && !dup("block", "server", b.DefRange()) {
				d.server(b)
			}
		case "plugin":
			if d.labels(b, 1, 1, []string{"name"}) && !dup("plugin", b.Labels[0], b.DefRange()) {
				f.Plugins = append(f.Plugins, &PluginBlock{Name: b.Labels[0], Body: b.Body, DefRange: b.DefRange()})
			}
		case "pipeline":
			if d.labels(b, 1, 1, []string{"name"}) && !dup("pipeline", b.Labels[0], b.DefRange()) {
				if p := d.pipeline(b); p != nil {
					f.Pipelines = append(f.Pipelines, p)
				}
			}
		default:
			if !d.isType("", b.Type) {
				known := append(append([]string{}, coreBlocks...), d.types("")...)
				d.errorf(b.TypeRange.Ptr(), "Unsupported block type",
					"Blocks of type %q are not expected here; this build knows %s.%s", b.Type, strings.Join(known, ", "), suggest(b.Type, known))
				continue
			}
			if kb := d.kindBlock(b, b.Type, ""); kb != nil && !dup(b.Type, kb.Address(), b.DefRange()) {
				f.Blocks = append(f.Blocks, kb)
			}
		}
	}
	return f, d.diags
}

// labels checks a block's label count.
func (d *decoder) labels(b *hclsyntax.Block, min, max int, names []string) bool {
	if n := len(b.Labels); n < min || n > max {
		want := "no labels"
		switch {
		case min == max && max > 0:
			want = fmt.Sprintf("%d label%s (%s)", max, plural(max), strings.Join(names, ", "))
		case max > 0:
			want = fmt.Sprintf("%d to %d labels (%s)", min, max, strings.Join(names, ", "))
		}
		rng := b.DefRange()
		d.errorf(&rng, "Wrong number of labels", "A %s block takes %s, not %d.", b.Type, want, n)
		return false
	}
	return true
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func suggest(got string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dist := levenshtein.Distance(got, k, nil); dist < bestD {
			best, bestD = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf(" Did you mean %q?", best)
	}
	return ""
}

func (d *decoder) functions() map[string]function.Function {
	lookup := d.opts.LookupEnv
	return map[string]function.Function{
		// env("NAME") is the environment variable NAME; env("NAME", "x")
		// falls back to "x" when it is unset. An unset variable without a
		// fallback is an error, so a missing secret is never "".
		"env": function.New(&function.Spec{
			Params:   []function.Parameter{{Name: "name", Type: cty.String}},
			VarParam: &function.Parameter{Name: "default", Type: cty.String},
			Type:     function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				name := args[0].AsString()
				if v, ok := lookup(name); ok {
					return cty.StringVal(v), nil
				}
				if len(args) > 1 {
					return args[1], nil
				}
				return cty.NilVal, fmt.Errorf("environment variable %s is not set; set it, or give a default: env(%q, \"value\")", name, name)
			},
		}),
	}
}

// variable decodes variable "NAME" { default = ..., description = "..." }.
func (d *decoder) variable(b *hclsyntax.Block) {
	if !d.labels(b, 1, 1, []string{"name"}) {
		return
	}
	name := b.Labels[0]
	if !hclsyntax.ValidIdentifier(name) {
		d.errorf(b.LabelRanges[0].Ptr(), "Invalid variable name", "%q is not a valid name: use letters, digits, _ and -, starting with a letter.", name)
		return
	}
	if _, dup := d.f.Variables[name]; dup {
		d.errorf(b.LabelRanges[0].Ptr(), "Duplicate variable", "Variable %q is declared twice.", name)
		return
	}
	content, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "default"}, {Name: "description"}}})
	d.diags = append(d.diags, diags...)
	def := cty.NilVal
	if a := content.Attributes["default"]; a != nil {
		v, diags := a.Expr.Value(&hcl.EvalContext{Functions: d.functions()})
		d.diags = append(d.diags, diags...)
		def = v
	}
	if s, ok := d.opts.Vars[name]; ok {
		v := cty.StringVal(s)
		if t := strings.TrimSpace(s); strings.HasPrefix(t, "[") || strings.HasPrefix(t, "{") ||
			def != cty.NilVal && (def.Type().IsTupleType() || def.Type().IsListType() || def.Type().IsObjectType() || def.Type().IsMapType()) {
			// A list or object, written as in HCL, as Terraform takes it:
			// -var 'upstreams=["rtmp://a:1935","rtmp://b:1935"]'.
			expr, diags := hclsyntax.ParseExpression([]byte(s), "-var "+name, hcl.InitialPos)
			if !diags.HasErrors() {
				v, diags = expr.Value(nil)
			}
			if diags.HasErrors() {
				d.errorf(b.LabelRanges[0].Ptr(), "Invalid -var value", "-var %s=%s: a list or object value must be written as in HCL, such as [\"a\", \"b\"]: %s", name, s, diags.Error())
				d.f.Variables[name] = cty.DynamicVal
				return
			}
			d.f.Variables[name] = v
			return
		}
		if def != cty.NilVal && def.Type() == cty.Number {
			n, err := cty.ParseNumberVal(s)
			if err != nil {
				d.errorf(b.LabelRanges[0].Ptr(), "Invalid -var value", "-var %s=%s: the default is a number, so the value must be one.", name, s)
				return
			}
			v = n
		} else if def != cty.NilVal && def.Type() == cty.Bool {
			bv, err := strconv.ParseBool(s)
			if err != nil {
				d.errorf(b.LabelRanges[0].Ptr(), "Invalid -var value", "-var %s=%s: the default is a bool, so the value must be true or false.", name, s)
				return
			}
			v = cty.BoolVal(bv)
		}
		d.f.Variables[name] = v
		return
	}
	if def == cty.NilVal {
		d.errorf(b.LabelRanges[0].Ptr(), "Variable without a value", "Variable %q has no default; set it with -var %s=VALUE.", name, name)
		d.f.Variables[name] = cty.DynamicVal
		return
	}
	d.f.Variables[name] = def
}

// attrs evaluates the attributes of a block against a fixed schema, with
// unknown attributes reported and nested blocks handled by the caller.
func (d *decoder) attrs(body *hclsyntax.Body, known []string, blocks []string) map[string]*hclsyntax.Attribute {
	out := map[string]*hclsyntax.Attribute{}
	for name, a := range body.Attributes {
		if !contains(known, name) {
			d.errorf(a.NameRange.Ptr(), "Unsupported argument", "An argument named %q is not expected here.%s", name, suggest(name, known))
			continue
		}
		out[name] = a
	}
	for _, b := range body.Blocks {
		if !contains(blocks, b.Type) {
			d.errorf(b.TypeRange.Ptr(), "Unsupported block type", "Blocks of type %q are not expected here.%s", b.Type, suggest(b.Type, append(append([]string{}, blocks...), known...)))
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (d *decoder) str(a *hclsyntax.Attribute, dst *string) bool {
	if a == nil {
		return false
	}
	v, diags := a.Expr.Value(d.f.EvalContext)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return false
	}
	if v.IsNull() || !v.IsKnown() {
		d.errorf(a.Expr.Range().Ptr(), "Invalid value", "%s must be a string.", a.Name)
		return false
	}
	switch v.Type() {
	case cty.String:
		*dst = v.AsString()
	case cty.Number:
		*dst = v.AsBigFloat().Text('f', -1)
	default:
		d.errorf(a.Expr.Range().Ptr(), "Invalid value", "%s must be a string, not %s.", a.Name, v.Type().FriendlyName())
		return false
	}
	return true
}

func (d *decoder) duration(a *hclsyntax.Attribute, dst *time.Duration, min, max time.Duration) {
	var s string
	if !d.str(a, &s) {
		return
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < min || v > max {
		d.errorf(a.Expr.Range().Ptr(), "Invalid duration", "%s = %q: want a duration between %s and %s, such as \"5s\" or \"100ms\".", a.Name, s, min, max)
		return
	}
	*dst = v
}

func (d *decoder) integer(a *hclsyntax.Attribute, dst *int, min, max int) {
	if a == nil {
		return
	}
	v, diags := a.Expr.Value(d.f.EvalContext)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return
	}
	var n int
	if v.Type() == cty.String {
		var err error
		if n, err = strconv.Atoi(v.AsString()); err != nil {
			d.errorf(a.Expr.Range().Ptr(), "Invalid number", "%s must be a whole number between %d and %d.", a.Name, min, max)
			return
		}
	} else if err := gohcl.DecodeExpression(a.Expr, d.f.EvalContext, &n); err != nil {
		d.errorf(a.Expr.Range().Ptr(), "Invalid number", "%s must be a whole number between %d and %d.", a.Name, min, max)
		return
	}
	if n < min || n > max {
		d.errorf(a.Expr.Range().Ptr(), "Number out of range", "%s = %d: must be between %d and %d.", a.Name, n, min, max)
		return
	}
	*dst = n
}

// size reads a byte count: a whole number, or one with a unit such as
// "64MiB", "500MB", "2GiB".
func (d *decoder) size(a *hclsyntax.Attribute, dst *int64, min, max int64) {
	var s string
	if !d.str(a, &s) {
		return
	}
	n, err := ParseSize(s)
	if err != nil || n < min || n > max {
		d.errorf(a.Expr.Range().Ptr(), "Invalid size", "%s = %q: want a size between %d and %d bytes, such as \"64MiB\" or \"500MB\".", a.Name, s, min, max)
		return
	}
	*dst = n
}

// ParseSize reads a byte count: digits, then optionally a unit, B, KB, MB,
// GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, err
	}
	units := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
	m, ok := units[strings.TrimSpace(s[i:])]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit; use B, KB, MB, GB, KiB, MiB or GiB", s)
	}
	if n > (1<<62)/m {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * m, nil
}

func (d *decoder) server(b *hclsyntax.Block) {
	known := []string{"http", "https", "api", "api_token", "stop_hold", "shutdown_timeout", "auth_timeout", "notify_timeout", "log_level", "log_format", "node"}
	a := d.attrs(b.Body, known, []string{"tls", "api_tls", "limits"})
	s := &d.f.Server
	for i, blk := range b.Body.Blocks {
		if blk.Type != "limits" {
			continue
		}
		if i > 0 && hasBlock(b.Body.Blocks[:i], "limits") {
			d.errorf(blk.DefRange().Ptr(), "Duplicate block", "The server block has a limits block already; put every limit in one.")
			continue
		}
		d.limitsBlock(blk)
	}
	d.str(a["http"], &s.HTTP)
	d.str(a["api"], &s.API)
	d.serverTLS(b, a)
	d.duration(a["shutdown_timeout"], &s.ShutdownTimeout, 100*time.Millisecond, 10*time.Minute)
	d.duration(a["auth_timeout"], &s.AuthTimeout, 10*time.Millisecond, time.Minute)
	d.duration(a["notify_timeout"], &s.NotifyTimeout, 10*time.Millisecond, time.Minute)
	if d.str(a["log_level"], &s.LogLevel) && !contains([]string{"debug", "info", "warn", "error"}, s.LogLevel) {
		d.errorf(a["log_level"].Expr.Range().Ptr(), "Invalid log level", "log_level = %q: use debug, info, warn or error.", s.LogLevel)
	}
	if d.str(a["log_format"], &s.LogFormat) && s.LogFormat != "text" && s.LogFormat != "json" {
		d.errorf(a["log_format"].Expr.Range().Ptr(), "Invalid log format", "log_format = %q: use text or json.", s.LogFormat)
	}
	d.str(a["node"], &s.Node)
	d.str(a["api_token"], &s.APIToken)
	d.duration(a["stop_hold"], &s.StopHold, 0, 24*time.Hour)
	d.apiExposure(b, a)
}

// serverTLS reads the server block's https attribute and its tls and
// api_tls blocks. Each block goes with a listener: a tls block without
// https, or https without a tls block, is an error rather than a listener
// silently missing.
func (d *decoder) serverTLS(b *hclsyntax.Block, a map[string]*hclsyntax.Attribute) {
	s := &d.f.Server
	d.str(a["https"], &s.HTTPS)
	seen := map[string]*hcl.Range{}
	for _, blk := range b.Body.Blocks {
		if blk.Type != "tls" && blk.Type != "api_tls" {
			continue
		}
		if prev := seen[blk.Type]; prev != nil {
			d.errorf(blk.DefRange().Ptr(), "Duplicate block", "The server block has a %s block already, at %s.", blk.Type, prev)
			continue
		}
		seen[blk.Type] = blk.DefRange().Ptr()
		if !d.labels(blk, 0, 0, nil) {
			continue
		}
		t := d.tlsBlock(blk)
		if blk.Type == "tls" {
			s.TLS = t
		} else {
			s.APITLS = t
		}
	}
	switch {
	case s.HTTPS != "" && seen["tls"] == nil:
		d.errorf(a["https"].Expr.Range().Ptr(), "Missing tls block", "https = %q needs the certificate to present: add tls { cert_file = \"...\"  key_file = \"...\" } to the server block.", s.HTTPS)
	case s.HTTPS == "" && seen["tls"] != nil:
		d.errorf(seen["tls"], "Unused tls block", "The server block's tls block is the certificate of the HTTPS listener, which is off; set https = \":8443\", or remove the block.")
	}
	if s.API == "" && seen["api_tls"] != nil {
		d.errorf(seen["api_tls"], "Unused api_tls block", "api_tls is the certificate of the API listener, which is off (api = \"\"); set api, or remove the block.")
	}
}

// tlsBlock reads a tls block of the server block: cert_file and key_file,
// both required.
func (d *decoder) tlsBlock(blk *hclsyntax.Block) *TLS {
	a := d.attrs(blk.Body, []string{"cert_file", "key_file"}, nil)
	t := &TLS{}
	for _, f := range []struct {
		name string
		dst  *string
		rng  *hcl.Range
	}{{"cert_file", &t.CertFile, &t.CertRange}, {"key_file", &t.KeyFile, &t.KeyRange}} {
		attr := a[f.name]
		if attr == nil {
			d.errorf(blk.DefRange().Ptr(), "Missing "+f.name, "The %s block needs cert_file (the certificate chain, leaf first) and key_file (its private key), both PEM files.", blk.Type)
			continue
		}
		if d.str(attr, f.dst) && *f.dst == "" {
			d.errorf(attr.Expr.Range().Ptr(), "Invalid value", "%s names no file.", f.name)
		}
		*f.rng = attr.Expr.Range()
	}
	return t
}

// kindBlock reads the labels of a kind block: TYPE "KIND" ["NAME"].
func (d *decoder) kindBlock(b *hclsyntax.Block, typ, pipeline string) *KindBlock {
	path := typ
	if pipeline != "" {
		path = "pipeline." + typ
	}
	if one := d.single(path); one != "" {
		// TYPE "NAME": the type has one kind, and the label names the
		// instance.
		if !d.labels(b, 1, 1, []string{"name"}) {
			return nil
		}
		return &KindBlock{Type: typ, Kind: one, Single: true, Name: b.Labels[0], Pipeline: pipeline, Body: b.Body, DefRange: b.DefRange(), KindRange: b.LabelRanges[0]}
	}
	if !d.labels(b, 1, 2, []string{"kind", "name"}) {
		return nil
	}
	kb := &KindBlock{Type: typ, Kind: b.Labels[0], Pipeline: pipeline, Body: b.Body, DefRange: b.DefRange(), KindRange: b.LabelRanges[0]}
	if len(b.Labels) == 2 {
		kb.Name = b.Labels[1]
		if !validName(kb.Name) {
			d.errorf(b.LabelRanges[1].Ptr(), "Invalid name", "%q: a block name uses letters, digits, _ and -.", kb.Name)
			return nil
		}
	}
	if d.opts.Kinds != nil {
		known := d.opts.Kinds.Kinds(path)
		if !contains(known, kb.Kind) {
			list := "none"
			if len(known) > 0 {
				list = strings.Join(known, ", ")
			}
			d.errorf(kb.KindRange.Ptr(), fmt.Sprintf("Unknown %s kind %q", typ, kb.Kind),
				"Known %s kinds: %s.%s", typ, list, suggest(kb.Kind, known))
			return nil
		}
	}
	return kb
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func (d *decoder) pipeline(b *hclsyntax.Block) *Pipeline {
	p := &Pipeline{
		Name:           b.Labels[0],
		GOPCache:       DefaultGOPCache,
		BufferFrames:   DefaultBufferFrames,
		MaxBufferBytes: DefaultMaxBufferBytes,
		MaxReaderLag:   DefaultMaxReaderLag,
		WaitPublisher:  DefaultWaitPublisher,
		PublisherGrace: DefaultPublisherGrace,
		WriteMode:      WriteThroughput,
		MergeWindow:    DefaultMergeWindow,
		DefRange:       b.DefRange(),
	}
	if !validName(p.Name) {
		d.errorf(b.LabelRanges[0].Ptr(), "Invalid pipeline name", "%q: a pipeline name uses letters, digits, _ and -.", p.Name)
		return nil
	}
	a := d.pipelineAttrs(b.Body)
	if m := a["match"]; m == nil {
		d.errorf(b.DefRange().Ptr(), "Missing match", "pipeline %q needs a match, such as match = \"live/*\", to say which streams it owns.", p.Name)
	} else {
		v, diags := m.Expr.Value(d.f.EvalContext)
		d.diags = append(d.diags, diags...)
		if !diags.HasErrors() {
			var list []string
			switch {
			case v.Type() == cty.String:
				list = []string{v.AsString()}
			default:
				if err := gohcl.DecodeExpression(m.Expr, d.f.EvalContext, &list); err != nil {
					d.errorf(m.Expr.Range().Ptr(), "Invalid match", "match must be a pattern string or a list of them, such as \"live/*\".")
				}
			}
			for _, pat := range list {
				if _, err := path.Match(pat, ""); err != nil || pat == "" || strings.HasPrefix(pat, "/") {
					d.errorf(m.Expr.Range().Ptr(), "Invalid match pattern", "%q is not a stream path pattern; use path.Match syntax without a leading /, such as \"live/*\".", pat)
				}
			}
			p.Match = list
		}
	}
	if au := a["auth"]; au != nil {
		d.str(au, &p.Auth)
		if p.Auth != "" && !d.hasPlugin(p.Auth) {
			d.errorf(au.Expr.Range().Ptr(), "Unknown plugin", "auth = %q, but no plugin %q block is declared.", p.Auth, p.Auth)
		}
	}
	d.integer(a["gop_cache"], &p.GOPCache, 0, 16)
	d.integer(a["buffer_frames"], &p.BufferFrames, 64, 65536)
	d.size(a["max_buffer_bytes"], &p.MaxBufferBytes, 1<<20, 1<<40)
	d.duration(a["max_reader_lag"], &p.MaxReaderLag, 100*time.Millisecond, time.Minute)
	d.duration(a["wait_publisher"], &p.WaitPublisher, 0, 10*time.Minute)
	d.duration(a["publisher_grace"], &p.PublisherGrace, 0, 10*time.Minute)
	if d.str(a["write_mode"], &p.WriteMode) && p.WriteMode != WriteThroughput && p.WriteMode != WriteLatency {
		d.errorf(a["write_mode"].Expr.Range().Ptr(), "Invalid write mode", "write_mode = %q: use \"throughput\" (writes merged over merge_window) or \"latency\" (every frame written at once).", p.WriteMode)
	}
	d.duration(a["merge_window"], &p.MergeWindow, 0, time.Second)

	for _, cb := range b.Body.Blocks {
		if !d.isType("pipeline", cb.Type) {
			continue // reported by pipelineAttrs
		}
		if kb := d.kindBlock(cb, cb.Type, p.Name); kb != nil && d.uniqueIn(p.Blocks, kb) {
			p.Blocks = append(p.Blocks, kb)
		}
	}
	return p
}

// pipelineAttrs reads a pipeline block's own attributes and reports
// attributes and blocks it does not know, with the registered block types
// in the suggestions.
func (d *decoder) pipelineAttrs(body *hclsyntax.Body) map[string]*hclsyntax.Attribute {
	out := map[string]*hclsyntax.Attribute{}
	for name, a := range body.Attributes {
		if !contains(pipelineAttrs, name) {
			d.errorf(a.NameRange.Ptr(), "Unsupported argument", "An argument named %q is not expected here.%s", name, suggest(name, pipelineAttrs))
			continue
		}
		out[name] = a
	}
	for _, b := range body.Blocks {
		if !d.isType("pipeline", b.Type) {
			known := d.types("pipeline")
			d.errorf(b.TypeRange.Ptr(), "Unsupported block type", "Blocks of type %q are not expected here; a pipeline takes %s.%s",
				b.Type, strings.Join(known, ", "), suggest(b.Type, append(append([]string{}, known...), pipelineAttrs...)))
		}
	}
	return out
}

func (d *decoder) uniqueIn(list []*KindBlock, kb *KindBlock) bool {
	for _, o := range list {
		if o.Address() == kb.Address() {
			d.errorf(kb.DefRange.Ptr(), "Duplicate block", "%s is already declared at %s; give the second one a name label: %s %q \"NAME\".", kb.Address(), o.DefRange, kb.Type, kb.Kind)
			return false
		}
	}
	return true
}

func (d *decoder) hasPlugin(name string) bool {
	v := d.f.EvalContext.Variables["plugin"]
	return v.Type().IsObjectType() && v.Type().HasAttribute(name)
}

// Decode decodes a kind block's body into target, a pointer to the kind's
// gohcl-tagged struct: Defaults() first when target has it, then the body,
// then Validate() when target has it. A *FieldError from Validate is
// reported at that attribute.
func (f *File) Decode(b *KindBlock, target any) hcl.Diagnostics {
	return f.DecodeBody(b.Body, b.DefRange, target)
}

// DecodeBody is Decode for any body, such as a plugin or cluster block.
func (f *File) DecodeBody(body hcl.Body, defRange hcl.Range, target any) hcl.Diagnostics {
	if dft, ok := target.(interface{ Defaults() }); ok {
		dft.Defaults()
	}
	diags := gohcl.DecodeBody(body, f.EvalContext, target)
	if diags.HasErrors() {
		return diags
	}
	if v, ok := target.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			rng := defRange
			detail := err.Error()
			if fe, ok := err.(*FieldError); ok {
				detail = fe.Attr + ": " + fe.Err.Error()
				if r, ok := AttrRange(body, fe.Attr); ok {
					rng = r
					detail = fe.Err.Error()
				}
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid configuration",
				Detail:   detail,
				Subject:  rng.Ptr(),
			})
		}
	}
	return diags
}

// AttrRange returns the range of the value of attribute attr in body, for
// a diagnostic about it. attr may go through nested blocks, as a
// *FieldError's Attr does: "tls.cert_file" is the cert_file of the body's
// first tls block. It reports false when there is no such attribute.
func AttrRange(body hcl.Body, attr string) (hcl.Range, bool) {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return hcl.Range{}, false
	}
	for {
		blockType, rest, nested := strings.Cut(attr, ".")
		if !nested {
			if a := sb.Attributes[attr]; a != nil {
				return a.Expr.Range(), true
			}
			return hcl.Range{}, false
		}
		var next *hclsyntax.Body
		for _, b := range sb.Blocks {
			if b.Type == blockType {
				next = b.Body
				break
			}
		}
		if next == nil {
			return hcl.Range{}, false
		}
		sb, attr = next, rest
	}
}

// Attributes lists the attribute names a gohcl-tagged struct accepts, for
// documentation and suggestions.
func Attributes(target any) []string {
	t := reflect.TypeOf(target)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("hcl"); tag != "" {
			out = append(out, strings.Split(tag, ",")[0])
		}
	}
	sort.Strings(out)
	return out
}
