// Package metrics gives keyworker's parts a small by-name API over a
// github.com/prometheus/client_golang registry: counters, gauges and
// histograms looked up by name and label pairs, gauges refreshed at scrape
// time, and a promhttp handler with the Go runtime and process collectors
// operators expect (go_*, process_*) beside keyworker's own series.
//
// A family's type and label names are fixed by its first use; a later use
// with another type or other label names is a programming error and panics,
// as client_golang's own registration does. All types are safe for
// concurrent use.
package metrics

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

const (
	// MaxScrapesInFlight is how many /metrics requests are served at once;
	// more get 503 at once. Prometheus scrapes one at a time per target, so
	// this only bounds a misbehaving client.
	MaxScrapesInFlight = 10
	// ScrapeTimeout bounds one /metrics request, the OnScrape functions
	// included; past it the answer is 503. It is longer than the
	// database readings' own bound (3s), so a slow database gives gauges'
	// last values, not an error.
	ScrapeTimeout = 10 * time.Second
)

// DefaultBuckets suit latencies in seconds from a millisecond to a minute.
var DefaultBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Registry holds keyworker's metric families in a prometheus.Registry with
// the Go and process collectors.
type Registry struct {
	reg *prometheus.Registry

	mu       sync.Mutex
	families map[string]*family
	scrapers []func(ctx context.Context)
}

type family struct {
	typ    string
	labels []string
	vec    any // *prometheus.CounterVec, *prometheus.GaugeVec or *prometheus.HistogramVec
}

// New returns a registry holding the Go runtime and process collectors.
func New() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Registry{reg: reg, families: map[string]*family{}}
}

// Prometheus is the underlying registry, to register collectors of one's
// own or to gather in tests.
func (r *Registry) Prometheus() *prometheus.Registry { return r.reg }

// splitPairs turns ("k1", "v1", "k2", "v2") into names and values.
func splitPairs(name string, kv []string) (names, values []string) {
	if len(kv)%2 != 0 {
		panic(fmt.Sprintf("metrics: %s: odd number of label strings %q", name, kv))
	}
	for i := 0; i < len(kv); i += 2 {
		names = append(names, kv[i])
		values = append(values, kv[i+1])
	}
	return names, values
}

// family returns name's family, making and registering it with mk on first
// use.
func (r *Registry) family(name, typ string, labels []string, mk func() prometheus.Collector) *family {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.families[name]
	if !ok {
		c := mk()
		r.reg.MustRegister(c)
		f = &family{typ: typ, labels: labels, vec: c}
		r.families[name] = f
	}
	if f.typ != typ {
		panic(fmt.Sprintf("metrics: %s registered as %s and used as %s", name, f.typ, typ))
	}
	if !slices.Equal(f.labels, labels) {
		panic(fmt.Sprintf("metrics: %s registered with labels %q and used with %q", name, f.labels, labels))
	}
	return f
}

// Counter is a monotonically increasing count.
type Counter struct{ c prometheus.Counter }

// Add adds n.
func (c Counter) Add(n uint64) { c.c.Add(float64(n)) }

// Inc adds one.
func (c Counter) Inc() { c.c.Inc() }

// Counter returns the counter with the given label pairs, creating it (it
// is then served as 0).
func (r *Registry) Counter(name, help string, labelPairs ...string) Counter {
	names, values := splitPairs(name, labelPairs)
	f := r.family(name, "counter", names, func() prometheus.Collector {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, names)
	})
	return Counter{f.vec.(*prometheus.CounterVec).WithLabelValues(values...)}
}

// Gauge is a value that goes up and down.
type Gauge struct{ g prometheus.Gauge }

// Set sets the value.
func (g Gauge) Set(v float64) { g.g.Set(v) }

// Gauge returns the gauge with the given label pairs, creating it.
func (r *Registry) Gauge(name, help string, labelPairs ...string) Gauge {
	names, values := splitPairs(name, labelPairs)
	f := r.family(name, "gauge", names, func() prometheus.Collector {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, names)
	})
	return Gauge{f.vec.(*prometheus.GaugeVec).WithLabelValues(values...)}
}

// Histogram counts observations in buckets.
type Histogram struct{ o prometheus.Observer }

// Observe records one value.
func (h Histogram) Observe(v float64) { h.o.Observe(v) }

// ObserveDuration records a duration in seconds.
func (h Histogram) ObserveDuration(d time.Duration) { h.o.Observe(d.Seconds()) }

// Histogram returns the histogram with the given label pairs, creating its
// family with buckets (DefaultBuckets when nil) on first use.
func (r *Registry) Histogram(name, help string, buckets []float64, labelPairs ...string) Histogram {
	if buckets == nil {
		buckets = DefaultBuckets
	}
	names, values := splitPairs(name, labelPairs)
	f := r.family(name, "histogram", names, func() prometheus.Collector {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, names)
	})
	return Histogram{f.vec.(*prometheus.HistogramVec).WithLabelValues(values...)}
}

// OnScrape registers a function run before each gather, to refresh gauges
// whose values live elsewhere (the database, a listener's status). It should
// be quick; its context ends after ScrapeTimeout.
func (r *Registry) OnScrape(f func(ctx context.Context)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scrapers = append(r.scrapers, f)
}

// Gather runs the OnScrape functions, then gathers every family.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) {
	r.mu.Lock()
	scrapers := slices.Clone(r.scrapers)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	for _, s := range scrapers {
		s(ctx)
	}
	return r.reg.Gather()
}

// Handler serves the registry at /metrics through promhttp: at most
// MaxScrapesInFlight requests at once, each within ScrapeTimeout, in the
// Prometheus text format (as before client_golang; OpenMetrics is not
// offered, so scrapers see the same exposition), compressed when the
// scraper accepts it. promhttp_metric_handler_requests_total and
// promhttp_metric_handler_requests_in_flight count the scrapes.
func (r *Registry) Handler() http.Handler {
	return promhttp.InstrumentMetricHandler(r.reg, promhttp.HandlerFor(r, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: MaxScrapesInFlight,
		Timeout:             ScrapeTimeout,
		Registry:            r.reg,
	}))
}
