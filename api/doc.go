// Package api is the wire contract shared by the notifyd daemon and its
// clients (notifyctl, the dashboard, third-party tools): the WebSocket
// protocol version, its message types and their JSON forms, the HTTP paths
// served on the daemon's unix socket and loopback TCP listener, and the
// D-Bus names, paths, interfaces and error names.
//
// The WebSocket protocol is documented for humans in docs/websocket.md;
// this package is its Go form. Events travel in the shared JSON form of
// package event ((*event.Event).JSON), which is also the form of D-Bus JSON
// helpers and notifyctl --json.
//
// The package imports nothing from the daemon but package event, so that a
// client links no kernel-facing code.
package api
