package superblock

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/sources/kmsg"
)

// hostRecords are /dev/kmsg records a 6.18 kernel logged on this
// project's host (testdata/README.md): an ext4 image with a cleared inode
// under errors=remount-ro and errors=continue, an XFS image whose root
// inode's magic was zeroed, a btrfs image with a corrupted fs-tree leaf.
func hostRecords(t testing.TB) []*kmsg.Record {
	b, err := os.ReadFile("testdata/host-6.18.records")
	if err != nil {
		t.Fatal(err)
	}
	var out []*kmsg.Record
	for len(b) >= 4 {
		n := int(binary.LittleEndian.Uint32(b))
		r, err := kmsg.Parse(b[4 : 4+n])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
		b = b[4+n:]
	}
	return out
}

// wantHost is what each captured record means, by kernel sequence
// number; every other captured record means nothing.
var wantHost = map[uint64]LogLine{
	4720: {event.SuperblockError, "ext4", "loop0", 117, 12, "ext4_lookup"},
	4722: {event.SuperblockReadonly, "ext4", "loop0", 0, 0, ""},
	4770: {event.SuperblockError, "xfs", "loop0", 117, 0, ""},
	4781: {event.SuperblockError, "xfs", "loop0", 117, 0, ""},
	4799: {event.SuperblockError, "btrfs", "loop0", 5, 0, ""},
}

func TestParseHostCaptures(t *testing.T) {
	recs := hostRecords(t)
	found := 0
	for _, r := range recs {
		l, ok := ParseLog(r.Text)
		want, wantOK := wantHost[r.Seq]
		if r.Seq >= 4730 && r.Seq <= 4739 {
			want, wantOK = wantHost[4720], true
		}
		if ok != wantOK || l != want {
			t.Errorf("%d %q: %+v %v, want %+v %v", r.Seq, r.Text, l, ok, want, wantOK)
		}
		if ok {
			found++
		}
	}
	if found != 15 {
		t.Errorf("%d lines recognised in %d records", found, len(recs))
	}
}

// sourceLines were not produced on a real kernel here; they are the
// formats of the 6.1 source (parse.go).
var sourceLines = []struct {
	text string
	want LogLine
}{
	{"EXT4-fs error (device sda1): ext4_find_entry:1458: inode #2: comm ls: reading directory lblock 0",
		LogLine{event.SuperblockError, "ext4", "sda1", 117, 2, "ext4_find_entry"}},
	{"EXT4-fs error (device dm-0): ext4_validate_block_bitmap:390: comm kworker/u8:2: bg 3: bad block bitmap checksum",
		LogLine{event.SuperblockError, "ext4", "dm-0", 117, 0, "ext4_validate_block_bitmap"}},
	{"EXT4-fs error (device sdb1): ext4_readdir:260: inode #11: block 1537: comm ls: path /mnt/lost+found: bad entry in directory",
		LogLine{event.SuperblockError, "ext4", "sdb1", 117, 11, "ext4_readdir"}},
	{"EXT4-fs error (device sdb1) in ext4_reserve_inode_write:5739: IO failure",
		LogLine{event.SuperblockError, "ext4", "sdb1", 5, 0, "ext4_reserve_inode_write"}},
	{"EXT4-fs error (device sdb1) in ext4_do_update_inode:5300: Journal has aborted",
		LogLine{event.SuperblockError, "ext4", "sdb1", 30, 0, "ext4_do_update_inode"}},
	{"EXT4-fs error (device sdb1) in ext4_free_blocks:6150: error 28",
		LogLine{event.SuperblockError, "ext4", "sdb1", 28, 0, "ext4_free_blocks"}},
	{"XFS (sda2): Metadata CRC error detected at xfs_agf_read_verify+0x8d/0xf0, xfs_agf block 0x1 ",
		LogLine{event.SuperblockError, "xfs", "sda2", 74, 0, ""}},
	{"XFS (dm-3): Internal error XFS_WANT_CORRUPTED_GOTO at line 1423 of file fs/xfs/libxfs/xfs_alloc.c.  Caller xfs_free_ag_extent+0x1b5/0x6d0",
		LogLine{event.SuperblockError, "xfs", "dm-3", 117, 0, ""}},
	{"XFS (dm-3): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x12a/0x140 (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.",
		LogLine{event.SuperblockError, "xfs", "dm-3", 117, 0, ""}},
	{"XFS (sdc): Log I/O Error (0x2) detected at xlog_ioend_work+0x6e/0x70 (fs/xfs/xfs_log.c:1376).  Shutting down filesystem.",
		LogLine{event.SuperblockError, "xfs", "sdc", 5, 0, ""}},
	{"XFS (sdc): Corruption warning: Metadata has LSN (1:83) ahead of current LSN (1:63). Please unmount and run xfs_repair (>= v4.3) to resolve.",
		LogLine{event.SuperblockError, "xfs", "sdc", 117, 0, ""}},
	{"BTRFS error (device nvme0n1p3: state EA): bdev /dev/nvme0n1p3 errs: wr 1, rd 0, flush 0, corrupt 0, gen 0",
		LogLine{event.SuperblockError, "btrfs", "nvme0n1p3", 0, 0, ""}},
	{"BTRFS critical (device sda1): corrupt leaf: root=5 block=30408704 slot=3, invalid key objectid",
		LogLine{event.SuperblockError, "btrfs", "sda1", 0, 0, ""}},
	{"BTRFS: error (device sda1: state A) in __btrfs_free_extent:3213: errno=-5 IO failure",
		LogLine{event.SuperblockError, "btrfs", "sda1", 5, 0, "__btrfs_free_extent"}},
	{"BTRFS info (device sda1: state EA): forced readonly",
		LogLine{event.SuperblockReadonly, "btrfs", "sda1", 0, 0, ""}},
}

var notLines = []string{
	"EXT4-fs warning (device loop0): ext4_clear_journal_err:6350: Filesystem error recorded from previous mount: IO failure",
	"EXT4-fs (loop0): mounted filesystem 5b3afc34 r/w with ordered data mode. Quota mode: none.",
	"EXT4-fs (loop0): Remounting filesystem read-only and more",
	"XFS (loop0): Unmount and run xfs_repair",
	"XFS (loop0): Corruption detected. Unmount and run xfs_repair",
	"XFS (loop0): Mounting V5 Filesystem 0fcc5a79",
	"BTRFS warning (device loop0): checksum verify failed on logical 30605312 mirror 1",
	"BTRFS info (device loop0): first mount of filesystem 9660897d",
	"BTRFS: device fsid 9660897d devid 1 transid 6 /dev/loop0 (7:0) scanned by mount (2947)",
	"EXT4-fs error (device sda1 x): f:1: y",
	"xfs (sda): Metadata corruption detected at x",
}

func TestParseSourceLines(t *testing.T) {
	for _, c := range sourceLines {
		if l, ok := ParseLog(c.text); !ok || l != c.want {
			t.Errorf("%q: %+v %v, want %+v", c.text, l, ok, c.want)
		}
	}
	for _, s := range notLines {
		if l, ok := ParseLog(s); ok {
			t.Errorf("%q recognised: %+v", s, l)
		}
	}
	if n, ok := Suppressed("EXT4-fs error: 12 callbacks suppressed"); !ok || n != 12 {
		t.Errorf("suppressed: %d %v", n, ok)
	}
}

func FuzzParseLog(f *testing.F) {
	for _, r := range hostRecords(f) {
		f.Add(r.Text)
	}
	for _, c := range sourceLines {
		f.Add(c.text)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := ParseLog(s)
		if !ok {
			if l != (LogLine{}) {
				t.Fatalf("not recognised but %+v", l)
			}
			return
		}
		if l.Device == "" || (l.Subtype != event.SuperblockError && l.Subtype != event.SuperblockReadonly) || l.FS == "" {
			t.Fatalf("%q: %+v", s, l)
		}
	})
}
