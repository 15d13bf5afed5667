package proto

import (
	"strings"
	"testing"
)

func TestFormatParse(t *testing.T) {
	for _, tc := range []struct {
		tag    string
		fields []string
		want   string
	}{
		{TagBoot, []string{"1.53"}, "NVM BOOT 1.53"},
		{TagOut, []string{"sources/keys", "=== RUN   TestX"}, "NVM OUT sources/keys === RUN   TestX"},
		{TagOut, []string{"p", "a\nb\rc"}, `NVM OUT p a\nbc`},
		{TagEnd, []string{"watchqueue", "0", "1.25", "exit status 1: killed"}, "NVM END watchqueue 0 1.25 exit status 1: killed"},
		{TagReq, []string{"7", `{"op":"hotplug","args":["add","usb-kbd"]}`}, `NVM REQ 7 {"op":"hotplug","args":["add","usb-kbd"]}`},
		{TagDone, []string{"0", "3.10"}, "NVM DONE 0 3.10"},
	} {
		line := Format(tc.tag, tc.fields...)
		if line != tc.want {
			t.Errorf("Format(%s, %q) = %q, want %q", tc.tag, tc.fields, line, tc.want)
		}
		tag, fields, ok := Parse(line, Fields(tc.tag))
		if !ok || tag != tc.tag {
			t.Fatalf("Parse(%q) = %q, %v", line, tag, ok)
		}
		for i, f := range tc.fields {
			want := strings.NewReplacer("\r", "", "\n", `\n`).Replace(f)
			if fields[i] != want {
				t.Errorf("Parse(%q) field %d = %q, want %q", line, i, fields[i], want)
			}
		}
	}
}

func TestParseRejectsNoise(t *testing.T) {
	for _, l := range []string{"", "NVM", "garbage NVM OUT x", "\x00\x00NVM BOOT 1"} {
		if _, _, ok := Parse(l, 1); ok {
			t.Errorf("Parse(%q) accepted a non-protocol line", l)
		}
	}
	// Missing fields come back empty, not as a panic.
	tag, f, ok := Parse("NVM END pkg", Fields(TagEnd))
	if !ok || tag != TagEnd || len(f) != 4 || f[0] != "pkg" || f[3] != "" {
		t.Errorf("Parse(short END) = %q %q %v", tag, f, ok)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"NVM BOOT 1.5", "NVM OUT p line with spaces", "NVM END p 1 2.0 reason here", "NVM REQ 1 {}", "NVM", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		tag, _, ok := Parse(line, 0)
		if !ok {
			return
		}
		n := Fields(tag)
		_, fields, ok := Parse(line, n)
		if !ok || len(fields) != n {
			t.Fatalf("Parse(%q, %d) = %q, %v", line, n, fields, ok)
		}
		// A formatted line parses back to the same fields.
		again := Format(tag, fields...)
		_, f2, _ := Parse(again, n)
		for i := range fields {
			if strings.ContainsAny(fields[i], "\r\n") {
				return
			}
			if f2[i] != fields[i] && i < n-1 {
				t.Fatalf("round trip of %q: field %d %q != %q", line, i, f2[i], fields[i])
			}
		}
	})
}
