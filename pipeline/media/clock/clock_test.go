package clock

import (
	"math"
	"math/big"
	"testing"
	"time"
)

// rateCases are conversions whose results are known; FuzzConvert starts
// from them.
var rateCases = []struct {
	name  string
	d     time.Duration
	rate  uint32
	ticks int64         // ToRate(d, rate)
	back  time.Duration // FromRate(ticks, rate); 0 where it is past time.Duration's range
}{
	{"zero", 0, Rate90k, 0, 0},
	{"one second", time.Second, Rate90k, 90000, time.Second},
	{"one tick", 11111 * time.Nanosecond, Rate90k, 1, 11111 * time.Nanosecond},
	{"29.97 fps frame", 33366667 * time.Nanosecond, Rate90k, 3003, 33366667 * time.Nanosecond},
	{"half a tick rounds away from zero", 5556 * time.Nanosecond, Rate90k, 1, 11111 * time.Nanosecond},
	{"under half a tick rounds down", 5555 * time.Nanosecond, Rate90k, 0, 0},
	{"negative", -time.Millisecond, Rate90k, -90, -time.Millisecond},
	{"negative half tick", -5556 * time.Nanosecond, Rate90k, -1, -11111 * time.Nanosecond},
	// d*90000 overflows int64 past 28.5 hours; the split conversion does not.
	{"30 hours", 30 * time.Hour, Rate90k, 30 * 3600 * 90000, 30 * time.Hour},
	{"one 33-bit wrap", 95443717688889 * time.Nanosecond, Rate90k, 1 << 33, 95443717688889 * time.Nanosecond},
	{"ten years", 10 * 365 * 24 * time.Hour, Rate90k, 10 * 365 * 24 * 3600 * 90000, 10 * 365 * 24 * time.Hour},
	{"longest duration", math.MaxInt64, Rate90k, 830103483316930, 0},
	{"ms timescale", 1500 * time.Microsecond, 1000, 2, 2 * time.Millisecond},
	{"AAC at 44.1 kHz", 23219955 * time.Nanosecond, 44100, 1024, 23219955 * time.Nanosecond},
	{"Opus at 48 kHz, a month", 30*24*time.Hour + 20*time.Millisecond, 48000, (30*24*3600)*48000 + 960, 30*24*time.Hour + 20*time.Millisecond},
	{"1 GHz", math.MaxInt64, 1e9, math.MaxInt64, math.MaxInt64},
}

func TestToRateAndFromRate(t *testing.T) {
	for _, tc := range rateCases {
		t.Run(tc.name, func(t *testing.T) {
			got := ToRate(tc.d, tc.rate)
			if got != tc.ticks {
				t.Fatalf("ToRate(%d, %d) = %d, want %d", tc.d, tc.rate, got, tc.ticks)
			}
			if tc.back == 0 && tc.ticks != 0 {
				return // past time.Duration's range: FromRate's result is undefined
			}
			if back := FromRate(got, tc.rate); back != tc.back {
				t.Fatalf("FromRate(%d, %d) = %d, want %d", got, tc.rate, back, tc.back)
			}
			if tc.rate == Rate90k {
				if got := To90k(tc.d); got != tc.ticks {
					t.Fatalf("To90k(%v) = %d, want %d", tc.d, got, tc.ticks)
				}
				if back := From90k(tc.ticks); back != tc.back {
					t.Fatalf("From90k(%d) = %v, want %v", tc.ticks, back, tc.back)
				}
			}
		})
	}
}

// TestTicksSurviveDuration is the case the pipeline depends on: 90 kHz
// timestamps from an MPEG-TS source become durations and 90 kHz ticks again
// in HLS or MP4, and must come out unchanged (truncating both ways would
// lose a tick on eight values in nine).
func TestTicksSurviveDuration(t *testing.T) {
	for ticks := int64(-100000); ticks <= 100000; ticks++ {
		for _, base := range []int64{0, 1 << 33, 30 * 3600 * 90000} {
			if got := To90k(From90k(base + ticks)); got != base+ticks {
				t.Fatalf("To90k(From90k(%d)) = %d", base+ticks, got)
			}
		}
	}
}

func TestDelta33(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to int64
		want     int64
	}{
		{"forward", 1000, 4000, 3000},
		{"backward", 4000, 1000, -3000},
		{"across the wrap", Wrap33 - 10, 20, 30},
		{"back across the wrap", 20, Wrap33 - 10, -30},
		{"bits above 33 ignored", Wrap33 + 5, 7, 2},
		{"half the period is backwards", 0, Wrap33 / 2, -Wrap33 / 2},
		{"just under half forwards", 0, Wrap33/2 - 1, Wrap33/2 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Delta33(tc.from, tc.to); got != tc.want {
				t.Fatalf("Delta33(%d, %d) = %d, want %d", tc.from, tc.to, got, tc.want)
			}
		})
	}
}

func TestUnwrapper(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []int64
		want []int64
	}{
		{"first value as it is", []int64{12345}, []int64{12345}},
		{"forward across the wrap", []int64{Wrap33 - 3000, Wrap33 - 1, 2000, 5000}, []int64{Wrap33 - 3000, Wrap33 - 1, Wrap33 + 2000, Wrap33 + 5000}},
		{"back across the wrap", []int64{100, Wrap33 - 100}, []int64{100, -100}},
		{"twice round", []int64{0, Wrap33 / 3, 2 * Wrap33 / 3, 0, Wrap33 / 3, 2 * Wrap33 / 3, 0}, []int64{0, Wrap33 / 3, 2 * Wrap33 / 3, Wrap33, Wrap33 + Wrap33/3, Wrap33 + 2*Wrap33/3, 2 * Wrap33}},
		{"raw bits above 33 ignored", []int64{Wrap33 + 10, 20}, []int64{10, 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var u Unwrapper
			for i, raw := range tc.raw {
				if got := u.Unwrap(raw); got != tc.want[i] {
					t.Fatalf("value %d: Unwrap(%d) = %d, want %d", i, raw, got, tc.want[i])
				}
			}
		})
	}
}

// FuzzConvert checks the conversions against exact rational arithmetic:
// the result is the true value rounded half away from zero, whatever the
// duration (years included) and rate, wherever the result fits in int64.
func FuzzConvert(f *testing.F) {
	for _, tc := range rateCases {
		f.Add(int64(tc.d), tc.rate, tc.ticks)
	}
	f.Fuzz(func(t *testing.T, d int64, rate uint32, b int64) {
		if rate == 0 {
			return
		}
		r := big.NewInt(int64(rate))
		ns := big.NewInt(second)

		// Duration to ticks, for every representable duration.
		want, fits := roundRat(new(big.Int).Mul(big.NewInt(d), r), ns)
		if rate <= 1e9 && !fits {
			t.Fatalf("ToRate(%d, %d) overflows at a rate up to 1 GHz", d, rate)
		}
		if fits {
			got := ToRate(time.Duration(d), rate)
			if got != want {
				t.Fatalf("ToRate(%d, %d) = %d, want %d", d, rate, got, want)
			}
			// And back: within half a tick (plus the nanosecond rounding).
			if w, ok := roundRat(new(big.Int).Mul(big.NewInt(got), ns), r); ok && w < math.MaxInt64-1e9 && w > math.MinInt64+1e9 {
				back := FromRate(got, rate)
				if back != time.Duration(w) {
					t.Fatalf("FromRate(%d, %d) = %d, want %d", got, rate, back, w)
				}
				if diff := max(back, time.Duration(d)) - min(back, time.Duration(d)); int64(diff)*2 > second/int64(rate)+2 {
					t.Fatalf("%d ns at %d Hz: %d ticks, back %d ns", d, rate, got, back)
				}
			}
		}

		// Ticks to a duration and back are exact while a tick is at least a
		// nanosecond, for any tick count a duration can hold.
		if w, ok := roundRat(new(big.Int).Mul(big.NewInt(b), ns), r); ok && rate <= 1e9 && w < math.MaxInt64-1e9 && w > math.MinInt64+1e9 {
			if got := ToRate(FromRate(b, rate), rate); got != b {
				t.Fatalf("ToRate(FromRate(%d, %d)) = %d", b, rate, got)
			}
		}

		// The 33-bit helpers: a step the short way round lands on the
		// target, and an unwrapped pair differs by that step.
		step := Delta33(d, b)
		if step < -Wrap33/2 || step >= Wrap33/2 || (d+step)&Mask33 != b&Mask33 {
			t.Fatalf("Delta33(%d, %d) = %d", d, b, step)
		}
		var u Unwrapper
		if first, second := u.Unwrap(d), u.Unwrap(b); second-first != step {
			t.Fatalf("Unwrap %d then %d: %d then %d, want a step of %d", d, b, first, second, step)
		}
	})
}

// roundRat is a/b rounded half away from zero, for b > 0, and whether it
// fits in an int64.
func roundRat(a, b *big.Int) (int64, bool) {
	q, m := new(big.Int).QuoRem(a, b, new(big.Int))
	if twice := new(big.Int).Abs(m); twice.Lsh(twice, 1).Cmp(b) >= 0 {
		q.Add(q, big.NewInt(int64(a.Sign())))
	}
	return q.Int64(), q.IsInt64()
}
