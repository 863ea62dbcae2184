// Package config decodes pipeline.hcl.
//
// The file has a fixed core (server, variable, plugin, pipeline); every other
// block type (ingest, and inside a pipeline output, record, transcode, ...)
// exists because a kind registered it, and the bodies of those kind blocks
// (ingest "rtmp", output "hls", record "mp4" ...) belong to that kind and
// are decoded by File.Decode into the kind's own struct. Every mistake becomes
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

// KindSet tells the decoder which block types and kinds exist, so that a
// block of an unknown type or kind is reported with the known ones (and a
// close match). Block types are paths: "ingest" at the top level,
// "pipeline.output" inside a pipeline block.
type KindSet interface {
	// Kinds returns the kinds registered for a block type.
	Kinds(typ string) []string
	// Types returns the block types registered in scope: "" for the top
	// level, "pipeline" inside pipeline blocks.
	Types(scope string) []string
	// Single returns the one kind of a block type whose blocks take only a
	// name label (transcode "NAME"), "" for ordinary types
	// (TYPE "KIND" ["NAME"]).
	Single(typ string) string
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
	Server    Server
	Variables map[string]cty.Value
	// Blocks are the top-level kind blocks (ingest "rtmp", ...), in file
	// order.
	Blocks      []*KindBlock
	Plugins     []*PluginBlock
	Pipelines   []*Pipeline
	EvalContext *hcl.EvalContext
	// Files holds the parsed sources, for diagnostics.
	Files map[string]*hcl.File
}

// Server is the server block.
type Server struct {
	// HTTP is the address of the shared HTTP listener (HTTP-FLV, HLS,
	// FLV/TS push); "" turns it off.
	HTTP string
	// HTTPS is the address of the shared HTTP listener's TLS twin: the same
	// routes (HTTP-FLV, HLS, pushes) over HTTPS, HTTP/1.1 and HTTP/2, with
	// the certificate of TLS; "" (the default) turns it off.
	HTTPS string
	// TLS is the server block's tls block, the certificate HTTPS presents;
	// nil when there is none.
	TLS *TLS
	// API is the address of the API and metrics listener; "" turns it off.
	API string
	// APITLS, when set, makes the API listener speak HTTPS only, with
	// this certificate (the api_tls block).
	APITLS *TLS
	// ShutdownTimeout bounds a clean stop.
	ShutdownTimeout time.Duration
	// AuthTimeout bounds each auth decision (connect, publish, play); a
	// plugin that does not answer in time counts as a failure to answer.
	AuthTimeout time.Duration
	// NotifyTimeout bounds each unpublish/stop notification.
	NotifyTimeout time.Duration
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string
	LogFormat string
	// Node names this server in logs, auth requests and the cluster; it
	// defaults to the host name.
	Node string
	// APIToken, when set, is the bearer token the API's acting requests
	// (and its client list, which shows addresses) need. It is required
	// when API listens beyond loopback.
	APIToken string
	// StopHold is how long a stream stopped through the API refuses its
	// publisher (POST /api/v1/streams/{path}/stop), unless the request
	// says otherwise.
	StopHold time.Duration
	// Limits is the limits block: what clients may take (see Limits).
	Limits Limits
}

// TLS is a tls block: the certificate chain (leaf first) and private key
// of a TLS listener, PEM files. A kind takes one as
//
//	TLS *config.TLS `hcl:"tls,block"`
//
// and reports a file it cannot load with a *FieldError whose Attr is
// "tls.cert_file" or "tls.key_file".
type TLS struct {
	CertFile string `hcl:"cert_file"`
	KeyFile  string `hcl:"key_file"`
	// CertRange and KeyRange are where the server block's tls blocks name
	// the files, for diagnostics; a kind's block leaves them zero.
	CertRange, KeyRange hcl.Range `json:"-"`
}

// KindBlock is a block whose body a registered kind decodes: ingest,
// output, record, transcode, forward.
type KindBlock struct {
	// Type is the block type ("ingest", "output", ...), Kind its kind
	// label ("rtmp", "hls"), Name the optional instance label.
	Type, Kind, Name string
	// Single marks a type whose blocks carry only a name (transcode
	// "NAME"); Kind is then the type's one kind.
	Single bool
	// Pipeline is the enclosing pipeline's name, "" for ingest.
	Pipeline  string
	Body      hcl.Body
	DefRange  hcl.Range
	KindRange hcl.Range
}

// TypePath is the block type's registry path: "ingest" for a top-level
// block, "pipeline.output" for one inside a pipeline.
func (b *KindBlock) TypePath() string {
	if b.Pipeline != "" {
		return "pipeline." + b.Type
	}
	return b.Type
}

// Ingests returns the file's ingest blocks.
func (f *File) Ingests() []*KindBlock { return blocksOf(f.Blocks, "ingest") }

// BlocksOf returns the pipeline's blocks of one type ("output").
func (p *Pipeline) BlocksOf(typ string) []*KindBlock { return blocksOf(p.Blocks, typ) }

func blocksOf(list []*KindBlock, typ string) []*KindBlock {
	var out []*KindBlock
	for _, b := range list {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

// Address names the block in logs and metrics: "ingest.rtmp",
// "ingest.mpegts_udp.cam", "pipeline.live.output.hls".
func (b *KindBlock) Address() string {
	a := b.Type + "." + b.Kind
	if b.Single {
		a = b.Type // transcode "NAME": the type has one kind
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
	// MaxBufferBytes bounds the media bytes a stream holds.
	MaxBufferBytes int64
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

	// Blocks are the pipeline's kind blocks (output, record, transcode,
	// forward, ...), in file order.
	Blocks []*KindBlock

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
