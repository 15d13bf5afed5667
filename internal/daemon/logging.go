package daemon

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/term"
)

// ParseLevel maps a configuration level name to a slog level.
func ParseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// NewLogger builds the daemon's logger. format is auto, text or json:
// auto means text on a terminal and under journald (JOURNAL_STREAM set;
// the journal adds its own timestamps, so they are left out), JSON
// otherwise. level is shared so that SIGHUP can change it at run time.
func NewLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	journald := os.Getenv("JOURNAL_STREAM") != ""
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) || journald {
			format = "text"
		}
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	if journald {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
