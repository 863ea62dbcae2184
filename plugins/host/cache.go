package host

import (
	"sync"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// decisionCache keeps plugin answers for a short time. It is bounded: when
// full, expired entries are swept, and if that frees nothing the whole cache
// is dropped (a burst of unique tokens must not grow memory).
type decisionCache struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[string]cached
}

type cached struct {
	d       pipeline.AuthDecision
	expires time.Time
}

func newDecisionCache(ttl time.Duration, max int) *decisionCache {
	return &decisionCache{ttl: ttl, max: max, m: map[string]cached{}}
}

func (c *decisionCache) get(key string, now time.Time) (pipeline.AuthDecision, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || !now.Before(e.expires) {
		return pipeline.AuthDecision{}, false
	}
	return e.d, true
}

func (c *decisionCache) put(key string, d pipeline.AuthDecision, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[key] = cached{d: d, expires: now.Add(c.ttl)}
}
