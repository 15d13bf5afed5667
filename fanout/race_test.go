//go:build race

package fanout_test

// raceEnabled scales the soak test down under the race detector, which
// makes every lock and channel operation an order of magnitude slower.
const raceEnabled = true
