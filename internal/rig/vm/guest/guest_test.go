package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"testing"
)

func TestOutsideVM(t *testing.T) {
	t.Setenv(EnvVM, "")
	if Active() {
		t.Fatal("Active() outside the VM")
	}
	if err := Hotplug(context.Background(), "add", "usb-kbd"); !errors.Is(err, ErrNotInVM) {
		t.Errorf("Hotplug outside the VM = %v, want ErrNotInVM", err)
	}
}

func TestGoldenRejectsPaths(t *testing.T) {
	for _, name := range []string{"", "../x", "a/b", ".hidden", "a b"} {
		if err := Golden(context.Background(), name, nil); err == nil || errors.Is(err, ErrNotInVM) {
			t.Errorf("Golden(%q) = %v, want a name error", name, err)
		}
	}
}

// TestSendProtocol plays /init's side of the control socket.
func TestSendProtocol(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv(EnvVM, "1")
	t.Setenv(EnvControl, sock)
	got := make(chan Request, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadBytes('\n')
			var req Request
			json.Unmarshal(line, &req)
			got <- req
			rep := Reply{}
			if req.Args[0] == "del" {
				rep.Error = "DeviceNotFound"
			}
			b, _ := json.Marshal(rep)
			c.Write(append(b, '\n'))
			c.Close()
		}
	}()
	if err := Hotplug(context.Background(), "add", "usb-kbd", "id=kbd0"); err != nil {
		t.Fatalf("Hotplug add: %v", err)
	}
	if req := <-got; req.Op != "hotplug" || len(req.Args) != 3 || req.Args[1] != "usb-kbd" || req.Args[2] != "id=kbd0" {
		t.Errorf("request = %+v", req)
	}
	err = Hotplug(context.Background(), "del", "nosuch")
	if err == nil || err.Error() != "hotplug del nosuch: DeviceNotFound" {
		t.Errorf("Hotplug del = %v, want the host's error", err)
	}
	<-got
	<-done
}
