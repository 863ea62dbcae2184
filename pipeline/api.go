package pipeline

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed" // the OpenAPI document
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The management API: JSON under /api/v1/ on the API listener
// (server.api), described by the OpenAPI 3.1 document openapi.json, which
// it serves at /api/v1/openapi.json. apiRoutes is the one list of its
// routes: the mux is built from it, and a test checks the document against
// it in both directions.
//
// Reading is open: the node, the streams, health, metrics and the status
// page. Acting (every POST) and the client list, which shows every
// client's address, need the server's api_token when one is set
// ("Authorization: Bearer TOKEN", RFC 6750 §2.1); the streams list then
// leaves out the publisher's address for a request without it. A browser
// page of another origin cannot act either, token or not (a form posting
// to a loopback API): cross-origin POSTs are refused as net/http's
// CrossOriginProtection tells them.

//go:embed openapi.json
var openAPIDocument []byte

// apiKickWait is how long a kick waits for the client's session to end
// before answering; the answer's "closed" says whether it did.
const apiKickWait = 2 * time.Second

// apiMaxBody bounds a request body: the configuration a dry-run reload
// plans.
const apiMaxBody = 1 << 20

// apiRoute is one route of the API listener.
type apiRoute struct {
	// Method and Pattern are the net/http ServeMux pattern's parts.
	Method, Pattern string
	// Doc is the route's path in the OpenAPI document.
	Doc string
	// Guard marks a route that needs the token when one is set.
	Guard  bool
	handle func(s *apiStage, w http.ResponseWriter, r *http.Request)
}

// apiRoutes returns the API listener's routes. A stream path has slashes
// ("live/cam"), so the stream routes take the rest of the URL path; the
// stop action is the last segment of a POST.
func apiRoutes() []apiRoute {
	return []apiRoute{
		{Method: "GET", Pattern: "/metrics", Doc: "/metrics", handle: (*apiStage).metricsPage},
		{Method: "GET", Pattern: "/api/v1/health", Doc: "/api/v1/health", handle: (*apiStage).health},
		{Method: "GET", Pattern: "/api/v1/openapi.json", Doc: "/api/v1/openapi.json", handle: (*apiStage).openAPI},
		{Method: "GET", Pattern: "/api/v1/node", Doc: "/api/v1/node", handle: (*apiStage).node},
		{Method: "GET", Pattern: "/api/v1/streams", Doc: "/api/v1/streams", handle: (*apiStage).streams},
		{Method: "GET", Pattern: "/api/v1/streams/{path...}", Doc: "/api/v1/streams/{path}", handle: (*apiStage).stream},
		{Method: "POST", Pattern: "/api/v1/streams/{path...}", Doc: "/api/v1/streams/{path}/stop", Guard: true, handle: (*apiStage).stop},
		{Method: "GET", Pattern: "/api/v1/clients", Doc: "/api/v1/clients", Guard: true, handle: (*apiStage).clients},
		{Method: "GET", Pattern: "/api/v1/clients/{id}", Doc: "/api/v1/clients/{id}", Guard: true, handle: (*apiStage).client},
		{Method: "POST", Pattern: "/api/v1/clients/{id}/kick", Doc: "/api/v1/clients/{id}/kick", Guard: true, handle: (*apiStage).kick},
		{Method: "POST", Pattern: "/api/v1/reload", Doc: "/api/v1/reload", Guard: true, handle: (*apiStage).reload},
	}
}

// routes returns the API's mux: every apiRoutes route, and a JSON 404 for
// any other path under /api/. The caller mounts the status page at GET /.
func (s *apiStage) routes() *http.ServeMux {
	mux := http.NewServeMux()
	cop := http.NewCrossOriginProtection()
	for _, route := range apiRoutes() {
		mux.HandleFunc(route.Method+" "+route.Pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := cop.Check(r); err != nil {
				apiError(w, http.StatusForbidden, "cross-origin requests cannot act on the API: "+err.Error())
				return
			}
			if route.Guard && !s.authorize(w, r) {
				return
			}
			route.handle(s, w, r)
		})
	}
	// Per method: a pattern for every method would overlap the status
	// page's GET / without being more specific (a ServeMux conflict).
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		mux.HandleFunc(m+" /api/", func(w http.ResponseWriter, r *http.Request) {
			apiError(w, http.StatusNotFound, fmt.Sprintf("no API route %s %s; see /api/v1/openapi.json", r.Method, r.URL.Path))
		})
	}
	return mux
}

// settings returns the server block's API settings of the build being
// served, so that a reload changes them without restarting the listener;
// ok is false before a build is served.
func (s *apiStage) settings() (token string, hold time.Duration, ok bool) {
	g := s.rt.current.Load()
	if g == nil {
		return "", 0, false
	}
	return g.server.APIToken, g.server.StopHold, true
}

// authorized reports whether r may see and do everything: no token is set,
// or r carries it.
func (s *apiStage) authorized(r *http.Request) bool {
	token, _, ok := s.settings()
	if !ok {
		return false
	}
	if token == "" {
		return true
	}
	// RFC 7235 §2.1: the scheme is case-insensitive.
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return false
	}
	// Hashed first, so that the comparison's time says nothing of the
	// token's length either.
	got, want := sha256.Sum256([]byte(strings.TrimSpace(h[7:]))), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// authorize answers 401 (RFC 6750 §3) unless r is authorized.
func (s *apiStage) authorize(w http.ResponseWriter, r *http.Request) bool {
	if s.authorized(r) {
		return true
	}
	challenge := `Bearer realm="sluice"`
	if r.Header.Get("Authorization") != "" {
		challenge += `, error="invalid_token"`
	}
	s.log.Warn("API request refused: no valid token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("WWW-Authenticate", challenge)
	apiError(w, http.StatusUnauthorized, "this request needs the API token (server.api_token): Authorization: Bearer TOKEN")
	return false
}

// apiErrorBody is the body of every API error.
type apiErrorBody struct {
	Error string `json:"error"`
}

func apiError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiErrorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *apiStage) metricsPage(w http.ResponseWriter, r *http.Request) {
	s.metrics.Handler().ServeHTTP(w, r)
}

func (s *apiStage) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *apiStage) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDocument)
}

// node is GET /api/v1/node: the Operator's description of the node, or,
// without one, what the runtime knows.
func (s *apiStage) node(w http.ResponseWriter, _ *http.Request) {
	var n NodeInfo
	g := s.rt.current.Load()
	if op := s.rt.Operator; op != nil {
		n = op.Node()
	} else {
		n = NodeInfo{Version: "devel", Started: s.rt.Started()}
		if g != nil {
			n.ConfigHash = g.Hash()
		}
	}
	if n.Listeners == nil {
		n.Listeners = map[string]string{}
		if g != nil {
			n.Listeners = g.Listeners()
		}
	}
	writeJSON(w, http.StatusOK, n)
}

// streamObjects returns infos as the API shows them: with the detailers'
// additions, and without the publisher's address for a request that is
// not authorized.
func (s *apiStage) streamObjects(r *http.Request, infos []StreamInfo) ([]map[string]json.RawMessage, error) {
	if !s.authorized(r) {
		for i := range infos {
			if p := infos[i].Publisher; p != nil {
				c := *p
				c.Remote = ""
				infos[i].Publisher = &c
			}
		}
	}
	var ds []StreamDetailer
	if s.detailers != nil {
		ds = s.detailers()
	}
	return streamsWithDetails(infos, ds)
}

func (s *apiStage) streams(w http.ResponseWriter, r *http.Request) {
	streams, err := s.streamObjects(r, s.rt.Gate.Snapshot())
	if err != nil {
		s.log.Warn("streams API: cannot encode stream details", "err", err)
		apiError(w, http.StatusInternalServerError, "cannot encode stream details")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"streams": streams})
}

func (s *apiStage) stream(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	info, ok := s.rt.Gate.StreamSnapshot(path)
	if !ok {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no stream %q", path))
		return
	}
	objs, err := s.streamObjects(r, []StreamInfo{info})
	if err != nil {
		s.log.Warn("streams API: cannot encode stream details", "err", err)
		apiError(w, http.StatusInternalServerError, "cannot encode stream details")
		return
	}
	writeJSON(w, http.StatusOK, objs[0])
}

// stop is POST /api/v1/streams/{path}/stop[?hold=DURATION].
func (s *apiStage) stop(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutSuffix(r.PathValue("path"), "/stop")
	if !ok {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no API route POST %s; a stream's action is POST /api/v1/streams/{path}/stop", r.URL.Path))
		return
	}
	_, hold, _ := s.settings()
	if q := r.URL.Query().Get("hold"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 || d > 24*time.Hour {
			apiError(w, http.StatusBadRequest, fmt.Sprintf("hold=%q: want a duration from 0s to 24h, such as \"30s\"", q))
			return
		}
		hold = d
	}
	res, err := s.rt.Gate.Stop(path, hold)
	if errors.Is(err, ErrStreamNotFound) {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no stream %q", path))
		return
	}
	s.log.Info("stream stopped", "stream", path, "hold", hold, "publisher", res.Publisher, "readers", res.Readers, "by", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}

// clientList is GET /api/v1/clients.
type clientList struct {
	Clients []ClientSession `json:"clients"`
}

func (s *apiStage) clients(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, clientList{Clients: s.rt.Gate.Clients(r.URL.Query().Get("stream"))})
}

func (s *apiStage) client(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok := s.rt.Gate.Client(id)
	if !ok {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no client %q", id))
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// kickResult is POST /api/v1/clients/{id}/kick's answer.
type kickResult struct {
	// Client is the client as it was when it was kicked.
	Client ClientSession `json:"client"`
	// Closed says whether its session ended before the answer.
	Closed bool `json:"closed"`
}

func (s *apiStage) kick(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), apiKickWait)
	defer cancel()
	c, closed, err := s.rt.Gate.Kick(ctx, id)
	switch {
	case errors.Is(err, ErrClientNotFound):
		apiError(w, http.StatusNotFound, fmt.Sprintf("no client %q", id))
		return
	case errors.Is(err, ErrNotKickable):
		apiError(w, http.StatusConflict, err.Error()+"; stopping its stream ends it")
		return
	}
	s.log.Info("client kicked", "client_id", c.ID, "proto", c.Proto, "remote", c.Remote, "stream", c.Stream,
		"role", c.Role, "closed", closed, "by", r.RemoteAddr)
	writeJSON(w, http.StatusOK, kickResult{Client: c, Closed: closed})
}

// reloadErrorBody is the answer to a refused reload.
type reloadErrorBody struct {
	Error       string `json:"error"`
	Result      string `json:"result"`
	Diagnostics string `json:"diagnostics"`
}

// reload is POST /api/v1/reload[?dry_run=true][&expect=HASH], with the
// configuration to plan as the body of a dry run.
func (s *apiStage) reload(w http.ResponseWriter, r *http.Request) {
	op := s.rt.Operator
	if op == nil {
		apiError(w, http.StatusNotImplemented, "this node cannot reload: it was not started by `sluice run`")
		return
	}
	q := r.URL.Query()
	dry := false
	if v := q.Get("dry_run"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			apiError(w, http.StatusBadRequest, fmt.Sprintf("dry_run=%q: want true or false", v))
			return
		}
		dry = b
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, apiMaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			apiError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the configuration is larger than %d bytes", apiMaxBody))
			return
		}
		apiError(w, http.StatusBadRequest, "cannot read the request body: "+err.Error())
		return
	}
	if len(body) == 0 {
		body = nil // no configuration given: the node's file
	} else if !dry {
		apiError(w, http.StatusBadRequest, "a configuration in the body can only be planned (dry_run=true): applying re-reads the node's file")
		return
	}
	ctx := r.Context()
	if !dry {
		// Once started, a reload finishes even if the client hangs up:
		// half a reload is worse than either state.
		ctx = context.WithoutCancel(ctx)
	}
	plan, err := op.Reload(ctx, ReloadRequest{DryRun: dry, Expect: q.Get("expect"), Source: body})
	var re *ReloadError
	switch {
	case errors.As(err, &re):
		s.log.Info("reload requested; refused", "dry_run", dry, "result", re.Result, "by", r.RemoteAddr)
		writeJSON(w, http.StatusUnprocessableEntity, reloadErrorBody{Error: re.Error(), Result: re.Result, Diagnostics: re.Diagnostics})
		return
	case err != nil:
		s.log.Error("reload requested; failed", "dry_run", dry, "by", r.RemoteAddr, "err", err)
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("reload requested", "dry_run", dry, "changes", len(plan.Changes), "applied", plan.Applied, "by", r.RemoteAddr)
	writeJSON(w, http.StatusOK, plan)
}

// Listeners returns the bound address of every stage that listens, by
// name: "http", "https" and "api" for the server block's listeners, the
// stage address for the others ("ingest.rtmp"), and "rtmp" once more for
// the first RTMP ingest. It is empty before Bind.
func (g *Graph) Listeners() map[string]string {
	out := map[string]string{}
	if !g.bound {
		return out
	}
	for _, s := range g.stages {
		a, ok := s.stage.(interface{ Addr() net.Addr })
		if !ok {
			continue
		}
		addr := a.Addr()
		if addr == nil {
			continue
		}
		name := s.addr
		if short, ok := strings.CutPrefix(s.addr, "server."); ok {
			name = short
		}
		out[name] = addr.String()
		if _, seen := out["rtmp"]; !seen && s.kind == "ingest.rtmp" {
			out["rtmp"] = addr.String()
		}
	}
	return out
}
