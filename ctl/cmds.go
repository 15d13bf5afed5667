package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/history"
)

var cmdStatus = &command{
	name:  "status",
	args:  "[--json]",
	short: "show sources and their health, subscribers, counters and loss totals",
	examples: []string{
		`notifyctl status`,
		`notifyctl status --json | jq '.sources[] | select(.state != "live")'`,
	},
	flags: func(fs *flag.FlagSet, o *opts) {
		fs.BoolVar(&o.json, "json", false, "print the status document (docs/websocket.md) as JSON")
	},
	run: func(ctx context.Context, o *opts, args []string) error {
		if len(args) > 0 {
			return usage("status takes no arguments")
		}
		st, err := GetStatus(ctx, o.ep)
		if err != nil {
			return err
		}
		if o.json {
			b, _ := json.MarshalIndent(st, "", "  ")
			return writeLine(o.stdout, b)
		}
		writeStatus(o.stdout, st)
		return nil
	},
}

var cmdCheckFilter = &command{
	name:  "check-filter",
	args:  "FILTER",
	short: "parse a filter expression and explain what it matches",
	long: `
Parses FILTER as the daemon would and prints its normalised form and an
explanation. A syntax error shows where in the expression it is, and the
exit code is 2. Needs no daemon.`,
	examples: []string{
		`notifyctl check-filter 'source == usb && subtype in (add, remove)'`,
		`notifyctl check-filter 'source == block && dev == sda && subtype ~ "critical-*"'`,
	},
	run: func(ctx context.Context, o *opts, args []string) error {
		if len(args) != 1 {
			return usage("check-filter: one FILTER argument expected (quote it)")
		}
		f, err := filter.Parse(args[0])
		if err != nil {
			var se *filter.SyntaxError
			if errors.As(err, &se) {
				fmt.Fprintf(o.stdout, "  %s\n  %s^\n", args[0], strings.Repeat(" ", min(se.Pos, len(args[0]))))
			}
			return &ExitError{Code: ExitUsage, Err: err}
		}
		s := f.String()
		if s == "" {
			s = "(empty: matches every event)"
		}
		fmt.Fprintf(o.stdout, "filter: %s\n%s\n", s, strings.TrimRight(f.Explain(), "\n"))
		return nil
	},
}

var cmdHistory = &command{
	name:  "history",
	args:  "[FILTER] [--since EPOCH:SEQ] [--max N] [--json]",
	short: "print the events the daemon still holds in its history",
	long: `
Asks the daemon (over its unix socket) for a sealed memory file holding the
matching events of its history ring in the record stream format
(docs/record-abi.md), checks that the file is sealed against any change,
maps it read-only and prints the events. --since limits it to events after
a position of the same daemon run.`,
	examples: []string{
		`notifyctl history`,
		`notifyctl history 'source == block' --json`,
		`notifyctl history --since 3f1c0a9e5b7d2e10:1200 --max 50`,
	},
	flags: func(fs *flag.FlagSet, o *opts) {
		fs.BoolVar(&o.json, "json", false, "print NDJSON")
		fs.StringVar(&o.since, "since", "", "only events after EPOCH:SEQ")
		fs.IntVar(&o.max, "max", 0, "at most N events, the oldest first; 0: all")
		fs.BoolVar(&o.noColor, "no-color", false, "never colour loss lines")
	},
	run: runHistory,
}

func runHistory(ctx context.Context, o *opts, args []string) error {
	if len(args) > 1 {
		return usage("history: one FILTER argument expected (quote it)")
	}
	req, err := o.request(args)
	if err != nil {
		return err
	}
	q := req.Query()
	if o.max > 0 {
		q.Set(api.ParamMax, strconv.Itoa(o.max))
	}
	rep, evs, err := FetchHistory(ctx, o.ep, q)
	if err != nil {
		return err
	}
	p := newPrinter(o.stdout, o.noColor)
	out := bufio.NewWriterSize(o.stdout, outBuf) // the whole answer is here: written in large writes
	p.w = out
	for _, ev := range evs {
		if o.json {
			out.Write(ev.JSON())
			out.WriteByte('\n')
		} else {
			p.event(ev)
		}
	}
	if !o.json {
		p.note("%d events from the history of epoch %s (daemon at seq %d)", rep.Count, rep.Epoch, rep.Seq)
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// FetchHistory gets the history memfd, verifies its seals, maps it
// read-only and decodes it.
func FetchHistory(ctx context.Context, e Endpoint, q url.Values) (*api.HistoryReply, []*event.Event, error) {
	body, fds, err := FetchFD(ctx, e, api.PathHistory, q)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var rep api.HistoryReply
	if err := json.Unmarshal(body, &rep); err != nil {
		return nil, nil, fmt.Errorf("decode history answer: %w", err)
	}
	if len(fds) != 1 {
		return nil, nil, fmt.Errorf("history: want one file descriptor, got %d", len(fds))
	}
	evs, err := ReadSealed(fds[0], rep.Size)
	if err != nil {
		return nil, nil, err
	}
	if len(evs) != rep.Count {
		return nil, nil, fmt.Errorf("history: the daemon announced %d events, the file holds %d", rep.Count, len(evs))
	}
	return &rep, evs, nil
}

// ReadSealed checks that fd is a memfd sealed with api.HistorySeals and of
// the announced size, maps it read-only and decodes the record stream.
func ReadSealed(fd int, size int64) ([]*event.Event, error) {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("history: get seals: %w", err)
	}
	if seals&api.HistorySeals != api.HistorySeals {
		return nil, fmt.Errorf("history: file not sealed (seals %#x, want %#x): refusing to map it", seals, api.HistorySeals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("history: stat: %w", err)
	}
	if st.Size != size {
		return nil, fmt.Errorf("history: file is %d bytes, the daemon announced %d", st.Size, size)
	}
	if size == 0 {
		return nil, errors.New("history: empty file (a stream has at least a header)")
	}
	b, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("history: mmap: %w", err)
	}
	defer unix.Munmap(b)
	evs, err := history.DecodeStream(b)
	if err != nil {
		return nil, err // "decode history stream: …" says what it is
	}
	// Decoded events must not point into the mapping, which goes away:
	// re-encode what might alias it.
	for _, ev := range evs {
		if len(ev.Raw) > 0 {
			ev.Raw = append([]byte(nil), ev.Raw...)
		}
	}
	return evs, nil
}

var cmdCompletion = &command{
	name:  "completion",
	args:  "bash|zsh|fish",
	short: "print a shell completion script",
	examples: []string{
		`notifyctl completion bash > /etc/bash_completion.d/notifyctl`,
		`notifyctl completion zsh > "${fpath[1]}/_notifyctl"`,
		`notifyctl completion fish > ~/.config/fish/completions/notifyctl.fish`,
		`source <(notifyctl completion bash)`,
	},
	run: func(ctx context.Context, o *opts, args []string) error {
		if len(args) != 1 {
			return usage("completion: want bash, zsh or fish")
		}
		switch args[0] {
		case "bash":
			fmt.Fprint(o.stdout, bashCompletion())
		case "zsh":
			fmt.Fprint(o.stdout, zshCompletion())
		case "fish":
			fmt.Fprint(o.stdout, fishCompletion())
		default:
			return usage("completion: unknown shell %q (bash, zsh or fish)", args[0])
		}
		return nil
	},
}

// flagNames returns a command's flags as "--name".
func flagNames(c *command) []string {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	globalFlags(fs, &opts{})
	if c.flags != nil {
		c.flags(fs, &opts{})
	}
	var n []string
	fs.VisitAll(func(f *flag.Flag) { n = append(n, "--"+f.Name) })
	return append(n, "--help")
}

func bashCompletion() string {
	var b strings.Builder
	b.WriteString("# bash completion for notifyctl (generated by notifyctl completion bash)\n_notifyctl() {\n")
	b.WriteString("\tlocal cur=${COMP_WORDS[COMP_CWORD]} cmd=\"\" i\n")
	b.WriteString("\tfor ((i=1; i<COMP_CWORD; i++)); do case ${COMP_WORDS[i]} in -*) ;; *) cmd=${COMP_WORDS[i]}; break;; esac; done\n")
	b.WriteString("\tcase $cmd in\n")
	fmt.Fprintf(&b, "\t\"\") COMPREPLY=($(compgen -W '%s help --socket --url --token-file --help' -- \"$cur\"));;\n", strings.ReplaceAll(commandNames(), ",", ""))
	for _, c := range commands {
		words := strings.Join(flagNames(c), " ")
		switch c.name {
		case "completion":
			words += " bash zsh fish"
		case "monitor", "history":
			words += " --policy"
		}
		fmt.Fprintf(&b, "\t%s) COMPREPLY=($(compgen -W '%s' -- \"$cur\"));;\n", c.name, words)
	}
	b.WriteString("\tesac\n\tcase ${COMP_WORDS[COMP_CWORD-1]} in\n")
	b.WriteString("\t--policy) COMPREPLY=($(compgen -W 'drop-oldest disconnect coalesce' -- \"$cur\"));;\n")
	b.WriteString("\t--socket|--token-file) COMPREPLY=($(compgen -f -- \"$cur\"));;\n")
	b.WriteString("\tesac\n}\ncomplete -F _notifyctl notifyctl\n")
	return b.String()
}

func zshCompletion() string {
	var b strings.Builder
	b.WriteString("#compdef notifyctl\n# zsh completion for notifyctl (generated by notifyctl completion zsh)\n_notifyctl() {\n")
	b.WriteString("\tlocal -a cmds\n\tcmds=(\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "\t\t'%s:%s'\n", c.name, strings.ReplaceAll(c.short, "'", ""))
	}
	b.WriteString("\t)\n\tif (( CURRENT == 2 )); then _describe 'command' cmds; return; fi\n\tcase $words[2] in\n")
	for _, c := range commands {
		var specs []string
		for _, f := range flagNames(c) {
			spec := "'" + f + "'"
			switch f {
			case "--policy":
				spec = "'--policy[slow-subscriber policy]:policy:(drop-oldest disconnect coalesce)'"
			case "--socket", "--token-file":
				spec = "'" + f + "[path]:file:_files'"
			}
			specs = append(specs, spec)
		}
		if c.name == "completion" {
			specs = append(specs, "'1:shell:(bash zsh fish)'")
		}
		fmt.Fprintf(&b, "\t%s) _arguments %s;;\n", c.name, strings.Join(specs, " "))
	}
	b.WriteString("\tesac\n}\n_notifyctl \"$@\"\n")
	return b.String()
}

// fishCompletion is the fish script: the commands (with their short help)
// while none is given, then each command's flags, with the values that
// --policy takes and files for --socket and --token-file.
func fishCompletion() string {
	var b strings.Builder
	b.WriteString("# fish completion for notifyctl (generated by notifyctl completion fish)\n")
	b.WriteString("complete -c notifyctl -f\n")
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	none := "not __fish_seen_subcommand_from help " + strings.Join(names, " ")
	for _, c := range commands {
		fmt.Fprintf(&b, "complete -c notifyctl -n '%s' -a %s -d %s\n", none, c.name, fishQuote(c.short))
	}
	// The global flags go before the command, and after it too.
	b.WriteString("complete -c notifyctl -l socket -r -F -d 'daemon unix socket'\n")
	b.WriteString("complete -c notifyctl -l url -x -d 'daemon base URL instead of the unix socket'\n")
	b.WriteString("complete -c notifyctl -l token-file -r -F -d 'file holding the bearer token for --url'\n")
	b.WriteString("complete -c notifyctl -l help -d 'show help'\n")
	for _, c := range commands {
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		if c.flags != nil {
			c.flags(fs, &opts{})
		}
		cond := "__fish_seen_subcommand_from " + c.name
		fs.VisitAll(func(f *flag.Flag) {
			arg := ""
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool {
				arg = " -x"
			}
			if f.Name == "policy" {
				arg = " -x -a 'drop-oldest disconnect coalesce'"
			}
			usage, _, _ := strings.Cut(f.Usage, ";")
			usage, _, _ = strings.Cut(usage, ". ")
			fmt.Fprintf(&b, "complete -c notifyctl -n '%s' -l %s%s -d %s\n", cond, f.Name, arg, fishQuote(usage))
		})
		if c.name == "completion" {
			fmt.Fprintf(&b, "complete -c notifyctl -n '%s' -a 'bash zsh fish'\n", cond)
		}
	}
	fmt.Fprintf(&b, "complete -c notifyctl -n '%s' -a help -d 'show the help of a command'\n", none)
	fmt.Fprintf(&b, "complete -c notifyctl -n '__fish_seen_subcommand_from help' -a '%s'\n", strings.Join(names, " "))
	return b.String()
}

// fishQuote quotes s for fish: single quotes, with \ and ' escaped.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
