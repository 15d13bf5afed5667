package dbusapi_test

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// screenshotDoc is where TestIntegrationExampleApplet puts the popup's
// screenshot with NOTIFYD_UPDATE_DOCS=1.
const screenshotDoc = "../docs/images/applet-popup.png"

// notification is one Notify call as the notification daemon received it.
type notification struct {
	summary, body string
	urgency       byte
}

// TestIntegrationExampleApplet runs examples/applet/notifyd-applet.py
// against the real daemon (on a system-like bus with the shipped policy)
// and a real notification daemon (dunst, on a private session bus, under
// Xvfb), and reads back from the session bus (a monitor connection) what
// dunst was asked to show: first "what is plugged in now", from
// GetManagedObjects alone, naming a loop device attached before the
// applet started; then a loop attached and detached while it runs. The
// popup is captured from the X server (docs/images/applet-popup.png with
// NOTIFYD_UPDATE_DOCS=1).
func TestIntegrationExampleApplet(t *testing.T) {
	testenv.Root(t, "attaches loop devices")
	xvfb := testenv.LookPath(t, "Xvfb", "apt-get install xvfb (scripts/deps.sh)")
	dunst := testenv.LookPath(t, "dunst", "apt-get install dunst (scripts/deps.sh)")
	imp := testenv.LookPath(t, "import", "apt-get install imagemagick (scripts/deps.sh)")
	py := python(t)

	// The X server; -displayfd says which display it took.
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	x := exec.Command(xvfb, "-displayfd", "3", "-screen", "0", "1024x400x24", "-nolisten", "tcp")
	x.ExtraFiles = []*os.File{wr}
	if err := x.Start(); err != nil {
		t.Fatalf("start Xvfb: %v", err)
	}
	wr.Close()
	t.Cleanup(func() { x.Process.Kill(); x.Wait() })
	line, err := bufio.NewReader(rd).ReadString('\n')
	rd.Close()
	if err != nil {
		t.Fatalf("Xvfb gave no display: %v", err)
	}
	display := ":" + strings.TrimSpace(line)

	// The desktop session's bus and its notification daemon.
	sessAddr := "unix:path=" + filepath.Join(t.TempDir(), "session.sock")
	testenv.StartDBus(t, "--session", "--address="+sessAddr)
	env := append(os.Environ(), "DISPLAY="+display, "DBUS_SESSION_BUS_ADDRESS="+sessAddr)
	rc, _ := filepath.Abs("testdata/dunstrc")
	var dlog testenv.Buffer
	dn := exec.Command(dunst, "-config", rc)
	dn.Env, dn.Stdout, dn.Stderr = env, &dlog, &dlog
	if err := dn.Start(); err != nil {
		t.Fatalf("start dunst: %v", err)
	}
	t.Cleanup(func() {
		dn.Process.Kill()
		dn.Wait()
		if t.Failed() {
			t.Logf("dunst log:\n%s", dlog.String())
		}
	})

	// A monitor on the session bus: every Notify call dunst receives.
	mon, err := dbus.Connect(sessAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	waitName(t, mon, "org.freedesktop.Notifications")
	if err := mon.BusObject().Call("org.freedesktop.DBus.Monitoring.BecomeMonitor", 0,
		[]string{"type='method_call',interface='org.freedesktop.Notifications',member='Notify'"}, uint32(0)).Err; err != nil {
		t.Fatalf("BecomeMonitor: %v", err)
	}
	msgs := make(chan *dbus.Message, 100)
	mon.Eavesdrop(msgs)
	// next waits for a notification with that summary whose body names
	// about (any body when ""): other packages' tests attach loop devices
	// of their own meanwhile, and the applet tells of those too.
	next := func(summary, about string) notification {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case m := <-msgs:
				if len(m.Body) != 8 {
					continue
				}
				n := notification{summary: fmt.Sprint(m.Body[3]), body: fmt.Sprint(m.Body[4])}
				if h, ok := m.Body[6].(map[string]dbus.Variant); ok {
					n.urgency, _ = h["urgency"].Value().(byte)
				}
				t.Logf("dunst was asked to show: %q / %q (urgency %d)", n.summary, n.body, n.urgency)
				if n.summary == summary && strings.Contains(n.body, about) {
					return n
				}
			case <-timeout:
				t.Fatalf("no %q notification about %q within 30 s", summary, about)
			}
		}
	}

	b := startBus(t)
	startRealDaemon(t, b.addr, nil)
	before, beforeFile := loopAttach(t)

	app := exec.Command(py, "../examples/applet/notifyd-applet.py", "--bus", b.addr, "--json")
	app.Env = env
	var alog testenv.Buffer
	app.Stdout, app.Stderr = &alog, &alog
	if err := app.Start(); err != nil {
		t.Fatalf("start the applet: %v", err)
	}
	t.Cleanup(func() {
		app.Process.Kill()
		app.Wait()
		if t.Failed() {
			t.Logf("applet output:\n%s", alog.String())
		}
	})
	now := next("Plugged in now", "")
	if !strings.Contains(now.body, filepath.Base(before)) || !strings.Contains(now.body, beforeFile) {
		t.Errorf("plugged in now: %q lacks %s (%s)", now.body, before, beforeFile)
	}

	base := screenshot(t, imp, display, nil)
	dev, file := loopAttach(t)
	n := next("Loop device attached", file)
	if want := filepath.Base(dev) + ": " + file; n.body != want {
		t.Errorf("attached: body %q, want %q", n.body, want)
	}
	shot := screenshot(t, imp, display, base)
	if os.Getenv("NOTIFYD_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(screenshotDoc, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", screenshotDoc)
	}

	loopDetach(t, dev)
	n = next("Loop device detached", file)
	if want := filepath.Base(dev) + " (was " + file + ")"; n.body != want {
		t.Errorf("detached: body %q, want %q", n.body, want)
	}
}

// screenshot captures the X display until a popup shows in the top right
// corner and the screen differs from before (dunst draws after it has
// answered Notify), and returns the PNG.
func screenshot(t *testing.T, imp, display string, before []byte) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(imp, "-display", display, "-window", "root", "png:-").Output()
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		img, err := png.Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("decode screenshot: %v", err)
		}
		if drawn(img) && !bytes.Equal(out, before) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no popup on the screen within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// drawn reports whether the popup area (top right) holds more than one
// colour: the background, frame and text of a dunst popup.
func drawn(img image.Image) bool {
	r := img.Bounds()
	colours := 0
	seen := map[[4]uint32]bool{}
	for y := r.Min.Y + 20; y < r.Min.Y+120 && y < r.Max.Y; y++ {
		for x := r.Max.X - 500; x < r.Max.X-20; x++ {
			c := img.At(x, y)
			r1, g1, b1, a1 := c.RGBA()
			k := [4]uint32{r1, g1, b1, a1}
			if !seen[k] {
				seen[k] = true
				colours++
			}
		}
	}
	return colours >= 3
}

func waitName(t *testing.T, c *dbus.Conn, name string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var has bool
		if err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err == nil && has {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody owns %s within 20 s", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
