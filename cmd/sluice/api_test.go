package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPublicAPINeedsToken: an API listening beyond loopback without
// api_token is an error at the api attribute, for validate and for run,
// which then starts nothing; with a token the same file is valid.
func TestPublicAPINeedsToken(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pipeline.hcl")
	src := `variable "token" { default = "" }
server {
  http      = "127.0.0.1:0"
  api       = "0.0.0.0:0"
  api_token = var.token
}
pipeline "live" {
  match = "live/*"
}
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	want := cfg + ":4:15: error: API reachable beyond this host without a token"

	var out, errb bytes.Buffer
	if code := run([]string{"validate", cfg}, &out, &errb); code != 1 || !strings.Contains(errb.String(), want) {
		t.Errorf("validate: exit %d, want 1 and %q:\n%s", code, want, errb.String())
	}
	if flat := strings.Join(strings.Fields(errb.String()), " "); !strings.Contains(flat, `api_token = env("SLUICE_API_TOKEN")`) {
		t.Errorf("the diagnostic does not say what to do:\n%s", errb.String())
	}

	errb.Reset()
	code := make(chan int, 1)
	go func() { code <- run([]string{"run", cfg}, &out, &errb) }()
	select {
	case c := <-code:
		if c != 1 {
			t.Errorf("run: exit %d, want 1", c)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sluice run is still running with a public API and no token")
	}
	if !strings.Contains(errb.String(), want) || strings.Contains(errb.String(), "msg=listening") {
		t.Errorf("run: want %q and nothing listening:\n%s", want, errb.String())
	}

	errb.Reset()
	if code := run([]string{"validate", "-var", "token=s3cret", cfg}, &out, &errb); code != 0 {
		t.Errorf("validate with a token: exit %d\n%s", code, errb.String())
	}
}
