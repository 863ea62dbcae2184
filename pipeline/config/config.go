// Package config decodes pipeline.hcl.
//
// The file has a fixed top level (server, variable, ingest, plugin,
// pipeline, cluster); the bodies of kind blocks (ingest "rtmp", output
// "hls", record "mp4" ...) belong to the kind that registered them and are
// decoded by File.Decode into the kind's own struct. Every mistake becomes
// an hcl.Diagnostic with the file, line and column, and unknown blocks and
// attributes are errors: a typo must never silently turn a feature off.
package config

import (
	"fmt"
	"io"
	"os"
	"path"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// KindSet tells the decoder which kinds exist for a block type, so that an
// unknown kind is reported with the known ones (and a close match).
type KindSet interface {
	Kinds(typ string) []string
}

// Options steer decoding.
type Options struct {
	// Vars are -var name=value settings; they override a variable's
	// default.
	Vars map[string]string
	// Kinds, when set, is checked for every kind block.
	Kinds KindSet
	// LookupEnv backs env(); nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// File is a decoded pipeline.hcl.
type File struct {
	Server      Server
	Variables   map[string]cty.Value
	Ingests     []*KindBlock
	Plugins     []*PluginBlock
	Pipelines   []*Pipeline
	Cluster     *RawBlock
	EvalContext *hcl.EvalContext
	// Files holds the parsed sources, for diagnostics.
	Files map[string]*hcl.File
}

// Server is the server block.
type Server struct {
	// HTTP is the address of the shared HTTP listener (HTTP-FLV, HLS,
	// FLV/TS push); "" turns it off.
	HTTP string
	// API is the address of the API and metrics listener; "" turns it off.
	API string
	// ShutdownTimeout bounds a clean stop.
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string
	LogFormat string
	// Node names this server in logs, auth requests and the cluster; it
	// defaults to the host name.
	Node string
}

// KindBlock is a block whose body a registered kind decodes: ingest,
// output, record, transcode, forward.
type KindBlock struct {
	// Type is the block type ("ingest", "output", ...), Kind its kind
	// label ("rtmp", "hls"), Name the optional instance label.
	Type, Kind, Name string
	// Pipeline is the enclosing pipeline's name, "" for ingest.
	Pipeline  string
	Body      hcl.Body
	DefRange  hcl.Range
	KindRange hcl.Range
}

// Address names the block in logs and metrics: "ingest.rtmp",
// "ingest.mpegts_udp.cam", "pipeline.live.output.hls".
func (b *KindBlock) Address() string {
	a := b.Type + "." + b.Kind
	if b.Type == "transcode" {
		a = b.Type // transcode "NAME": the kind is always "plugin"
	}
	if b.Pipeline != "" {
		a = "pipeline." + b.Pipeline + "." + a
	}
	if b.Name != "" {
		a += "." + b.Name
	}
	return a
}

// PluginBlock is a plugin "NAME" block; the plugin host decodes its body.
type PluginBlock struct {
	Name     string
	Body     hcl.Body
	DefRange hcl.Range
}

// RawBlock is a block decoded by the package that owns it (cluster).
type RawBlock struct {
	Body     hcl.Body
	DefRange hcl.Range
}

// Write modes of a pipeline.
const (
	WriteThroughput = "throughput"
	WriteLatency    = "latency"
)

// Pipeline is a pipeline block: which streams it owns, how they are
// buffered, and its outputs.
type Pipeline struct {
	Name string
	// Match lists path patterns (path.Match syntax: "live/*").
	Match []string
	// Auth names the plugin that authorizes this pipeline's streams; ""
	// allows everything.
	Auth string
	// GOPCache is how many GOPs a new player may start behind; 0 starts
	// players at the next keyframe.
	GOPCache int
	// BufferFrames is the per-stream ring size in access units.
	BufferFrames int
	// MaxReaderLag is how far behind the newest unit a player may fall
	// before it is moved to the newest keyframe.
	MaxReaderLag time.Duration
	// WaitPublisher is how long a player of an absent stream waits.
	WaitPublisher time.Duration
	// PublisherGrace keeps a stream and its players alive this long after
	// its publisher left, for a reconnect.
	PublisherGrace time.Duration
	// WriteMode is "throughput" (writes merged over MergeWindow) or
	// "latency" (every unit written at once).
	WriteMode   string
	MergeWindow time.Duration

	Outputs    []*KindBlock
	Records    []*KindBlock
	Transcodes []*KindBlock
	Forwards   []*KindBlock

	DefRange hcl.Range
}

// Matches reports whether the pipeline owns stream path p.
func (p *Pipeline) Matches(name string) bool {
	for _, m := range p.Match {
		if ok, _ := path.Match(m, name); ok {
			return true
		}
	}
	return false
}

// FieldError is returned by a kind's Validate to point the diagnostic at
// one attribute of its block.
type FieldError struct {
	Attr string
	Err  error
}

func (e *FieldError) Error() string { return e.Attr + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Load reads and decodes the file at path.
func Load(filename string, opts Options) (*File, hcl.Diagnostics) {
	src, err := os.ReadFile(filename)
	if err != nil {
		return &File{Files: map[string]*hcl.File{}}, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read configuration",
			Detail:   fmt.Sprintf("%v. Pass the file to use, as in `sluice run path/to/pipeline.hcl`.", err),
		}}
	}
	return Parse(filename, src, opts)
}

// WriteDiagnostics prints diags, each headed by a FILE:LINE:COL line that
// editors and terminals can jump to, then the source snippet, width columns
// wide, coloured when color is set.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, width uint, color bool) error {
	tw := hcl.NewDiagnosticTextWriter(w, files, width, color)
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		if d.Subject != nil {
			if _, err := fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, sev, d.Summary); err != nil {
				return err
			}
		}
		if err := tw.WriteDiagnostic(d); err != nil {
			return err
		}
	}
	return nil
}
