package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// Update is a reload's change of the plugin set, staged by Host.Stage: the
// plugins of the new file, with the running ones whose block is unchanged
// carried over as they are.
type Update struct {
	h       *Host
	next    map[string]*Plugin
	changes []pipeline.Change
	hash    string
	started []*Plugin // new and changed plugins, once Start has run
	retired []*Plugin // the plugins they replace, and removed ones
}

// Stage decodes the plugin blocks of f against the running set. Until the
// update is applied (Start) or dropped (Discard), the host's Plugin answers
// for f, so that a build of f finds its plugins; only one update may be
// staged at a time.
func (h *Host) Stage(f *config.File) (*Update, hcl.Diagnostics) {
	next, diags := h.decode(f)
	u := &Update{h: h, next: next}
	h.mu.Lock()
	defer h.mu.Unlock()
	names := map[string]bool{}
	for n := range next {
		names[n] = true
	}
	for n := range h.plugins {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		nw, old := next[n], h.plugins[n]
		addr := "plugin." + n
		switch {
		case nw == nil:
			u.changes = append(u.changes, pipeline.Change{Address: addr, Action: "remove", Effect: "its process stops after the new configuration is applied"})
			u.retired = append(u.retired, old)
			continue
		case old == nil:
			u.changes = append(u.changes, pipeline.Change{Address: addr, Action: "add", Effect: "its process starts before the new configuration is applied"})
		case configText(old.cfg) == configText(nw.cfg):
			next[n] = old // unchanged: keep the running process
		default:
			u.changes = append(u.changes, pipeline.Change{Address: addr, Action: "change", Fields: pipeline.ConfigDiff(&old.cfg, &nw.cfg),
				Effect: "a new process starts and takes new decisions; the old one stops once the new one is up"})
			u.retired = append(u.retired, old)
		}
	}
	u.hash = hashOf(next)
	h.staged = next
	return u, diags
}

// Changes lists what the update does, for the reload's plan.
func (u *Update) Changes() []pipeline.Change { return u.changes }

// Hash identifies the plugin blocks of the staged file.
func (u *Update) Hash() string { return u.hash }

// Discard drops a staged update that will not be applied.
func (u *Update) Discard() {
	u.h.mu.Lock()
	u.h.staged = nil
	u.h.mu.Unlock()
}

// Start starts the new and changed plugins and waits until each has made
// its first start (or failed it, or its start_timeout passed), then makes
// them the ones that answer. The plugins they replace keep running until
// Finish, so no decision meets a process that is gone.
func (u *Update) Start(ctx context.Context) {
	h := u.h
	h.mu.Lock()
	h.staged = nil
	running := h.ctx != nil
	for name, p := range u.next {
		if h.plugins[name] == p {
			continue
		}
		u.started = append(u.started, p)
		if running {
			h.launch(p)
		}
	}
	h.mu.Unlock()
	for _, p := range u.started {
		wait := time.NewTimer(p.cfg.start + time.Second)
		select {
		case <-p.tried:
		case <-wait.C:
		case <-ctx.Done():
		}
		wait.Stop()
	}
	h.mu.Lock()
	h.plugins = u.next
	h.mu.Unlock()
	for _, p := range u.started {
		p.log.Info("reload: plugin answers from now on", "pid", p.PID())
	}
}

// Finish stops the plugins the update replaced or removed, once the new
// configuration is applied.
func (u *Update) Finish() {
	for _, p := range u.retired {
		// A decision that reached the old process before the swap is
		// answered by it, not cut.
		p.drain(p.cfg.timeout + time.Second)
		p.log.Info("reload: stopping the replaced plugin", "pid", p.PID())
		u.h.stopPlugin(p)
	}
}

// Hash identifies the plugin blocks the host runs now.
func (h *Host) Hash() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return hashOf(h.plugins)
}

func hashOf(plugins map[string]*Plugin) string {
	names := make([]string, 0, len(plugins))
	for n := range plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	sum := sha256.New()
	for _, n := range names {
		fmt.Fprintf(sum, "%s=%s\n", n, configText(plugins[n].cfg))
	}
	return hex.EncodeToString(sum.Sum(nil))[:16]
}

func configText(c Config) string {
	b, _ := json.Marshal(c)
	return string(b)
}
