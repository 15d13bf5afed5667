// Package lsm is notifyd's policy layer, modelled on the kernel's LSM
// hooks for notifications (security_watch_key and
// security_post_notification): Engine.Watch decides at subscribe or
// watch time whether a subject may subscribe to a source, and Engine.Post
// decides for every event and every subscriber whether the event may be
// delivered. A denied event is simply not owed to that subscriber; it is
// not a loss.
//
// Subjects are identified by Cred: uid, gid, supplementary groups, pid
// pinned by a pidfd, and the LSM security label, taken from a unix
// socket (PeerCred) or from what the D-Bus daemon reports (CredFromPID,
// or CredFromPidFD when the bus passes the caller's pidfd).
// Decisions are never cached by bare pid; an ExitWatcher tells when the
// process behind a pidfd has gone.
//
// The policy comes from Default or from a policy file (Load, Parse;
// format in docs/policy.md) and can be replaced at run time with
// Engine.Swap, which applies to live subscribers at their next event.
package lsm
