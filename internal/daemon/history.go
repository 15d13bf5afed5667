package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/notifyd/notifyd/fanout"
)

// The history file keeps the hub's epoch, seq and history ring across a
// restart within the same boot, so that subscribers' resume points stay
// valid. It starts with the boot id; after a reboot it is ignored (the
// kernel objects the events name may no longer exist, and a new epoch
// tells every client to resynchronise).
const historyFile = "history.v1"

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

func saveHistory(h *fanout.Hub, dir string) error {
	tmp, err := os.CreateTemp(dir, historyFile+".*")
	if err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	fmt.Fprintf(w, "%s\n", bootID())
	if err := h.SaveHistory(w); err != nil {
		tmp.Close()
		return fmt.Errorf("save history: %w", err)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("save history: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save history: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, historyFile))
}

func restoreHistory(h *fanout.Hub, dir string, log *slog.Logger) {
	p := filepath.Join(dir, historyFile)
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	defer os.Remove(p) // used once
	r := bufio.NewReader(f)
	line, err := r.ReadString('\n')
	if err != nil || line[:len(line)-1] != bootID() || bootID() == "" {
		log.Info("saved history is from another boot: starting a new epoch")
		return
	}
	if err := h.LoadHistory(r); err != nil {
		log.Warn("saved history unreadable: starting a new epoch", "err", err)
		return
	}
	log.Info("history restored", "seq", h.Seq())
}
