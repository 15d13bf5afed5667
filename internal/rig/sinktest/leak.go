package sinktest

import (
	"testing"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// MainNoLeaks is testenv.MainNoLeaks, for the sources' TestMain: the
// tests fail if goroutines they started are still running afterwards.
func MainNoLeaks(m *testing.M) { testenv.MainNoLeaks(m) }
