package config

import (
	"net/netip"
	"time"

	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Limits is the server block's limits block: how much of the server one
// client, and all of them together, may take. Every bound has a default
// that is safe on a public address; a count or rate of 0 turns that bound
// off. They are read when a session or connection starts, so a reload
// that changes them applies to the next ones, never cutting a client that
// is already in.
type Limits struct {
	// MaxConnections bounds the TCP connections open on the RTMP and HTTP
	// listeners together (the API's are apart: it must answer an
	// operator when everything else is full).
	MaxConnections int
	// MaxConnectionsPerIP bounds them per client address.
	MaxConnectionsPerIP int
	// MaxStreams bounds the streams in the table: a publish (or a player
	// waiting for a stream) that would add one beyond it is refused.
	MaxStreams int
	// MaxPublishersPerIP bounds the streams one client address publishes
	// at once, whatever the protocol.
	MaxPublishersPerIP int
	// MaxPulls bounds the on-demand pulls (an edge's upstream pulls)
	// running at once; a player whose stream would need one more is
	// refused.
	MaxPulls int
	// Exempt lists the client addresses the per-address bounds do not
	// apply to: by default loopback, where the node's own processors and
	// tools connect from.
	Exempt []netip.Prefix
	// RTMPMaxChunkSize is the largest Set Chunk Size an RTMP client may
	// ask for; RTMPMaxMessageSize the largest message it may send.
	RTMPMaxChunkSize   int
	RTMPMaxMessageSize int
	// AMFMaxDepth bounds the nesting of AMF0 values (objects and arrays
	// in RTMP commands and metadata, FLV script tags); AMFMaxString the
	// length of a string or key in them.
	AMFMaxDepth  int
	AMFMaxString int
	// HTTPMaxHeaderBytes bounds a request's header block on the HTTP
	// listeners; HTTPHeaderTimeout the time a client may take to send it;
	// HTTPIdleTimeout how long a kept-alive connection may wait for its
	// next request.
	HTTPMaxHeaderBytes int
	HTTPHeaderTimeout  time.Duration
	HTTPIdleTimeout    time.Duration
	// PushMinRate is the slowest an HTTP publisher's body (FLV or TS
	// pushed with POST/PUT) may arrive, in bytes per second, measured
	// over every PushRateWindow; a slower one is cut.
	PushMinRate    int64
	PushRateWindow time.Duration
}

// Defaults of the limits block.
const (
	DefaultMaxConnections      = 10000
	DefaultMaxConnectionsPerIP = 100
	DefaultMaxStreams          = 1000
	DefaultMaxPublishersPerIP  = 10
	DefaultMaxPulls            = 100
	DefaultRTMPMaxChunkSize    = 64 << 10
	DefaultRTMPMaxMessageSize  = 8 << 20
	DefaultAMFMaxDepth         = 32
	DefaultAMFMaxString        = 32 << 10
	DefaultHTTPMaxHeaderBytes  = 32 << 10
	DefaultHTTPHeaderTimeout   = 10 * time.Second
	DefaultHTTPIdleTimeout     = 2 * time.Minute
	DefaultPushMinRate         = 1000
	DefaultPushRateWindow      = 10 * time.Second

	// MinRTMPChunkSize is the smallest chunk size an RTMP client may set,
	// as nginx-rtmp and SRS require: smaller chunks cost the server more
	// in bookkeeping than the bytes they carry.
	MinRTMPChunkSize = 128
	// MaxRTMPMessageSize is the RTMP library's own bound on a message,
	// which rtmp_max_message_size cannot exceed.
	MaxRTMPMessageSize = 10 << 20
)

// DefaultExempt is the default of limits.exempt: loopback.
var DefaultExempt = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// DefaultLimits returns the limits of a server block without a limits
// block.
func DefaultLimits() Limits {
	return Limits{
		MaxConnections:      DefaultMaxConnections,
		MaxConnectionsPerIP: DefaultMaxConnectionsPerIP,
		MaxStreams:          DefaultMaxStreams,
		MaxPublishersPerIP:  DefaultMaxPublishersPerIP,
		MaxPulls:            DefaultMaxPulls,
		Exempt:              append([]netip.Prefix(nil), DefaultExempt...),
		RTMPMaxChunkSize:    DefaultRTMPMaxChunkSize,
		RTMPMaxMessageSize:  DefaultRTMPMaxMessageSize,
		AMFMaxDepth:         DefaultAMFMaxDepth,
		AMFMaxString:        DefaultAMFMaxString,
		HTTPMaxHeaderBytes:  DefaultHTTPMaxHeaderBytes,
		HTTPHeaderTimeout:   DefaultHTTPHeaderTimeout,
		HTTPIdleTimeout:     DefaultHTTPIdleTimeout,
		PushMinRate:         DefaultPushMinRate,
		PushRateWindow:      DefaultPushRateWindow,
	}
}

// Exempted reports whether the per-address bounds spare addr.
func (l *Limits) Exempted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range l.Exempt {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// limitsAttrs are the attributes of a limits block.
var limitsAttrs = []string{
	"max_connections", "max_connections_per_ip", "max_streams", "max_publishers_per_ip", "max_pulls", "exempt",
	"rtmp_max_chunk_size", "rtmp_max_message_size", "amf_max_depth", "amf_max_string",
	"http_max_header_bytes", "http_header_timeout", "http_idle_timeout", "push_min_rate", "push_rate_window",
}

// limitsBlock reads the server block's limits block into s.Limits, which
// holds the defaults.
func (d *decoder) limitsBlock(blk *hclsyntax.Block) {
	if !d.labels(blk, 0, 0, nil) {
		return
	}
	a := d.attrs(blk.Body, limitsAttrs, nil)
	l := &d.f.Server.Limits
	d.integer(a["max_connections"], &l.MaxConnections, 0, 1_000_000)
	d.integer(a["max_connections_per_ip"], &l.MaxConnectionsPerIP, 0, 1_000_000)
	d.integer(a["max_streams"], &l.MaxStreams, 0, 1_000_000)
	d.integer(a["max_publishers_per_ip"], &l.MaxPublishersPerIP, 0, 1_000_000)
	d.integer(a["max_pulls"], &l.MaxPulls, 0, 100_000)
	d.sizeInt(a["rtmp_max_chunk_size"], &l.RTMPMaxChunkSize, MinRTMPChunkSize, MaxRTMPMessageSize)
	d.sizeInt(a["rtmp_max_message_size"], &l.RTMPMaxMessageSize, 64<<10, MaxRTMPMessageSize)
	d.integer(a["amf_max_depth"], &l.AMFMaxDepth, 1, 1000)
	// AMF0 strings and keys have a 16-bit length (the long string type
	// aside, which the RTMP library does not take).
	d.sizeInt(a["amf_max_string"], &l.AMFMaxString, 256, 65535)
	d.sizeInt(a["http_max_header_bytes"], &l.HTTPMaxHeaderBytes, 1<<10, 1<<20)
	d.duration(a["http_header_timeout"], &l.HTTPHeaderTimeout, 100*time.Millisecond, 5*time.Minute)
	d.duration(a["http_idle_timeout"], &l.HTTPIdleTimeout, time.Second, time.Hour)
	d.size(a["push_min_rate"], &l.PushMinRate, 0, 1<<30)
	d.duration(a["push_rate_window"], &l.PushRateWindow, time.Second, 10*time.Minute)
	d.prefixes(a["exempt"], &l.Exempt)
}

// sizeInt is size for an int attribute.
func (d *decoder) sizeInt(a *hclsyntax.Attribute, dst *int, min, max int) {
	n := int64(*dst)
	d.size(a, &n, int64(min), int64(max))
	*dst = int(n)
}

// prefixes reads a list of addresses and CIDR prefixes ("10.0.0.0/8",
// "192.0.2.7", "::1/128"); a bare address is a prefix of its full length.
func (d *decoder) prefixes(a *hclsyntax.Attribute, dst *[]netip.Prefix) {
	if a == nil {
		return
	}
	v, diags := a.Expr.Value(d.f.EvalContext)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return
	}
	var list []string
	if v.Type() == cty.String {
		list = []string{v.AsString()}
	} else if err := gohcl.DecodeExpression(a.Expr, d.f.EvalContext, &list); err != nil {
		d.errorf(a.Expr.Range().Ptr(), "Invalid value", "%s must be a list of addresses or CIDR prefixes, such as [\"127.0.0.0/8\", \"10.1.2.3\"].", a.Name)
		return
	}
	out := []netip.Prefix{}
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				d.errorf(a.Expr.Range().Ptr(), "Invalid address", "%s: %q is neither an address nor a CIDR prefix such as \"10.0.0.0/8\".", a.Name, s)
				continue
			}
			addr = addr.Unmap()
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, p.Masked())
	}
	*dst = out
}

// hasBlock reports whether blocks has one of type typ.
func hasBlock(blocks hclsyntax.Blocks, typ string) bool {
	for _, b := range blocks {
		if b.Type == typ {
			return true
		}
	}
	return false
}
