package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// baselineServer is the server whose RTMP rows the others are compared with.
const baselineServer = "nginx-rtmp"

// writeReport prints results as markdown: one table per load shape (the
// "shape" tag: see shapeSpecs), then one for the other fixed-N runs and one
// for find-max runs. A row's ratio is its CPU per player-second over the
// baseline server's RTMP row with the same number of players.
func writeReport(w io.Writer, results []*result) {
	results = writeShapes(w, results)
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
			delay, errs := delayCell(r), errorsCell(r)
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

// column is one column of a shape table: its heading, and its cell for
// result r given the baseline row base (nil when the run has none).
type column struct {
	head  string
	right bool
	cell  func(r, base *result) string
}

// shapeSpec is how one load shape is tabulated.
type shapeSpec struct {
	title string
	cols  []column
	note  string
}

// shapeSpecs returns the table of each load shape scripts/bench-shapes.sh
// runs:
//   - streams: many streams with a few players each; the cost is per second
//     of the whole server, since streams (not players) dominate it.
//   - players: one stream with many players, reading as data arrives or
//     periodically (-read-interval); cost per player-second.
//   - merge: Sluice's write merge window against the delay it adds.
func shapeSpecs() map[string]shapeSpec {
	cpuPerS := func(r *result) float64 { return r.ServerCores * 1000 }
	common := map[string]column{
		"server": {head: "server", cell: func(r, _ *result) string { return tag(r, "server") }},
		"config": {head: "config", cell: func(r, _ *result) string { return tag(r, "config") }},
		"proto":  {head: "proto", cell: func(r, _ *result) string { return r.Proto }},
		"read": {head: "read interval", right: true, cell: func(r, _ *result) string {
			switch {
			case r.Proto == kindHLS:
				return "-" // an HLS player fetches whole parts
			case r.ReadIntervalMs == 0:
				return "as it arrives"
			}
			return fmt.Sprintf("%.0f ms", r.ReadIntervalMs)
		}},
		"n":            {head: "N", right: true, cell: func(r, _ *result) string { return strconv.Itoa(r.Players) }},
		"cpuPerPlayer": {head: "CPU-ms/player-s", right: true, cell: func(r, _ *result) string { return fmt.Sprintf("%.3f", r.CPUMsPerPlayerS) }},
		"cpuPerPlayerRatio": {head: "vs nginx-rtmp", right: true, cell: func(r, b *result) string {
			if b == nil {
				return "n/a"
			}
			return ratio(r.CPUMsPerPlayerS, b.CPUMsPerPlayerS)
		}},
		"rss": {head: "RSS MB", right: true, cell: func(r, _ *result) string { return fmt.Sprintf("%.1f", r.RSSMB) }},
		"rssRatio": {head: "RSS vs nginx-rtmp", right: true, cell: func(r, b *result) string {
			if b == nil {
				return "n/a"
			}
			return ratio(r.RSSMB, b.RSSMB)
		}},
		"ttff": {head: "TTFF p50/p95 ms", right: true, cell: func(r, _ *result) string {
			if r.TTFF.N == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.0f / %.0f", r.TTFF.P50, r.TTFF.P95)
		}},
		"delay": {head: "delay p50/p95 ms", right: true, cell: func(r, _ *result) string { return delayCell(r) }},
		"stalls": {head: "stalls (players)", right: true, cell: func(r, _ *result) string {
			return fmt.Sprintf("%d (%d)", r.Stalls, r.StalledPlayers)
		}},
		"errors": {head: "errors", right: true, cell: func(r, _ *result) string { return errorsCell(r) }},
		"mbps":   {head: "Mbit/s", right: true, cell: func(r, _ *result) string { return fmt.Sprintf("%.1f", r.Mbps) }},
		"tool": {head: "tool cores / lag ms", right: true, cell: func(r, _ *result) string {
			return fmt.Sprintf("%.2f / %.0f", r.ToolCores, r.ToolLagMs)
		}},
		"load": {head: "load", right: true, cell: func(r, _ *result) string { return fmt.Sprintf("%.1f", r.Load1) }},
	}
	cols := func(names ...string) []column {
		out := make([]column, len(names))
		for i, n := range names {
			c, ok := common[n]
			if !ok {
				panic("report: no column " + n) // a programming error in this table
			}
			out[i] = c
		}
		return out
	}
	streams := cols("server", "config")
	streams = append(streams,
		column{head: "streams × players", right: true, cell: func(r, _ *result) string {
			k := max(r.Streams, 1)
			return fmt.Sprintf("%d × %d", k, r.Players/k)
		}},
		column{head: "CPU-ms/s", right: true, cell: func(r, _ *result) string { return fmt.Sprintf("%.1f", cpuPerS(r)) }},
		column{head: "vs nginx-rtmp", right: true, cell: func(r, b *result) string {
			if b == nil {
				return "n/a"
			}
			return ratio(cpuPerS(r), cpuPerS(b))
		}},
	)
	streams = append(streams, cols("rss", "rssRatio", "ttff", "delay", "stalls", "errors", "mbps", "tool", "load")...)

	merge := cols("server")
	merge = append(merge, column{head: "write mode / merge window", cell: func(r, _ *result) string {
		if m := tag(r, "merge"); m != "-" {
			return m
		}
		return tag(r, "mode")
	}})
	merge = append(merge, cols("read", "n", "cpuPerPlayer", "cpuPerPlayerRatio", "delay")...)
	merge = append(merge, column{head: "delay over nginx-rtmp p50/p95 ms", right: true, cell: func(r, b *result) string {
		if b == nil || r.Delay.N == 0 || b.Delay.N == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%+.0f / %+.0f", r.Delay.P50-b.Delay.P50, r.Delay.P95-b.Delay.P95)
	}})
	merge = append(merge, cols("ttff", "stalls", "errors", "rss", "tool", "load")...)

	const commonNote = " TTFF: connect to the first keyframe after a sequence header (HLS: after the init section)." +
		" delay: publisher send to player receipt of the same frame (p50/p95 over every frame)." +
		" stalls: no frame for 1 s, or a timestamp jump. tool: the load tool's own CPU and how late its 100 ms tick came at worst." +
		" load: 1-minute load average."
	return map[string]shapeSpec{
		"streams": {
			title: "Many streams, a few RTMP players each",
			cols:  streams,
			note: "CPU-ms/s: server CPU time per second of the window, for all streams (lower is better); vs nginx-rtmp:" +
				" over nginx-rtmp's row with the same streams and players." + commonNote,
		},
		"players": {
			title: "One stream, many players, read as data arrives or periodically",
			cols:  cols("server", "config", "proto", "read", "n", "cpuPerPlayer", "cpuPerPlayerRatio", "rss", "rssRatio", "ttff", "delay", "stalls", "errors", "mbps", "tool", "load"),
			note: "CPU-ms/player-s: server CPU time per player per second of play (lower is better); vs nginx-rtmp:" +
				" over nginx-rtmp's RTMP row with the same N and read interval. read interval: players sleep and" +
				" drain their socket this often once playing." + commonNote,
		},
		"merge": {
			title: "Write merge window: CPU against added delay",
			cols:  merge,
			note: "write mode / merge window: latency writes every frame at once; a merge window writes each player at" +
				" most that often. vs nginx-rtmp and delay over nginx-rtmp: against nginx-rtmp's RTMP row at the same N and read interval." + commonNote,
		},
	}
}

// writeShapes prints one table per shape tag present and returns the
// results without one.
func writeShapes(w io.Writer, results []*result) []*result {
	specs := shapeSpecs()
	byShape := map[string][]*result{}
	var rest []*result
	for _, r := range results {
		sh := r.Tags["shape"]
		if _, ok := specs[sh]; !ok || r.Steps != nil {
			rest = append(rest, r)
			continue
		}
		byShape[sh] = append(byShape[sh], r)
	}
	for _, sh := range []string{"streams", "players", "merge"} {
		rs := byShape[sh]
		if len(rs) == 0 {
			continue
		}
		spec := specs[sh]
		base := map[string]*result{}
		for _, r := range rs {
			if r.Tags["server"] == baselineServer && r.Proto == kindRTMP {
				base[baselineKey(r)] = r
			}
		}
		fmt.Fprintf(w, "### %s\n\n", spec.title)
		var head, rule strings.Builder
		for _, c := range spec.cols {
			head.WriteString("| " + c.head + " ")
			if c.right {
				rule.WriteString("| ---: ")
			} else {
				rule.WriteString("| --- ")
			}
		}
		fmt.Fprintln(w, head.String()+"|")
		fmt.Fprintln(w, rule.String()+"|")
		for _, r := range rs {
			b := base[baselineKey(r)]
			var row strings.Builder
			for _, c := range spec.cols {
				row.WriteString("| " + c.cell(r, b) + " ")
			}
			fmt.Fprintln(w, row.String()+"|")
		}
		fmt.Fprintf(w, "\n%s\n\n", spec.note)
	}
	return rest
}

// baselineKey is what a row shares with the baseline row it is compared
// with: the same streams, players and read interval.
func baselineKey(r *result) string {
	return fmt.Sprintf("%d/%d/%g", max(r.Streams, 1), r.Players, r.ReadIntervalMs)
}

// ratio formats a/b as "1.23×", or n/a without a base.
func ratio(a, b float64) string {
	if b <= 0 || a <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func delayCell(r *result) string {
	if r.Delay.N == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f / %.0f", r.Delay.P50, r.Delay.P95)
}

func errorsCell(r *result) string {
	errs := strconv.Itoa(r.Errors)
	if r.NoFrames > 0 {
		errs += fmt.Sprintf(" (+%d no picture)", r.NoFrames)
	}
	switch {
	case r.PublishError != "" && r.Streams > 1:
		errs += fmt.Sprintf(" + %d of %d publishers cut off", r.PublishErrors, r.Streams)
	case r.PublishError != "":
		errs += " + publisher cut off"
	}
	return errs
}
