package mount

import (
	"testing"

	"github.com/notifyd/notifyd/sources/internal/sinktest"
)

func TestMain(m *testing.M) { sinktest.MainNoLeaks(m) }
