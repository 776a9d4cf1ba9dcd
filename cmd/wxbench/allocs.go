package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// allocResult is one line of go test -bench -benchmem.
type allocResult struct {
	Package     string  `json:"package"`
	Benchmark   string  `json:"benchmark"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  int64   `json:"bytes_per_op"`
	AllocsPerOp int64   `json:"allocs_per_op"`
}

// allocPackages hold the per-job benchmarks (files *_bench_test.go,
// benchmarks named BenchmarkPerJob*).
var allocPackages = []string{"./handlers/"}

// allocations runs the per-job benchmarks and keeps their figures.
func (e *env) allocations(ctx context.Context, root string) {
	fmt.Println("wxbench: go test -bench PerJob -benchmem ./handlers/ ...")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	args := append([]string{"test", "-run", "^$", "-bench", "^BenchmarkPerJob", "-benchmem", "-benchtime", "2s", "-count", "1"}, allocPackages...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	res := parseBench(out)
	e.report.Allocations = res
	if err != nil || len(res) == 0 {
		e.report.Notes = append(e.report.Notes, fmt.Sprintf("allocations: go test -bench gave no figures (%v): %s", err, lastLines(out, 5)))
	}
}

// parseBench reads benchmark lines and the "pkg:" lines before them.
func parseBench(out []byte) []allocResult {
	var res []allocResult
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		r := allocResult{Package: pkg, Benchmark: f[0]}
		for i := 2; i+1 < len(f); i += 2 {
			v, _ := strconv.ParseFloat(f[i], 64)
			switch f[i+1] {
			case "ns/op":
				r.NsPerOp = v
			case "B/op":
				r.BytesPerOp = int64(v)
			case "allocs/op":
				r.AllocsPerOp = int64(v)
			}
		}
		res = append(res, r)
	}
	return res
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
