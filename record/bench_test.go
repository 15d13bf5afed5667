package record

import "testing"

// BenchmarkDecodeAll decodes a full 4 KiB read of 16-byte key records,
// what the key source does per read().
func BenchmarkDecodeAll(b *testing.B) {
	var buf []byte
	for len(buf)+16 <= 4096 {
		buf = append(buf, EncodeKey(KeyLinked, 1, 10, 11)...)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		recs, _, err := DecodeAll(buf)
		if err != nil || len(recs) != 256 {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(256*b.N)/b.Elapsed().Seconds(), "records/s")
}
