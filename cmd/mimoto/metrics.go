package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/azuma/mimoto/db"
)

// poolCollector exports the shared pool's statistics (no query text, no data).
type poolCollector struct {
	d                                  *db.DB
	total, idle, acquired, max, waited *prometheus.Desc
}

func newPoolCollector(d *db.DB) *poolCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("mimoto_db_pool_"+name, help, nil, nil)
	}
	return &poolCollector{
		d:        d,
		total:    desc("connections", "Open connections."),
		idle:     desc("idle_connections", "Idle connections."),
		acquired: desc("acquired_connections", "Connections in use."),
		max:      desc("max_connections", "Pool size limit."),
		waited:   desc("empty_acquire_total", "Acquires that had to wait for a connection."),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.total, c.idle, c.acquired, c.max, c.waited} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.d.Pool.Stat()
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(s.TotalConns()))
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.IdleConns()))
	ch <- prometheus.MustNewConstMetric(c.acquired, prometheus.GaugeValue, float64(s.AcquiredConns()))
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.waited, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
}
