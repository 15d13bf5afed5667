package lsm

// EveryoneUID is the uid of Everyone: (uid_t)-2, which no account on a
// Linux system uses (the kernel's overflow uid is 65534, nobody).
const EveryoneUID = ^uint32(0) - 1

// Everyone returns the subject that stands for "any local user": a uid no
// account has, no groups, no label, no process. What the policy lets this
// subject see, every local user may see: no rule naming a user, a group or
// a label applies to it, no administrator default, no private mount, no
// polkit authorization (it has no process to ask about). The D-Bus
// service exports as broadcast objects only what Everyone may see.
func Everyone() *Cred {
	return &Cred{UID: EveryoneUID, GID: EveryoneUID, PidFD: -1}
}
