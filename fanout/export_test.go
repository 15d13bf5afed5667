package fanout

import "testing"

// SetBatchLen makes DrainBatch hand out at most n events at a time until
// t ends (tests that use it must not run in parallel).
func SetBatchLen(t testing.TB, n int) {
	old := batchLen
	batchLen = n
	t.Cleanup(func() { batchLen = old })
}
