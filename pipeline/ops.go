package pipeline

import (
	"context"
	"time"
)

// Operator is what the API's acting endpoints call for the node as a
// whole: its identity and its configuration's reload. The command that runs
// the node implements it (it knows the file, its variables and the kinds);
// Runtime.Operator holds it, nil when nothing can reload (tests, validate).
type Operator interface {
	// Node describes the running node.
	Node() NodeInfo
	// Reload re-reads the configuration and applies it, or, with
	// req.DryRun, only says what applying it would do. An invalid file
	// is a *ReloadError carrying its diagnostics; nothing changes then.
	Reload(ctx context.Context, req ReloadRequest) (*Plan, error)
}

// NodeInfo is GET /api/v1/node.
type NodeInfo struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// File is the configuration file the node runs, as given on its
	// command line; ConfigHash the hash of the configuration it applied
	// last (see Plan.Hash).
	File       string `json:"file"`
	ConfigHash string `json:"config_hash"`
	// LastReload is nil until the first reload.
	LastReload *ReloadResult `json:"last_reload"`
	// Listeners maps a listener's name ("http", "api", "rtmp", or the
	// stage address of any other) to its bound address.
	Listeners map[string]string `json:"listeners"`
}

// ReloadRequest asks for a reload.
type ReloadRequest struct {
	// Source, when set, is the text of the configuration to plan against
	// instead of the node's file (sluice validate --diff sends the file it
	// was given). It is only planned: applying always re-reads the file.
	Source []byte
	// DryRun asks for the plan only.
	DryRun bool
	// Expect, when set, is the hash of the plan the caller saw
	// (Plan.Hash): the reload is refused if the file now plans something
	// else.
	Expect string
}

// ReloadResult is the outcome of the last reload, for the API.
type ReloadResult struct {
	At time.Time `json:"at"`
	// Result is "applied", "unchanged", "invalid" or "failed", as counted
	// by sluice_reloads_total{result}.
	Result  string `json:"result"`
	Error   string `json:"error,omitempty"`
	Changes int    `json:"changes"`
}

// ReloadError is a reload refused before anything changed: the file does
// not decode or build, or a listener cannot be bound.
type ReloadError struct {
	// Diagnostics is the text `sluice validate` would print.
	Diagnostics string
	// Result is "invalid" (the file) or "failed" (applying it).
	Result string
}

func (e *ReloadError) Error() string {
	return "reload refused: " + e.Diagnostics
}
