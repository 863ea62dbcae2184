package directory_test

import (
	"errors"
	"testing"

	"github.com/sluice-media/sluice/cluster/directory"
	"github.com/sluice-media/sluice/pipeline/config"
)

// validate runs Defaults, sets fields, and Validate, as the decoder does,
// and returns the attribute Validate blamed ("" when it passed).
func validate[C interface {
	Defaults()
	Validate() error
}](t *testing.T, c C, set func(C)) string {
	t.Helper()
	c.Defaults()
	set(c)
	err := c.Validate()
	if err == nil {
		return ""
	}
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Validate: %v is not a *config.FieldError", err)
	}
	t.Logf("%s: %v", fe.Attr, fe.Err)
	return fe.Attr
}

func TestStaticConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*directory.StaticConfig)
		want string // the attribute blamed, "" for none
	}{
		{"listen and peers", func(c *directory.StaticConfig) {
			c.Listen, c.Peers = ":19370", []string{"http://10.0.0.2:19370", "https://o3.example:19370/"}
		}, ""},
		{"lookup only", func(c *directory.StaticConfig) { c.Listen = "" }, ""},
		{"listen without a port", func(c *directory.StaticConfig) { c.Listen = "19370" }, "listen"},
		{"peer not http", func(c *directory.StaticConfig) { c.Peers = []string{"rtmp://10.0.0.2:1935"} }, "peers"},
		{"peer with a path", func(c *directory.StaticConfig) { c.Peers = []string{"http://10.0.0.2:19370/cluster"} }, "peers"},
		{"empty peer", func(c *directory.StaticConfig) { c.Peers = []string{""} }, "peers"},
		{"zero timeout", func(c *directory.StaticConfig) { c.Timeout = "0s" }, "timeout"},
		{"rtmp_url not rtmp", func(c *directory.StaticConfig) { c.RTMPURL = "http://o1.example:1935" }, "rtmp_url"},
		{"http_url with a stream", func(c *directory.StaticConfig) { c.HTTPURL = "http://o1.example:8080/live/x.flv" }, "http_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := validate(t, &directory.StaticConfig{}, tc.set); got != tc.want {
				t.Fatalf("blamed %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEtcdConfig(t *testing.T) {
	ep := []string{"http://127.0.0.1:2379"}
	for _, tc := range []struct {
		name string
		set  func(*directory.EtcdConfig)
		want string
	}{
		{"defaults", func(c *directory.EtcdConfig) { c.Endpoints = ep }, ""},
		{"everything", func(c *directory.EtcdConfig) {
			c.Endpoints = []string{"http://10.0.0.9:2379", "https://etcd.example:2379"}
			c.Prefix, c.TTL, c.Timeout = "/prod/sluice", "10s", "500ms"
			c.RTMPURL, c.HTTPURL = "rtmps://o1.example:443", "https://o1.example"
		}, ""},
		{"no endpoint", func(c *directory.EtcdConfig) {}, "endpoints"},
		{"endpoint without a scheme", func(c *directory.EtcdConfig) { c.Endpoints = []string{"127.0.0.1:2379"} }, "endpoints"},
		{"relative prefix", func(c *directory.EtcdConfig) { c.Endpoints, c.Prefix = ep, "sluice/" }, "prefix"},
		{"ttl below etcd's minimum", func(c *directory.EtcdConfig) { c.Endpoints, c.TTL = ep, "1s" }, "ttl"},
		{"ttl not whole seconds", func(c *directory.EtcdConfig) { c.Endpoints, c.TTL = ep, "2500ms" }, "ttl"},
		{"timeout not a duration", func(c *directory.EtcdConfig) { c.Endpoints, c.Timeout = ep, "soon" }, "timeout"},
		{"http_url not http", func(c *directory.EtcdConfig) { c.Endpoints, c.HTTPURL = ep, "o1.example:8080" }, "http_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := validate(t, &directory.EtcdConfig{}, tc.set); got != tc.want {
				t.Fatalf("blamed %q, want %q", got, tc.want)
			}
		})
	}
}
