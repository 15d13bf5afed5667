// Package scenarios holds guest-only tests that pin down what the VM
// test kernel (Debian 6.1, tinyconfig + internal/rig/vm/kernel.config) really
// does for every kernel interface notifyd reads: key and keyring
// notifications of every subtype, queue overflow and its loss record,
// removal records on key garbage collection, keyutils' "keyctl watch" on
// the same keyring, USB add/remove/bind uevents and USB reset, USB
// enumeration failures (a Raw Gadget device on dummy_hcd), block I/O
// errors from scsi_debug and from a loop device on dm-error, and loop
// attach/detach uevents.
//
// The package has no non-test code to speak of: its tests run inside the
// VM (go test ./internal/rig/vmtest -vm.pkg=internal/rig/vm/scenarios) and skip on other
// kernels through testenv.KernelFeature. They read the kernel directly
// (x/sys/unix), independently of notifyd's own readers, so they show what
// those readers have to handle; and they send the raw records they
// capture to the host as golden files (see record/testdata/kernel-6.1).
package scenarios
