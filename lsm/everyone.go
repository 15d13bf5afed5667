package lsm

// EveryoneUID is the uid of Everyone: (uid_t)-2, which no account on a
// Linux system uses (the kernel's overflow uid is 65534, nobody).
const EveryoneUID = ^uint32(0) - 1

// Everyone returns the subject that stands for "any local user": a uid no
// account has, no groups, no label, no process. What the policy lets this
// subject see, every local user may see: an allow rule naming users,
// groups or labels does not apply to it (the others are not allowed), a
// deny rule naming some does (they are refused, so not everyone may see
// it), and there is no administrator default, no private mount, no polkit
// authorization (it has no process to ask about). The D-Bus service
// exports as broadcast objects only what Everyone may see.
func Everyone() *Cred {
	return &Cred{UID: EveryoneUID, GID: EveryoneUID, PidFD: -1, everyone: true}
}
