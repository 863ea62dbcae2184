package main

import (
	"fmt"
	"io"
	"strconv"
)

// baselineServer is the server whose RTMP rows the others are compared with.
const baselineServer = "nginx-rtmp"

// writeReport prints results as markdown: one table for fixed-N runs, one
// for find-max runs. A row's ratio is its CPU per player-second over the
// baseline server's RTMP row with the same number of players.
func writeReport(w io.Writer, results []*result) {
	base := map[int]float64{}
	var fixed, scale []*result
	for _, r := range results {
		if r.Steps != nil {
			scale = append(scale, r)
			continue
		}
		fixed = append(fixed, r)
		if r.Tags["server"] == baselineServer && r.Proto == "rtmp" {
			base[r.Players] = r.CPUMsPerPlayerS
		}
	}
	if len(fixed) > 0 {
		fmt.Fprintln(w, "| server | proto | mode | N | CPU-ms/player-s | vs nginx-rtmp | server cores | TTFF p50/p95/max ms | delay p50/p95 ms | stalls (players) | errors | Mbit/s | RSS MB | tool cores / lag ms | load |")
		fmt.Fprintln(w, "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, r := range fixed {
			ratio := "n/a"
			if b := base[r.Players]; b > 0 && r.CPUMsPerPlayerS > 0 {
				ratio = fmt.Sprintf("%.2f×", r.CPUMsPerPlayerS/b)
			}
			delay := "n/a"
			if r.Delay.N > 0 {
				delay = fmt.Sprintf("%.0f / %.0f", r.Delay.P50, r.Delay.P95)
			}
			errs := strconv.Itoa(r.Errors)
			if r.NoFrames > 0 {
				errs += fmt.Sprintf(" (+%d no picture)", r.NoFrames)
			}
			if r.PublishError != "" {
				errs += " + publisher cut off"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | %.3f | %s | %.2f | %.0f / %.0f / %.0f | %s | %d (%d) | %s | %.1f | %.1f | %.2f / %.0f | %.1f |\n",
				tag(r, "server"), r.Proto, tag(r, "mode"), r.Players, r.CPUMsPerPlayerS, ratio, r.ServerCores,
				r.TTFF.P50, r.TTFF.P95, r.TTFF.Max, delay, r.Stalls, r.StalledPlayers, errs, r.Mbps, r.RSSMB, r.ToolCores, r.ToolLagMs, r.Load1)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "CPU-ms/player-s: server CPU time per player per second of play (lower is better); vs nginx-rtmp: that over"+
			" nginx-rtmp's RTMP row at the same N. TTFF: connect to the first keyframe after a sequence header. delay: publisher"+
			" send to player receipt of the same frame. stalls: no frame for 1 s, or a timestamp jump. tool lag: how late the load"+
			" tool's own 100 ms tick came at worst (stalls shorter than it may be the tool's). load: 1-minute load average.")
	}
	if len(scale) > 0 {
		if len(fixed) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, "| server | proto | mode | most players without a stall | CPU-ms/player-s there | server cores there | tool cores there | first failing step |")
		fmt.Fprintln(w, "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
		for _, r := range scale {
			var ok stepResult
			fail := "none (bound reached)"
			for _, s := range r.Steps {
				if s.Stalls == 0 && s.Errors == 0 {
					ok = s
					continue
				}
				fail = fmt.Sprintf("%d players: %d stalls, %d errors", s.Players, s.Stalls, s.Errors)
				break
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | %.3f | %.2f | %.2f | %s |\n",
				tag(r, "server"), r.Proto, tag(r, "mode"), r.MaxPlayers, ok.CPUMsPerPlayerS, ok.ServerCores, ok.ToolCores, fail)
		}
	}
}

func tag(r *result, k string) string {
	if v := r.Tags[k]; v != "" {
		return v
	}
	return "-"
}
