package host

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
)

// Config is the body of a plugin "NAME" block.
//
//	plugin "tokens" {
//	  command = "./bin/token-auth"
//	  args    = ["-secret-env", "TOKEN_SECRET"]
//	  env     = { TOKEN_SECRET = env("TOKEN_SECRET") }
//	  timeout = "2s"        # per call
//	  on_error = "deny"     # or "allow": the answer while the plugin is down or late
//	  cache   = "5s"        # keep answers per (client, stream, query); "0s" is off
//	}
type Config struct {
	// Command is the plugin binary: a path (relative to the working
	// directory Sluice runs in, not to the file) or a name looked up in
	// PATH. It is one file name; arguments go in Args. New reports one
	// that is missing or not executable.
	Command string `hcl:"command"`
	// Args are its arguments.
	Args []string `hcl:"args,optional"`
	// Env is added to the environment it inherits from Sluice.
	Env map[string]string `hcl:"env,optional"`
	// Timeout bounds each call to the plugin.
	Timeout string `hcl:"timeout,optional"`
	// OnError is the answer when the plugin is down, fails or is late:
	// "deny" (fail closed, the default) or "allow".
	OnError string `hcl:"on_error,optional"`
	// Cache keeps each decision this long per (action, client address,
	// stream, query); "0s" asks the plugin every time.
	Cache string `hcl:"cache,optional"`
	// HealthInterval is how often the plugin is pinged; a failed ping
	// restarts it.
	HealthInterval string `hcl:"health_interval,optional"`
	// StartTimeout bounds the start of the process up to its handshake,
	// and its stop: a plugin that has not exited this long after it was
	// asked to is killed.
	StartTimeout string `hcl:"start_timeout,optional"`

	timeout, cache, health, start time.Duration
}

// Defaults sets the defaults before decoding.
func (c *Config) Defaults() {
	c.Timeout = "2s"
	c.OnError = "deny"
	c.Cache = "0s"
	c.HealthInterval = "1s"
	c.StartTimeout = "5s"
}

// Validate checks the values and parses the durations.
func (c *Config) Validate() error {
	if c.Command == "" {
		return &config.FieldError{Attr: "command", Err: errors.New("command must name the plugin binary")}
	}
	if c.OnError != "deny" && c.OnError != "allow" {
		return &config.FieldError{Attr: "on_error", Err: fmt.Errorf("on_error = %q: use \"deny\" (refuse while the plugin is down or late) or \"allow\"", c.OnError)}
	}
	for _, f := range []struct {
		attr, s  string
		d        *time.Duration
		min, max time.Duration
	}{
		{"timeout", c.Timeout, &c.timeout, time.Millisecond, time.Minute},
		{"cache", c.Cache, &c.cache, 0, time.Hour},
		{"health_interval", c.HealthInterval, &c.health, 10 * time.Millisecond, time.Hour},
		{"start_timeout", c.StartTimeout, &c.start, 100 * time.Millisecond, 5 * time.Minute},
	} {
		d, err := time.ParseDuration(f.s)
		if err != nil || d < f.min || d > f.max {
			return &config.FieldError{Attr: f.attr, Err: fmt.Errorf("%s = %q: want a duration from %v to %v, such as \"2s\"", f.attr, f.s, f.min, f.max)}
		}
		*f.d = d
	}
	return nil
}
