package pipeline

import "encoding/json"

// StreamDetailer is implemented by a stage that knows more about some of
// the hub's streams than the hub does (where a relayed stream comes from,
// say). GET /api/v1/streams asks every stage of the graph that implements
// it and shows what it returns under key in each stream's object, so a
// kind adds to the API without the core knowing what it is.
type StreamDetailer interface {
	// StreamDetails returns the JSON key the stage's details go under
	// (one lower_snake word, the same on every call, not a StreamInfo
	// field such as "path"), and the details of the streams it knows,
	// by stream path; each value must marshal as JSON. The API calls it
	// from a request's goroutine, concurrently with Run and before or
	// after it, so it must be safe for that, must not block, and must
	// not hand out maps or slices the stage later changes.
	StreamDetails() (key string, byPath map[string]any)
}

// streamsWithDetails returns the API's view of streams: each StreamInfo
// as its JSON object, plus the details every detailer gives for its path.
// A key that a StreamInfo field or an earlier detailer already holds is
// left as it is: details add to a stream, never rewrite it.
func streamsWithDetails(streams []StreamInfo, detailers []StreamDetailer) ([]map[string]json.RawMessage, error) {
	type keyed struct {
		key    string
		byPath map[string]any
	}
	var ds []keyed
	for _, d := range detailers {
		if key, byPath := d.StreamDetails(); key != "" && len(byPath) > 0 {
			ds = append(ds, keyed{key, byPath})
		}
	}
	out := make([]map[string]json.RawMessage, 0, len(streams))
	for _, s := range streams {
		b, err := json.Marshal(s)
		if err != nil {
			return nil, err
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			return nil, err
		}
		for _, d := range ds {
			v, ok := d.byPath[s.Path]
			if !ok {
				continue
			}
			if _, taken := obj[d.key]; taken {
				continue
			}
			raw, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			obj[d.key] = raw
		}
		out = append(out, obj)
	}
	return out, nil
}

// detailers returns the graph's stages that implement StreamDetailer, in
// the order Run starts them; the API stage calls it per request.
func (g *Graph) detailers() []StreamDetailer {
	var out []StreamDetailer
	for _, s := range g.stages {
		if d, ok := s.stage.(StreamDetailer); ok {
			out = append(out, d)
		}
	}
	return out
}
