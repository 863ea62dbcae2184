package host

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestReloadSwapsPlugin changes a plugin block under a stream of auth
// decisions: the new process starts before the old one stops, answers
// every decision after the swap, and no decision meets a process that is
// gone (none falls back to on_error); an unchanged plugin keeps its
// process.
func TestReloadSwapsPlugin(t *testing.T) {
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	h := startHost(t, pluginBlock("tokens", bin, "")+pluginBlock("other", bin, ""))
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return h.Plugin("tokens").PID() != 0 && h.Plugin("other").PID() != 0
	}, "plugins did not start")
	oldPID, otherPID := h.Plugin("tokens").PID(), h.Plugin("other").PID()

	// Decisions run all along: each asks whoever answers now.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var allowed, swapped, bad atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				a := h.Authorizer("tokens")
				d := a.Authorize(context.Background(), pipeline.AuthRequest{Action: pipeline.ActionPublish, Proto: "rtmp", Path: "live/a", Query: "v2"})
				switch {
				case d.Allow:
					swapped.Add(1)
				case d.Reason == "query is not allow":
					allowed.Add(1) // the old process: it allows "allow" only
				default:
					bad.Add(1)
					t.Errorf("a decision during the reload: %+v", d)
				}
			}
		})
	}
	sluicetest.Eventually(t, 5*time.Second, func() bool { return allowed.Load() > 20 }, "no decisions before the reload")

	f, diags := config.Parse("next.hcl", []byte(pluginBlock("tokens", bin, `  env = { TESTPLUGIN_ALLOW = "v2" }`)+pluginBlock("other", bin, "")), config.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	u, diags := h.Stage(f)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if c := u.Changes(); len(c) != 1 || c[0].Address != "plugin.tokens" || c[0].Action != "change" || len(c[0].Fields) != 1 || c[0].Fields[0].Name != "env" {
		t.Fatalf("changes = %+v", c)
	}
	u.Start(context.Background())
	newPID := h.Plugin("tokens").PID()
	if newPID == 0 || newPID == oldPID {
		t.Fatalf("after Start the answering process is %d (old %d)", newPID, oldPID)
	}
	if err := syscall.Kill(oldPID, 0); err != nil {
		t.Errorf("the old process is gone before Finish: %v", err)
	}
	n := swapped.Load()
	sluicetest.Eventually(t, 5*time.Second, func() bool { return swapped.Load() > n+20 }, "the new plugin answers nothing")
	u.Finish()
	sluicetest.Eventually(t, 5*time.Second, func() bool { return errors.Is(syscall.Kill(oldPID, 0), syscall.ESRCH) }, "the old process outlived Finish")
	n = swapped.Load()
	sluicetest.Eventually(t, 5*time.Second, func() bool { return swapped.Load() > n+20 }, "no decisions after Finish")
	cancel()
	wg.Wait()
	if h.Plugin("other").PID() != otherPID {
		t.Errorf("the unchanged plugin was restarted: pid %d, was %d", h.Plugin("other").PID(), otherPID)
	}
	for _, r := range []string{"unavailable", "timeout", "error"} {
		if c := h.count("sluice_plugin_auth_calls_total", `plugin="tokens"`, `result="`+r+`"`); c != 0 {
			t.Errorf("%d decisions fell back (%s) during the reload", c, r)
		}
	}
	t.Logf("decisions: %d by the old process, %d by the new, %d bad", allowed.Load(), swapped.Load(), bad.Load())
}
