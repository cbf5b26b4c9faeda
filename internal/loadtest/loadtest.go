// Package loadtest drives the load benchmarks of make bench: a fixed number of
// operations on a number of concurrent workers, after an untimed warm-up, reporting
// throughput, latency percentiles, and the CPU time each operation cost this process
// and the local PostgreSQL server. CPU per operation is the steadier figure on a
// shared two-core machine: throughput moves with whatever else runs, CPU time less.
package loadtest

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Op is one operation; i numbers it (warm-up operations get numbers from n on).
type Op func(i int) error

// WarmOps is how many operations run untimed first, so that the measurement is of
// the steady state (every pooled connection has prepared its statements, caches are
// filled, TLS sessions established).
func WarmOps(concurrency int) int { return 4 * concurrency }

// Run executes WarmOps(concurrency) untimed operations (numbered n on), then n timed
// ones (numbered 0..n-1) on concurrency workers, and reports unit/s, p50_ms, p99_ms,
// cpu_us/op (this process: server, driver and anything else in it) and pg_cpu_us/op
// (the PostgreSQL processes of this machine, when /proc shows them). atStart, if
// given, run after the warm-up, just before the timed operations (to reset counters
// the caller reports on).
func Run(b *testing.B, n, concurrency int, unit string, op Op, atStart ...func()) {
	b.Helper()
	if _, err := drive(n, WarmOps(concurrency), concurrency, op); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	for _, f := range atStart {
		f()
	}
	lat := make([]time.Duration, n)
	stopProfile := profile(b)
	cpu0, pg0 := processCPU(), postgresCPU()
	b.ResetTimer()
	start := time.Now()
	failed, err := drive(0, n, concurrency, func(i int) error {
		t0 := time.Now()
		err := op(i)
		lat[i] = time.Since(t0)
		return err
	})
	elapsed := time.Since(start)
	b.StopTimer()
	cpu1, pg1 := processCPU(), postgresCPU()
	stopProfile()
	if err != nil {
		b.Fatalf("%d of %d operations failed; first: %v", failed, n, err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(n)/elapsed.Seconds(), unit+"/s")
	b.ReportMetric(ms(lat[n/2]), "p50_ms")
	b.ReportMetric(ms(lat[(n*99)/100]), "p99_ms")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(n), "cpu_us/op")
	if pg0 >= 0 && pg1 >= 0 {
		b.ReportMetric(float64((pg1-pg0).Microseconds())/float64(n), "pg_cpu_us/op")
	}
}

// drive runs operations first..first+count-1 on concurrency workers; it returns how
// many failed and the first error.
func drive(first, count, concurrency int, op Op) (int, error) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		firstE error
		next   = make(chan int)
	)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := op(i); err != nil {
					mu.Lock()
					failed++
					if firstE == nil {
						firstE = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := first; i < first+count; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return failed, firstE
}

// profile starts a CPU profile of the timed phase alone when LOADTEST_CPUPROFILE
// names a file (go test's -cpuprofile also covers set-up and warm-up). Each
// benchmark run overwrites it: select one with -bench.
func profile(b *testing.B) (stop func()) {
	path := os.Getenv("LOADTEST_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatalf("LOADTEST_CPUPROFILE: %v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		b.Fatalf("LOADTEST_CPUPROFILE: %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postgresCPU sums the CPU time of the processes named postgres (the server and its
// backends) from /proc, or returns -1 where there is no /proc. Backends that exit
// during the measurement take their time with them: the load drivers keep their
// pools open throughout, so the sum holds the backends that served them.
func postgresCPU() time.Duration {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(stats) == 0 {
		return -1
	}
	var ticks int64
	for _, path := range stats {
		raw, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		open, closing := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
		if open < 0 || closing < open || string(raw[open+1:closing]) != "postgres" {
			continue
		}
		// After the command: state is field 3; utime and stime are fields 14 and 15.
		fields := bytes.Fields(raw[closing+1:])
		if len(fields) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(string(fields[11]), 10, 64)
		s, _ := strconv.ParseInt(string(fields[12]), 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const clockTicks = 100
