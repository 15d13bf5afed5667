package guest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// KeyctlPath is where the guest initramfs carries keyutils' keyctl (with
// its shared libraries and the dynamic loader), the reference peer for key
// notifications.
const KeyctlPath = "/bin/keyctl"

// Keyctl runs keyutils' keyctl with args and returns its standard output
// without the trailing newline; on failure the error carries its stderr.
func Keyctl(ctx context.Context, args ...string) (string, error) {
	cmd := KeyctlCommand(ctx, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("keyctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimRight(out.String(), "\n"), nil
}

// KeyctlCommand returns a command running keyctl with args, for long-running
// uses such as "keyctl watch <key>", whose output the caller reads.
func KeyctlCommand(ctx context.Context, args ...string) *exec.Cmd {
	path := KeyctlPath
	if p, err := exec.LookPath(path); err != nil {
		if p, err = exec.LookPath("keyctl"); err == nil {
			path = p
		}
	} else {
		path = p
	}
	return exec.CommandContext(ctx, path, args...)
}
