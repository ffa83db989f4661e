package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// median returns the middle of the values that are not NaN (the mean of
// the two middle ones for an even count), or NaN if there is none. Rounds
// that could not measure a figure record NaN, so they drop out here
// instead of pulling the median to zero.
func median(xs []float64) float64 {
	v := finite(xs)
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// spread is half the range of the values that are not NaN, relative to
// their median: 0.05 reads "±5%". It is 0 for a single value and NaN when
// there is none or the median is 0.
func spread(xs []float64) float64 {
	v := finite(xs)
	m := median(v)
	if len(v) == 0 || m == 0 {
		return math.NaN()
	}
	lo, hi := slices.Min(v), slices.Max(v)
	return (hi - lo) / 2 / math.Abs(m)
}

func finite(xs []float64) []float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	return v
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted
// durations by the nearest-rank method, or 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// cell formats the median of xs with prec decimals and, with more than
// one value, its spread: "1234 ±3%". No value at all reads "—".
func cell(xs []float64, prec int) string {
	m := median(xs)
	if math.IsNaN(m) {
		return "—"
	}
	s := fmt.Sprintf("%.*f", prec, m)
	if len(finite(xs)) > 1 {
		if sp := spread(xs); !math.IsNaN(sp) {
			s += fmt.Sprintf(" ±%.0f%%", sp*100)
		}
	}
	return s
}

// ratios divides each round's value by the same round's reference, so a
// ratio is never taken between rounds that ran at different times. A
// missing value on either side gives NaN for that round.
func ratios(xs, ref []float64) []float64 {
	r := make([]float64, len(xs))
	for i := range xs {
		r[i] = math.NaN()
		if i < len(ref) && ref[i] != 0 {
			r[i] = xs[i] / ref[i]
		}
	}
	return r
}
