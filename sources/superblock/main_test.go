package superblock

import (
	"testing"

	"github.com/notifyd/notifyd/internal/rig/sinktest"
)

func TestMain(m *testing.M) { sinktest.MainNoLeaks(m) }
