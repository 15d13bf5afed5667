package mount

import (
	"os"
	"testing"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// BenchmarkParseMountinfo: the cost of one fallback rescan per mount.
func BenchmarkParseMountinfo(b *testing.B) {
	data, err := os.ReadFile("testdata/host-6.18.mountinfo")
	if err != nil {
		b.Fatal(err)
	}
	rows, _ := ParseMountinfo(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		ParseMountinfo(data)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/mount")
}

// BenchmarkStatmount: the cost of one fanotify-mode lookup.
func BenchmarkStatmount(b *testing.B) {
	testenv.Root(b, "statmount")
	ids, err := listmount()
	if err != nil {
		b.Skipf("no listmount: %v", err)
	}
	var buf []byte
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := statmount(ids[i%len(ids)], &buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDiff: diffing two tables of 1000 mounts with 10 changes.
func BenchmarkDiff(b *testing.B) {
	old, cur := map[uint64]Mount{}, map[uint64]Mount{}
	for i := range uint64(1000) {
		m := row(i+10, 1, "/m/"+u64(i))
		m.pos = int(i)
		old[m.ID] = m
		if i%100 == 0 {
			m.Options = "ro,relatime"
			m.ReadOnly = true
		}
		cur[m.ID] = m
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(diff(old, cur)) != 10 {
			b.Fatal("wrong diff")
		}
	}
}
