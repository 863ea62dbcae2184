package flv_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/bluenviron/gortmplib/pkg/amf0"

	"github.com/sluice-media/sluice/pipeline/media/flv"
)

// measure returns the nesting depth and the longest string or key of
// decoded AMF0 values.
func measure(v any) (depth, str int) {
	switch x := v.(type) {
	case string:
		return 0, len(x)
	case amf0.Object:
		return measureEntries(x)
	case amf0.ECMAArray:
		return measureEntries(amf0.Object(x))
	case amf0.StrictArray:
		for _, e := range x {
			d, s := measure(e)
			depth, str = max(depth, d), max(str, s)
		}
		return depth + 1, str
	}
	return 0, 0
}

func measureEntries(o amf0.Object) (depth, str int) {
	for _, e := range o {
		d, s := measure(e.Value)
		depth, str = max(depth, d), max(str, s, len(e.Key))
	}
	return depth + 1, str
}

func nest(depth int, leaf any) any {
	v := leaf
	for i := range depth {
		switch i % 3 {
		case 0:
			v = amf0.Object{{Key: "o", Value: v}}
		case 1:
			v = amf0.ECMAArray{{Key: "e", Value: v}}
		default:
			v = amf0.StrictArray{1.0, v}
		}
	}
	return v
}

var amfCases = []struct {
	name   string
	data   amf0.Data
	depth  int  // the bound to check with
	string bool // want a string error
	ok     bool // want no error
}{
	{"flat", amf0.Data{"onMetaData", 1.0, true, nil}, 1, false, true},
	{"at the depth", amf0.Data{nest(8, "x")}, 8, false, true},
	{"one past the depth", amf0.Data{nest(9, "x")}, 8, false, false},
	{"far past the depth", amf0.Data{nest(10000, "x")}, 32, false, false},
	{"long string", amf0.Data{"a", strings.Repeat("s", 300)}, 8, true, false},
	{"long key", amf0.Data{amf0.Object{{Key: strings.Repeat("k", 300), Value: 1.0}}}, 8, true, false},
	{"string at the bound", amf0.Data{nest(3, strings.Repeat("s", 256))}, 8, false, true},
}

// TestCheckAMF: the bounds are exact, through objects, ECMA arrays and
// strict arrays alike.
func TestCheckAMF(t *testing.T) {
	for _, tc := range amfCases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.data.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			err = flv.CheckAMF(b, tc.depth, 256)
			var le *flv.AMFLimitError
			switch {
			case tc.ok && err != nil:
				t.Fatalf("CheckAMF: %v", err)
			case !tc.ok && (!errors.As(err, &le) || le.String != tc.string):
				t.Fatalf("CheckAMF: %v, want a limit error (string: %v)", err, tc.string)
			}
		})
	}
}

// FuzzCheckAMF: CheckAMF never panics, and agrees with the decoder: data
// it passes decodes (if it does) within the bounds, and data it refuses
// for depth does nest too deep.
func FuzzCheckAMF(f *testing.F) {
	for _, tc := range amfCases {
		if b, err := tc.data.Marshal(); err == nil && len(b) < 1<<16 {
			f.Add(b)
		}
	}
	const maxDepth, maxString = 8, 256
	f.Fuzz(func(t *testing.T, b []byte) {
		err := flv.CheckAMF(b, maxDepth, maxString)
		if err != nil && !errors.As(err, new(*flv.AMFLimitError)) {
			t.Fatalf("an error that is no limit: %v", err)
		}
		if len(b) > 1<<16 {
			return // the decoder's recursion is what is being guarded
		}
		data, derr := amf0.Unmarshal(b)
		if derr != nil {
			return
		}
		depth, str := 0, 0
		for _, v := range data {
			d, s := measure(v)
			depth, str = max(depth, d), max(str, s)
		}
		var le *flv.AMFLimitError
		switch {
		case err == nil && (depth > maxDepth || str > maxString):
			t.Fatalf("passed data of depth %d, strings up to %d", depth, str)
		case errors.As(err, &le) && !le.String && depth <= maxDepth:
			t.Fatalf("refused for depth data of depth %d", depth)
		}
	})
}
