package config_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-media/sluice/pipeline/config"
)

// TestLimits: the server block's limits block decodes into Limits over
// the defaults, and a file without one gets the defaults.
func TestLimits(t *testing.T) {
	custom := config.DefaultLimits()
	custom.MaxConnections = 500
	custom.MaxConnectionsPerIP = 0
	custom.MaxStreams = 20
	custom.Exempt = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}
	custom.RTMPMaxChunkSize = 4096
	custom.RTMPMaxMessageSize = 2 << 20
	custom.AMFMaxDepth = 8
	custom.HTTPMaxHeaderBytes = 8 << 10
	custom.HTTPHeaderTimeout = 3 * time.Second
	custom.PushMinRate = 4000
	custom.PushRateWindow = 5 * time.Second
	for _, tc := range []struct {
		name, src string
		want      config.Limits
	}{
		{"no block", `server {}`, config.DefaultLimits()},
		{"no server block", ``, config.DefaultLimits()},
		{"empty block", "server {\n  limits {}\n}", config.DefaultLimits()},
		{"every kind of value", `server {
  limits {
    max_connections        = 500
    max_connections_per_ip = 0
    max_streams            = "20"
    exempt                 = ["10.1.2.3/8", "192.0.2.7"]
    rtmp_max_chunk_size    = "4KiB"
    rtmp_max_message_size  = "2MiB"
    amf_max_depth          = 8
    http_max_header_bytes  = 8192
    http_header_timeout    = "3s"
    push_min_rate          = "4KB"
    push_rate_window       = "5s"
  }
}`, custom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, diags := config.Parse("t.hcl", []byte(tc.src), config.Options{})
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if d := cmp.Diff(tc.want, f.Server.Limits, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
				t.Errorf("limits (-want +got):\n%s", d)
			}
		})
	}
}

// TestLimitsInvalid: each bad value is reported at its attribute, with
// the range it must be in.
func TestLimitsInvalid(t *testing.T) {
	for _, tc := range []struct {
		attr, value, want string
	}{
		{"max_connections", "-1", "must be between 0 and 1000000"},
		{"rtmp_max_chunk_size", `"64"`, "between 128 and 10485760 bytes"},
		{"rtmp_max_message_size", `"16MiB"`, "between 65536 and 10485760 bytes"},
		{"amf_max_depth", "0", "must be between 1 and 1000"},
		{"amf_max_string", `"1MiB"`, "between 256 and 65535 bytes"},
		{"http_header_timeout", `"0s"`, "between 100ms and 5m0s"},
		{"exempt", `["10.0.0.0/33"]`, `"10.0.0.0/33" is neither an address nor a CIDR prefix`},
		{"exempt", `[1, 2]`, `"1" is neither an address nor a CIDR prefix`},
		{"max_conections", "1", `Did you mean "max_connections"?`},
	} {
		t.Run(tc.attr, func(t *testing.T) {
			src := "server {\n  limits {\n    " + tc.attr + " = " + tc.value + "\n  }\n}\n"
			_, diags := config.Parse("t.hcl", []byte(src), config.Options{})
			if !diags.HasErrors() {
				t.Fatalf("%s = %s: no error", tc.attr, tc.value)
			}
			d := diags[0]
			if got := d.Summary + ": " + d.Detail; !strings.Contains(got, tc.want) {
				t.Errorf("%s = %s: %q, want it to say %q", tc.attr, tc.value, got, tc.want)
			}
			if d.Subject == nil || d.Subject.Start.Line != 3 {
				t.Errorf("%s = %s: reported at %v, want line 3", tc.attr, tc.value, d.Subject)
			}
		})
	}
	_, diags := config.Parse("t.hcl", []byte("server {\n  limits {}\n  limits {}\n}\n"), config.Options{})
	if !diags.HasErrors() || diags[0].Subject.Start.Line != 3 || !strings.Contains(diags[0].Detail, "limits block already") {
		t.Errorf("a second limits block: %v", diags)
	}
}

// TestExempted: the per-address limits spare loopback by default, IPv4
// mapped into IPv6 included, and nothing else.
func TestExempted(t *testing.T) {
	l := config.DefaultLimits()
	for addr, want := range map[string]bool{"127.0.0.1": true, "127.9.9.9": true, "::1": true, "::ffff:127.0.0.1": true, "10.0.0.1": false, "2001:db8::1": false} {
		if got := l.Exempted(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Exempted(%s) = %v, want %v", addr, got, want)
		}
	}
}
