package superblock

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/notifyd/notifyd/event"
)

// Error numbers the filesystems log by name (include/uapi/asm-generic/
// errno.h; EFSCORRUPTED is EUCLEAN, EFSBADCRC is EBADMSG).
const (
	errEIO          = 5
	errENOMEM       = 12
	errEROFS        = 30
	errEBADMSG      = 74
	errEFSCORRUPTED = 117
)

// LogLine is a filesystem's error or forced-read-only line in the kernel
// log.
type LogLine struct {
	Subtype  string // event.SuperblockError or event.SuperblockReadonly
	FS       string // "ext4", "xfs", "btrfs"
	Device   string // the superblock's s_id: "loop0", "sda1", "dm-0"
	Errno    uint32 // when the line says or implies it; 0 otherwise
	Inode    uint64 // when the line names one
	Function string // the kernel function that logged it, when printed
}

// The lines, from fs/ext4/super.c, fs/xfs/xfs_{error,buf,fsops,message}.c
// and fs/btrfs/{super,messages}.c (Linux 6.1, unchanged in form in 6.18):
//
//	EXT4-fs error (device %s): %s:%d: inode #%lu: [block %llu: ]comm %s: [path %s: ]%pV
//	EXT4-fs error (device %s): %s:%d: comm %s: %pV
//	EXT4-fs error (device %s) in %s:%d: %s          (__ext4_std_error: a decoded errno)
//	EXT4-fs (%s): Remounting filesystem read-only   (errors=remount-ro)
//	XFS (%s): Metadata corruption detected at %pS, %s block 0x%llx[ %s]
//	XFS (%s): Metadata CRC error detected at %pS, %s block 0x%llx %s
//	XFS (%s): Internal error %s at line %d of file %s.  Caller %pS
//	XFS (%s): Corruption warning: Metadata has LSN (%d:%d) ahead of current LSN (%d:%d). ...
//	XFS (%s): metadata I/O error in "%pS" at daddr 0x%llx len %d error %d
//	XFS (%s): %s (0x%x) detected at %pS (%s:%d).  Shutting down filesystem.
//	BTRFS error (device %s[: state %s]): %pV        (also critical, alert, emergency; "…: -5", "errno=-5")
//	BTRFS: error (device %s[: state %s]) in %s:%d: errno=%d %s[ (%pV)]
//	BTRFS info (device %s[: state %s]): forced readonly
var (
	ext4ErrorRE    = regexp.MustCompile(`^EXT4-fs error \(device ([^)\s]+)\): ([A-Za-z0-9_]+):\d+: (?:inode #(\d+): )?`)
	ext4StdErrorRE = regexp.MustCompile(`^EXT4-fs error \(device ([^)\s]+)\) in ([A-Za-z0-9_]+):\d+: (.+)$`)
	ext4ReadonlyRE = regexp.MustCompile(`^EXT4-fs \(([^)\s]+)\): Remounting filesystem read-only$`)
	xfsRE          = regexp.MustCompile(`^XFS \(([^)\s]+)\): (.+)$`)
	xfsIOErrorRE   = regexp.MustCompile(`^metadata I/O error in "[^"]*" at daddr 0x[0-9a-f]+ len \d+ error (\d+)$`)
	xfsShutdownRE  = regexp.MustCompile(`^(.+) \(0x[0-9a-f]+\) detected at .*Shutting down filesystem\.$`)
	btrfsRE        = regexp.MustCompile(`^BTRFS (error|critical|alert|emergency|info) \(device ([^):\s]+)(?:: state [A-Za-z]*)?\): (.+)$`)
	btrfsHandleRE  = regexp.MustCompile(`^BTRFS: error \(device ([^):\s]+)(?:: state [A-Za-z]*)?\) in ([A-Za-z0-9_]+):\d+: errno=(-?\d+) `)
	btrfsErrnoRE   = regexp.MustCompile(`(?:errno=|: )(-\d+)$|errno=(-?\d+)`)
)

// ext4Errors are ext4_decode_error()'s names.
var ext4Errors = map[string]uint32{
	"Corrupt filesystem":    errEFSCORRUPTED,
	"Filesystem failed CRC": errEBADMSG,
	"IO failure":            errEIO,
	"Out of memory":         errENOMEM,
	"Journal has aborted":   errEROFS,
	"Readonly filesystem":   errEROFS,
}

// ParseLog recognises a filesystem error or forced-read-only line.
func ParseLog(text string) (LogLine, bool) {
	switch {
	case strings.HasPrefix(text, "EXT4-fs "):
		return parseExt4(text)
	case strings.HasPrefix(text, "XFS ("):
		return parseXFS(text)
	case strings.HasPrefix(text, "BTRFS"):
		return parseBtrfs(text)
	}
	return LogLine{}, false
}

func parseExt4(text string) (LogLine, bool) {
	if m := ext4ReadonlyRE.FindStringSubmatch(text); m != nil {
		return LogLine{Subtype: event.SuperblockReadonly, FS: "ext4", Device: m[1]}, true
	}
	if m := ext4StdErrorRE.FindStringSubmatch(text); m != nil {
		l := LogLine{Subtype: event.SuperblockError, FS: "ext4", Device: m[1], Function: m[2], Errno: ext4Errors[m[3]]}
		if n, ok := strings.CutPrefix(m[3], "error "); ok {
			if v, err := strconv.ParseUint(n, 10, 32); err == nil {
				l.Errno = uint32(v)
			}
		}
		return l, true
	}
	if m := ext4ErrorRE.FindStringSubmatch(text); m != nil {
		// ext4_error() reports EFSCORRUPTED unless the caller had an
		// error of its own, which the line does not print.
		l := LogLine{Subtype: event.SuperblockError, FS: "ext4", Device: m[1], Function: m[2], Errno: errEFSCORRUPTED}
		if m[3] != "" {
			l.Inode, _ = strconv.ParseUint(m[3], 10, 64)
		}
		return l, true
	}
	return LogLine{}, false
}

func parseXFS(text string) (LogLine, bool) {
	m := xfsRE.FindStringSubmatch(text)
	if m == nil {
		return LogLine{}, false
	}
	l := LogLine{Subtype: event.SuperblockError, FS: "xfs", Device: m[1]}
	msg := m[2]
	switch {
	case strings.HasPrefix(msg, "Metadata corruption detected at "), strings.HasPrefix(msg, "Corruption warning: "):
		l.Errno = errEFSCORRUPTED
	case strings.HasPrefix(msg, "Metadata CRC error detected at "):
		l.Errno = errEBADMSG
	case strings.HasPrefix(msg, "Internal error "):
		l.Errno = errEFSCORRUPTED
	default:
		if mm := xfsIOErrorRE.FindStringSubmatch(msg); mm != nil {
			v, _ := strconv.ParseUint(mm[1], 10, 32)
			l.Errno = uint32(v)
			return l, true
		}
		mm := xfsShutdownRE.FindStringSubmatch(msg)
		if mm == nil {
			// "Corruption detected. Unmount and run xfs_repair" and the
			// hex dump follow a line above: not events of their own.
			return LogLine{}, false
		}
		switch mm[1] {
		case "Corruption of in-memory data", "Corruption of on-disk metadata":
			l.Errno = errEFSCORRUPTED
		default: // "Log I/O Error", "Metadata I/O Error"
			l.Errno = errEIO
		}
	}
	return l, true
}

func parseBtrfs(text string) (LogLine, bool) {
	if m := btrfsHandleRE.FindStringSubmatch(text); m != nil {
		l := LogLine{Subtype: event.SuperblockError, FS: "btrfs", Device: m[1], Function: m[2]}
		l.Errno = errnoOf(m[3])
		return l, true
	}
	m := btrfsRE.FindStringSubmatch(text)
	if m == nil {
		return LogLine{}, false
	}
	l := LogLine{Subtype: event.SuperblockError, FS: "btrfs", Device: m[2]}
	if m[1] == "info" {
		if m[3] != "forced readonly" {
			return LogLine{}, false
		}
		l.Subtype = event.SuperblockReadonly
		return l, true
	}
	if e := btrfsErrnoRE.FindStringSubmatch(m[3]); e != nil {
		l.Errno = errnoOf(e[1] + e[2]) // "open_ctree failed: -5", "errno=-5 IO failure"
	}
	return l, true
}

func errnoOf(s string) uint32 {
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0
	}
	if v < 0 {
		v = -v
	}
	return uint32(v)
}

// suppressedRE is the ext4 error rate limiter's summary, "EXT4-fs error:
// N callbacks suppressed" (lib/ratelimit.c with the state's name): N
// error lines were not logged, although FAN_FS_ERROR counted them.
var suppressedRE = regexp.MustCompile(`^EXT4-fs error: (\d+) callbacks suppressed$`)

// Suppressed recognises that summary.
func Suppressed(text string) (uint64, bool) {
	m := suppressedRE.FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	return n, err == nil
}
