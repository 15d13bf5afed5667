// Package vmtest is the VM tier of notifyd's tests: go test ./internal/rig/vmtest builds
// the guest initramfs from the test binaries of the packages in Packages
// (compiled with CGO_ENABLED=0), boots it under qemu with the watch_queue
// kernel from scripts/vm-kernel.sh, serves the guest's USB hotplug
// requests over QMP, and reports every guest package and every guest
// top-level test as a subtest. See docs/testing.md.
//
// Outside CI a missing qemu or kernel skips with the command that fixes
// it; in CI (CI=true) it fails, and a cold kernel cache is built.
//
// Flags (after -args or as go test flags):
//
//	-vm.pkg=internal/rig/vm/scenarios   run only these packages in the guest
//	-vm.run=TestLoss                -test.run for the guest binaries
//	-vm.timeout=4m                  per-package timeout in the guest
//	-vm.dir=/tmp/vm                 keep console, transcript, kmsg, initramfs
//	-vm.stream                      print guest output as it arrives
//	-vm.watchdog=30s                guest /init watchdog (default: timeouts + 1m)
//	-vm.append=loglevel=7           extra guest kernel command line words
//	-vm.update-golden               write captures to record/testdata/kernel-6.1
package vmtest
