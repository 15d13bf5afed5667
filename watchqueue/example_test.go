package watchqueue_test

import (
	"errors"
	"fmt"

	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/watchqueue"
	"golang.org/x/sys/unix"
)

// Open a queue, watch the session keyring with tag 1 and print what
// happens to it.
func Example() {
	if err := watchqueue.HaveKeyNotifications(); err != nil {
		if errors.Is(err, watchqueue.ErrNotSupported) {
			fmt.Println("no key notifications:", err)
		}
		return
	}
	q, err := watchqueue.Open(watchqueue.Options{Size: 256})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()
	if err := q.WatchKey(unix.KEY_SPEC_SESSION_KEYRING, 1); err != nil {
		fmt.Println(err)
		return
	}
	for {
		recs, err := q.Read()
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, r := range recs {
			switch r := r.(type) {
			case *record.Key:
				fmt.Printf("key %d %s aux=%d tag=%d\n", r.KeyID, r.Subtype(), r.Aux, r.Header().WatchID())
			case *record.Removal:
				fmt.Printf("watch %d removed\n", r.Header().WatchID())
				return
			case *record.Loss:
				fmt.Println("records lost: re-read the keyring")
			}
		}
	}
}
