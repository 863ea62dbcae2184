package pipeline

import (
	"reflect"
	"testing"

	"github.com/sluice-media/sluice/pipeline/config"
)

// TestPipelineFieldsComplete keeps a reload's view of a pipeline whole: an
// attribute added to config.Pipeline must be compared by reloads too.
func TestPipelineFieldsComplete(t *testing.T) {
	n := 0
	for f := range reflect.TypeFor[config.Pipeline]().Fields() {
		switch f.Name {
		case "Name", "Blocks", "DefRange":
		default:
			n++
		}
	}
	if got := len(pipelineFields(&config.Pipeline{})); got != n {
		t.Errorf("pipelineFields has %d attributes, config.Pipeline %d: add the new one to pipelineFields", got, n)
	}
}

// TestConfigFieldsNames checks that fields are named as the file names them
// and that a change shows in the diff.
func TestConfigFieldsNames(t *testing.T) {
	type cfg struct {
		Listen  string   `hcl:"listen,optional"`
		Play    *bool    `hcl:"play,optional"`
		List    []string `hcl:"list,optional"`
		derived int
	}
	yes := true
	a := configFields(nil, &cfg{Listen: ":1", Play: &yes, derived: 1})
	b := configFields(nil, &cfg{Listen: ":2", Play: &yes, derived: 2})
	if _, ok := a["derived"]; ok {
		t.Error("an unexported field is compared")
	}
	d := b.diff(a)
	if len(d) != 1 || d[0].Name != "listen" || d[0].Old != `":1"` || d[0].New != `":2"` {
		t.Errorf("diff = %+v", d)
	}
	if a.hash() == b.hash() || !a.equal(configFields(nil, &cfg{Listen: ":1", Play: &yes})) {
		t.Error("hash or equality does not follow the fields")
	}
}
