package pipeline

// Plan is what a reload does, stage by stage: `sluice validate --diff`
// prints it and POST /api/v1/reload applies exactly it.
type Plan struct {
	// Hash identifies the configuration the plan leads to: the hash of
	// every stage's decoded configuration, so that a comment or a
	// reordering does not count as a change.
	Hash string `json:"config_hash"`
	// From is the hash of the configuration running now.
	From string `json:"from_hash"`
	// Changes lists every stage that is added, removed or changed, in
	// the order they are applied; unchanged stages are left out.
	Changes []Change `json:"changes"`
	// Applied is true once the plan has been applied (false for a dry
	// run).
	Applied bool `json:"applied"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Changes) == 0 }

// Change is one stage's part of a plan.
type Change struct {
	// Address is the stage's block address ("pipeline.live.output.hls",
	// "server.http", "plugin.tokens", "pipeline.live" for a pipeline's
	// own attributes).
	Address string `json:"address"`
	// Action is "add", "remove" or "change".
	Action string `json:"action"`
	// Fields lists what changed in a changed stage.
	Fields []FieldChange `json:"fields,omitempty"`
	// Rebind is set when the stage listens on a new address: the new
	// socket is bound before the old one is closed.
	Rebind *Rebind `json:"rebind,omitempty"`
	// Sessions is how many sessions the stage serves now; Effect says
	// what happens to them.
	Sessions int    `json:"sessions"`
	Effect   string `json:"effect,omitempty"`
}

// FieldChange is one attribute of a changed stage, as decoded (defaults
// filled in), in JSON.
type FieldChange struct {
	Name string `json:"name"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new,omitempty"`
}

// Rebind is a listener that moves.
type Rebind struct {
	Old string `json:"old"`
	New string `json:"new"`
}
