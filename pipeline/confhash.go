package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/sluice-media/sluice/pipeline/config"
)

// fields is a stage's decoded configuration, attribute by attribute: the
// name the file uses and the value after variables and defaults, in JSON.
// Two builds of a block are the same stage when their fields are equal; a
// reload reports the fields that differ.
type fields map[string]string

// configFields flattens cfg, a kind's gohcl-tagged struct as decoded from
// f, into fields. Unexported fields (what Validate derives) are left out:
// they follow from the exported ones.
func configFields(f *config.File, cfg any) fields {
	out := fields{}
	v := reflect.ValueOf(cfg)
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return out
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		out[""] = valueText(f, v)
		return out
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name := sf.Name
		if tag, ok := sf.Tag.Lookup("hcl"); ok {
			if n, _, _ := strings.Cut(tag, ","); n != "" {
				name = n
			} else if strings.Contains(tag, "remain") {
				// The rest of the body: each attribute under its
				// own name, as the file writes it.
				if body, ok := v.Field(i).Interface().(hcl.Body); ok && body != nil {
					for k, val := range bodyFields(f, body) {
						out[k] = val
					}
				}
				continue
			}
		}
		out[name] = valueText(f, v.Field(i))
	}
	return out
}

// bodyFields evaluates the attributes of a body that a kind keeps
// undecoded (a plugin's own settings).
func bodyFields(f *config.File, body hcl.Body) fields {
	out := fields{}
	attrs, diags := body.JustAttributes()
	if diags.HasErrors() {
		// Nested blocks: fall back to the body's text, which is stable
		// for an unchanged block.
		out["(body)"] = fmt.Sprintf("%v", body.MissingItemRange())
		return out
	}
	for name, a := range attrs {
		val, d := a.Expr.Value(evalContext(f))
		if d.HasErrors() {
			out[name] = sourceText(f, a.Expr.Range())
			continue
		}
		out[name] = ctyText(val)
	}
	return out
}

func valueText(f *config.File, v reflect.Value) string {
	if !v.IsValid() {
		return "null"
	}
	switch x := v.Interface().(type) {
	case cty.Value:
		return ctyText(x)
	case hcl.Body:
		if x == nil {
			return "null"
		}
		b, _ := json.Marshal(bodyFields(f, x))
		return string(b)
	case hcl.Expression:
		if x == nil {
			return "null"
		}
		val, d := x.Value(evalContext(f))
		if d.HasErrors() {
			return sourceText(f, x.Range())
		}
		return ctyText(val)
	}
	b, err := json.Marshal(v.Interface())
	if err != nil {
		return fmt.Sprintf("%#v", v.Interface())
	}
	return string(b)
}

func evalContext(f *config.File) *hcl.EvalContext {
	if f == nil {
		return nil
	}
	return f.EvalContext
}

// sourceText is the text of rng in f, for an expression that does not
// evaluate on its own.
func sourceText(f *config.File, rng hcl.Range) string {
	if f == nil || f.Files[rng.Filename] == nil {
		return rng.String()
	}
	return string(rng.SliceBytes(f.Files[rng.Filename].Bytes))
}

// ConfigDiff lists the attributes that differ between two decodings of a
// block (gohcl-tagged structs with plain values), by the names the file
// uses: what a reload's plan shows for a changed block.
func ConfigDiff(old, nw any) []FieldChange {
	return configFields(nil, nw).diff(configFields(nil, old))
}

// ctyText renders a value the kind keeps as cty (a match list, a plugin's
// own settings) stably: GoString is deterministic for equal values.
func ctyText(v cty.Value) string { return v.GoString() }

// hash returns a stable digest of fs.
func (fs fields) hash() string {
	keys := make([]string, 0, len(fs))
	for k := range fs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, fs[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// diff lists the fields that differ between old and fs, by name.
func (fs fields) diff(old fields) []FieldChange {
	names := map[string]bool{}
	for k := range fs {
		names[k] = true
	}
	for k := range old {
		names[k] = true
	}
	var out []FieldChange
	for k := range names {
		if fs[k] != old[k] {
			out = append(out, FieldChange{Name: k, Old: old[k], New: fs[k]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// equal reports whether fs and old are the same configuration.
func (fs fields) equal(old fields) bool {
	if len(fs) != len(old) {
		return false
	}
	for k, v := range fs {
		if w, ok := old[k]; !ok || w != v {
			return false
		}
	}
	return true
}
