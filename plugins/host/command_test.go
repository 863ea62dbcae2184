package host

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline/config"
)

// TestCommandChecked decodes a plugin block whose command is missing, not
// executable or fine, as sluice validate and sluice run do: a bad one is one
// error at the command's value, a good one none.
func TestCommandChecked(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exe := write("bin/plugin", 0o755)
	notExe := write("bin/plain", 0o644)
	write("path/on-path", 0o755)
	write("path/on-path-plain", 0o644)
	if err := syscall.Mkfifo(filepath.Join(dir, "bin", "fifo"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("rel/rel-only", 0o755)
	t.Setenv("PATH", filepath.Join(dir, "path")+string(filepath.ListSeparator)+"rel")
	// Relative commands are relative to the working directory, as for the
	// launcher.
	t.Chdir(dir)

	cases := []struct {
		name, command string
		summary       string   // "" means valid
		detail        []string // substrings of the detail
	}{
		{"executable, absolute", exe, "", nil},
		{"executable, relative", "./bin/plugin", "", nil},
		{"executable, relative without ./", "bin/plugin", "", nil},
		{"executable, in PATH", "on-path", "", nil},
		{"missing, relative", "./bin/token-auth", "Plugin command not found", []string{
			filepath.Join(dir, "bin", "token-auth"), `"./bin/token-auth" relative to the working directory ` + dir,
			"go build -o ./bin/token-auth ./PACKAGE", "go build -o bin/token-auth ./plugins/examples/token-auth", "fix the path",
		}},
		{"missing, absolute", filepath.Join(dir, "nope"), "Plugin command not found", []string{"There is no file " + filepath.Join(dir, "nope") + "."}},
		{"missing, in PATH", "token-auth", "Plugin command not found", []string{`No executable named "token-auth"`, filepath.Join(dir, "path"), `"./bin/token-auth"`}},
		{"in PATH, not executable", "on-path-plain", "Plugin command not found", []string{filepath.Join(dir, "path", "on-path-plain") + " exists but is not executable"}},
		{"a command line, not a file", "./bin/plugin -v", "Plugin command not found", []string{`command = "./bin/plugin" and args = ["-v"]`}},
		{"spaces around the name", " on-path ", "Plugin command not found", []string{`write command = "on-path".`}},
		{"only spaces", "  ", "Plugin command not found", []string{`No executable named "  "`}},
		{"a command line in PATH", "on-path  -x y", "Plugin command not found", []string{`command = "on-path" and args = ["-x", "y"]`}},
		{"not executable", notExe, "Plugin command is not executable", []string{"chmod +x " + notExe}},
		{"not executable, relative", "./bin/plain", "Plugin command is not executable", []string{notExe}},
		{"only through a relative PATH entry", "rel-only", "Plugin command found only through a relative PATH entry", []string{`as rel/rel-only`, `command = "./rel/rel-only"`}},
		{"directory", "./bin", "Plugin command is a directory", []string{filepath.Join(dir, "bin")}},
		{"not a regular file", "./bin/fifo", "Plugin command is not a regular file", []string{filepath.Join(dir, "bin", "fifo")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := strconv.Quote(tc.command)
			src := fmt.Sprintf("plugin \"p\" {\n  command = %s\n  timeout = \"1s\"\n}\n", q)
			f, diags := config.Parse("pipeline.hcl", []byte(src), config.Options{})
			if diags.HasErrors() {
				t.Fatalf("parse: %v", diags)
			}
			h, diags := New(f, slog.New(slog.DiscardHandler), nil)
			if tc.summary == "" {
				if len(diags) != 0 {
					t.Fatalf("diagnostics for a good command: %v", diags)
				}
				if h.Plugin("p") == nil {
					t.Fatal("plugin p not declared")
				}
				return
			}
			if len(diags) != 1 || diags[0].Severity != hcl.DiagError {
				t.Fatalf("want one error, got %d: %v", len(diags), diags)
			}
			d := diags[0]
			if d.Summary != tc.summary {
				t.Errorf("summary %q, want %q", d.Summary, tc.summary)
			}
			for _, s := range tc.detail {
				if !strings.Contains(d.Detail, s) {
					t.Errorf("detail lacks %q:\n%s", s, d.Detail)
				}
			}
			// The subject is the value of command: line 2, after "  command = ".
			got := "<nil>"
			if d.Subject != nil {
				got = fmt.Sprintf("%s:%d:%d-%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Subject.End.Line, d.Subject.End.Column)
			}
			if want := fmt.Sprintf("pipeline.hcl:2:13-2:%d", 13+len(q)); got != want {
				t.Errorf("subject %s, want %s", got, want)
			}
			var b bytes.Buffer
			if err := config.WriteDiagnostics(&b, f.Files, diags, 78, false); err != nil {
				t.Fatal(err)
			}
			if want := "pipeline.hcl:2:13: error: " + tc.summary; !strings.Contains(b.String(), want) {
				t.Errorf("rendered diagnostics lack %q:\n%s", want, b.String())
			}
			if h.Plugin("p") != nil {
				t.Errorf("plugin p declared despite the error")
			}
		})
	}
}

// TestCommandFromPATHRuns starts a plugin named by a bare command: the
// launcher finds it in PATH as New's check did.
func TestCommandFromPATHRuns(t *testing.T) {
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	t.Setenv("PATH", filepath.Dir(bin)+string(filepath.ListSeparator)+os.Getenv("PATH"))
	h := startHost(t, pluginBlock("t", filepath.Base(bin), `timeout = "2s"`))
	if d := authorize(h.Plugin("t"), allowReq); !d.Allow {
		t.Fatalf("plugin started by bare name: %+v\n%s", d, h.logs.String())
	}
}
