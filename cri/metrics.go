package cri

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/podsandbox"
)

// Metrics are berthd's Prometheus metrics. They are registered on a
// registry made in main (no global registry), and served when [metrics]
// address is set.
type Metrics struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	pullBytes prometheus.Counter
	pullTime  prometheus.Histogram
}

// NewMetrics registers berth's metrics on reg and makes s report to them.
func NewMetrics(reg prometheus.Registerer, s *Service) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_cri_requests_total", Help: "CRI calls by method and gRPC code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "berth_cri_request_duration_seconds", Help: "CRI call latency by method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_image_pull_bytes_total", Help: "Bytes of images pulled (as the registry stores them).",
		}),
		pullTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "berth_image_pull_duration_seconds", Help: "Image pull duration.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.pullBytes, m.pullTime, stateCollector{s}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	s.metrics = m
	return m, nil
}

// observe records one CRI call.
func (m *Metrics) observe(method string, err error, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(method).Observe(d.Seconds())
}

func (m *Metrics) pulled(bytes uint64, d time.Duration) {
	if m == nil {
		return
	}
	m.pullBytes.Add(float64(bytes))
	m.pullTime.Observe(d.Seconds())
}

var (
	podsDesc       = prometheus.NewDesc("berth_pods", "Pod sandboxes by state.", []string{"state"}, nil)
	containersDesc = prometheus.NewDesc("berth_containers", "Containers by state.", []string{"state"}, nil)
	monitorsDesc   = prometheus.NewDesc("berth_monitors", "Running pod monitors (one per ready pod).", nil, nil)
)

// stateCollector counts pods and containers by state at scrape time.
type stateCollector struct{ s *Service }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- podsDesc
	ch <- containersDesc
	ch <- monitorsDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods := map[string]float64{"ready": 0, "notready": 0}
	for _, p := range c.s.deps.Pods.List(podsandbox.ListFilter{}) {
		pods[string(p.State)]++
	}
	for state, n := range pods {
		ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, n, state)
	}
	ch <- prometheus.MustNewConstMetric(monitorsDesc, prometheus.GaugeValue, pods["ready"])
	ctrs := map[string]float64{}
	for _, st := range []string{"created", "running", "exited", "unknown"} {
		ctrs[st] = 0
	}
	for _, rec := range c.s.containers.list() {
		st, err := c.s.containerStatus(ctx, rec)
		if err != nil {
			ctrs["unknown"]++
			continue
		}
		switch st.State.String() {
		case "CONTAINER_CREATED":
			ctrs["created"]++
		case "CONTAINER_RUNNING":
			ctrs["running"]++
		case "CONTAINER_EXITED":
			ctrs["exited"]++
		default:
			ctrs["unknown"]++
		}
	}
	for state, n := range ctrs {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, n, state)
	}
}
