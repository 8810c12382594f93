// Package metrics is a small Prometheus text-format registry: counters,
// gauges, histograms, and gauges computed at scrape time. keyworker needs a
// dozen series, not a client library; this keeps the dependency list to the
// core. All types are safe for concurrent use.
package metrics

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Registry holds metric families and writes them in the Prometheus text
// exposition format (version 0.0.4).
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
	scrapers []func(ctx context.Context)
}

type family struct {
	name, help, typ string
	mu              sync.Mutex
	series          map[string]series // by rendered labels
}

type series interface {
	write(w io.Writer, name, labels string)
}

// New returns an empty registry.
func New() *Registry { return &Registry{families: map[string]*family{}} }

func (r *Registry) family(name, help, typ string) *family {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.families[name]
	if !ok {
		f = &family{name: name, help: help, typ: typ, series: map[string]series{}}
		r.families[name] = f
	}
	if f.typ != typ {
		panic(fmt.Sprintf("metrics: %s registered as %s and %s", name, f.typ, typ))
	}
	return f
}

// Labels renders label pairs ("k1", "v1", "k2", "v2") in the exposition form.
func Labels(kv ...string) string {
	if len(kv) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(kv[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func getOrAdd[T series](f *family, labels string, mk func() T) T {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.series[labels]; ok {
		return s.(T)
	}
	s := mk()
	f.series[labels] = s
	return s
}

// Counter is a monotonically increasing value.
type Counter struct{ v atomic.Uint64 }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Value is the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

func (c *Counter) write(w io.Writer, name, labels string) {
	fmt.Fprintf(w, "%s%s %d\n", name, labels, c.v.Load())
}

// Counter returns the counter with the given labels, creating it.
func (r *Registry) Counter(name, help string, labelPairs ...string) *Counter {
	return getOrAdd(r.family(name, help, "counter"), Labels(labelPairs...), func() *Counter { return &Counter{} })
}

// Gauge is a value that goes up and down.
type Gauge struct{ bits atomic.Uint64 }

// Set sets the value.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Value is the current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

func (g *Gauge) write(w io.Writer, name, labels string) {
	fmt.Fprintf(w, "%s%s %s\n", name, labels, formatFloat(g.Value()))
}

// Gauge returns the gauge with the given labels, creating it.
func (r *Registry) Gauge(name, help string, labelPairs ...string) *Gauge {
	return getOrAdd(r.family(name, help, "gauge"), Labels(labelPairs...), func() *Gauge { return &Gauge{} })
}

// DefaultBuckets suit latencies in seconds from a millisecond to a minute.
var DefaultBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Histogram counts observations in buckets.
type Histogram struct {
	mu      sync.Mutex
	bounds  []float64
	counts  []uint64
	sum     float64
	samples uint64
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.samples++
}

// ObserveDuration records a duration in seconds.
func (h *Histogram) ObserveDuration(d time.Duration) { h.Observe(d.Seconds()) }

// Count is the number of observations.
func (h *Histogram) Count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.samples
}

func (h *Histogram) write(w io.Writer, name, labels string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	inner := strings.TrimSuffix(strings.TrimPrefix(labels, "{"), "}")
	sep := ""
	if inner != "" {
		sep = ","
	}
	for i, b := range h.bounds {
		fmt.Fprintf(w, "%s_bucket{%s%sle=\"%s\"} %d\n", name, inner, sep, formatFloat(b), h.counts[i])
	}
	fmt.Fprintf(w, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, inner, sep, h.samples)
	fmt.Fprintf(w, "%s_sum%s %s\n", name, labels, formatFloat(h.sum))
	fmt.Fprintf(w, "%s_count%s %d\n", name, labels, h.samples)
}

// Histogram returns the histogram with the given labels, creating it with
// buckets (DefaultBuckets when nil).
func (r *Registry) Histogram(name, help string, buckets []float64, labelPairs ...string) *Histogram {
	if buckets == nil {
		buckets = DefaultBuckets
	}
	return getOrAdd(r.family(name, help, "histogram"), Labels(labelPairs...), func() *Histogram {
		return &Histogram{bounds: buckets, counts: make([]uint64, len(buckets))}
	})
}

// OnScrape registers a function run before each scrape, to refresh gauges
// whose values live elsewhere (the database, a listener's status). It should
// be quick and bounded by the context.
func (r *Registry) OnScrape(f func(ctx context.Context)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scrapers = append(r.scrapers, f)
}

// WriteTo writes every family in the text format, sorted by name.
func (r *Registry) WriteTo(ctx context.Context, w io.Writer) {
	r.mu.Lock()
	scrapers := append([]func(context.Context){}, r.scrapers...)
	r.mu.Unlock()
	for _, s := range scrapers {
		s(ctx)
	}
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })
	for _, f := range fams {
		f.mu.Lock()
		keys := make([]string, 0, len(f.series))
		for k := range f.series {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.typ)
		for _, k := range keys {
			f.series[k].write(w, f.name, k)
		}
		f.mu.Unlock()
	}
}

// Handler serves the registry at /metrics.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		r.WriteTo(ctx, w)
	})
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
