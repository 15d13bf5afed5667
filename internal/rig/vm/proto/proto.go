// Package proto is the wire format between the VM test harness on the host
// (package vm) and the guest /init (internal/rig/vm/vminit): the run plan that
// the host puts into the initramfs, and the line protocol on the guest's
// second serial port (ttyS1), which carries nothing but these lines, so
// kernel messages on the console never interleave with results.
//
// Guest to host, one line each, fields separated by single spaces, the
// last field running to the end of the line:
//
//	NVM BOOT <uptime-seconds>
//	NVM START <pkg>
//	NVM OUT <pkg> <output line>
//	NVM END <pkg> <exit-code> <seconds> <reason>
//	NVM REQ <id> <guest.Request as JSON>
//	NVM KMSG <kernel log line>
//	NVM STACK <goroutine dump line of /init>
//	NVM LOG <message from /init>
//	NVM DONE <failed-packages> <init-seconds>
//
// Host to guest: "REP <id> <guest.Reply as JSON>".
package proto

import (
	"fmt"
	"strings"
	"time"
)

// PlanPath is where the plan lives in the initramfs.
const PlanPath = "/etc/notifyd-vm/plan.json"

// TestsDir holds the test binaries in the initramfs, SrcDir the packages'
// testdata (each binary runs in SrcDir/<pkg>, like go test).
const (
	TestsDir = "/tests"
	SrcDir   = "/src"
)

// Plan is what the guest /init runs.
type Plan struct {
	Packages []Package `json:"packages"`
	// Watchdog bounds the whole guest run; when it fires /init dumps its
	// goroutines, sends SIGQUIT to the running test binary (which dumps
	// its own), and powers off.
	Watchdog time.Duration `json:"watchdog"`
	// Env is added to every test binary's environment.
	Env []string `json:"env,omitempty"`
}

// Package is one test binary to run.
type Package struct {
	// Path is the package's import path relative to the module root
	// (for example "sources/keys").
	Path string `json:"path"`
	// Binary is the test binary's path in the initramfs.
	Binary string `json:"binary"`
	// Args are passed to the test binary after -test.v.
	Args []string `json:"args,omitempty"`
	// Timeout is passed as -test.timeout; /init kills the binary a little
	// after it.
	Timeout time.Duration `json:"timeout"`
}

// Line tags.
const (
	Prefix   = "NVM "
	TagBoot  = "BOOT"
	TagStart = "START"
	TagOut   = "OUT"
	TagEnd   = "END"
	TagReq   = "REQ"
	TagKmsg  = "KMSG"
	TagStack = "STACK"
	TagLog   = "LOG"
	TagDone  = "DONE"
	// ReplyPrefix starts host-to-guest replies.
	ReplyPrefix = "REP "
)

// Format builds one guest-to-host line (without the newline). Carriage
// returns and newlines inside fields are replaced, so a line is a line.
func Format(tag string, fields ...string) string {
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString(tag)
	for _, f := range fields {
		b.WriteByte(' ')
		b.WriteString(strings.NewReplacer("\r", "", "\n", "\\n").Replace(f))
	}
	return b.String()
}

// Parse splits a guest-to-host line into its tag and n fields, the last of
// which runs to the end of the line. ok is false for a line that is not
// part of the protocol (for example noise from a garbled port).
func Parse(line string, n int) (tag string, fields []string, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), Prefix)
	if !ok {
		return "", nil, false
	}
	tag, rest, _ = strings.Cut(rest, " ")
	if n <= 0 {
		return tag, nil, true
	}
	fields = strings.SplitN(rest, " ", n)
	for len(fields) < n {
		fields = append(fields, "")
	}
	return tag, fields, true
}

// Fields returns how many fields lines with tag carry.
func Fields(tag string) int {
	switch tag {
	case TagBoot, TagStart, TagKmsg, TagStack, TagLog:
		return 1
	case TagOut, TagReq, TagDone:
		return 2
	case TagEnd:
		return 4
	}
	return 1
}

// FormatReply builds a host-to-guest reply line (without the newline).
func FormatReply(id, jsonReply string) string {
	return fmt.Sprintf("%s%s %s", ReplyPrefix, id, jsonReply)
}
