package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
)

// TestAPIExposure: an API that listens beyond loopback needs api_token;
// on loopback, or turned off, it does not.
func TestAPIExposure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server string
		ok     bool
	}{
		{"default", ``, true},
		{"ipv4 loopback", `api = "127.0.0.1:9997"`, true},
		{"another 127/8 address", `api = "127.3.2.1:0"`, true},
		{"ipv6 loopback", `api = "[::1]:9997"`, true},
		{"localhost", `api = "localhost:9997"`, true},
		{"off", `api = ""`, true},
		{"every interface", `api = ":9997"`, false},
		{"every ipv4 interface", `api = "0.0.0.0:9997"`, false},
		{"every ipv6 interface", `api = "[::]:9997"`, false},
		{"a LAN address", `api = "192.168.1.10:9997"`, false},
		{"a host name", `api = "sluice.example:9997"`, false},
		{"every interface with a token", "api = \":9997\"\n  api_token = env(\"TOKEN\")", true},
		{"an empty token", "api = \":9997\"\n  api_token = \"\"", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "server {\n  " + tc.server + "\n}\n"
			env := func(k string) (string, bool) { return "s3cret", k == "TOKEN" }
			_, diags := config.Parse("t.hcl", []byte(src), config.Options{LookupEnv: env})
			if tc.ok && diags.HasErrors() {
				t.Fatalf("refused:\n%s", diags.Error())
			}
			if !tc.ok {
				if !diags.HasErrors() || !strings.Contains(diags.Error(), "API reachable beyond this host without a token") {
					t.Fatalf("accepted, want a diagnostic at the api attribute; got %v", diags)
				}
				if r := diags[0].Subject; r == nil || r.Start.Line != 2 {
					t.Errorf("diagnostic at %v, want the api attribute (line 2)", r)
				}
			}
		})
	}
}

// TestAPISettings: api_token and stop_hold decode, and stop_hold defaults
// to 30 s.
func TestAPISettings(t *testing.T) {
	f, diags := config.Parse("t.hcl", []byte("server {}\n"), config.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if f.Server.StopHold != 30*time.Second || f.Server.APIToken != "" {
		t.Errorf("defaults: stop_hold %v, api_token %q; want 30s and none", f.Server.StopHold, f.Server.APIToken)
	}
	f, diags = config.Parse("t.hcl", []byte(`server {
  api_token = "t0ken"
  stop_hold = "2m"
}
`), config.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if f.Server.StopHold != 2*time.Minute || f.Server.APIToken != "t0ken" {
		t.Errorf("got stop_hold %v, api_token %q", f.Server.StopHold, f.Server.APIToken)
	}
}
