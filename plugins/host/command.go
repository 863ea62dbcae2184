package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// lookCommand resolves a plugin block's command to the file the launcher
// executes. It is os/exec's own rule, so that New (which reports a missing
// binary as a configuration error) and Plugin.start (which runs it) cannot
// disagree: a command with a slash is a path, relative to Sluice's working
// directory unless absolute, and must be an executable regular file; a bare
// name is searched in PATH. The command is one file name, never split into
// words; arguments are the block's args.
func lookCommand(command string) (string, error) {
	path, err := exec.LookPath(command)
	if err != nil {
		return path, err
	}
	// LookPath refuses a directory but takes any other file with an x bit;
	// a plugin is a program, not a device or a socket.
	if fi, err := os.Stat(path); err != nil {
		return "", &exec.Error{Name: command, Err: err}
	} else if !fi.Mode().IsRegular() {
		return path, &exec.Error{Name: command, Err: errNotRegular}
	}
	return path, nil
}

// errNotRegular is lookCommand's error for a file that is neither a
// directory nor a regular file.
var errNotRegular = errors.New("not a regular file")

// newCmd returns the process for a resolved command: path is what
// lookCommand returned; argv[0] stays the command as written, as a shell
// would pass it. Ending ctx kills the process (SIGKILL), until it has been
// waited for: it is the supervisor's handle on a process that go-plugin
// holds, to cut a start that hangs and a stop that takes too long.
func newCmd(ctx context.Context, command, path string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Args[0] = command
	return cmd
}

// commandDiagnostic turns a lookCommand error into the diagnostic of the
// block's command attribute: what was looked for, relative to what, and
// what to do about it. path is what lookCommand returned with err (the file
// it found, for a file it refuses).
func commandDiagnostic(command, path string, err error, subject *hcl.Range) *hcl.Diagnostic {
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Subject: subject}
	looked := where(command)
	switch {
	case errors.Is(err, exec.ErrDot):
		rel := path
		if !strings.HasPrefix(rel, "../") {
			rel = "./" + rel
		}
		d.Summary = "Plugin command found only through a relative PATH entry"
		d.Detail = fmt.Sprintf("%q was found in PATH as %s, through a relative directory. Sluice does not run a command found that way, since it depends on the directory Sluice is started from. Give the path instead: command = %q.",
			command, path, rel)
	case errors.Is(err, exec.ErrNotFound):
		d.Summary = "Plugin command not found"
		d.Detail = fmt.Sprintf("No executable named %q in any directory of PATH (%s).", command, os.Getenv("PATH"))
		if h := wordsHint(command); h != "" {
			d.Detail += h
			break
		}
		d.Detail += fmt.Sprintf(" Install it, or give the plugin's path instead: a command with a slash, such as \"./bin/%s\", is looked for relative to the directory Sluice runs in.", command)
		if p := inPathNotExecutable(command); p != "" {
			d.Detail += fmt.Sprintf(" %s exists but is not executable; chmod +x it if it is the plugin.", p)
		}
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		d.Summary = "Plugin command not found"
		d.Detail = fmt.Sprintf("There is no file %s. Build the plugin there (for a Go plugin: go build -o %s ./PACKAGE, as in go build -o bin/token-auth ./plugins/examples/token-auth), or fix the path.",
			looked, command) + wordsHint(command)
	case errors.Is(err, syscall.EISDIR):
		d.Summary = "Plugin command is a directory"
		d.Detail = fmt.Sprintf("%s is a directory; command must name the plugin's executable file inside it.", looked)
	case errors.Is(err, errNotRegular):
		d.Summary = "Plugin command is not a regular file"
		d.Detail = fmt.Sprintf("%s is a device, socket or pipe; command must name the plugin's executable file.", where(path))
	case errors.Is(err, fs.ErrPermission):
		d.Summary = "Plugin command is not executable"
		d.Detail = fmt.Sprintf("%s exists, but Sluice may not execute it. Make it executable (chmod +x %s), or point command at the built plugin.", looked, command)
	default:
		d.Summary = "Plugin command cannot be run"
		d.Detail = fmt.Sprintf("Looking for %s: %v. Fix the path, or build the plugin there.", looked, err)
	}
	return d
}

// where names the file a command with a slash stands for, saying what a
// relative one is relative to.
func where(command string) string {
	if !strings.Contains(command, "/") || filepath.IsAbs(command) {
		return command
	}
	wd, err := os.Getwd()
	if err != nil {
		return fmt.Sprintf("%s (relative to the working directory)", command)
	}
	return fmt.Sprintf("%s (%q relative to the working directory %s)", filepath.Join(wd, command), command, wd)
}

// inPathNotExecutable returns the first file named name in PATH that
// LookPath skipped because it is not executable, or "".
func inPathNotExecutable(name string) string {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// wordsHint explains the usual cause of a command with spaces not being
// found: it is one file name, not a shell line.
func wordsHint(command string) string {
	if !strings.ContainsAny(command, " \t") {
		return ""
	}
	words := strings.Fields(command)
	switch len(words) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf(" It has spaces around the name: write command = %q.", words[0])
	}
	args := make([]string, len(words)-1)
	for i, w := range words[1:] {
		args[i] = strconv.Quote(w)
	}
	return fmt.Sprintf(" The command is one file name and is not split into words: write command = %q and args = [%s].",
		words[0], strings.Join(args, ", "))
}

// attrRange is the range of the value of body's attribute name, or def
// when the body has no such attribute.
func attrRange(body hcl.Body, name string, def hcl.Range) *hcl.Range {
	if sb, ok := body.(*hclsyntax.Body); ok {
		if a := sb.Attributes[name]; a != nil {
			return a.Expr.Range().Ptr()
		}
	}
	return def.Ptr()
}
