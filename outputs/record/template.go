package record

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluice-media/sluice/pipeline"
)

// placeholder is one of the names a path template may use in braces.
type placeholder uint8

const (
	phNone   placeholder = iota
	phStream             // the stream path, "live/cam1"; its "/" become directories
	phApp                // the first segment of the stream path, "live"
	phName               // the rest of the stream path, "cam1" (may hold "/")
	phStart              // the file's start, UTC: 20261125T034501Z
	phSeq                // the file's number within one publish: 0001, 0002, ...
)

var placeholders = map[string]placeholder{
	"stream": phStream, "app": phApp, "name": phName, "start": phStart, "seq": phSeq,
}

// startLayout is {start}: UTC, sortable, and free of ':' so that the name is
// valid on every filesystem.
const startLayout = "20060102T150405Z"

// Patterns that match what each placeholder can expand to; retention uses
// them to recognize the files a template produced. A stream path segment is
// what pipeline.ValidPath allows.
const segPattern = `[A-Za-z0-9._~-]+`

var phPatterns = [...]string{
	phStream: segPattern + `(?:/` + segPattern + `)+`,
	phApp:    segPattern,
	phName:   segPattern + `(?:/` + segPattern + `)*`,
	phStart:  `[0-9]{8}T[0-9]{6}Z`,
	phSeq:    `[0-9]+`,
}

// template is a parsed path template. The root is its literal directory
// prefix, the part before the first placeholder: every file the template
// names lies below it, and Expand refuses any path that does not.
type template struct {
	raw   string
	root  string // cleaned; "." when the template starts with a placeholder
	parts []tmplPart
	// files matches the paths, relative to root and with "/" separators,
	// that the template can produce, collision suffix excluded.
	files *regexp.Regexp
}

type tmplPart struct {
	lit string
	ph  placeholder
}

// parseTemplate checks a path template. It refuses ".." elements outright,
// rather than working out where they lead: a template that climbs out of its
// own directory is a mistake, and an absolute path says the same plainly.
func parseTemplate(raw string) (*template, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, errEmptyTemplate
	}
	if !utf8.ValidString(raw) {
		return nil, fmt.Errorf("path %q is not valid UTF-8", raw)
	}
	for _, c := range raw {
		if c < 0x20 || c == 0x7F || c == '\\' {
			return nil, fmt.Errorf("path %q contains %q; use \"/\" between directories and no control characters", raw, c)
		}
	}
	if strings.HasSuffix(raw, "/") {
		return nil, fmt.Errorf("path %q names a directory; end it with a file name such as \"{start}.mp4\"", raw)
	}
	for _, el := range strings.Split(raw, "/") {
		if el == ".." {
			return nil, fmt.Errorf("path %q contains \"..\"; recordings must stay below the template's own directory (write an absolute path instead)", raw)
		}
	}
	// Placeholders hold no "/", so cleaning the template ("./rec//x") is
	// the same as cleaning every path it expands to.
	clean := path.Clean(raw)
	parts, firstPh, err := scanTemplate(clean)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", raw, err)
	}
	// The root is the literal prefix up to the last "/" before the first
	// placeholder (or before the file name, when there is none).
	prefix := clean
	if firstPh >= 0 {
		prefix = clean[:firstPh]
	}
	t := &template{raw: raw, parts: parts, root: "."}
	rel := clean
	if k := strings.LastIndexByte(prefix, '/'); k >= 0 {
		t.root = filepath.FromSlash(clean[:k])
		if k == 0 {
			t.root = string(filepath.Separator)
		}
		rel = clean[k+1:]
	}
	relParts, _, _ := scanTemplate(rel)
	var re strings.Builder
	re.WriteString("^")
	for _, p := range relParts {
		if p.ph == phNone {
			re.WriteString(regexp.QuoteMeta(p.lit))
		} else {
			re.WriteString("(?:" + phPatterns[p.ph] + ")")
		}
	}
	re.WriteString("$")
	t.files = regexp.MustCompile(re.String())

	// Defense in depth: a sample expansion must land below the root.
	if _, err := t.expand("app/name", time.Unix(0, 0), 1); err != nil {
		return nil, err
	}
	return t, nil
}

// scanTemplate splits s into literals and placeholders and returns the
// offset of the first placeholder (-1 if none).
func scanTemplate(s string) ([]tmplPart, int, error) {
	var parts []tmplPart
	first := -1
	for i := 0; i < len(s); {
		switch s[i] {
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, 0, errors.New("a \"{\" has no \"}\"")
			}
			name := s[i+1 : i+end]
			ph, ok := placeholders[name]
			if !ok {
				return nil, 0, fmt.Errorf("unknown placeholder {%s}; the placeholders are {stream}, {app}, {name}, {start} and {seq}", name)
			}
			if first < 0 {
				first = i
			}
			parts = append(parts, tmplPart{ph: ph})
			i += end + 1
		case '}':
			return nil, 0, errors.New("a \"}\" has no \"{\"")
		default:
			j := strings.IndexAny(s[i:], "{}")
			if j < 0 {
				j = len(s) - i
			}
			parts = append(parts, tmplPart{lit: s[i : i+j]})
			i += j
		}
	}
	return parts, first, nil
}

// errOutsideRoot is returned when an expanded path would leave the root.
var errOutsideRoot = errors.New("recording path leaves the recording root")

// expand names the file for stream, starting at start, the seq-th file of
// its publish. It checks the stream path again (the hub does not, and a
// source may be careless) and verifies that the cleaned result lies strictly
// below the root.
func (t *template) expand(stream string, start time.Time, seq int) (string, error) {
	if err := pipeline.ValidPath(stream); err != nil {
		return "", err
	}
	app, name, _ := strings.Cut(stream, "/")
	var b strings.Builder
	for _, p := range t.parts {
		switch p.ph {
		case phNone:
			b.WriteString(p.lit)
		case phStream:
			b.WriteString(stream)
		case phApp:
			b.WriteString(app)
		case phName:
			b.WriteString(name)
		case phStart:
			b.WriteString(start.UTC().Format(startLayout))
		case phSeq:
			s := strconv.Itoa(seq)
			if len(s) < 4 {
				s = strings.Repeat("0", 4-len(s)) + s
			}
			b.WriteString(s)
		}
	}
	p := filepath.Clean(filepath.FromSlash(b.String()))
	if !within(t.root, p) {
		return "", fmt.Errorf("%w: %q is not below %q", errOutsideRoot, p, t.root)
	}
	return p, nil
}

// within reports whether p lies strictly below root (both cleaned).
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == "." || filepath.IsAbs(rel) {
		return false
	}
	return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// collisionSuffix matches the "-N" openFile inserts before the extension
// when a name is taken.
var collisionSuffix = regexp.MustCompile(`-[0-9]+$`)

// matches reports whether rel (a path relative to the root, "/"-separated)
// is a file this template could have produced.
func (t *template) matches(rel string) bool {
	if t.files.MatchString(rel) {
		return true
	}
	ext := filepath.Ext(rel)
	stem := strings.TrimSuffix(rel, ext)
	if loc := collisionSuffix.FindStringIndex(stem); loc != nil {
		return t.files.MatchString(stem[:loc[0]] + ext)
	}
	return false
}
