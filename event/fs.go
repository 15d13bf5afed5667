package event

// Mount subtypes: the RFC enum mount_notification_subtype (Aug 2020) in
// kebab case.
const (
	MountNew      = "new-mount" // a mount was attached
	MountUnmount  = "unmount"   // a mount was detached (umount, lazy umount)
	MountExpiry   = "expiry"    // an automount expired (not derivable on stock kernels)
	MountReadonly = "readonly"  // the mount became read-only or read-write
	MountSetattr  = "setattr"   // other attributes changed: options, propagation
	MountMoveFrom = "move-from" // a mount left this place (mount --move)
	MountMoveTo   = "move-to"   // a mount arrived at this place (mount --move)
)

// Superblock subtypes: the RFC enum superblock_notification_type (Feb
// 2020) in kebab case.
const (
	SuperblockReadonly = "readonly" // the filesystem was forced read-only (errors=remount-ro, btrfs forced readonly)
	SuperblockError    = "error"    // a filesystem error (FAN_FS_ERROR, or a kernel-log error line)
	SuperblockEDQuot   = "edquot"   // quota exceeded (not produced)
	SuperblockNetwork  = "network"  // network filesystem status (not produced)
)

// MountFields are the typed fields of a mount event (struct
// mount_notification, plus what statmount(2) or /proc/PID/mountinfo tell
// of the mount). Strings are as /proc/PID/mountinfo would show them,
// unescaped.
type MountFields struct {
	// ID is the mount id: the 64-bit unique id (statmount, Linux 6.8+)
	// when the kernel reports one, else the /proc/PID/mountinfo id.
	ID uint64
	// ParentID is the parent mount's id, in the same numbering; 0 when
	// unknown.
	ParentID uint64
	// MountinfoID is the id /proc/PID/mountinfo shows (reused after
	// unmount); 0 when unknown.
	MountinfoID uint32
	// Major, Minor are the filesystem's device number (st_dev).
	Major, Minor uint32
	Root         string // root of the mount within its filesystem ("/" unless a bind of a subdirectory)
	Point        string // mount point
	OldPoint     string // move-to: where the mount was
	Source       string // mount source ("/dev/sda1", "tmpfs", "server:/export")
	FSType       string // filesystem type ("ext4", "fuse.sshfs")
	Options      string // per-mount options: "rw,nosuid,relatime"
	OldOptions   string // readonly, setattr: the per-mount options before
	SuperOptions string // superblock options: "rw,size=1024k"
	Propagation  string // "shared:1 master:2", "" for a private mount
	ReadOnly     bool   // the mount is read-only
	// Private says the mount lies in one user's private area
	// (/run/user/<uid>, /home/<user>, /media/<user>, /run/media/<user>):
	// by default only UID and administrators see it (docs/policy.md).
	// UID is ^uint32(0) when the event concerns several users' areas.
	Private bool
	UID     uint32
	// PID is the process that attached, detached or moved the mount, as
	// fanotify reports it (0 when unknown, e.g. from mountinfo).
	PID uint32
}

// SuperblockFields are the typed fields of a superblock event (struct
// superblock_notification / superblock_error_notification).
type SuperblockFields struct {
	Major, Minor uint32 // device of the filesystem (st_dev); 0:0 when unknown
	Device       string // the superblock's name as the kernel logs it (s_id: "loop0", "sda1")
	FSType       string // "ext4", "xfs", "btrfs", when known
	Point        string // a mount point of the filesystem, when known
	Errno        uint32 // error: the error number (117 EUCLEAN for corruption), 0 when not known
	// ErrorCount is the number of errors the kernel merged into this
	// report (FAN_FS_ERROR error_count); 0 when not counted (kernel log).
	ErrorCount uint32
	Inode      uint64 // the inode the error is about, when known
}
