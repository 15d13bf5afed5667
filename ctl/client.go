package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
)

// DefaultSocket is the daemon's unix socket when neither --socket,
// --url nor $NOTIFYD_SOCKET says otherwise.
const DefaultSocket = "/run/notifyd/notifyd.sock"

// DefaultTokenFile is where the daemon keeps its bearer token by default
// (websocket.token_file; the runtime directory's "token").
const DefaultTokenFile = "/run/notifyd/token"

// Endpoint says how to reach the daemon: a unix socket, or a base URL
// (ws://, wss://, http:// or https://) with a bearer token.
type Endpoint struct {
	Socket string
	URL    string
	Token  string
}

func (e Endpoint) String() string {
	if e.URL != "" {
		return e.URL
	}
	return "unix:" + e.Socket
}

// wsURL returns the WebSocket URL for path with query q.
func (e Endpoint) wsURL(path string, q url.Values) (string, error) {
	if e.URL == "" {
		return (&url.URL{Scheme: "ws", Host: "notifyd", Path: path, RawQuery: q.Encode()}).String(), nil
	}
	u, err := url.Parse(e.URL)
	if err != nil {
		return "", usage("bad --url: %v", err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", usage("bad --url %q: want ws://, wss://, http:// or https://", e.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (e Endpoint) httpURL(path string, q url.Values) (string, error) {
	s, err := e.wsURL(path, q)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(s, "wss:") {
		return "https:" + s[4:], nil
	}
	return "http:" + s[3:], nil
}

func (e Endpoint) header() http.Header {
	h := http.Header{}
	if e.URL != "" && e.Token != "" {
		h.Set("Authorization", "Bearer "+e.Token)
	}
	return h
}

func (e Endpoint) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if e.URL != "" {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", e.Socket)
}

// Dial opens a WebSocket connection and subscribes with req when it is
// not nil (URL form); otherwise the connection waits for messages.
func Dial(ctx context.Context, e Endpoint, req *api.Request) (*websocket.Conn, error) {
	return dial(ctx, e, req, nil)
}

// dial is Dial with the connection passed through wrap (nil: as is).
func dial(ctx context.Context, e Endpoint, req *api.Request, wrap func(net.Conn) net.Conn) (*websocket.Conn, error) {
	q := url.Values{}
	if req != nil {
		q = req.Query()
		q.Set("subscribe", "1")
	}
	u, err := e.wsURL(api.PathWS, q)
	if err != nil {
		return nil, err
	}
	netDial := e.dialContext
	if wrap != nil {
		netDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := e.dialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wrap(nc), nil
		}
	}
	d := websocket.Dialer{
		NetDialContext:   netDial,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   64 << 10,
	}
	c, resp, err := d.DialContext(ctx, u, e.header())
	if err != nil {
		if resp != nil {
			return nil, e.explain(httpFailure(resp))
		}
		return nil, unreachable(e, err)
	}
	return c, nil
}

// Fail codes
func unreachable(e Endpoint, err error) error {
	return &ExitError{Code: ExitUnreachable, Err: fmt.Errorf("connect to notifyd at %s: %w", e, err)}
}

// HTTPFailure is an HTTP error answer from the daemon.
type HTTPFailure struct {
	Status int
	Body   api.HTTPError
	Hint   string // what to do about it, from notifyctl's side ("" if nothing)
}

func (h *HTTPFailure) Error() string {
	s := fmt.Sprintf("notifyd refused (HTTP %d %s): %s", h.Status, h.Body.Code, h.Body.Message)
	if h.Body.Pos != nil {
		s += fmt.Sprintf(" (at position %d)", *h.Body.Pos)
	}
	if h.Hint != "" {
		s += "\n  hint: " + h.Hint
	}
	return s
}

// explain adds what notifyctl can do about a refusal to the daemon's
// answer: the daemon speaks of HTTP headers, the user needs the flag.
func (e Endpoint) explain(err error) error {
	var hf *HTTPFailure
	if !errors.As(err, &hf) || hf.Status != http.StatusUnauthorized || e.URL == "" {
		return err
	}
	if e.Token == "" {
		hf.Hint = "--url needs the daemon's token: --token-file " + DefaultTokenFile +
			" (the daemon's token file, readable by root only), or $NOTIFYD_TOKEN_FILE; or use the unix socket (--socket), which needs no token"
	} else {
		hf.Hint = "the token given (--token-file, $NOTIFYD_TOKEN_FILE or $NOTIFYD_TOKEN) is not this daemon's: " +
			"read it from the daemon's token file (" + DefaultTokenFile + " by default; websocket.token_file)"
	}
	return err
}

func httpFailure(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	f := &HTTPFailure{Status: resp.StatusCode}
	if json.Unmarshal(b, &f.Body) != nil || f.Body.Message == "" {
		f.Body.Message = strings.TrimSpace(string(b))
		if f.Body.Message == "" {
			f.Body.Message = resp.Status
		}
	}
	code := ExitFailure
	switch resp.StatusCode {
	case http.StatusBadRequest:
		code = ExitUsage
	case http.StatusUnauthorized, http.StatusForbidden:
		code = ExitRefused
	}
	return &ExitError{Code: code, Err: f}
}

// GetStatus fetches the status document.
func GetStatus(ctx context.Context, e Endpoint) (*api.Status, error) {
	u, err := e.httpURL(api.PathStatus, nil)
	if err != nil {
		return nil, err
	}
	cl := &http.Client{Transport: &http.Transport{DialContext: e.dialContext}, Timeout: 30 * time.Second}
	defer cl.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header = e.header()
	resp, err := cl.Do(req)
	if err != nil {
		return nil, unreachable(e, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, e.explain(httpFailure(resp))
	}
	defer resp.Body.Close()
	var st api.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return &st, nil
}

// FetchFD sends a POST for path on the daemon's unix socket and returns
// the JSON body and the file descriptors that came with it (SCM_RIGHTS;
// docs/websocket.md, "File descriptors"). The caller closes the fds.
func FetchFD(ctx context.Context, e Endpoint, path string, q url.Values) (body []byte, fds []int, err error) {
	if e.URL != "" {
		return nil, nil, usage("file descriptors come over the unix socket only: use --socket, not --url")
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", e.Socket)
	if err != nil {
		return nil, nil, unreachable(e, err)
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	target := path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: notifyd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", target); err != nil {
		return nil, nil, fmt.Errorf("send request: %w", err)
	}
	var data []byte
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*8))
	defer func() {
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			fds = nil
		}
	}()
	for {
		n, oobn, _, _, rerr := c.ReadMsgUnix(buf, oob)
		data = append(data, buf[:n]...)
		if oobn > 0 {
			msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr != nil {
				return nil, fds, fmt.Errorf("read fds: %w", perr)
			}
			for _, m := range msgs {
				got, perr := unix.ParseUnixRights(&m)
				if perr == nil {
					fds = append(fds, got...)
				}
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				break
			}
			return nil, fds, fmt.Errorf("read answer: %w", rerr)
		}
		if n == 0 {
			break
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
	if err != nil {
		return nil, fds, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fds, httpFailure(resp)
	}
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, fds, fmt.Errorf("read answer: %w", err)
	}
	return body, fds, nil
}

// post sends a plain POST (no fds expected) on the unix socket.
func post(ctx context.Context, e Endpoint, path string, q url.Values) error {
	body, fds, err := FetchFD(ctx, e, path, q)
	for _, fd := range fds {
		unix.Close(fd)
	}
	_ = body
	return err
}

// tokenFrom reads a token file.
func tokenFrom(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
