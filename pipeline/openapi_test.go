package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// openAPIDoc is the decoded OpenAPI document, as the API serves it.
type openAPIDoc struct {
	OpenAPI    string                                 `json:"openapi"`
	Paths      map[string]map[string]openAPIOperation `json:"paths"`
	Components struct {
		Schemas map[string]map[string]any `json:"schemas"`
	} `json:"components"`
}

type openAPIOperation struct {
	Parameters []struct {
		Name     string `json:"name"`
		In       string `json:"in"`
		Required bool   `json:"required"`
	} `json:"parameters"`
	Security  []map[string]any `json:"security"`
	Responses map[string]struct {
		Content map[string]struct {
			Schema map[string]any `json:"schema"`
		} `json:"content"`
	} `json:"responses"`
}

// TestOpenAPIDocument keeps the OpenAPI document true. Every route the API
// serves is in it and every operation in it is served; and every operation
// is called on a live API (ffmpeg publishing over RTMP, players over RTMP
// and HTTP-FLV, a fake Operator) with the answers it documents: each
// status must be one the document lists for it, and each JSON body must
// validate against the schema it documents for that status.
func TestOpenAPIDocument(t *testing.T) {
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPIDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}

	// Both directions between the routes and the document.
	var ops []string
	for path, methods := range doc.Paths {
		for m, op := range methods {
			ops = append(ops, strings.ToUpper(m)+" "+path)
			if len(op.Responses) == 0 {
				t.Errorf("%s %s documents no response", m, path)
			}
		}
	}
	sort.Strings(ops)
	var routes []string
	guarded := map[string]bool{}
	for _, r := range pipeline.APIRoutes() {
		routes = append(routes, r.Method+" "+r.Doc)
		guarded[r.Method+" "+r.Doc] = r.Guard
	}
	sort.Strings(routes)
	if !slices.Equal(ops, routes) {
		t.Errorf("the document's operations and the API's routes differ:\ndocument: %q\nroutes:   %q", ops, routes)
	}

	check := &schemaChecker{schemas: doc.Components.Schemas}
	for name, s := range doc.Components.Schemas {
		check.lint(t, "#/components/schemas/"+name, s)
	}

	oper := &fakeOperator{node: pipeline.NodeInfo{Version: "v1", Started: time.Now()}, got: make(chan pipeline.ReloadRequest, 16)}
	srv := apiServer(t, oper)
	a := newAPI(t, srv)
	const stream = "live/doc"
	publish(t, srv, stream)
	live(t, srv, stream)
	playRTMP(t, srv, stream)
	playFLV(t, srv, stream)
	pubID := a.client(stream, "rtmp", pipeline.RolePublish)
	flvID := a.client(stream, "http-flv", pipeline.RolePlay)
	// A publisher whose protocol registers no way to cut it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stuck, err := srv.Graph.Gate.Publish(ctx, pipeline.Request{Path: "live/stuck", Client: pipeline.ClientInfo{Proto: "test", Remote: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	stuckID := a.client("live/stuck", "test", pipeline.RolePublish)
	// More of the documented answers, each before the call that succeeds.
	type extra struct {
		what, url string
		want      int
		before    func()
	}
	extras := map[string][]extra{
		"POST /api/v1/streams/{path}/stop": {{what: "a bad hold", url: "/api/v1/streams/" + stream + "/stop?hold=forever", want: http.StatusBadRequest}},
		"POST /api/v1/clients/{id}/kick":   {{what: "a client that cannot be cut", url: "/api/v1/clients/" + stuckID + "/kick", want: http.StatusConflict}},
		"POST /api/v1/reload": {
			{what: "a bad dry_run", url: "/api/v1/reload?dry_run=maybe", want: http.StatusBadRequest},
			{what: "an invalid file", url: "/api/v1/reload", want: http.StatusUnprocessableEntity, before: func() {
				oper.fail.Store(&pipeline.ReloadError{Result: "invalid", Diagnostics: "x.hcl:1:1: error: Unsupported block type"})
			}},
		},
	}

	// The real value of each parameter, for the call that must succeed.
	values := map[string]string{"path": stream, "id": pubID}
	query := map[string]string{
		"POST /api/v1/streams/{path}/stop": "?hold=1s",
		"POST /api/v1/reload":              "?dry_run=true",
		"GET /api/v1/clients":              "?stream=" + stream,
	}
	// Acting on the stream or a client last, the stop last of all.
	order := func(op string) int {
		switch {
		case strings.HasSuffix(op, "/stop"):
			return 3
		case strings.HasSuffix(op, "/kick"):
			return 2
		case strings.HasPrefix(op, "POST"):
			return 1
		}
		return 0
	}
	sort.SliceStable(ops, func(i, j int) bool { return order(ops[i]) < order(ops[j]) })
	for _, key := range ops {
		method, path, _ := strings.Cut(key, " ")
		op := doc.Paths[path][strings.ToLower(method)]
		fill := func(missing bool) string {
			p := path
			for _, prm := range op.Parameters {
				if prm.In != "path" {
					continue
				}
				v := values[prm.Name]
				if strings.HasSuffix(path, "/kick") {
					v = flvID // a player: the stream's publisher stays for the stop
				}
				if missing {
					v = "nosuch/" + prm.Name
					if prm.Name == "id" {
						v = "999999"
					}
				}
				p = strings.ReplaceAll(p, "{"+prm.Name+"}", v)
			}
			return p
		}
		call := func(what, url, token string, want int, header ...string) {
			t.Helper()
			code, body, h := a.do(method, url, token, nil, header...)
			resp, ok := op.Responses[fmt.Sprint(code)]
			if !ok {
				t.Errorf("%s %s (%s): status %d is not in the document: %s", method, url, what, code, body)
				return
			}
			if want != 0 && code != want {
				t.Errorf("%s %s (%s): %d %s, want %d", method, url, what, code, body, want)
			}
			media, ok := resp.Content["application/json"]
			if !ok {
				if len(resp.Content) == 0 && len(body) > 0 && strings.HasPrefix(h.Get("Content-Type"), "application/json") {
					t.Errorf("%s %s (%s): a JSON body the document does not describe", method, url, what)
				}
				return
			}
			if !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
				t.Errorf("%s %s (%s): Content-Type %q, want JSON", method, url, what, h.Get("Content-Type"))
			}
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Errorf("%s %s (%s): %v\n%s", method, url, what, err, body)
				return
			}
			for _, e := range check.validate("body", media.Schema, v) {
				t.Errorf("%s %s (%s), status %d: %s", method, url, what, code, e)
			}
		}
		t.Run(key, func(t *testing.T) {
			if len(op.Security) > 0 != guarded[key] {
				t.Errorf("the document's security (%v) and the route's guard (%v) differ", op.Security, guarded[key])
			}
			if guarded[key] {
				call("without the token", fill(false)+query[key], "", http.StatusUnauthorized)
			}
			if method == "POST" {
				call("from another origin", fill(false)+query[key], apiToken, http.StatusForbidden, "Sec-Fetch-Site", "cross-site")
			}
			if strings.Contains(path, "{") {
				call("a missing resource", fill(true)+query[key], apiToken, http.StatusNotFound)
			}
			for _, e := range extras[key] {
				if e.before != nil {
					e.before()
				}
				call(e.what, e.url, apiToken, e.want)
				oper.fail.Store(nil)
			}
			call("the real one", fill(false)+query[key], apiToken, http.StatusOK)
		})
	}
}

// schemaChecker validates decoded JSON against the subset of JSON Schema
// (2020-12, as OpenAPI 3.1 uses it) that openapi.json uses: $ref, anyOf,
// type (one or a list), enum, properties, required,
// additionalProperties (a boolean or a schema) and items. lint fails on
// any other keyword, so that the document cannot come to rely on one the
// checker would ignore.
type schemaChecker struct {
	schemas map[string]map[string]any
}

// annotations are keywords that do not constrain a value.
var annotations = map[string]bool{"description": true, "format": true, "example": true, "title": true}

func (c *schemaChecker) lint(t *testing.T, at string, s map[string]any) {
	t.Helper()
	for k, v := range s {
		switch {
		case annotations[k]:
		case k == "$ref":
			if c.resolve(v.(string)) == nil {
				t.Errorf("%s: $ref %v resolves to nothing", at, v)
			}
		case k == "type" || k == "enum" || k == "required":
		case k == "properties":
			for name, p := range v.(map[string]any) {
				c.lint(t, at+"/properties/"+name, p.(map[string]any))
			}
		case k == "items":
			c.lint(t, at+"/items", v.(map[string]any))
		case k == "additionalProperties":
			if sub, ok := v.(map[string]any); ok {
				c.lint(t, at+"/additionalProperties", sub)
			}
		case k == "anyOf":
			for i, sub := range v.([]any) {
				c.lint(t, fmt.Sprintf("%s/anyOf/%d", at, i), sub.(map[string]any))
			}
		default:
			t.Errorf("%s: keyword %q is not one the test's checker knows", at, k)
		}
	}
}

func (c *schemaChecker) resolve(ref string) map[string]any {
	name, ok := strings.CutPrefix(ref, "#/components/schemas/")
	if !ok {
		return nil
	}
	return c.schemas[name]
}

// validate returns what is wrong with v under schema s, each problem
// with its place in the value.
func (c *schemaChecker) validate(at string, s map[string]any, v any) []string {
	if ref, ok := s["$ref"].(string); ok {
		target := c.resolve(ref)
		if target == nil {
			return []string{at + ": unresolved " + ref}
		}
		return c.validate(at, target, v)
	}
	if anyOf, ok := s["anyOf"].([]any); ok {
		var all []string
		for _, sub := range anyOf {
			errs := c.validate(at, sub.(map[string]any), v)
			if len(errs) == 0 {
				return nil
			}
			all = append(all, errs...)
		}
		return []string{fmt.Sprintf("%s: matches none of anyOf: %s", at, strings.Join(all, "; "))}
	}
	var errs []string
	if t, ok := s["type"]; ok {
		var types []string
		switch x := t.(type) {
		case string:
			types = []string{x}
		case []any:
			for _, e := range x {
				types = append(types, e.(string))
			}
		}
		if !slices.ContainsFunc(types, func(typ string) bool { return isType(typ, v) }) {
			return []string{fmt.Sprintf("%s: %s is not of type %v", at, brief(v), types)}
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		errs = append(errs, fmt.Sprintf("%s: %s is not one of %v", at, brief(v), enum))
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := x[r.(string)]; !ok {
					errs = append(errs, fmt.Sprintf("%s: required property %q is missing", at, r))
				}
			}
		}
		for k, e := range x {
			if p, ok := props[k]; ok {
				errs = append(errs, c.validate(at+"."+k, p.(map[string]any), e)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					errs = append(errs, fmt.Sprintf("%s: property %q is not in the schema", at, k))
				}
			case map[string]any:
				errs = append(errs, c.validate(at+"."+k, ap, e)...)
			}
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range x {
				errs = append(errs, c.validate(fmt.Sprintf("%s[%d]", at, i), items, e)...)
			}
		}
	}
	return errs
}

func isType(typ string, v any) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	}
	return false
}

func brief(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// TestSchemaChecker: the checker itself finds what it must.
func TestSchemaChecker(t *testing.T) {
	c := &schemaChecker{schemas: map[string]map[string]any{
		"T": {"type": "object", "required": []any{"a"}, "additionalProperties": false,
			"properties": map[string]any{"a": map[string]any{"type": "integer"}, "b": map[string]any{"type": []any{"string", "null"}, "enum": []any{"x", nil}}}},
	}}
	ref := map[string]any{"$ref": "#/components/schemas/T"}
	for _, tc := range []struct {
		v    string
		errs int
	}{
		{`{"a": 1}`, 0},
		{`{"a": 1, "b": "x"}`, 0},
		{`{"a": 1, "b": null}`, 0},
		{`{"a": 1.5}`, 1},
		{`{}`, 1},
		{`{"a": 1, "c": 2}`, 1},
		{`{"a": 1, "b": "y"}`, 1},
		{`{"a": 1, "b": 2}`, 1},
		{`[]`, 1},
	} {
		var v any
		if err := json.Unmarshal([]byte(tc.v), &v); err != nil {
			t.Fatal(err)
		}
		if errs := c.validate("v", ref, v); len(errs) != tc.errs {
			t.Errorf("%s: %d problems %q, want %d", tc.v, len(errs), errs, tc.errs)
		}
	}
	items := map[string]any{"type": "array", "items": ref}
	var v any
	_ = json.Unmarshal([]byte(`[{"a": 1}, {"a": "no"}]`), &v)
	if errs := c.validate("v", items, v); len(errs) != 1 || !strings.Contains(errs[0], "v[1].a") {
		t.Errorf("items: %q", errs)
	}
}
